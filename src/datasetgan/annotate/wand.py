"""The feature magic wand: the connected region whose generator features resemble a clicked pixel's.

A pixel's features are its hypercolumn (every pyramid level bilinearly resized to the image,
concatenated: what the interpreter reads at that pixel), compared to the clicked pixel's by
cosine similarity. The region is the 4-connected component of the pixels at or above the
threshold that holds the click (the clicked pixel is always in: its similarity to itself may
round a hair below 1).

`wand_region` takes hypercolumns `[D, H, W]` as they are (a hand-made map, a small image).
`PyramidSimilarity` gives the same similarities for a generator's pyramid without building its
hypercolumns (D x H x W floats: 23 GB for a 1024 px StyleGAN2), exactly up to float rounding:

- dot products with the clicked hypercolumn q: a bilinear resize is linear, so
  <resize(level)(p), q_level> = resize(<level, q_level>)(p); each level is reduced to one
  channel at native resolution, then resized;
- norms: the squares of the resized channels summed, a few channels at a time, once per image.
"""

import numpy as np
import torch
from scipy import ndimage
from torch import Tensor

from datasetgan.errors import DatasetGANError
from datasetgan.features import Pyramid, feature_channels, gather, resize

EPS = 1e-12  # a zero feature vector has similarity 0 to everything, as in torch's cosine_similarity
RESIZE_VALUES = 2**24  # channels x pixels resized at once while summing norms (64 MB of float32)


def check_click(shape: tuple[int, int], y: int, x: int, threshold: float) -> None:
    """A click must land on the image and a threshold be a cosine similarity."""
    height, width = shape
    if not (0 <= x < width and 0 <= y < height):
        raise DatasetGANError(f"pixel (x={x}, y={y}) is outside the {width}x{height} image: "
                              f"give 0 <= x < {width}, 0 <= y < {height}")
    if not -1 <= threshold <= 1:  # also refuses NaN
        raise DatasetGANError(f"threshold {threshold} is not a cosine similarity: give a number in [-1, 1]")


def cosine(dots: Tensor, norms: Tensor, y: int, x: int) -> Tensor:
    """Cosine similarity `[H, W]` of every pixel to pixel (y, x), from dot products with its
    features and the feature norms of all pixels."""
    return dots / (norms.clamp_min(EPS) * norms[y, x].clamp_min(EPS))


def connected_region(similarity: Tensor, y: int, x: int, threshold: float) -> np.ndarray:
    """bool `[H, W]`: the 4-connected pixels with `similarity >= threshold` reachable from (y, x)."""
    check_click(tuple(similarity.shape), y, x, threshold)
    above = (similarity >= threshold).cpu().numpy()
    above[y, x] = True
    components, _ = ndimage.label(above)  # the default structure connects the 4 neighbours
    return components == components[y, x]


def wand_region(features: Tensor, y: int, x: int, threshold: float) -> np.ndarray:
    """The wand on hypercolumns `[D, H, W]`: bool `[H, W]`, the region selected by a click at (y, x)."""
    check_click(tuple(features.shape[-2:]), y, x, threshold)
    features = features.float()
    dots = torch.einsum("dhw,d->hw", features, features[:, y, x])
    return connected_region(cosine(dots, features.norm(dim=0), y, x), y, x, threshold)


class PyramidSimilarity:
    """Cosine similarities between the hypercolumns of one image's pyramid at `size`, never built.

    The norms cost one pass over every resized channel and are kept; each click then costs
    one channel per level resized.
    """

    def __init__(self, pyramid: Pyramid, size: tuple[int, int]):
        if pyramid[0].shape[0] != 1:
            raise ValueError("PyramidSimilarity: the pyramid must hold one image")
        self.pyramid, self.size = pyramid, size
        self.norms = self._norms()

    @torch.no_grad()
    def __call__(self, y: int, x: int) -> Tensor:
        """`[H, W]` float32: every pixel's similarity to pixel (y, x)."""
        ys, xs = (torch.tensor([i], device=self.norms.device) for i in (y, x))
        clicked = gather(self.pyramid, ys, xs, self.size)[0].split(feature_channels(self.pyramid))
        dots = sum(resize(torch.einsum("nchw,c->nhw", level.float(), q)[:, None], self.size)[0, 0]
                   for level, q in zip(self.pyramid, clicked))
        return cosine(dots, self.norms, y, x)

    def region(self, y: int, x: int, threshold: float) -> np.ndarray:
        """bool `[H, W]`: the wand's region for a click at (y, x)."""
        check_click(self.size, y, x, threshold)
        return connected_region(self(y, x), y, x, threshold)

    @torch.no_grad()
    def _norms(self) -> Tensor:
        """Every pixel's hypercolumn length, from channels resized a few at a time (bounded memory)."""
        height, width = self.size
        squares = torch.zeros(self.size, device=self.pyramid[0].device)
        step = max(1, RESIZE_VALUES // (height * width))
        for level in self.pyramid:
            for channels in level.split(step, dim=1):
                squares += resize(channels, self.size)[0].square().sum(0)
        return squares.sqrt()
