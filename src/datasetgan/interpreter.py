"""The style interpreter: an ensemble of pixel MLPs that reads the generator's feature pyramid.

Each member is Linear -> ReLU -> BatchNorm1d -> Linear -> ReLU -> BatchNorm1d -> Linear over a
pixel's hypercolumn. The M members train in parallel as one batched module (weights
`[M, in, out]`, per-member BatchNorm statistics, the sum of per-member losses), each with its
own initialisation, its own pixel order and its own stopping point: the same weights as M
independent trainings. Training pixels are gathered on demand from the native-resolution
pyramid; inference runs the first layer per level at native resolution (`_first_layer`).
"""

import json
import math
from collections.abc import Callable, Iterator
from itertools import accumulate
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm.auto import tqdm

from datasetgan.device import resolve_device
from datasetgan.errors import DatasetGANError
from datasetgan.features import Pyramid, feature_channels, gather, merge_levels, resize
from datasetgan.uncertainty import image_scores, mutual_information, vote

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "interpreter.safetensors"
FORMAT = "datasetgan.style_interpreter/1"

_INIT, _SHUFFLE = 0, 1  # random streams of a member


class InterpreterConfig(BaseModel):
    """Hyperparameters of the style interpreter; defaults are the paper's."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(ge=2, le=255)  # masks are uint8 with 255 free for "ignore"
    members: int = Field(10, ge=1)
    hidden: tuple[int, int] | None = None  # None: (128, 32) below 32 classes, else (256, 128)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=2)  # BatchNorm needs two pixels
    min_epochs: int = Field(4, ge=0)  # the stopping rule starts at this epoch
    patience: int = Field(50, ge=1)  # batches without a new minimum of the loss
    max_epochs: int = Field(100, ge=1)  # safety cap
    seed: int = Field(0, ge=0)
    feature_resolution: int | None = Field(None, ge=1)  # None: taken from the masks
    ignore_index: int = 255

    @model_validator(mode="after")
    def _derive(self) -> "InterpreterConfig":
        if self.hidden is None:
            self.hidden = (128, 32) if self.num_classes < 32 else (256, 128)
        if min(self.hidden) < 1:
            raise ValueError(f"hidden sizes must be positive, got {self.hidden}")
        if self.min_epochs > self.max_epochs:
            raise ValueError(f"min_epochs {self.min_epochs} exceeds max_epochs {self.max_epochs}")
        if 0 <= self.ignore_index < self.num_classes:
            raise ValueError(f"ignore_index {self.ignore_index} is also a class index")
        return self


class TrainingHistory(BaseModel):
    """What a training did, for reports."""

    epoch_losses: list[float]  # mean batch loss of the members still training, per epoch
    batches: int  # optimisation steps run
    member_batches: list[int]  # steps after which each member stopped
    pixels: int  # labelled pixels per epoch


class _Annotations(NamedTuple):
    """Training data: the pyramid at native resolution and the labelled pixels."""

    levels: Pyramid  # merged, channels-last, on the interpreter's device
    targets: Tensor  # [N * S * S] class per pixel, flattened masks
    pixels: Tensor  # flat indices of the labelled pixels
    size: int  # feature resolution S


class Labels(NamedTuple):
    """The interpreter's output for a batch of generated images."""

    mask: Tensor  # [N, H, W] uint8: majority vote of the members
    uncertainty: Tensor  # [N, H, W] float32: mutual information between members
    scores: Tensor  # [N]: mean of the 10 % most uncertain pixels


