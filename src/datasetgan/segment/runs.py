"""A segmenter training run on disk, as `datasetgan segment train` writes it.

RUN/config.json       what was trained on what (written before the first epoch)
RUN/log.jsonl         one line per epoch: loss, validation mIoU and pixel accuracy
RUN/epoch-NNN.safetensors   the weights after every epoch (5-fold selection picks among them)
RUN/best.safetensors  a copy of the epoch with the best validation mIoU (the last one without validation)

Every file is written atomically, so a run killed at any moment leaves complete files only.
"""

import json
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from datasetgan.errors import DatasetGANError
from datasetgan.fileio import atomic_write, write_json
from datasetgan.labels import IGNORE
from datasetgan.segment.data import check_same_classes, labelled_names, load_labelled, load_unlabelled
from datasetgan.segment.models import check_architecture
from datasetgan.segment.mean_teacher import MeanTeacherConfig, mean_teacher_training
from datasetgan.segment.self_training import SelfTrainingConfig, check_unlabelled, pseudo_label_self_training
from datasetgan.segment.train import SegmenterConfig, evaluate, save_segmenter, schedule_points, train_segmenter
from datasetgan.labels import LabelClass

BEST = "best.safetensors"
EPOCH_FILE = re.compile(r"epoch-(\d+)\.safetensors")


def epoch_path(run: Path, epoch: int) -> Path:
    return run / f"epoch-{epoch:03d}.safetensors"


def epoch_checkpoints(run: Path) -> list[Path]:
    """A run's epoch checkpoints in epoch order (also past epoch 999)."""
    found = {path: EPOCH_FILE.fullmatch(path.name) for path in run.iterdir()}
    return sorted((path for path, match in found.items() if match), key=lambda path: int(found[path][1]))


@dataclass
class Split:
    """Training and validation images (validation may be empty)."""

    images: torch.Tensor
    masks: torch.Tensor
    val_images: torch.Tensor
    val_masks: torch.Tensor
    val_names: list[str]
    classes: list[LabelClass]


