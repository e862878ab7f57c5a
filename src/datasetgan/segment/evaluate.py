"""Testing segmenters on real labelled images, once or with the paper's k-fold protocol.

Each checkpoint's confusion matrix is computed per test image, once. Any score over a
subset of images is then a sum of those matrices, so the k-fold protocol (each fold picks
the checkpoint that scores best on it; that checkpoint is scored on the other folds) is a
pure function of a [checkpoints, images, C, C] stack.
"""

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import nn

from datasetgan.errors import DatasetGANError
from datasetgan.formats.masks import save_image
from datasetgan.labels import IGNORE
from datasetgan.metrics import (
    SegmentationScores,
    confusion_matrix,
    scores_from_confusion,
)
from datasetgan.progress import progress_bar
from datasetgan.segment.data import check_same_classes, labelled_names, load_labelled
from datasetgan.segment.models import check_architecture
from datasetgan.fileio import write_json
from datasetgan.segment.runs import BEST, epoch_checkpoints
from datasetgan.segment.train import load_segmenter, predict, read_segmenter_info
from datasetgan.viz import heatmap


def per_image_confusion(model: nn.Module, images: torch.Tensor, masks: torch.Tensor, num_classes: int,
                        device: torch.device, batch_size: int = 64) -> torch.Tensor:
    """[N, C, C] int64: one confusion matrix (rows true, columns predicted) per image."""
    out = []
    for i in range(0, len(images), batch_size):
        predictions = predict(model, images[i : i + batch_size], device, batch_size)
        out += [confusion_matrix(p, t, num_classes) for p, t in zip(predictions, masks[i : i + batch_size])]
    return torch.stack(out)


def make_folds(n: int, k: int, seed: int) -> list[torch.Tensor]:
    """k disjoint folds covering 0..n-1 (sizes differ by at most one), from a seeded shuffle."""
    if not 2 <= k <= n:
        raise DatasetGANError(f"--folds must be between 2 and the number of test images ({n}); got {k}")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return [fold.sort().values for fold in torch.tensor_split(order, k)]


@dataclass(frozen=True)
class FoldResult:
    selected_on: torch.Tensor  # image indices of this fold: they choose the checkpoint
    scored_on: torch.Tensor  # every other image: they score it
    checkpoint: int  # index into the stack
    selection_miou: float
    confusion: torch.Tensor  # [C, C] of the chosen checkpoint on scored_on
    scores: SegmentationScores


def fold_scores(results: list[FoldResult]) -> SegmentationScores:
    """The protocol's result: the mean over folds of mIoU, of each class's IoU and of pixel accuracy."""
    per_class = np.array([r.scores.iou for r in results])
    with warnings.catch_warnings():  # a class absent from every fold stays NaN
        warnings.simplefilter("ignore", RuntimeWarning)
        iou = np.nanmean(per_class, axis=0).tolist()
    return SegmentationScores(iou, float(np.mean([r.scores.miou for r in results])),
                              float(np.mean([r.scores.pixel_accuracy for r in results])))


def _rank(miou: float) -> float:
    return -math.inf if math.isnan(miou) else miou


def cross_validate(confusions: torch.Tensor, folds: list[torch.Tensor]) -> list[FoldResult]:
    """confusions [K checkpoints, N images, C, C] -> per fold, the checkpoint with the best mIoU on
    the fold (the earliest on ties) and its scores on the remaining images."""
    results = []
    for fold in folds:
        rest = torch.ones(confusions.shape[1], dtype=torch.bool)
        rest[fold] = False
        selection = [scores_from_confusion(c[fold].sum(0)).miou for c in confusions]
        chosen = max(range(len(selection)), key=lambda k: _rank(selection[k]))  # max keeps the first
        confusion = confusions[chosen, rest].sum(0)
        results.append(FoldResult(fold, rest.nonzero().flatten(), chosen, selection[chosen], confusion,
                                  scores_from_confusion(confusion)))
    return results


def find_checkpoints(source: Path, every_epoch: bool) -> list[Path]:
    """A checkpoint file itself; a run folder's best.safetensors, or with `every_epoch` its epoch files."""
    if source.is_file():
        if every_epoch:
            raise DatasetGANError(f"--folds chooses among a run's epoch checkpoints: give the run folder, "
                                  f"not the single file {source}")
        return [source]
    if not source.is_dir():
        raise DatasetGANError(f"{source} does not exist: give a segmenter checkpoint or a `segment train` run folder")
    paths = epoch_checkpoints(source) if every_epoch else [p for p in [source / BEST] if p.is_file()]
    if not paths:
        wanted = "epoch-NNN.safetensors checkpoints" if every_epoch else BEST
        raise DatasetGANError(f"{source} holds no {wanted}: not a `datasetgan segment train` run folder")
    return paths


