"""StyleGAN2 as a DatasetGAN `Generator`: the network of `stylegan2`, with reproducible noise.

The feature pyramid is the output of every synthesis conv layer, in forward order. Without
noise ids every sample gets each layer's stored constant noise, so a latent alone fixes its
image and features; with them, each sample's noise maps are drawn from its id (as the paper's
release draws noise per sample), on the CPU from a stream of their own, so an id names the same
noise on every device and in any batch.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from datasetgan.device import resolve_device
from datasetgan.generators.base import FeatureLayer, Generator
from datasetgan.generators.stylegan2 import StyleGAN2Generator

NOISE_STREAM = 0x5EED_0015  # noise is PCG64 seeded by (NOISE_STREAM, id): apart from the z that MT19937 draws


class StyleGAN2(Generator):
    """A StyleGAN2 network moved to `device` and put in eval mode; nothing here changes its weights."""

    def __init__(self, network: StyleGAN2Generator, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.resolution = network.img_resolution
        self.num_ws, self.w_dim, self.z_dim, self.c_dim = network.num_ws, network.w_dim, network.z_dim, network.c_dim
        self.feature_layers = [FeatureLayer(f"b{layer.resolution}.{name}", layer.weight.shape[0], layer.resolution)
                               for block in network.synthesis.blocks()
                               for name, layer in zip(("conv0", "conv1")[-len(block.conv_layers()):],
                                                      block.conv_layers())]

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor, noise_ids: Sequence[int] | None = None
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        noise_maps = None if noise_ids is None else self.noise_maps(noise_ids)
        img, features = self.network.synthesis(ws.to(self.device, torch.float32), noise_mode="const",
                                               return_features=True, noise_maps=noise_maps)
        return img.float().clamp(-1, 1), [f.float() for f in features]

    def noise_maps(self, noise_ids: Sequence[int]) -> list[torch.Tensor]:
        """Unit noise [N, 1, r, r] per conv layer, each sample's drawn from its id alone."""
        per_sample = []
        for noise_id in noise_ids:
            rng = np.random.default_rng([NOISE_STREAM, int(noise_id)])
            per_sample.append([rng.standard_normal((1, r, r), dtype=np.float32) for r in self.feature_resolutions])
        return [torch.from_numpy(np.stack(maps)).to(self.device) for maps in zip(*per_sample)]
