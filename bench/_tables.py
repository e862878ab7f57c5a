"""Markdown tables the bench scripts print, to paste into RESULTS.md."""

from __future__ import annotations


def print_iou_table(names: list[str], iou: list[float], miou: float) -> None:
    """One row of per-class IoU % under a header of class names, mIoU last."""
    print("| " + " | ".join(names) + " | mIoU |")
    print("|" + "---|" * (len(names) + 1))
    print("| " + " | ".join(f"{100 * v:.0f}" for v in iou) + f" | {100 * miou:.1f} |")