def _member_generator(seed: int, member: int, stream: int) -> torch.Generator:
    """An independent random stream per (seed, member, purpose); no two members share one."""
    state = np.random.SeedSequence([seed, member, stream]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


class _Linear(nn.Module):
    """M linear layers applied to M batches at once: `[M, B, in] -> [M, B, out]`."""

    def __init__(self, members: int, in_features: int, out_features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(members, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(members, 1, out_features))

    def forward(self, x: Tensor, members: slice = slice(None)) -> Tensor:
        return torch.baddbmm(self.bias[members], x, self.weight[members])


class _BatchNorm(nn.Module):
    """M BatchNorm1d layers, each with its own affine parameters and running statistics."""

    def __init__(self, members: int, features: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, features))
        self.bias = nn.Parameter(torch.zeros(members, features))
        self.register_buffer("running_mean", torch.zeros(members, features))
        self.register_buffer("running_var", torch.ones(members, features))

    def forward(self, x: Tensor, members: slice = slice(None)) -> Tensor:
        # (member, feature) pairs as the channels of one batch norm: statistics stay per member.
        m, b, f = x.shape
        y = F.batch_norm(
            x.transpose(0, 1).reshape(b, m * f),
            self.running_mean[members].view(-1),
            self.running_var[members].view(-1),
            self.weight[members].reshape(-1),
            self.bias[members].reshape(-1),
            training=self.training,
        )
        return y.view(b, m, f).transpose(0, 1)


class _Ensemble(nn.Module):
    """The M pixel MLPs, batched."""

    def __init__(self, members: int, dims: tuple[int, int, int, int]):
        super().__init__()
        features, h1, h2, classes = dims
        self.fc1, self.bn1 = _Linear(members, features, h1), _BatchNorm(members, h1)
        self.fc2, self.bn2 = _Linear(members, h1, h2), _BatchNorm(members, h2)
        self.fc3 = _Linear(members, h2, classes)

    def initialise(self, seed: int) -> None:
        """Linear weights N(0, 0.02) as in the paper, each member from its own stream."""
        with torch.no_grad():
            for m in range(self.fc1.weight.shape[0]):
                generator = _member_generator(seed, m, _INIT)
                for layer in (self.fc1, self.fc2, self.fc3):
                    layer.weight[m].normal_(0.0, 0.02, generator=generator)

    def head(self, h: Tensor, members: slice = slice(None)) -> Tensor:
        """Everything after the first linear layer, on its output `[M, B, h1]`."""
        h = self.bn1(F.relu(h), members)
        h = self.bn2(F.relu(self.fc2(h, members)), members)
        return self.fc3(h, members)

    def forward(self, x: Tensor, members: slice = slice(None)) -> Tensor:
        return self.head(self.fc1(x, members), members)


class _StoppingRule:
    """The paper's rule, per member: from epoch `min_epochs`, stop once the batch loss has
    not reached a new minimum for `patience` batches."""

    def __init__(self, members: int, min_epochs: int, patience: int):
        self.min_epochs, self.patience = min_epochs, patience
        self.best = [math.inf] * members
        self.since_best = [0] * members
        self.stopped_at: list[int | None] = [None] * members

    def active(self) -> list[int]:
        return [m for m, stop in enumerate(self.stopped_at) if stop is None]

    def update(self, epoch: int, step: int, losses: list[float]) -> list[int]:
        """Record one batch; return the members that stop now."""
        if epoch < self.min_epochs:
            return []
        stopping = []
        for m in self.active():
            if losses[m] < self.best[m]:
                self.best[m], self.since_best[m] = losses[m], 0
            else:
                self.since_best[m] += 1
            if self.since_best[m] >= self.patience:
                self.stopped_at[m] = step
                stopping.append(m)
        return stopping


class StyleInterpreter(nn.Module):
    """Ensemble of pixel MLPs mapping a feature pyramid to per-pixel class probabilities."""

    def __init__(self, config: InterpreterConfig, level_channels: list[int]):
        super().__init__()
        self.config = config
        self.level_channels = [int(c) for c in level_channels]
        h1, h2 = config.hidden
        dims = (sum(self.level_channels), h1, h2, config.num_classes)
        self.ensemble = _Ensemble(config.members, dims)
        self.ensemble.initialise(config.seed)

    @property
    def device(self) -> torch.device:
        return self.ensemble.fc1.weight.device

    # ---- training ----

    def fit(self, pyramid: Pyramid, masks: Tensor, progress: bool = True) -> TrainingHistory:
        """Train on annotated images: `pyramid` levels `[N, C_l, H_l, W_l]`, `masks` `[N, S, S]`.

        Masks hold class indices at the feature resolution S, `ignore_index` where unlabelled.
        The pyramid is kept at native resolution in its own dtype (pass it in half precision
        to halve its memory); hypercolumns are gathered per batch, never stored.
        """
        data = self._annotations(pyramid, masks)
        self.config = self.config.model_copy(update={"feature_resolution": data.size})
        optimizer = torch.optim.Adam(self.parameters(), lr=self.config.lr)
        self.train()
        try:
            return self._train_loop(
                lambda batch: self._step(data, batch, optimizer), len(data.pixels), progress
            )
        finally:
            self.eval()

    def _annotations(self, pyramid: Pyramid, masks: Tensor) -> _Annotations:
        masks = self._check_masks(pyramid, masks)
        targets = masks.to(self.device).flatten()
        pixels = (targets != self.config.ignore_index).nonzero().squeeze(1)
        if len(pixels) < 2:
            raise DatasetGANError("the masks label fewer than 2 pixels: paint some classes first")
        # channels-last: the channels of a gathered pixel are contiguous in memory
        levels = [level.contiguous(memory_format=torch.channels_last) for level in self._prepare(pyramid)]
        return _Annotations(levels, targets, pixels, masks.shape[-1])

    def _step(self, data: _Annotations, batch: Tensor, optimizer: torch.optim.Optimizer) -> Tensor:
        """One Adam step of every member on its own batch; `batch` `[M, B]` indexes `data.pixels`."""
        where = data.pixels[batch].flatten()
        size = data.size
        images, ys, xs = where // (size * size), where // size % size, where % size
        features = gather(data.levels, ys, xs, size, images).view(*batch.shape, -1)
        logits = self.ensemble(features)
        losses = F.cross_entropy(logits.flatten(0, 1), data.targets[where], reduction="none")
        losses = losses.view(batch.shape).mean(1)
        optimizer.zero_grad(set_to_none=True)
        losses.sum().backward()  # members share no weights: each gets exactly its own gradient
        optimizer.step()
        return losses.detach()

    def _train_loop(
        self, step: Callable[[Tensor], Tensor], num_pixels: int, progress: bool
    ) -> TrainingHistory:
        cfg = self.config
        rule = _StoppingRule(cfg.members, cfg.min_epochs, cfg.patience)
        shufflers = [_member_generator(cfg.seed, m, _SHUFFLE) for m in range(cfg.members)]
        stopped: dict[int, dict[str, Tensor]] = {}  # a stopped member's weights, kept aside
        epoch_losses, steps = [], 0
        with tqdm(desc="style interpreter", unit="batch", disable=not progress) as bar:
            for epoch in range(cfg.max_epochs):
                bar.set_description_str(f"style interpreter, epoch {epoch}")
                total, count = 0.0, 0
                for batch in self._batches(shufflers, num_pixels):
                    active = rule.active()
                    losses = step(batch).tolist()
                    steps += 1
                    total, count = total + sum(losses[m] for m in active), count + len(active)
                    for m in rule.update(epoch, steps, losses):
                        stopped[m] = self._member_state(m)
                    bar.update()
                    if steps % 20 == 0:
                        bar.set_postfix(
                            loss=f"{total / count:.4f}", training=f"{len(rule.active())}/{cfg.members}"
                        )
                    if not rule.active():
                        break
                epoch_losses.append(total / count)
                if not rule.active():
                    break
        # Stopped members kept training with the others (harmless: nothing is shared); restore
        # the weights they had when they stopped.
        for m, state in stopped.items():
            self._set_member_state(m, state)
        member_batches = [steps if s is None else s for s in rule.stopped_at]
        return TrainingHistory(
            epoch_losses=epoch_losses, batches=steps, member_batches=member_batches, pixels=num_pixels
        )

    def _batches(self, shufflers: list[torch.Generator], num_pixels: int) -> Iterator[Tensor]:
        """One epoch of `[M, B]` pixel indices: each member its own uniform shuffle."""
        order = torch.stack([torch.randperm(num_pixels, generator=g) for g in shufflers])
        order = order.to(self.device)
        # A final batch of a single pixel is skipped: BatchNorm is undefined on it.
        for start in range(0, num_pixels - 1, self.config.batch_size):
            yield order[:, start : start + self.config.batch_size]

    def _member_state(self, m: int) -> dict[str, Tensor]:
        return {name: t[m].clone() for name, t in self.ensemble.state_dict().items()}

    def _set_member_state(self, m: int, state: dict[str, Tensor]) -> None:
        with torch.no_grad():
            for name, t in self.ensemble.state_dict().items():
                t[m].copy_(state[name])

    # ---- inference ----

    @torch.no_grad()
    def predict_probs(self, pyramid: Pyramid, size: int | None = None, chunk_elements: int = 2**25) -> Tensor:
        """Members' softmax `[M, N, C, S, S]` at feature resolution `size`, factorised.

        Work is cut into groups of images and members so that the first layer's upsampled
        output stays below about `chunk_elements` values.
        """
        size = self._size(size)
        levels = self._prepare(pyramid)
        self.eval()
        cfg, n = self.config, levels[0].shape[0]
        per_member = cfg.hidden[0] * size * size
        members_per_chunk = max(1, min(cfg.members, chunk_elements // per_member))
        images_per_chunk = max(1, chunk_elements // (members_per_chunk * per_member))
        probs = torch.empty(cfg.members, n, cfg.num_classes, size, size, device=self.device)
        for i in range(0, n, images_per_chunk):
            part = [level[i : i + images_per_chunk] for level in levels]
            for m in range(0, cfg.members, members_per_chunk):
                members = slice(m, m + members_per_chunk)
                hidden = self._first_layer(part, size, members)
                probs[members, i : i + images_per_chunk] = self._rest(hidden, members)
        return probs

    def _first_layer(self, levels: Pyramid, size: int, members: slice) -> Tensor:
        """First linear layer of `members` for every pixel, `[n, m * h1, S, S]`, bias included.

        Linear(resize(F)) == sum over levels of resize(Linear_l(F_l)) + bias, because resizing
        is linear per channel with weights that sum to one; so each level is projected to h1
        channels where it has fewer pixels (natively, or after resizing when it is larger than
        S) and only h1 channels are upsampled. For the same reason the bias can ride on the
        coarsest level, where adding it is cheapest.
        """
        weights = self.ensemble.fc1.weight[members].split(feature_channels(levels), dim=1)
        bias = self.ensemble.fc1.bias[members].reshape(-1)
        total = None
        for index, (level, weight) in enumerate(zip(levels, weights, strict=True)):
            kernel = weight.permute(1, 0, 2).flatten(1)  # [C_l, m * h1]
            if level.shape[-2] * level.shape[-1] > size * size:
                out = _project(resize(level, size), kernel, bias if index == 0 else None)
            else:
                out = resize(_project(level.float(), kernel, bias if index == 0 else None), size)
            total = out if total is None else total.add_(out)
        return total

    def _rest(self, hidden: Tensor, members: slice) -> Tensor:
        """From the first layer's maps `[n, m * h1, S, S]` to softmax `[m, n, C, S, S]`."""
        n, channels, h, w = hidden.shape
        m = channels // self.config.hidden[0]
        pixels = hidden.permute(0, 2, 3, 1).reshape(n * h * w, m, -1).transpose(0, 1)
        return _maps(self.ensemble.head(pixels, members).softmax(-1), n, h, w)

    @torch.no_grad()
    def predict_probs_naive(self, pyramid: Pyramid, size: int | None = None) -> Tensor:
        """Same as `predict_probs`, through materialised hypercolumns: the reference path."""
        size = self._size(size)
        levels = self._prepare(pyramid)
        self.eval()
        n, m = levels[0].shape[0], self.config.members
        columns = torch.cat([resize(level, size) for level in levels], dim=1)
        pixels = columns.permute(0, 2, 3, 1).reshape(1, n * size * size, -1).expand(m, -1, -1)
        return _maps(self.ensemble(pixels).softmax(-1), n, size, size)

    def label(self, pyramid: Pyramid, size: int | None = None, top_fraction: float = 0.1) -> Labels:
        """Vote mask, mutual-information map and image score for each image of `pyramid`."""
        size, cfg = self._size(size), self.config
        step = max(1, 2**25 // (cfg.members * cfg.num_classes * size * size))  # bounds [M, n, C, S, S]
        results = []
        for i in range(0, pyramid[0].shape[0], step):
            probs = self.predict_probs([level[i : i + step] for level in pyramid], size)
            uncertainty = mutual_information(probs)
            results.append(
                (vote(probs).to(torch.uint8), uncertainty, image_scores(uncertainty, top_fraction))
            )
        mask, uncertainty, scores = (torch.cat(parts) for parts in zip(*results, strict=True))
        return Labels(mask, uncertainty, scores)

    # ---- checks ----

    def _size(self, size: int | None) -> int:
        size = size or self.config.feature_resolution
        if size is None:
            raise DatasetGANError("no feature resolution: train the interpreter first or pass `size`")
        return size

    def _prepare(self, pyramid: Pyramid) -> Pyramid:
        """Check the pyramid against the one trained on; merge equal resolutions; move it."""
        channels = feature_channels(pyramid)
        if not self._fits(channels):
            raise DatasetGANError(
                f"the style interpreter expects a feature pyramid with channels {self.level_channels} "
                f"(D={sum(self.level_channels)}), but got {channels} (D={sum(channels)}): "
                "use the generator it was trained with, or train it again for this generator"
            )
        if any(level.dim() != 4 or level.shape[0] != pyramid[0].shape[0] for level in pyramid):
            raise DatasetGANError("pyramid levels must all be [N, C, H, W] with the same N")
        return [level.to(self.device) for level in merge_levels(pyramid)]

    def _fits(self, channels: list[int]) -> bool:
        """The trained levels, or the same with neighbouring levels already merged."""
        boundaries = set(accumulate(self.level_channels))
        given = list(accumulate(channels))
        return bool(given) and given[-1] == sum(self.level_channels) and set(given) <= boundaries

    def _check_masks(self, pyramid: Pyramid, masks: Tensor) -> Tensor:
        cfg = self.config
        if masks.dim() != 3 or masks.shape[-1] != masks.shape[-2]:
            raise DatasetGANError(f"masks must be [N, S, S] index maps, got shape {list(masks.shape)}")
        if masks.shape[0] != pyramid[0].shape[0]:
            raise DatasetGANError(
                f"{masks.shape[0]} masks for {pyramid[0].shape[0]} images: give one mask per image"
            )
        size = masks.shape[-1]
        if cfg.feature_resolution not in (None, size):
            raise DatasetGANError(
                f"masks are {size}x{size} but feature_resolution is {cfg.feature_resolution}: "
                "resize the masks (nearest) or change feature_resolution"
            )
        masks = masks.long()
        bad = masks[(masks < 0) | ((masks >= cfg.num_classes) & (masks != cfg.ignore_index))].unique()
        if len(bad):
            raise DatasetGANError(
                f"masks contain labels {bad.tolist()[:10]} outside 0..{cfg.num_classes - 1} "
                f"(and {cfg.ignore_index} = unlabelled): check num_classes or the masks"
            )
        return masks

    # ---- persistence ----

    def save(self, directory: str | Path) -> None:
        """Weights (with BatchNorm statistics) as safetensors and `config.json`; no pickle."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        save_file(tensors, str(directory / WEIGHTS_FILE), metadata={"format": FORMAT})
        meta = {"format": FORMAT, "config": self.config.model_dump(), "level_channels": self.level_channels}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(
        cls, directory: str | Path, device: str | torch.device = "auto", num_classes: int | None = None
    ) -> "StyleInterpreter":
        """Read what `save` wrote; `num_classes`, when given, must match the trained one."""
        directory = Path(directory)
        config, level_channels = _read_config(directory / CONFIG_FILE)
        if num_classes is not None and num_classes != config.num_classes:
            raise DatasetGANError(
                f"the interpreter in {directory} was trained for {config.num_classes} classes, "
                f"not {num_classes}: train it again with the current classes"
            )
        interpreter = cls(config, level_channels)
        weights = directory / WEIGHTS_FILE
        if not weights.is_file():
            raise DatasetGANError(f"{weights} is missing: save the interpreter again (datasetgan train)")
        try:
            interpreter.load_state_dict(load_file(str(weights)))
        except (RuntimeError, SafetensorError) as exc:
            raise DatasetGANError(
                f"{weights} does not match {CONFIG_FILE} ({exc}): save the interpreter again"
            ) from exc
        return interpreter.to(resolve_device(device)).eval()


def _project(level: Tensor, kernel: Tensor, bias: Tensor | None) -> Tensor:
    """A 1x1 convolution `[n, C, h, w] -> [n, K, h, w]` as one matmul over the channels-last
    view (PyTorch's CPU conv takes a slow path for this shape); the result is channels-last."""
    pixels = level.contiguous(memory_format=torch.channels_last).permute(0, 2, 3, 1)  # a view
    out = pixels @ kernel if bias is None else torch.addmm(bias, pixels.reshape(-1, kernel.shape[0]), kernel)
    return out.reshape(*pixels.shape[:3], -1).permute(0, 3, 1, 2)


def _maps(probs: Tensor, n: int, h: int, w: int) -> Tensor:
    """Per-pixel rows `[m, n * h * w, C]` back to maps `[m, n, C, h, w]`."""
    return probs.view(probs.shape[0], n, h, w, -1).permute(0, 1, 4, 2, 3)


def _read_config(path: Path) -> tuple[InterpreterConfig, list[int]]:
    if not path.is_file():
        raise DatasetGANError(f"{path} is missing: point to the folder the interpreter was saved in")
    try:
        meta = json.loads(path.read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT!r}")
        return InterpreterConfig.model_validate(meta["config"]), [int(c) for c in meta["level_channels"]]
    except (ValueError, KeyError, TypeError, ValidationError) as exc:
        raise DatasetGANError(
            f"{path} is not a style interpreter config ({exc}): save the interpreter again"
        ) from exc
