"""Pictures a person would rather look at than read: mask overlays and image grids."""

from typing import Sequence

import numpy as np

from datasetgan.labels import IGNORE, IGNORE_COLOR


def colorize(mask: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> np.ndarray:
    """[H, W] class ids -> [H, W, 3] uint8 colours (ignore drawn white)."""
    table = np.zeros((256, 3), np.uint8)
    table[: len(colors)] = np.asarray(colors, np.uint8)
    table[IGNORE] = IGNORE_COLOR
    return table[np.asarray(mask, np.uint8)]


def overlay(image: np.ndarray, mask: np.ndarray, colors: Sequence[tuple[int, int, int]], alpha: float = 0.5) -> np.ndarray:
    """Blend the mask's colours over an [H, W, 3] uint8 image; background (class 0) stays clear."""
    painted = colorize(mask, colors).astype(np.float32)
    weight = np.where(np.asarray(mask)[..., None] == 0, 0.0, alpha)
    blended = image.astype(np.float32) * (1 - weight) + painted * weight
    return blended.round().astype(np.uint8)


def heatmap(values: np.ndarray, vmax: float | None = None) -> np.ndarray:
    """[H, W] non-negative values -> [H, W, 3] uint8, black (0) through red and yellow to white."""
    top = vmax if vmax is not None else max(float(np.max(values)), 1e-12)
    t = np.clip(np.asarray(values, np.float32) / top, 0, 1)
    rgb = np.stack([np.clip(3 * t, 0, 1), np.clip(3 * t - 1, 0, 1), np.clip(3 * t - 2, 0, 1)], -1)
    return (rgb * 255).round().astype(np.uint8)


def grid(tiles: Sequence[np.ndarray], columns: int, pad: int = 2, scale: int = 1) -> np.ndarray:
    """Lay out equally sized [H, W, 3] tiles in rows of `columns`, upscaled by `scale` (nearest)."""
    tiles = [np.kron(t, np.ones((scale, scale, 1), np.uint8)) if scale > 1 else t for t in tiles]
    h, w = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    canvas = np.full((rows * (h + pad) + pad, columns * (w + pad) + pad, 3), 255, np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (h + pad), pad + c * (w + pad)
        canvas[y : y + h, x : x + w] = tile
    return canvas
