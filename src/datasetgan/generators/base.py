"""The `Generator` interface: what DatasetGAN asks of a generator, whatever its architecture.

Downstream code (pipeline, factory, studio) sees only this: latents from seeds, and for a
batch of latents the image and the feature pyramid, deterministically. An architecture is a
module under `generators/` implementing it (`stylegan2_generator` now) plus a loader in
`registry`; nothing above `generators` knows which one it holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch

from datasetgan.errors import DatasetGANError


def zs_from_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """z per seed as NVIDIA's gen_images.py draws it: float32 [N, z_dim] on the CPU."""
    return torch.from_numpy(np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds])).float()


def class_labels(class_ids: Sequence[int] | None, count: int, c_dim: int) -> torch.Tensor | None:
    """One-hot labels c [count, c_dim] for a conditional generator (None for an unconditional one).

    The one check of a class index against a generator: every caller that draws latents goes
    through here, so a missing or out-of-range class is the same one-line error everywhere.
    """
    if c_dim == 0:
        if class_ids is not None and any(c is not None for c in class_ids):
            raise DatasetGANError("this generator is unconditional: drop --condition (it takes no class)")
        return None
    if class_ids is None or len(class_ids) != count or any(c is None for c in class_ids):
        raise DatasetGANError(f"this generator is conditional on {c_dim} classes: give a class 0..{c_dim - 1} "
                              f"per sample (--condition K)")
    bad = [int(c) for c in class_ids if not 0 <= int(c) < c_dim]
    if bad:
        raise DatasetGANError(f"class {bad[0]} is out of range: this generator has classes 0..{c_dim - 1}")
    return torch.nn.functional.one_hot(torch.as_tensor([int(c) for c in class_ids]), c_dim).float()


def map_each(mapping: Callable[..., torch.Tensor], zs: torch.Tensor, labels: torch.Tensor | None,
             **truncation: Any) -> torch.Tensor:
    """`mapping(z, c, **truncation)` one z at a time, concatenated: a batched matmul rounds
    differently per batch size, and a seed must name the same w wherever it is drawn (the
    mapping costs little next to synthesis)."""
    return torch.cat([mapping(z[None], None if labels is None else labels[i : i + 1].to(z.device), **truncation)
                      for i, z in enumerate(zs)])


@dataclass(frozen=True)
class FeatureLayer:
    """One level of the feature pyramid: the layer it is read from, its channels and native resolution."""

    name: str
    channels: int
    resolution: int


class Generator(ABC):
    """A pretrained generator ready for DatasetGAN: eval mode, one device, deterministic.

    `resolution` is the image size; `c_dim` the number of classes it is conditioned on (see
    `class_labels`); `feature_layers` describes the pyramid `synthesize`
    returns, level by level, each at its native resolution (never upsampled here).
    """

    network: torch.nn.Module
    device: torch.device
    resolution: int
    z_dim: int
    feature_layers: list[FeatureLayer]
    c_dim: int = 0  # classes of a class-conditional generator (0: unconditional)

    @property
    def feature_channels(self) -> list[int]:
        return [layer.channels for layer in self.feature_layers]

    @property
    def feature_resolutions(self) -> list[int]:
        return [layer.resolution for layer in self.feature_layers]

    def ws_from_seeds(self, seeds: Sequence[int], psi: float = 0.7, truncation_cutoff: int | None = None,
                      class_ids: Sequence[int] | None = None) -> torch.Tensor:
        """Latents [N, num_ws, w_dim] for the seeds (a seed names the same latent wherever it is
        drawn: z as NVIDIA's gen_images.py draws it), truncated towards the mean by `psi`;
        `class_ids`: one class per seed, for conditional generators."""
        zs = zs_from_seeds(seeds, self.z_dim).to(self.device)
        return self.ws_from_zs(zs, psi, truncation_cutoff, class_ids)

    @torch.no_grad()
    def ws_from_zs(self, zs: torch.Tensor, psi: float = 0.7, truncation_cutoff: int | None = None,
                   class_ids: Sequence[int] | None = None) -> torch.Tensor:
        """Latents [N, num_ws, w_dim] for given z [N, z_dim] (e.g. a release's stored latents),
        truncated towards the mean w by `psi`. This is NVIDIA's mapping call,
        `network.mapping(z, c, truncation_psi, truncation_cutoff)`; other networks override it."""
        labels = class_labels(class_ids, len(zs), self.c_dim)
        return map_each(self.network.mapping, zs.to(self.device), labels, truncation_psi=psi,
                        truncation_cutoff=truncation_cutoff)

    @abstractmethod
    def synthesize(self, ws: torch.Tensor, noise_ids: Sequence[int] | None = None
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image [N, 3, H, W] (float32 in [-1, 1]) and the float32 feature pyramid of each latent.

        `noise_ids` names each sample's noise (its seed, or for imported latents the candidate
        id): the noise is drawn from that id alone, so it is the same in any batch; None: the
        samples' default noise (for StyleGAN2 the stored constant).
        """

    @staticmethod
    def to_uint8(images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] floats to uint8 [0, 255] the way NVIDIA's tools do (x * 127.5 + 128, clamp, truncate)."""
        return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
