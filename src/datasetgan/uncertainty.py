"""Ensemble uncertainty and the final label, as pure functions of members' probabilities.

Every function takes softmax probabilities `[M, N, C, H, W]` (M ensemble members), never
logits: the official release once averaged logits here, which changed its published numbers.
"""

from typing import Sequence

import torch
from torch import Tensor

from datasetgan.errors import DatasetGANError


def entropy(probs: Tensor, dim: int) -> Tensor:
    """Shannon entropy (natural log) along `dim`; 0 log 0 counts as 0."""
    tiny = torch.finfo(probs.dtype).tiny
    return -(probs * probs.clamp_min(tiny).log()).sum(dim)


def mutual_information(probs: Tensor) -> Tensor:
    """Per-pixel mutual information `[N, H, W]`: H(mean_m p_m) - mean_m H(p_m).

    The paper's generalised Jensen-Shannon divergence between members: 0 when they agree,
    ln 2 for two confident members that disagree. Non-negative by Jensen's inequality, so
    the clamp only removes rounding error.
    """
    return (entropy(probs.mean(0), dim=1) - entropy(probs, dim=2).mean(0)).clamp_min(0)


def image_scores(uncertainty: Tensor, top_fraction: float = 0.1) -> Tensor:
    """Per-image score `[N]`: the mean of the `top_fraction` most uncertain pixels."""
    if not 0 < top_fraction <= 1:
        raise DatasetGANError(f"top_fraction must be in (0, 1], got {top_fraction}")
    flat = uncertainty.flatten(1)
    k = max(1, round(top_fraction * flat.shape[1]))
    return flat.topk(k, dim=1).values.mean(1)


def vote(probs: Tensor) -> Tensor:
    """Per-pixel majority vote `[N, H, W]` (int64) of the members' argmax.

    Ties go to the tied class with the highest mean probability.
    """
    _, n, classes, h, w = probs.shape
    choices = probs.argmax(2).permute(1, 0, 2, 3)  # [N, M, H, W]
    counts = torch.zeros(n, classes, h, w, dtype=torch.int64, device=probs.device)
    counts.scatter_add_(1, choices, torch.ones_like(choices))
    tied = counts == counts.amax(1, keepdim=True)
    mean = probs.mean(0)
    return torch.where(tied, mean, torch.full_like(mean, -1.0)).argmax(1)


def rank_uncertain(scores: Sequence[float], seeds: Sequence[int]) -> list[int]:
    """Indices of samples, most uncertain (highest image score) first; ties put the lower seed first."""
    return sorted(range(len(scores)), key=lambda i: (-scores[i], seeds[i]))