def _number(value: float) -> float | None:
    """JSON has no NaN: an undefined score is null."""
    return None if math.isnan(value) else float(value)


def scores_dict(scores: SegmentationScores, class_names: list[str]) -> dict:
    out = scores.as_dict(class_names)
    return {**out, "miou": _number(out["miou"]), "pixel_accuracy": _number(out["pixel_accuracy"])}


def cross_validation_report(results: list[FoldResult], paths: list[Path], confusions: torch.Tensor,
                            names: list[str], class_names: list[str], seed: int) -> dict:
    mious, mean = np.array([r.scores.miou for r in results]), fold_scores(results)
    folds = [{"fold": i + 1, "checkpoint": paths[r.checkpoint].name, "selection_miou": _number(r.selection_miou),
              "selected_on": [names[j] for j in r.selected_on], "scored_images": len(r.scored_on),
              **scores_dict(r.scores, class_names)} for i, r in enumerate(results)]
    every = [{"checkpoint": p.name, "miou": _number(scores_from_confusion(c.sum(0)).miou)}
             for p, c in zip(paths, confusions)]
    return {"miou": _number(mean.miou), "miou_std": _number(mious.std()),  # ddof 0, as the paper's code
            "pixel_accuracy": _number(mean.pixel_accuracy),
            "iou": dict(zip(class_names, map(_number, mean.iou))),
            "cross_validation": {"folds": len(results), "seed": seed, "fold_results": folds,
                                 "checkpoints_on_all_images": every}}


@dataclass(frozen=True)
class Evaluation:
    """Checked inputs of an evaluation: checkpoints, test images and (for the k-fold protocol) folds."""

    source: Path
    test_data: Path
    checkpoints: list[Path]
    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    class_names: list[str]
    folds: list[torch.Tensor] | None
    seed: int


def prepare_evaluation(source: str | Path, test_data: str | Path, folds: int | None = None,
                       seed: int = 0) -> Evaluation:
    """Check every input (cheaply, before any model runs): checkpoints, their classes, test set, folds.

    Without folds: the checkpoint itself, or a run's best.safetensors. With k folds: a run's epoch checkpoints.
    """
    source, test_data = Path(source), Path(test_data)
    if folds is not None and folds < 2:
        raise DatasetGANError(f"--folds must be at least 2 (got {folds})")
    checkpoints = find_checkpoints(source, folds is not None)
    infos = [read_segmenter_info(path) for path in checkpoints]
    for info in infos:
        check_architecture(info["architecture"])
    images, masks, classes = load_labelled(test_data)
    for path, info in zip(checkpoints, infos):
        check_same_classes(info["classes"], classes, str(path), str(test_data))
    if bool((masks == IGNORE).all()):
        raise DatasetGANError(f"{test_data}: every mask pixel is ignore (255): nothing to score")
    fold_indices = None if folds is None else make_folds(len(images), folds, seed)
    return Evaluation(source, test_data, checkpoints, images, masks, labelled_names(test_data),
                      [c.name for c in classes], fold_indices, seed)


