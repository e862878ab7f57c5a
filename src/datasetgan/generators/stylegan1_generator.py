"""StyleGAN1 (the DatasetGAN release's g_all) as a DatasetGAN `Generator`, with reproducible noise.

Latents: a seed's z is `RandomState(seed).randn(512)`, as for StyleGAN2. The release draws its
z differently (`np.random.seed(start)` once, then `np.random.randn(1, 512)` per image), so only
the first image of a release run shares its z with our seed `start`; our seeds name our latents.
Truncation pulls the first `truncation_cutoff` slots (None: all 18) towards the average latent;
the release uses psi 0.7 with 8 slots for faces and cars, 7 for cats and bedrooms.

Noise: the release draws fresh noise maps on every call, so its own annotated images cannot be
reproduced exactly from their latents. Here noise is fixed: with noise ids, each sample's maps
come from its id alone (PCG64 on the CPU, a stream of their own), so an id names the same noise
on every device and in any batch; without them, every sample gets one shared set of maps drawn
from a constant key, so a latent alone fixes its image.

Features: the release's list, two per block in forward order: the block's output (after its
second layer epilogue, `b{res}.epi2`) and its last conv's output before that epilogue
(`b{res}.conv1`; `b4.conv` in the 4x4 block), at native resolution. The release upsamples each
to the annotation resolution and concatenates them; that is the caller's business.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from datasetgan.device import resolve_device
from datasetgan.errors import DatasetGANError
from datasetgan.generators.base import FeatureLayer, Generator, class_labels, map_each
from datasetgan.generators.stylegan1 import StyleGAN1Generator

NOISE_STREAM = 0x5EED_0001  # per-sample noise is PCG64 seeded by (NOISE_STREAM, id)
SHARED_NOISE_STREAM = 0x5EED_0002  # seeds the one noise set every sample gets when no ids are given


class StyleGAN1(Generator):
    """A StyleGAN1 network moved to `device` and put in eval mode; nothing here changes its weights."""

    def __init__(self, network: StyleGAN1Generator, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.resolution = network.img_resolution
        self.num_ws, self.w_dim, self.z_dim, self.c_dim = network.num_ws, network.w_dim, network.z_dim, network.c_dim
        self.feature_layers = [FeatureLayer(f"b{res}.{name}", channels, res)
                               for res, channels in network.block_channels.items()
                               for name in ("epi2", "conv" if res == 4 else "conv1")]
        self.shared_noise = [torch.from_numpy(m[None]).to(self.device)
                             for m in self._draw_noise(np.random.default_rng(SHARED_NOISE_STREAM))]

    @torch.no_grad()
    def ws_from_zs(self, zs: torch.Tensor, psi: float = 0.7, truncation_cutoff: int | None = None,
                   class_ids: Sequence[int] | None = None) -> torch.Tensor:
        """[N, 18, 512] latents for z [N, 512], the first `truncation_cutoff` slots (None: all)
        pulled towards the average latent by `psi`."""
        class_labels(class_ids, len(zs), self.c_dim)
        ws = map_each(lambda z, _: self.network.mapping(z), zs.to(self.device), None)  # no class: no label
        return self.network.truncate(ws, psi, truncation_cutoff)

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor, noise_ids: Sequence[int] | None = None
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if noise_ids is not None and len(noise_ids) != len(ws):
            raise DatasetGANError(f"got {len(noise_ids)} noise ids for {len(ws)} latents: give one per latent")
        noise_maps = self.shared_noise if noise_ids is None else self.noise_maps(noise_ids)
        img, features = self.network.synthesis(ws.to(self.device, torch.float32), noise_maps, return_features=True)
        return img.float().clamp(-1, 1), [f.float() for f in features]

    def noise_maps(self, noise_ids: Sequence[int]) -> list[torch.Tensor]:
        """Unit noise [N, 1, r, r] per noise layer, each sample's drawn from its id alone."""
        per_sample = [self._draw_noise(np.random.default_rng([NOISE_STREAM, int(i)])) for i in noise_ids]
        return [torch.from_numpy(np.stack(maps)).to(self.device) for maps in zip(*per_sample)]

    def _draw_noise(self, rng: np.random.Generator) -> list[np.ndarray]:
        return [rng.standard_normal((1, r, r), dtype=np.float32) for r in self.network.noise_resolutions]
