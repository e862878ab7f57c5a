"""The feature pyramid: a generator's activations, each layer at its native resolution.

A pyramid is a list of levels, level l of shape ``[N, C_l, H_l, W_l]`` (the generator's batch
of N images). A pixel's *hypercolumn* is the concatenation over levels of each level resized
to the feature resolution with bilinear interpolation (``align_corners=False``), read at that
pixel. ``gather`` computes hypercolumns for chosen pixels straight from the native maps, so a
full-resolution concatenation (the 160 GB of the official release) is never stored;
``hypercolumns`` is that concatenation, kept as the reference tests compare against.
"""

from itertools import groupby

import torch
import torch.nn.functional as F
from torch import Tensor

Pyramid = list[Tensor]
Size = int | tuple[int, int]


def feature_channels(pyramid: Pyramid) -> list[int]:
    """Channels of each level, in hypercolumn order."""
    return [level.shape[-3] for level in pyramid]


def feature_dim(pyramid: Pyramid) -> int:
    """Length D of a hypercolumn: the channels of all levels together."""
    return sum(feature_channels(pyramid))


def as_pair(size: Size) -> tuple[int, int]:
    """`(height, width)` from an int (square) or a pair."""
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


def resize(level: Tensor, size: Size) -> Tensor:
    """Bilinear resize (align_corners=False) of `[N, C, H, W]` maps, in float32.

    The result is channels-last in memory: PyTorch's CPU kernel is 15-20x faster there for
    the hundreds of channels of a pyramid level.
    """
    size = as_pair(size)
    level = level.float().contiguous(memory_format=torch.channels_last)
    if tuple(level.shape[-2:]) == size:
        return level  # bilinear resize to the same size is the identity
    return F.interpolate(level, size=size, mode="bilinear", align_corners=False)


def hypercolumns(pyramid: Pyramid, size: Size) -> Tensor:
    """Naive hypercolumns `[N, D, H, W]`: every level resized to `size`, then concatenated.

    Memory grows as D x size^2 per image: the reference for tests and benchmarks, not a tool.
    """
    return torch.cat([resize(level, size) for level in pyramid], dim=1)


def _taps(coords: Tensor, in_size: int, out_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Along one axis: the two source indices and the weight of the second, for output `coords`.

    Same arithmetic as PyTorch's bilinear resize with align_corners=False: source coordinate
    (i + 0.5) * in/out - 0.5, clamped at 0; the upper tap is clamped at the last pixel.
    """
    source = ((coords.float() + 0.5) * (in_size / out_size) - 0.5).clamp_min(0)
    low = source.floor().long()
    high = (low + 1).clamp_max(in_size - 1)
    return low, high, source - low


def sample_level(level: Tensor, images: Tensor, ys: Tensor, xs: Tensor, size: Size) -> Tensor:
    """`[P, C]` values of `level` resized to `size`, at pixels (images, ys, xs), from 4 taps.

    Half-precision levels are read as they are and upcast after the read, so only the P
    sampled values are ever in float32.
    """
    height, width = as_pair(size)
    y0, y1, wy = _taps(ys, level.shape[-2], height)
    x0, x1, wx = _taps(xs, level.shape[-1], width)
    wy, wx = wy[:, None], wx[:, None]

    def at(y: Tensor, x: Tensor) -> Tensor:
        return level[images, :, y, x].float()

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    return top * (1 - wy) + bottom * wy


def gather(pyramid: Pyramid, ys: Tensor, xs: Tensor, size: Size, images: Tensor | None = None) -> Tensor:
    """Hypercolumns `[P, D]` (float32) at integer pixels (ys, xs) of a `size` grid.

    `images` gives each pixel's image in the pyramid's batch; `None` means the pyramid holds
    one image (N = 1). Equals `hypercolumns(pyramid, size)[images, :, ys, xs]` without
    building it: 4 taps per level at native resolution.
    """
    if images is None:
        if pyramid[0].shape[0] != 1:
            raise ValueError("gather: pass `images` for a pyramid that holds several images")
        images = torch.zeros_like(ys)
    return torch.cat([sample_level(level, images, ys, xs, size) for level in pyramid], dim=1)


def merge_levels(pyramid: Pyramid) -> Pyramid:
    """Concatenate neighbouring levels of equal resolution along channels.

    The hypercolumn is unchanged (same values, same order) while gathering and upsampling
    run once per resolution instead of once per level (StyleGAN taps two maps per block).
    """
    merged: Pyramid = []
    for _, run in groupby(pyramid, key=lambda level: level.shape[-2:]):
        run = list(run)
        merged.append(run[0] if len(run) == 1 else torch.cat(run, dim=1))
    return merged