def run_evaluation(evaluation: Evaluation, device: torch.device, batch_size: int = 64,
                   progress: bool = True) -> tuple[dict, torch.Tensor]:
    """-> (report, the [C, C] confusion behind confusion.png; with folds, summed over the folds)."""
    e, num_classes = evaluation, len(evaluation.class_names)
    if batch_size < 1:
        raise DatasetGANError(f"--batch-size must be at least 1 (got {batch_size})")
    confusions = torch.stack([
        per_image_confusion(load_segmenter(path, device)[0], e.images, e.masks, num_classes, device, batch_size)
        for path in progress_bar(e.checkpoints, show=progress and len(e.checkpoints) > 1, desc="checkpoints")])
    report = {"test_data": str(e.test_data), "images": len(e.images), "classes": e.class_names}
    if e.folds is None:
        confusion = confusions[0].sum(0)
        report |= {"checkpoint": str(e.checkpoints[0]), **scores_dict(scores_from_confusion(confusion), e.class_names)}
    else:
        results = cross_validate(confusions, e.folds)
        confusion = torch.stack([r.confusion for r in results]).sum(0)
        report |= {"run": str(e.source),
                   **cross_validation_report(results, e.checkpoints, confusions, e.names, e.class_names, e.seed)}
    return report | {"confusion": confusion.tolist()}, confusion


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def format_report(report: dict) -> str:
    """The short table the CLI prints."""
    lines = [f"{report['images']} test images in {report['test_data']}"]
    cv = report.get("cross_validation")
    if cv:
        lines.append(f"{cv['folds']}-fold selection over the checkpoints of {report['run']} (seed {cv['seed']})")
        lines.append(f"{'fold':>4}  {'checkpoint':<24}{'select mIoU':>12}{'mIoU':>8}{'images':>8}")
        lines += [f"{f['fold']:>4}  {f['checkpoint']:<24}{_percent(f['selection_miou']):>12}"
                  f"{_percent(f['miou']):>8}{f['scored_images']:>8}" for f in cv["fold_results"]]
    else:
        lines.append(f"checkpoint {report['checkpoint']}")
    width = max(len(name) for name in report["iou"]) + 2
    lines.append(f"{'class':<{width}}{'IoU %':>7}" + ("  (mean over folds)" if cv else ""))
    lines += [f"{name:<{width}}{_percent(iou):>7}" for name, iou in report["iou"].items()]
    spread = f" ± {_percent(report['miou_std'])}" if cv else ""
    lines.append(f"mIoU {_percent(report['miou'])}{spread} %   pixel accuracy {_percent(report['pixel_accuracy'])} %")
    return "\n".join(lines)


def _column_heading(name: str, font: ImageFont.FreeTypeFont, length: int, cell: int) -> Image.Image:
    """A class name written upwards, ending at the matrix."""
    strip = Image.new("RGB", (length, cell), "white")
    ImageDraw.Draw(strip).text((4, cell // 2), name, fill="black", font=font, anchor="lm")
    return strip.rotate(90, expand=True)


def _draw_cell(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], share: float, count: float,
               colour: np.ndarray, font: ImageFont.FreeTypeFont) -> None:
    draw.rectangle(box, fill=tuple(int(v) for v in colour))
    if count > 0:  # blank means never; "0" means under half a percent
        centre = ((box[0] + box[2] + 1) // 2, (box[1] + box[3] + 1) // 2)
        draw.text(centre, f"{100 * share:.0f}", fill="black" if share > 0.5 else "white", font=font, anchor="mm")


def draw_confusion(confusion: torch.Tensor, class_names: list[str], cell: int = 28) -> np.ndarray:
    """A row-normalised confusion heatmap with class names: rows true, columns predicted, cells in %
    of the row. Rows of classes absent from the truth are grey."""
    counts = confusion.double().numpy()
    totals = counts.sum(1, keepdims=True)
    share = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    colours = heatmap(share, vmax=1.0)
    font = ImageFont.load_default(size=11)
    margin = max(int(font.getlength(name)) for name in class_names) + 12
    caption = "rows: true class; columns: predicted; % of each row"
    n = len(class_names)
    canvas = Image.new("RGB", (max(margin + n * cell, int(font.getlength(caption))) + 4, margin + n * cell + 20),
                       "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((2, margin + n * cell + 4), caption, fill="black", font=font)
    for i, name in enumerate(class_names):
        y = margin + i * cell
        draw.text((margin - 4, y + cell // 2), name, fill="black", font=font, anchor="rm")
        canvas.paste(_column_heading(name, font, margin - 4, cell), (margin + i * cell, 0))
        for j in range(n):
            box = (margin + j * cell, y, margin + (j + 1) * cell - 2, y + cell - 2)  # a 1-pixel white grid
            if totals[i, 0] == 0:
                draw.rectangle(box, fill=(190, 190, 190))
            else:
                _draw_cell(draw, box, share[i, j], counts[i, j], colours[i, j], font)
    return np.asarray(canvas)


def write_report(out: str | Path, report: dict, confusion: torch.Tensor) -> Path:
    """REPORT_DIR/report.json and confusion.png, each written atomically."""
    out = Path(out)
    save_image(out / "confusion.png", draw_confusion(confusion, report["classes"]))
    write_json(out / "report.json", report)
    return out / "report.json"
