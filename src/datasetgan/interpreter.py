"""The style interpreter: an ensemble of pixel MLPs that reads the generator's feature pyramid.

Each member is Linear -> ReLU -> BatchNorm1d -> Linear -> ReLU -> BatchNorm1d -> Linear over a
pixel's hypercolumn. The M members train in parallel as one batched module (weights
`[M, in, out]`, per-member BatchNorm statistics, the sum of per-member losses), each with its
own initialisation, its own pixel order and its own stopping point: the same weights as M
independent trainings. Training pixels are gathered on demand from the native-resolution
pyramid; inference projects coarse levels at native resolution before upsampling them
(`_Plan.first_layer`) and folds the BatchNorms into the layers after them (`_FoldedHead`).
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
from safetensors.torch import load_file
from torch import Tensor, nn

from datasetgan.device import resolve_device
from datasetgan.errors import DatasetGANError
from datasetgan.features import (
    Pyramid,
    bilinear_taps,
    feature_channels,
    gather,
    merge_levels,
    resize,
    rows,
)
from datasetgan.fileio import save_tensors
from datasetgan.labels import check_class_ids
from datasetgan.progress import progress_bar
from datasetgan.uncertainty import image_scores, mutual_information, vote

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "interpreter.safetensors"
FORMAT = "datasetgan.style_interpreter/1"

_INIT, _SHUFFLE = 0, 1  # random streams of a member
_EPS = 1e-5  # BatchNorm's
# First-layer channels per group of members at inference: GEMMs wide enough to be efficient,
# while the coarse levels' projections, which every band reads, stay small (40 MiB at 256 px).
_GROUP_CHANNELS = 512


class InterpreterConfig(BaseModel):
    """Hyperparameters of the style interpreter; defaults are the paper's."""

    model_config = ConfigDict(extra="forbid")

    num_classes: int = Field(ge=2, le=255)  # masks are uint8 with 255 free for "ignore"
    members: int = Field(10, ge=1)
    hidden: tuple[int, int] | None = None  # None: (128, 32) below 32 classes, else (256, 128)
    lr: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=2)  # BatchNorm needs two pixels
    min_epochs: int = Field(4, ge=0)  # the stopping rule starts at this epoch
    # ... and not before this many steps: small images give short epochs (1,024 batches at 64 px
    # against ~62k at 512 px), so epochs alone under-train them; 0: epochs only (the paper's rule).
    # Training runs past max_epochs if needed to reach it.
    min_steps: int = Field(0, ge=0)
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

    def after(self, norm: "_BatchNorm") -> tuple[Tensor, Tensor]:
        """Weight and bias of this layer with the eval-mode `norm` before it folded in:
        (x * scale + shift) @ W + b = x @ (scale W) + (shift @ W + b)."""
        scale, shift = norm.affine()
        return self.weight * scale[:, :, None], torch.baddbmm(self.bias, shift[:, None], self.weight)


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
            eps=_EPS,
        )
        return y.view(b, m, f).transpose(0, 1)

    def affine(self) -> tuple[Tensor, Tensor]:
        """Eval mode as x * scale + shift, `[M, F]` each: (x - mean) / sqrt(var + eps) * w + b."""
        scale = self.weight * torch.rsqrt(self.running_var + _EPS)
        return scale, self.bias - self.running_mean * scale


class _FoldedHead(NamedTuple):
    """`_Ensemble.head` in eval mode with each BatchNorm folded into the Linear after it.

    The same function (eval-mode BatchNorm is affine), without two passes over the pixels.
    The weights are stored transposed: the layers run feature-major, W^T @ X^T.
    """

    w2: Tensor  # [M, h2, h1]
    b2: Tensor  # [M, h2, 1]
    w3: Tensor  # [M, C, h2]
    b3: Tensor  # [M, C, 1]

    def probs(self, hidden: Tensor, members: slice) -> Tensor:
        """Softmax `[m, C, P]` from the first layer's rows `[P, m * h1]` (overwritten: ReLU in place).

        Feature-major, the logits come out class-major: each class is a contiguous map, as in
        the result, and the rows of `hidden` are read as they are, transposed in BLAS.
        """
        w2 = self.w2[members]
        x = hidden.relu_().view(len(hidden), len(w2), -1).permute(1, 2, 0)  # [m, h1, P], a view
        x = torch.baddbmm(self.b2[members], w2, x).relu_()  # [m, h2, P]
        return torch.baddbmm(self.b3[members], self.w3[members], x).softmax(1)


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

    def folded(self) -> _FoldedHead:
        """The head for inference: eval-mode statistics only, never for training."""
        folded = (*self.fc2.after(self.bn1), *self.fc3.after(self.bn2))
        return _FoldedHead(*(t.transpose(1, 2) for t in folded))


