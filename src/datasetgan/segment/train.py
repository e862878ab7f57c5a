"""Training and applying a downstream segmenter on labelled images held in memory.

A loop you can read in one screen: seeded shuffles and augmentations (horizontal flip,
small shifts; optionally the synthetic-to-real set: colour, blur, noise, small rotations and
scalings), Adam with cosine decay, cross-entropy that skips ignore pixels. Training counts
epochs or, for sets of very different sizes, steps; an optional callback sees the model at
each checkpoint (validation and files: segment/runs.py; the demo's and bench's recipe:
segment/recipe.py).
"""

import json
import math
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from pydantic import BaseModel, Field
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch import nn
from torchvision import tv_tensors
from torchvision.transforms import v2

from datasetgan.errors import DatasetGANError
from datasetgan.fileio import save_tensors
from datasetgan.labels import IGNORE
from datasetgan.metrics import ConfusionMeter, SegmentationScores
from datasetgan.progress import progress_bar
from datasetgan.segment.models import build_segmenter, normalize


class SegmenterConfig(BaseModel):
    architecture: str = "unet-resnet18-slim"
    epochs: int = Field(10, ge=1)
    # exactly this many steps whatever the set's size (then `epochs` is unused): sets of 16 and of
    # 4,000 images get the same optimisation, and whole epochs would be far off for one of them
    steps: int | None = Field(None, ge=1)
    checkpoints: int = Field(7, ge=1)  # with `steps`: the callback runs at this many evenly spaced steps
    batch_size: int = Field(32, ge=1)
    lr: float = Field(1e-3, gt=0)
    max_shift: int = Field(4, ge=0)  # pixels of random translation (0 disables)
    hflip: bool = True  # only for classes without a left/right meaning
    # per image: colour jitter, blur, noise, small rotation and scaling, so that a segmenter trained on
    # generated images leans less on their exact colours and textures when it meets real ones
    transfer_augment: bool = False
    pretrained: bool = False
    seed: int = 0


def augment(images: torch.Tensor, masks: torch.Tensor, cfg: SegmenterConfig, rng: torch.Generator):
    """Random flip per sample and a random shift per batch (shifted-in mask pixels are ignore), then,
    if chosen, the synthetic-to-real augmentation."""
    n = images.shape[0]
    if cfg.hflip:
        flip = torch.rand(n, generator=rng) < 0.5
        images = torch.where(flip.view(n, 1, 1, 1).to(images.device), images.flip(-1), images)
        masks = torch.where(flip.view(n, 1, 1).to(masks.device), masks.flip(-1), masks)
    if cfg.max_shift > 0:
        s = cfg.max_shift
        dy, dx = (int(v) for v in torch.randint(-s, s + 1, (2,), generator=rng))
        images = torch.roll(F.pad(images, (s, s, s, s), mode="replicate"), (dy, dx), (2, 3))[..., s:-s, s:-s]
        masks = torch.roll(F.pad(masks, (s, s, s, s), value=IGNORE), (dy, dx), (1, 2))[..., s:-s, s:-s]
    if cfg.transfer_augment:
        images, masks = transfer_augment(images, masks, rng)
    return images, masks


TRANSFER_AUGMENT = v2.Compose([
    v2.RandomAffine(degrees=10, scale=(0.9, 1.1), fill={tv_tensors.Image: 0, tv_tensors.Mask: IGNORE}),
    v2.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.3, hue=0.03),
    v2.RandomApply([v2.GaussianBlur(3, sigma=(0.1, 1.0))], p=0.5),
    v2.ToDtype(torch.float32, scale=True),
    v2.GaussianNoise(sigma=0.02),
    v2.ToDtype(torch.uint8, scale=True),
])


