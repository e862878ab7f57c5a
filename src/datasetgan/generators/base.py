"""The `Generator` interface: latents in, image plus feature pyramid out, deterministically."""

from __future__ import annotations

import contextlib
from typing import Sequence

import numpy as np
import torch

from datasetgan.device import resolve_device
from datasetgan.errors import DatasetGANError
from datasetgan.generators.stylegan2 import StyleGAN2Generator


def zs_from_seeds(seeds: Sequence[int], z_dim: int) -> torch.Tensor:
    """z per seed as NVIDIA's gen_images.py draws it: float32 [N, z_dim] on the CPU."""
    return torch.from_numpy(np.stack([np.random.RandomState(int(s)).randn(z_dim) for s in seeds])).float()


class Generator:
    """A StyleGAN2 network ready for DatasetGAN: fixed noise, eval mode, one device.

    The network is moved to `device` and put in eval mode; nothing here changes its weights.

    The feature pyramid is the output of every synthesis conv layer, in forward order, each at
    its native resolution (features are never upsampled here).
    """

    def __init__(
        self,
        network: StyleGAN2Generator,
        device: str | torch.device = "auto",
        dtype: torch.dtype | None = None,
    ):
        self.device = resolve_device(device)
        self.dtype = dtype or torch.float32
        if self.dtype not in (torch.float32, torch.float16):
            raise DatasetGANError(f"dtype must be float32 or float16, got {self.dtype}")
        if self.dtype == torch.float16 and self.device.type != "cuda":
            raise DatasetGANError("float16 synthesis needs a CUDA device: use dtype=None (float32) on CPU")
        self.network = network.to(self.device).eval()
        self.resolution = network.img_resolution
        self.num_ws = network.num_ws
        self.w_dim = network.w_dim
        self.z_dim = network.z_dim
        layers = network.synthesis.conv_layers()
        self.feature_channels = [layer.weight.shape[0] for layer in layers]
        self.feature_resolutions = [layer.resolution for layer in layers]

    def zs_from_seeds(self, seeds: Sequence[int]) -> torch.Tensor:
        """z per seed as NVIDIA's gen_images.py draws it, so a seed names the same image there."""
        return zs_from_seeds(seeds, self.z_dim).to(self.device)

    @torch.no_grad()
    def ws_from_seeds(
        self, seeds: Sequence[int], psi: float = 0.7, truncation_cutoff: int | None = None
    ) -> torch.Tensor:
        """[N, num_ws, w_dim] latents for the seeds, truncated towards the mean w by `psi`."""
        if self.network.c_dim > 0:
            raise DatasetGANError("conditional generators need a label per seed, which is not supported yet")
        # one seed at a time: a batched matmul rounds differently per batch size, and a seed
        # must name the same w wherever it is drawn (the mapping costs little next to synthesis)
        zs = self.zs_from_seeds(seeds)
        return torch.cat([self.network.mapping(z[None], None, truncation_psi=psi, truncation_cutoff=truncation_cutoff)
                          for z in zs])

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image [N, 3, H, W] (float32, clamped to [-1, 1]) and the float32 feature pyramid.

        Noise is the stored constant, so the same ws always gives the same image and features.
        """
        ws = ws.to(self.device, torch.float32)
        with self._precision():
            img, features = self.network.synthesis(ws, noise_mode="const", return_features=True)
        return img.float().clamp(-1, 1), [f.float() for f in features]

    def _precision(self) -> contextlib.AbstractContextManager:
        if self.dtype == torch.float16:
            return torch.autocast(device_type="cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @staticmethod
    def to_uint8(images: torch.Tensor) -> torch.Tensor:
        """[-1, 1] floats to uint8 [0, 255] the way NVIDIA's tools do (x * 127.5 + 128, clamp, truncate)."""
        return (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
