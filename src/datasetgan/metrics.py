"""Segmentation metrics, computed the way the paper's evaluation does.

The confusion matrix is accumulated over the whole test set first; IoU is taken per
class from that matrix and then averaged over classes. A class that appears neither in
the truth nor in the prediction of any pixel has no IoU (0/0): it is left out of the mean
rather than counted as 0 or 1. Pixels whose truth is `ignore_index` are not counted.
"""

from dataclasses import dataclass

import torch


def confusion_matrix(
    pred: torch.Tensor, truth: torch.Tensor, num_classes: int, ignore_index: int = 255
) -> torch.Tensor:
    """[C, C] int64 counts; rows are the true class, columns the predicted class."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != truth shape {tuple(truth.shape)}")
    pred, truth = pred.reshape(-1).long(), truth.reshape(-1).long()
    keep = truth != ignore_index
    pred, truth = pred[keep], truth[keep]
    if truth.numel() and (truth.max() >= num_classes or truth.min() < 0):
        raise ValueError(f"truth holds class ids outside 0..{num_classes - 1} (and {ignore_index} = ignore)")
    if pred.numel() and (pred.max() >= num_classes or pred.min() < 0):
        raise ValueError(f"prediction holds class ids outside 0..{num_classes - 1}")
    counts = torch.bincount(truth * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).cpu()


@dataclass(frozen=True)
class SegmentationScores:
    iou: list[float]  # per class; NaN where the class is absent from truth and prediction
    miou: float
    pixel_accuracy: float

    def as_dict(self, class_names: list[str] | None = None) -> dict:
        names = class_names or [str(i) for i in range(len(self.iou))]
        return {
            "miou": self.miou,
            "pixel_accuracy": self.pixel_accuracy,
            "iou": {n: (None if v != v else v) for n, v in zip(names, self.iou)},
        }


def scores_from_confusion(confusion: torch.Tensor) -> SegmentationScores:
    confusion = confusion.double()
    true_positive = confusion.diag()
    union = confusion.sum(0) + confusion.sum(1) - true_positive
    iou = torch.where(union > 0, true_positive / union.clamp(min=1), torch.nan)
    present = ~iou.isnan()
    miou = iou[present].mean().item() if present.any() else float("nan")
    total = confusion.sum()
    accuracy = (true_positive.sum() / total).item() if total > 0 else float("nan")
    return SegmentationScores(iou=iou.tolist(), miou=miou, pixel_accuracy=accuracy)


class ConfusionMeter:
    """Accumulates a confusion matrix over batches; `scores()` gives dataset-level mIoU."""

    def __init__(self, num_classes: int, ignore_index: int = 255):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)

    def update(self, pred: torch.Tensor, truth: torch.Tensor) -> None:
        self.confusion += confusion_matrix(pred, truth, self.num_classes, self.ignore_index)

    def scores(self) -> SegmentationScores:
        return scores_from_confusion(self.confusion)
