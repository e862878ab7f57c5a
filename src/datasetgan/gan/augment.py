"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) for small image folders.

Applied to real and generated images alike before the discriminator, so that D cannot
memorise a few hundred images while G still learns the un-augmented distribution.
"""

import torch
import torch.nn.functional as F

from datasetgan.errors import DatasetGANError

POLICIES = ("color", "translation", "cutout")


def _uniform(n: int, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    return torch.rand(n, 1, 1, 1, generator=generator).to(device)


def color(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    n, device = x.shape[0], x.device
    x = x + (_uniform(n, generator, device) - 0.5)  # brightness
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_uniform(n, generator, device) * 2) + mean  # saturation
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_uniform(n, generator, device) + 0.5) + mean  # contrast


def translation(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.125) -> torch.Tensor:
    """Shift each image by up to ratio * size pixels, filling with zeros."""
    n, _, h, w = x.shape
    shift_y = torch.randint(-int(h * ratio), int(h * ratio) + 1, (n,), generator=generator)
    shift_x = torch.randint(-int(w * ratio), int(w * ratio) + 1, (n,), generator=generator)
    pad = max(int(h * ratio), int(w * ratio))
    padded = F.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(h)[None, :] - shift_y[:, None] + pad).to(x.device)  # [n, h]
    cols = (torch.arange(w)[None, :] - shift_x[:, None] + pad).to(x.device)  # [n, w]
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def cutout(x: torch.Tensor, generator: torch.Generator, ratio: float = 0.5) -> torch.Tensor:
    """Zero one random square of half the image size per image."""
    n, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    top = torch.randint(0, h + 1 - ch % 2, (n,), generator=generator) - ch // 2
    left = torch.randint(0, w + 1 - cw % 2, (n,), generator=generator) - cw // 2
    ys, xs = torch.arange(h)[None, :], torch.arange(w)[None, :]
    inside_y = (ys >= top[:, None]) & (ys < top[:, None] + ch)
    inside_x = (xs >= left[:, None]) & (xs < left[:, None] + cw)
    keep = ~(inside_y[:, :, None] & inside_x[:, None, :])
    return x * keep[:, None].to(x.device, x.dtype)


def diff_augment(x: torch.Tensor, policy: str, generator: torch.Generator) -> torch.Tensor:
    """Apply the comma-separated policies (subset of POLICIES) in order; '' is identity."""
    for name in filter(None, policy.split(",")):
        x = {"color": color, "translation": translation, "cutout": cutout}[name](x, generator)
    return x


def check_policy(policy: str) -> str:
    unknown = [p for p in filter(None, policy.split(",")) if p not in POLICIES]
    if unknown:
        raise DatasetGANError(f"unknown DiffAugment policy {unknown[0]!r}: choose from {', '.join(POLICIES)}")
    return policy