class _StoppingRule:
    """The paper's rule, per member: from epoch `min_epochs` (and step `min_steps`), stop once the
    batch loss has not reached a new minimum for `patience` batches."""

    def __init__(self, members: int, min_epochs: int, patience: int, min_steps: int = 0):
        self.min_epochs, self.patience, self.min_steps = min_epochs, patience, min_steps
        self.best = [math.inf] * members
        self.since_best = [0] * members
        self.stopped_at: list[int | None] = [None] * members

    def active(self) -> list[int]:
        return [m for m, stop in enumerate(self.stopped_at) if stop is None]

    def update(self, epoch: int, step: int, losses: list[float]) -> list[int]:
        """Record one batch; return the members that stop now."""
        if epoch < self.min_epochs or step <= self.min_steps:
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

    kind = "interpreter"  # what a generated dataset records as its labeller

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

    @property
    def uncertainty_scale(self) -> float:
        """The largest mutual information M members can reach over C classes: ln(min(M, C))."""
        return math.log(min(self.config.members, self.config.num_classes))

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
        rule = _StoppingRule(cfg.members, cfg.min_epochs, cfg.patience, cfg.min_steps)
        shufflers = [_member_generator(cfg.seed, m, _SHUFFLE) for m in range(cfg.members)]
        stopped: dict[int, dict[str, Tensor]] = {}  # a stopped member's weights, kept aside
        epoch_losses, steps = [], 0
        with progress_bar(show=progress, desc="style interpreter", unit="batch") as bar:
            epoch = 0
            while epoch < cfg.max_epochs or steps < cfg.min_steps:
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
                epoch += 1
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
    def predict_probs(self, pyramid: Pyramid, size: int | None = None, chunk_elements: int = 2**20) -> Tensor:
        """Probabilities `[M, N, C, S, S]` at feature resolution `size`, factorised.

        Work is cut, image by image, into groups of members (`_GROUP_CHANNELS`) and bands of
        pixels, so that the first layer's output holds about `chunk_elements` values at a time:
        blocks that stay in cache and that the allocator reuses, where whole maps do neither.
        Each image is laid out once (`_Plan`) and the folded head is built once per call.
        """
        size = self._size(size)
        levels = self._prepare(pyramid)
        self.eval()
        cfg, h1 = self.config, self.config.hidden[0]
        group = max(1, min(cfg.members, _GROUP_CHANNELS // h1))
        band = max(1, chunk_elements // (group * h1))
        head = self.ensemble.folded()
        # fc1 as one [D, M * h1] matrix, member-major columns: a group of members is a view
        kernel = self.ensemble.fc1.weight.permute(1, 0, 2).flatten(1)
        bias = self.ensemble.fc1.bias.flatten()
        probs = torch.empty(cfg.members, levels[0].shape[0], cfg.num_classes, size, size, device=self.device)
        for i in range(probs.shape[1]):
            plan = _Plan.of([level[i : i + 1] for level in levels], size)
            out = probs[:, i].flatten(2)  # [M, C, S * S], a view
            for m in range(0, cfg.members, group):
                members, columns = slice(m, m + group), slice(m * h1, (m + group) * h1)
                first_layer = plan.first_layer(kernel[:, columns], bias[columns])
                for start in range(0, size * size, band):
                    pixels = slice(start, start + band)
                    out[members, :, pixels] = head.probs(first_layer(pixels), members)
        return probs

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
        check_class_ids(masks, cfg.num_classes, "masks", cfg.ignore_index, hint=": check num_classes or the masks")
        return masks

    # ---- persistence ----

    def save(self, directory: str | Path) -> None:
        """Weights (with BatchNorm statistics) as safetensors and `config.json`; no pickle."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        tensors = {name: t.detach().cpu().contiguous() for name, t in self.state_dict().items()}
        save_tensors(directory / WEIGHTS_FILE, tensors, {"format": FORMAT})
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


class _Plan(NamedTuple):
    """One image laid out for the factorised first layer (`first_layer`): built once, read by
    every group of members."""

    fine: list[tuple[slice, Tensor]]  # fc1 input channels, float32 rows [S * S, C] of levels at S x S
    coarse: list[tuple[slice, Tensor]]  # the same for coarser levels, native rows [h * w, C]
    # per pixel, rows in the coarse levels stacked and weights, [S * S, 4 per level]; None without coarse levels
    taps: tuple[Tensor, Tensor] | None

    @classmethod
    def of(cls, levels: Pyramid, size: int) -> "_Plan":
        """Float32 rows of every level of a one-image pyramid, and each pixel's taps in the coarse ones.

        Levels with more pixels than S x S are resized to S as in the naive path (the same op,
        the same numbers); the others stay native, read in place where their layout allows.
        """
        pixels = torch.arange(size * size, device=levels[0].device)
        images, ys, xs = torch.zeros_like(pixels), pixels // size, pixels % size
        fine, coarse, indices, weights = [], [], [], []
        start = stacked = 0
        for level in levels:
            channels = slice(start, start + level.shape[1])
            start = channels.stop
            if level.shape[-2] * level.shape[-1] > size * size:
                level = resize(level, size)
            if level.shape[-2:] == (size, size):
                fine.append((channels, rows(level).float()))
                continue
            coarse.append((channels, rows(level).float()))
            level_indices, level_weights = bilinear_taps(images, ys, xs, level.shape[-2:], size)
            indices.append(level_indices + stacked)
            weights.append(level_weights)
            stacked += len(coarse[-1][1])
        taps = (torch.cat(indices, dim=1), torch.cat(weights, dim=1)) if coarse else None
        return cls(fine, coarse, taps)

    def first_layer(self, kernel: Tensor, bias: Tensor) -> Callable[[slice], Tensor]:
        """fc1 `[D, K]` of a group of members, as a function from a band of pixels to its rows
        `[B, K]`, bias included.

        Linear(resize(F)) == sum over levels of resize(Linear_l(F_l)) + bias, because resizing
        is linear per channel with weights that sum to one. So coarse levels are projected to
        K channels at native resolution, once per group; a band reads its pixels' 4 bilinear
        taps per level from them as one embedding bag, and adds the levels at S in place.
        """
        projected = self._project(kernel, bias) if self.taps is not None else None

        def band(pixels: slice) -> Tensor:
            total = None
            if projected is not None:
                indices, weights = (t[pixels] for t in self.taps)
                total = F.embedding_bag(indices, projected, per_sample_weights=weights, mode="sum")
            for channels, values in self.fine:
                if total is None:
                    total = torch.addmm(bias, values[pixels], kernel[channels])
                else:
                    total.addmm_(values[pixels], kernel[channels])
            return total

        return band

    def _project(self, kernel: Tensor, bias: Tensor) -> Tensor:
        """The coarse levels' share of fc1 at native resolution, stacked: `[sum of h * w, K]`.

        The bias goes on the first coarse level only: every pixel's tap weights on it sum to
        one, so it arrives exactly once.
        """
        out = torch.empty(sum(len(values) for _, values in self.coarse), len(bias), device=bias.device)
        start = 0
        for index, (channels, values) in enumerate(self.coarse):
            part = out[start : start + len(values)]
            if index == 0:
                torch.addmm(bias, values, kernel[channels], out=part)
            else:
                torch.mm(values, kernel[channels], out=part)
            start += len(values)
        return out



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
