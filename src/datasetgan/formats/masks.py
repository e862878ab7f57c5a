"""Index masks on disk: 8-bit PNGs whose pixel values are class ids (255 = ignore).

Written with a palette so that an image viewer shows colours while every tool that reads
the raw values still gets the class ids.
"""

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from datasetgan.errors import DatasetGANError
from datasetgan.fileio import atomic_write
from datasetgan.labels import IGNORE, IGNORE_COLOR


def palette_bytes(colors: Sequence[tuple[int, int, int]]) -> list[int]:
    """A 256-entry PIL palette: class colours first, white for ignore, black elsewhere."""
    table = [0] * (256 * 3)
    for i, rgb in enumerate(colors):
        table[3 * i : 3 * i + 3] = rgb
    table[3 * IGNORE : 3 * IGNORE + 3] = IGNORE_COLOR
    return table


def save_mask(path: str | Path, mask: np.ndarray, colors: Sequence[tuple[int, int, int]]) -> None:
    """Save an [H, W] array of class ids as a palette PNG, atomically."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise DatasetGANError(f"{path}: a mask must be 2-D [H, W], got shape {mask.shape}")
    image = Image.fromarray(mask.astype(np.uint8), mode="P")
    image.putpalette(palette_bytes(colors))
    atomic_write(Path(path), lambda tmp: image.save(tmp, format="PNG"))


def load_mask(path: str | Path) -> np.ndarray:
    """Read an index mask (palette or greyscale PNG) as an [H, W] uint8 array of class ids."""
    try:
        image = Image.open(path)
        image.load()
    except (OSError, ValueError) as exc:
        raise DatasetGANError(f"{path}: cannot read mask ({exc})") from exc
    if image.mode not in ("P", "L"):
        raise DatasetGANError(
            f"{path}: mask has mode {image.mode}; expected an index mask (palette 'P' or greyscale 'L' "
            "PNG whose values are class ids). Colour masks must be imported with their colour map."
        )
    return np.array(image, dtype=np.uint8)


def save_image(path: str | Path, image: np.ndarray) -> None:
    """Save an [H, W, 3] uint8 array as PNG, atomically."""
    picture = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB")
    atomic_write(Path(path), lambda tmp: picture.save(tmp, format="PNG"))