def transfer_augment(images: torch.Tensor, masks: torch.Tensor, rng: torch.Generator
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """The synthetic-to-real augmentation, drawn per image; rotated-in mask pixels are ignore.

    torchvision's transforms draw from the global generator: it is seeded from `rng` for the
    batch and restored after, so the result depends on the seed alone.
    """
    seed = int(torch.randint(2**62, (1,), generator=rng))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pairs = [TRANSFER_AUGMENT(tv_tensors.Image(image), tv_tensors.Mask(mask)) for image, mask in zip(images, masks)]
    return torch.stack([p[0].as_subclass(torch.Tensor) for p in pairs]), torch.stack(
        [p[1].as_subclass(torch.Tensor) for p in pairs])


CheckpointCallback = Callable[[int, nn.Module, float], dict[str, float] | None]


def schedule_points(n: int, cfg: SegmenterConfig) -> tuple[int, list[int]]:
    """-> (total steps, the steps after which the callback runs): every epoch, or `checkpoints`
    evenly spaced steps when the config counts steps."""
    if cfg.steps is None:
        per_epoch = math.ceil(n / cfg.batch_size)
        return cfg.epochs * per_epoch, [per_epoch * e for e in range(1, cfg.epochs + 1)]
    count = min(cfg.checkpoints, cfg.steps)
    return cfg.steps, [round(cfg.steps * k / count) for k in range(1, count + 1)]


def batch_order(n: int, batch_size: int, steps: int, rng: torch.Generator) -> list[torch.Tensor]:
    """`steps` batches of indices from seeded shuffles of 0..n-1 laid end to end, so that every
    image appears equally often (to one) however the steps and the set's size relate."""
    rounds = math.ceil(steps * batch_size / n)
    order = torch.cat([torch.randperm(n, generator=rng) for _ in range(rounds)])[: steps * batch_size]
    return list(order.split(batch_size))


def train_segmenter(images: torch.Tensor, masks: torch.Tensor, num_classes: int, cfg: SegmenterConfig,
                    device: torch.device, progress: bool = True,
                    on_checkpoint: CheckpointCallback | None = None) -> tuple[nn.Module, list[float]]:
    """images uint8 [N,3,H,W], masks uint8 [N,H,W] (255 = ignore) -> trained model, mean loss per checkpoint.

    on_checkpoint(k, model, loss), k counted from 1, runs after each epoch (or each of
    `cfg.checkpoints` when the config counts steps); the numbers it returns (e.g. validation
    mIoU) are shown on the progress bar.
    """
    if len(images) < 2:  # BatchNorm needs two samples a batch
        raise DatasetGANError(f"a training set of {len(images)} image(s) is too small: use larger sets or drop less")
    batch = min(cfg.batch_size, len(images))
    steps, points = schedule_points(len(images), cfg.model_copy(update={"batch_size": batch}))
    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # seeds initialisation and dropout alike
        torch.manual_seed(cfg.seed)
        model = build_segmenter(cfg.architecture, num_classes, cfg.pretrained).to(device)
        model = model.to(memory_format=torch.channels_last)  # ~20 % faster convolutions on a CPU, the same maths
        optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        rng = torch.Generator().manual_seed(cfg.seed)
        history, losses, shown = [], [], {}
        bar = progress_bar(batch_order(len(images), batch, steps, rng), show=progress,
                           desc=f"segmenter {cfg.architecture}", unit="step")
        for step, index in enumerate(bar, 1):
            losses.append(train_step(model, images[index], masks[index], cfg, optimizer, rng, device))
            schedule.step()
            if step in points:
                history.append(sum(losses) / max(1, len(losses)))
                losses, shown = [], {"loss": history[-1]}
                if on_checkpoint is not None:
                    shown.update(on_checkpoint(len(history), model, history[-1]) or {})
                    model.train()
                bar.set_postfix_str(" ".join(f"{k} {v:.4f}" for k, v in shown.items()))
    return model.eval(), history


def train_step(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, cfg: SegmenterConfig,
               optimizer: torch.optim.Optimizer, rng: torch.Generator, device: torch.device) -> float:
    """One augmented batch -> its loss (0 when it holds no labelled pixel: nothing to learn)."""
    model.train()
    x, y = augment(images, masks.long(), cfg, rng)
    if bool((y == IGNORE).all()):  # pseudo-labels may leave whole images out: the loss would be NaN
        return 0.0
    x = normalize(x.to(device)).contiguous(memory_format=torch.channels_last)
    loss = F.cross_entropy(model(x), y.to(device), ignore_index=IGNORE)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.item()


@torch.no_grad()
def predict(model: nn.Module, images: torch.Tensor, device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """uint8 [N,3,H,W] -> uint8 class ids [N,H,W]."""
    model.eval()
    out = [model(normalize(images[i : i + batch_size].to(device))).argmax(1).to(torch.uint8).cpu()
           for i in range(0, len(images), batch_size)]
    return torch.cat(out)


def evaluate(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, num_classes: int,
             device: torch.device, batch_size: int = 64) -> SegmentationScores:
    meter = ConfusionMeter(num_classes)
    for i in range(0, len(images), batch_size):
        meter.update(predict(model, images[i : i + batch_size], device, batch_size), masks[i : i + batch_size])
    return meter.scores()


def save_segmenter(model: nn.Module, path: str | Path, architecture: str, class_names: list[str],
                   extra: dict | None = None, half: bool = False) -> None:
    """safetensors weights; architecture and classes in the metadata. `half` halves the file."""
    tensors = {k: (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in model.state_dict().items()}
    meta = {"format": "datasetgan.segmenter", "architecture": architecture,
            "classes": json.dumps(class_names), "extra": json.dumps(extra or {})}
    save_tensors(path, tensors, meta)


def read_segmenter_info(path: str | Path) -> dict:
    """A checkpoint's 'architecture', 'classes' and 'extra', read from its header without the weights."""
    try:
        with safe_open(str(path), "pt") as handle:
            meta = handle.metadata() or {}
    except (OSError, SafetensorError) as exc:
        raise DatasetGANError(f"{path}: not a datasetgan segmenter checkpoint ({exc})") from exc
    if meta.get("format") != "datasetgan.segmenter":
        found = meta.get("format", "no format in its metadata")
        raise DatasetGANError(f"{path}: not a datasetgan segmenter checkpoint ({found})")
    try:
        return {"architecture": meta["architecture"], "classes": json.loads(meta["classes"]),
                "extra": json.loads(meta.get("extra", "{}"))}
    except (KeyError, ValueError) as exc:
        raise DatasetGANError(f"{path}: damaged segmenter metadata ({exc})") from exc


def load_segmenter(path: str | Path, device: torch.device) -> tuple[nn.Module, dict]:
    """-> (model in eval mode, metadata with 'architecture', 'classes' and 'extra')."""
    info = read_segmenter_info(path)
    model = build_segmenter(info["architecture"], len(info["classes"]))
    dtypes = {k: v.dtype for k, v in model.state_dict().items()}
    try:
        tensors = load_file(str(path))
        model.load_state_dict({k: v.to(dtypes[k]) for k, v in tensors.items()})
    except (OSError, SafetensorError, KeyError, RuntimeError) as exc:
        raise DatasetGANError(f"{path}: weights do not fit a {info['architecture']} segmenter ({exc})") from exc
    return model.to(device).eval(), info
