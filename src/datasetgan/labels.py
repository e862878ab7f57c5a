"""Label classes and the ignore id: what every mask, annotation and dataset speaks.

A class's position in a class list is its id; masks hold ids 0..C-1, and 255 marks pixels
nobody labelled (`IGNORE`). `check_class_ids` is the one check that a mask speaks a class list.
"""

import colorsys
from dataclasses import dataclass

import numpy as np
import torch

from datasetgan.errors import DatasetGANError

IGNORE = 255
IGNORE_COLOR = (255, 255, 255)


@dataclass(frozen=True)
class LabelClass:
    """One segmentation class: its position in a class list is its label id."""

    name: str
    color: tuple[int, int, int]

    def __post_init__(self) -> None:
        if not self.name:
            raise DatasetGANError("a class needs a name")
        if len(self.color) != 3 or not all(0 <= c <= 255 for c in self.color):
            raise DatasetGANError(f"class {self.name!r}: colour components must be 0..255, got {self.color}")


def distinct_colors(n: int) -> list[tuple[int, int, int]]:
    """Black for class 0 (background), then evenly spaced hues."""
    hues = [colorsys.hsv_to_rgb(i / max(n - 1, 1), 0.75, 0.95) for i in range(n - 1)]
    return [(0, 0, 0)] + [tuple(round(255 * v) for v in rgb) for rgb in hues]


def parse_class_names(text: str) -> list[LabelClass]:
    """'background,skin,hair,...' -> classes with distinct colours (background first, black)."""
    names = [n.strip() for n in text.split(",") if n.strip()]
    if len(names) < 2:
        raise DatasetGANError(f"--classes needs at least two names (background first), got {text!r}")
    return [LabelClass(n, c) for n, c in zip(names, distinct_colors(len(names)))]


def check_class_ids(mask: np.ndarray | torch.Tensor, num_classes: int, where: str, ignore: int = IGNORE,
                    hint: str = "") -> None:
    """Every id of `mask` must be a class (0..num_classes-1) or `ignore`; else one error naming `where`."""
    bad = sorted(set(mask[(mask < 0) | ((mask >= num_classes) & (mask != ignore))].tolist()))
    if bad:
        raise DatasetGANError(f"{where}: class ids {bad[:5]} are outside 0..{num_classes - 1} "
                              f"({ignore} = ignore){hint}")
