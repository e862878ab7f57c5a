"""StyleGAN3 as a DatasetGAN `Generator`: the network of `stylegan3`, features aligned to the image.

StyleGAN3 has no noise inputs: a latent alone fixes its image and features, so `noise_ids` are
accepted (the interface passes them) and ignored.

The feature pyramid has one level per synthesis layer L0 ... L{n-1} (ToRGB excluded). A layer's
raw output is a grid of `out_size` samples at `out_sampling_rate` samples per image width, centred
on the image, and all but the last two layers carry a margin (`margin_size` samples a side) that
lies outside the image. Each level is that output cropped to the image's extent: the central
`out_sampling_rate` x `out_sampling_rate` samples, i.e. (out_size - out_sampling_rate) / 2 cut from
each side. Level sample j then sits at image coordinate (j + 0.5) * R / s - 0.5 pixels (R the image
resolution, s the level's), the pixel-centre convention of bilinear upsampling with
`align_corners=False`, so upsampling a level to R x R puts every feature on the pixel it describes.
Levels at the image's rate are the image's own grid (the last one is what ToRGB turns into the
image, pixel by pixel). The crop is a whole number of samples whenever the sampling rates are
powers of two of at least 2 (every configuration NVIDIA trains); a grid that does not hold the
image on whole samples is refused rather than aligned approximately.
"""

from __future__ import annotations

from typing import Sequence

import torch

from datasetgan.device import resolve_device
from datasetgan.errors import DatasetGANError
from datasetgan.generators.base import FeatureLayer, Generator
from datasetgan.generators.stylegan3 import StyleGAN3Generator, SynthesisLayer


def image_margin(layer: SynthesisLayer) -> int:
    """Samples on each side of `layer`'s output that lie outside the image.

    The output's `out_size` samples are centred on the image, which spans `out_sampling_rate`
    of them, so the margin is half the difference.
    """
    margin, odd = divmod(layer.out_size - layer.out_sampling_rate, 2)
    if odd:
        raise DatasetGANError(f"cannot align a layer of {layer.out_size} samples at rate {layer.out_sampling_rate} "
                              f"with the image: its grid does not contain the image's on whole samples")
    return margin


class StyleGAN3(Generator):
    """A StyleGAN3 network moved to `device` and put in eval mode; nothing here changes its weights."""

    def __init__(self, network: StyleGAN3Generator, device: str | torch.device = "auto"):
        self.device = resolve_device(device)
        self.network = network.to(self.device).eval()
        self.resolution = network.img_resolution
        self.num_ws, self.w_dim, self.z_dim, self.c_dim = network.num_ws, network.w_dim, network.z_dim, network.c_dim
        names, layers = network.synthesis.layer_names[:-1], network.synthesis.layers()[:-1]  # ToRGB is no feature
        self.margins = [image_margin(layer) for layer in layers]
        self.feature_layers = [FeatureLayer(name, layer.out_channels, layer.out_sampling_rate)
                               for name, layer in zip(names, layers)]

    @torch.no_grad()
    def synthesize(self, ws: torch.Tensor, noise_ids: Sequence[int] | None = None
                   ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Image in [-1, 1] and the pyramid of features cropped to the image (module docstring).

        `noise_ids` is ignored: StyleGAN3 has no noise, so every id gives the same output.
        """
        img, raw = self.network.synthesis(ws.to(self.device, torch.float32), return_features=True)
        features = [f[:, :, m : f.shape[2] - m, m : f.shape[3] - m] for f, m in zip(raw, self.margins)]  # views: no copy
        return img.clamp(-1, 1), features