def split_indices(n: int, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded hold-out of round(fraction * n) images (at least one when fraction > 0)."""
    n_val = max(1, round(fraction * n)) if fraction > 0 else 0
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values


def load_split(data: Path, val: Path | None, val_fraction: float | None, seed: int) -> Split:
    """DATA with its validation part: a separate folder (`val`), or a seeded fraction of DATA."""
    if val is not None and val_fraction is not None:
        raise DatasetGANError("give --val DIR or --val-fraction, not both")
    fraction = 0.1 if val_fraction is None else val_fraction
    if not 0 <= fraction < 1:
        raise DatasetGANError(f"--val-fraction must be at least 0 and below 1 (got {fraction})")
    images, masks, classes = load_labelled(data)
    if val is not None:
        val_images, val_masks, val_classes = load_labelled(val)
        check_same_classes(classes, val_classes, str(data), f"the validation set {val}")
        split = Split(images, masks, val_images, val_masks, labelled_names(val), classes)
    else:
        train, held_out = split_indices(len(images), fraction, seed)
        if len(train) == 0:
            raise DatasetGANError(f"{data} holds {len(images)} image(s): too few to hold out a validation part; "
                                  "use --val-fraction 0 or --val DIR")
        names = labelled_names(data)
        split = Split(images[train], masks[train], images[held_out], masks[held_out],
                      [names[i] for i in held_out], classes)
    if len(split.val_masks) and bool((split.val_masks == IGNORE).all()):
        raise DatasetGANError("the validation images hold no labelled pixel (all ignore): nothing to score")
    return split


def check_new_run(run: Path) -> None:
    """Refuse a folder that already holds a run: its checkpoints would mix with the new ones."""
    if run.exists() and not run.is_dir():
        raise DatasetGANError(f"{run} is a file, not a run folder")
    taken = [run / name for name in ("config.json", "log.jsonl", BEST)]
    if any(path.exists() for path in taken) or run.is_dir() and epoch_checkpoints(run):
        raise DatasetGANError(f"{run} already holds a segmenter run: choose a new --out, or delete it first")


class RunRecorder:
    """The per-epoch callback: validate, write the epoch's checkpoint, keep best and log current."""

    def __init__(self, run: Path, split: Split, cfg: SegmenterConfig, device: torch.device):
        self.run, self.split, self.cfg, self.device = run, split, cfg, device
        self.class_names = [c.name for c in split.classes]
        self.log: list[dict] = []
        self.best_rank = -math.inf

    def validate(self, model: nn.Module) -> tuple[float | None, float | None]:
        if len(self.split.val_images) == 0:
            return None, None
        scores = evaluate(model, self.split.val_images, self.split.val_masks, len(self.class_names), self.device)
        return scores.miou, scores.pixel_accuracy

    def __call__(self, epoch: int, model: nn.Module, loss: float) -> dict[str, float]:
        miou, accuracy = self.validate(model)
        rank = epoch if miou is None else miou  # without validation the latest epoch is the best
        best = rank > self.best_rank
        record = {"epoch": epoch, "loss": loss, "val_miou": miou, "val_pixel_accuracy": accuracy, "best": best}
        path = epoch_path(self.run, epoch)
        save_segmenter(model, path, self.cfg.architecture, self.class_names,
                       extra={**record, "resolution": list(self.split.images.shape[-2:]),
                              "config": self.cfg.model_dump()})
        if best:
            self.best_rank = rank
            atomic_write(self.run / BEST, lambda tmp: shutil.copy(path, tmp))  # keeps the mode too
        self.log.append(record)
        atomic_write(self.run / "log.jsonl", lambda tmp: Path(tmp).write_text(
            "".join(json.dumps(r) + "\n" for r in self.log)))
        return {} if miou is None else {"val_mIoU": miou}


SELF_TRAINING_METHODS = ("mean-teacher", "pseudo-labels")


def train_run(data: str | Path, run: str | Path, cfg: SegmenterConfig, device: torch.device,
              val: str | Path | None = None, val_fraction: float | None = None, progress: bool = True,
              unlabelled: str | Path | None = None, self_training: SelfTrainingConfig | None = None,
              method: str = "mean-teacher") -> dict:
    """Train a segmenter into a new run folder -> summary (epochs, best epoch, its validation mIoU).

    With `unlabelled` (a folder of real images), self-training after the plain training: a mean
    teacher with ClassMix fine-tuning the trained segmenter for as many epochs again, or offline
    pseudo-labels (`self_training`) for a fresh student; the run records those epochs. Every
    input is checked before the folder is created, so a mistake writes nothing.
    """
    if method not in SELF_TRAINING_METHODS:
        raise DatasetGANError(f"unknown self-training method {method!r}: choose {' or '.join(SELF_TRAINING_METHODS)}")
    data, run = Path(data), Path(run)
    if cfg.batch_size < 2:  # train_segmenter skips single-image batches: BatchNorm needs two samples
        raise DatasetGANError(f"--batch-size must be at least 2 (got {cfg.batch_size})")
    check_new_run(run)
    check_architecture(cfg.architecture, cfg.pretrained)
    split = load_split(data, None if val is None else Path(val), val_fraction, cfg.seed)
    extra_images = None if unlabelled is None else load_unlabelled(unlabelled)
    if extra_images is not None:
        check_unlabelled(split.images, extra_images)
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetGANError(f"cannot create run folder {run}: {exc.strerror or exc}") from exc
    write_json(run / "config.json", {
        "data": str(data), "val": None if val is None else str(val),
        "val_fraction": None if val is not None else (0.1 if val_fraction is None else val_fraction),
        "train_images": len(split.images), "val_names": split.val_names,
        "classes": [c.name for c in split.classes], "resolution": list(split.images.shape[-2:]),
        "segmenter": cfg.model_dump(), **self_training_record(unlabelled, extra_images, self_training, method)})
    recorder = RunRecorder(run, split, cfg, device)
    summary = {}
    if extra_images is None:
        train_segmenter(split.images, split.masks, len(split.classes), cfg, device, progress, on_checkpoint=recorder)
    elif method == "mean-teacher":
        teacher, _ = train_segmenter(split.images, split.masks, len(split.classes), cfg, device, progress)
        steps, _ = schedule_points(len(split.images), cfg)
        mean_teacher_training(teacher, split.images, split.masks, extra_images,
                              cfg.model_copy(update={"steps": steps, "checkpoints": cfg.epochs}), device,
                              progress=progress, on_checkpoint=recorder)
        summary = {"unlabelled_images": len(extra_images)}
    else:
        result = pseudo_label_self_training(split.images, split.masks, extra_images, len(split.classes), cfg, device,
                                            self_training or SelfTrainingConfig(), progress, on_checkpoint=recorder)
        summary = {"unlabelled_images": len(extra_images), "pseudo_labelled": result.pseudo_labelled}
    best = max((r for r in recorder.log if r["best"]), key=lambda r: r["epoch"])
    return {"run": str(run), "epochs": cfg.epochs, "train_images": len(split.images),
            "val_images": len(split.val_names), "best_epoch": best["epoch"], "best_val_miou": best["val_miou"],
            **summary}


def self_training_record(unlabelled: str | Path | None, images: torch.Tensor | None,
                         self_training: SelfTrainingConfig | None, method: str) -> dict:
    """config.json's self-training entries (none for a plain run)."""
    if unlabelled is None:
        return {}
    settings = MeanTeacherConfig() if method == "mean-teacher" else self_training or SelfTrainingConfig()
    return {"unlabelled": str(unlabelled), "unlabelled_images": len(images),
            "self_training": {"method": method, **settings.model_dump(exclude_none=True)}}
