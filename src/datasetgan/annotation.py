"""Annotation rules: how a painted mask is read, checked against its candidate, and cleaned.

An annotation is an index mask the size of its candidate image. Before training, classes
covering only a few pixels of a mask become ignore (`drop_small_fragments`): the rule of
ddpm-segmentation (under 20 pixels of 512 px masks become ignore), scaled to the mask size.
The official DatasetGAN release instead turns classes under 30 pixels into background.
"""

import torch
import torch.nn.functional as F
from PIL import Image

from datasetgan.errors import DatasetGANError
from datasetgan.formats.masks import load_mask
from datasetgan.labels import IGNORE, check_class_ids
from datasetgan.workspace import Workspace


def read_annotation(workspace: Workspace, cid: str, size: int) -> torch.Tensor:
    """An annotation as [size, size] class ids, checked against the candidate and the classes."""
    path = workspace.annotation_path(cid)
    mask = load_mask(path)
    height, width = candidate_size(workspace, cid)
    if mask.shape != (height, width):
        raise DatasetGANError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is "
                              f"{width}x{height}: masks must match their candidate image")
    check_class_ids(mask, workspace.num_classes, str(path), hint=": check the classes in the workspace config")
    tensor = torch.from_numpy(mask)
    if tensor.shape[-1] != size:  # features are capped below the image resolution: nearest keeps ids
        tensor = F.interpolate(tensor[None, None].float(), size=(size, size), mode="nearest")[0, 0].to(torch.uint8)
    return tensor


def candidate_size(workspace: Workspace, cid: str) -> tuple[int, int]:
    with Image.open(workspace.candidate_image(cid)) as image:
        return image.height, image.width


def min_fragment_pixels(size: int) -> int:
    """ddpm-segmentation's minimum, 20 pixels of its 512 px masks, as the same share of a size x size
    mask. A fixed 20 would erase the noses, mouths, ears and eyebrows of 64 px faces (10-15
    pixels each)."""
    return max(1, round(20 * size * size / 512**2))


def drop_small_fragments(mask: torch.Tensor, min_pixels: int | None = None) -> tuple[torch.Tensor, int]:
    """Classes covering fewer than min_pixels of an image become ignore, as ddpm-segmentation does
    (None: `min_fragment_pixels` of the mask's size)."""
    if min_pixels is None:
        min_pixels = min_fragment_pixels(mask.shape[-1])
    counts = torch.bincount(mask.flatten().long(), minlength=256)
    small = ((counts > 0) & (counts < min_pixels)).nonzero().flatten()
    small = small[small != IGNORE]
    if len(small) == 0:
        return mask, 0
    return torch.where(torch.isin(mask, small.to(mask.dtype)), torch.full_like(mask, IGNORE), mask), len(small)
