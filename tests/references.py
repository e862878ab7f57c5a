"""Naive references the tests (and bench/) compare the library's fast paths against.

They materialise every hypercolumn, as the official release does: memory grows as D x size^2
per image, so they are references, never tools, and live outside the package.
"""

import torch
from torch import Tensor

from datasetgan.features import Pyramid, Size, resize
from datasetgan.interpreter import StyleInterpreter


def hypercolumns(pyramid: Pyramid, size: Size) -> Tensor:
    """Naive hypercolumns `[N, D, H, W]`: every level resized to `size`, then concatenated."""
    return torch.cat([resize(level, size) for level in pyramid], dim=1)


@torch.no_grad()
def predict_probs_naive(interpreter: StyleInterpreter, pyramid: Pyramid, size: int | None = None) -> Tensor:
    """Same as `StyleInterpreter.predict_probs`, through materialised hypercolumns."""
    size = interpreter._size(size)
    levels = interpreter._prepare(pyramid)
    interpreter.eval()
    n, m = levels[0].shape[0], interpreter.config.members
    pixels = hypercolumns(levels, size).permute(0, 2, 3, 1).reshape(1, n * size * size, -1).expand(m, -1, -1)
    probs = interpreter.ensemble(pixels).softmax(-1)  # per-pixel rows [M, n * S * S, C] back to maps
    return probs.view(m, n, size, size, -1).permute(0, 1, 4, 2, 3)
