"""The feature pyramid: a generator's activations, each layer at its native resolution.

A pyramid is a list of levels, level l of shape ``[N, C_l, H_l, W_l]`` (the generator's batch
of N images). A pixel's *hypercolumn* is the concatenation over levels of each level resized
to the feature resolution with bilinear interpolation (``align_corners=False``), read at that
pixel. ``gather`` computes hypercolumns for chosen pixels straight from the native maps, so a
full-resolution concatenation (the 160 GB of the official release) is never stored (the
tests and benchmarks keep that naive concatenation, in tests/references.py, to compare against).
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


def _taps(coords: Tensor, in_size: int, out_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Along one axis: the two source indices and the weight of the second, for output `coords`.

    Same arithmetic as PyTorch's bilinear resize with align_corners=False: source coordinate
    (i + 0.5) * in/out - 0.5, clamped at 0; the upper tap is clamped at the last pixel.
    """
    source = ((coords.float() + 0.5) * (in_size / out_size) - 0.5).clamp_min(0)
    low = source.floor().long()
    high = (low + 1).clamp_max(in_size - 1)
    return low, high, source - low


def rows(level: Tensor) -> Tensor:
    """A level's pixels as rows `[N * H * W, C]`.

    A view of a channels-last level (the layout `fit` and `pipeline.synthesize_pyramids` keep)
    or of a single image; a copy otherwise.
    """
    return level.permute(0, 2, 3, 1).reshape(-1, level.shape[-3])


def bilinear_taps(images: Tensor, ys: Tensor, xs: Tensor, shape: tuple[int, int], size: Size
                  ) -> tuple[Tensor, Tensor]:
    """Rows and weights `[P, 4]` of the 4 bilinear taps of pixels (images, ys, xs) of a `size`
    grid, in `rows(level)` of a level of spatial `shape`.

    Each tap weighs the product of its y and x weights, as the resize weighs them, so their
    weighted sum is the resized level up to float rounding; the 4 weights sum to one.
    """
    height, width = as_pair(size)
    h, w = shape
    y0, y1, wy = _taps(ys, h, height)
    x0, x1, wx = _taps(xs, w, width)
    first = images * (h * w)  # the image's first row
    top, bottom = first + y0 * w, first + y1 * w
    indices = torch.stack([top + x0, top + x1, bottom + x0, bottom + x1], dim=1)
    weights = torch.stack([(1 - wy) * (1 - wx), (1 - wy) * wx, wy * (1 - wx), wy * wx], dim=1)
    return indices, weights


def sample_level(level: Tensor, images: Tensor, ys: Tensor, xs: Tensor, size: Size) -> Tensor:
    """`[P, C]` float32 values of `level` resized to `size`, at pixels (images, ys, xs).

    One embedding bag per pixel over the level's rows, its 4 bilinear taps. Rows not in
    float32 (half precision) are read first, then upcast and summed in float32: an embedding
    bag sums in the table's dtype, which would cost ~1e-3 in half precision.
    """
    indices, weights = bilinear_taps(images, ys, xs, level.shape[-2:], size)
    table = rows(level)
    if table.dtype != torch.float32:
        table = table.index_select(0, indices.flatten()).float()
        indices = torch.arange(indices.numel(), device=indices.device).view_as(indices)
    return F.embedding_bag(indices, table, per_sample_weights=weights, mode="sum")


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


def shrink_pyramid(pyramid: Pyramid, size: int, dtype: torch.dtype) -> list[Tensor]:
    """Levels finer than the feature grid are resized to it once, then stored in `dtype`.

    Exact: a hypercolumn at size S reads each level bilinearly resized to S, so resizing a
    level to S ahead of time gives the same numbers; coarser levels stay native.
    """
    return [(F.interpolate(level, size=(size, size), mode="bilinear", align_corners=False)
             if level.shape[-1] > size else level).to(dtype) for level in pyramid]
