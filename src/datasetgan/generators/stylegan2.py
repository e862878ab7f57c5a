"""StyleGAN2 generator (config F, skip architecture) in NVIDIA's parameter names and maths.

Module and buffer names follow stylegan2-ada-pytorch so that its G_ema state dicts load with
`strict=True`; every line here is our own. Resampling uses plain torch ops (no custom CUDA
kernels), so the network runs anywhere torch runs and stays differentiable to any order.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from datasetgan.errors import DatasetGANError

LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)  # keeps the signal's second moment through a leaky ReLU
NOISE_MODES = ("const", "random", "none")


# ---------------------------------------------------------------------------------------------
# Functional helpers


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit root-mean-square (the input normalisation of the mapping)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def setup_filter(taps: Sequence[float]) -> torch.Tensor:
    """Outer product of 1-D taps, normalised to unit DC gain: the 2-D FIR resampling filter."""
    t = torch.as_tensor(taps, dtype=torch.float32)
    f = torch.outer(t, t)
    return f / f.sum()


def upfirdn2d(
    x: torch.Tensor, f: torch.Tensor, up: int = 1, padding: tuple[int, int] = (0, 0), gain: float = 1.0
) -> torch.Tensor:
    """Zero-insertion upsampling by `up`, padding (negative crops), then FIR convolution.

    Same semantics as NVIDIA's upfirdn2d without downsampling. A strided transposed
    convolution with the filter does the zero insertion and the (true) convolution in one op;
    the result is then cropped to the requested padding.
    """
    channels = x.shape[1]
    fw = f.shape[-1]
    kernel = (f * gain).to(x.dtype).repeat(channels, 1, 1, 1)
    y = F.conv_transpose2d(x, kernel, stride=up, groups=channels)
    crop0, crop1 = fw - 1 - padding[0], fw - up - padding[1]
    return F.pad(y, [-crop0, -crop1, -crop0, -crop1])


def upsample2d(x: torch.Tensor, f: torch.Tensor, up: int = 2) -> torch.Tensor:
    """Upsample by `up` with the FIR filter, gain up**2 so a constant image stays constant."""
    fw = f.shape[-1]
    return upfirdn2d(x, f, up=up, padding=((fw + up - 1) // 2, (fw - up) // 2), gain=up**2)


def conv2d_resample(
    x: torch.Tensor, w: torch.Tensor, f: torch.Tensor | None, up: int = 1, padding: int = 0, groups: int = 1
) -> torch.Tensor:
    """Convolution, optionally upsampling first: transposed conv with stride `up`, then FIR.

    `padding` is relative to the upsampled image, as in NVIDIA's conv2d_resample; the FIR
    padding below is what remains after the transposed convolution's own growth.
    """
    if up == 1:
        return F.conv2d(x, w, padding=padding, groups=groups)
    out_channels, in_per_group, kh, kw = w.shape
    # Transposed convolution wants [in, out/groups, k, k] per group.
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
    w = w.reshape(groups * in_per_group, out_channels // groups, kh, kw)
    x = F.conv_transpose2d(x, w, stride=up, groups=groups)
    fw = f.shape[-1]
    pad0 = padding + (fw + up - 1) // 2 - (kw - 1)
    pad1 = padding + (fw - up) // 2 - (kw - up)
    return upfirdn2d(x, f, padding=(pad0, pad1), gain=up**2)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    noise: torch.Tensor | None = None,
    up: int = 1,
    padding: int = 0,
    resample_filter: torch.Tensor | None = None,
    demodulate: bool = True,
    fused_modconv: bool = False,
) -> torch.Tensor:
    """StyleGAN2's modulated convolution: per-sample weights w * s, optionally demodulated.

    Two routes with the same maths:
    - activation modulation (default): scale the input by s, run one convolution shared by
      the batch, scale the output by the demodulation coefficients. Cheap on CPU.
    - fused (`fused_modconv=True`): build per-sample weights and run a grouped convolution.
    """
    batch = x.shape[0]
    _, in_channels, kh, kw = weight.shape
    weight = weight.to(x.dtype)
    styles = styles.to(x.dtype)
    if x.dtype == torch.float16 and demodulate:
        # Rescale before the fp16 conv to avoid overflow; demodulation cancels both factors.
        weight_max = weight.abs().amax(dim=[1, 2, 3], keepdim=True)
        weight = weight / (math.sqrt(in_channels * kh * kw) * weight_max)
        styles = styles / styles.abs().amax(dim=1, keepdim=True)

    dcoefs = _demodulation_coefficients(weight, styles) if demodulate else None  # [N, O]
    if fused_modconv:
        w = weight.unsqueeze(0) * styles.reshape(batch, 1, -1, 1, 1)  # [N, O, I, k, k]
        if dcoefs is not None:
            w = w * dcoefs.reshape(batch, -1, 1, 1, 1)
        x = x.reshape(1, -1, *x.shape[2:])  # the batch becomes the conv groups
        w = w.reshape(-1, in_channels, kh, kw)
        x = conv2d_resample(x, w, resample_filter, up=up, padding=padding, groups=batch)
        return _scale_and_add(x.reshape(batch, -1, *x.shape[2:]), None, noise)
    x = conv2d_resample(x * styles.reshape(batch, -1, 1, 1), weight, resample_filter, up=up, padding=padding)
    scale = None if dcoefs is None else dcoefs.reshape(batch, -1, 1, 1)
    return _scale_and_add(x, scale, noise)


def _demodulation_coefficients(weight: torch.Tensor, styles: torch.Tensor) -> torch.Tensor:
    """1 / L2 norm of each sample's modulated filter, without materialising per-sample weights."""
    return (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()


def _scale_and_add(x: torch.Tensor, scale: torch.Tensor | None, noise: torch.Tensor | None) -> torch.Tensor:
    if noise is None:
        return x if scale is None else x * scale
    noise = noise.to(x.dtype)
    return x + noise if scale is None else torch.addcmul(noise, x, scale)  # one pass over x


def bias_act(
    x: torch.Tensor, bias: torch.Tensor | None, activation: str = "linear", clamp: float | None = None
) -> torch.Tensor:
    """Add a per-channel bias, apply the activation (lrelu with its gain), then clamp if asked."""
    if bias is not None:
        x = x + bias.to(x.dtype).reshape(1, -1, *([1] * (x.ndim - 2)))
    if activation == "lrelu":
        x = F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# ---------------------------------------------------------------------------------------------
# Layers


class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: weights stored at N(0, 1/lr) and scaled at runtime."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ):
        super().__init__()
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight.to(x.dtype) * self.weight_gain
        b = None if self.bias is None else self.bias.to(x.dtype) * self.bias_gain
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act(x @ w.t(), b, self.activation)


class MappingNetwork(torch.nn.Module):
    """z (and optional label c) -> w, broadcast to `num_ws` style slots, with truncation."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        num_ws: int | None,
        num_layers: int = 8,
        embed_features: int | None = None,
        layer_features: int | None = None,
        activation: str = "lrelu",
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.995,
    ):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(
                features[idx], features[idx + 1], activation=activation, lr_multiplier=lr_multiplier
            )
            setattr(self, f"fc{idx}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(
        self,
        z: torch.Tensor | None,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
    ) -> torch.Tensor:
        """`update_emas=True` (a trainer's main G pass) moves w_avg, the centre of truncation."""
        x = self._embed_inputs(z, c)
        for idx in range(self.num_layers):
            x = getattr(self, f"fc{idx}")(x)
        if update_emas and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            x = self._truncate(x, truncation_psi, truncation_cutoff)
        return x

    def _embed_inputs(self, z: torch.Tensor | None, c: torch.Tensor | None) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            parts.append(normalize_2nd_moment(z.to(torch.float32)))
        if self.c_dim > 0:
            if c is None:
                raise DatasetGANError(f"this generator is conditional: pass a label c of size {self.c_dim}")
            parts.append(normalize_2nd_moment(self.embed(c.to(torch.float32))))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def _truncate(self, x: torch.Tensor, psi: float, cutoff: int | None) -> torch.Tensor:
        w_avg = self.w_avg.to(x.dtype)
        if self.num_ws is None or cutoff is None:
            return w_avg.lerp(x, psi)
        # Only the first `cutoff` slots (coarse styles) are pulled towards the mean.
        return torch.cat([w_avg.lerp(x[:, :cutoff], psi), x[:, cutoff:]], dim=1)


class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 conv (optionally upsampling x2) + per-pixel noise + bias + lrelu."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        kernel_size: int = 3,
        up: int = 1,
        use_noise: bool = True,
        activation: str = "lrelu",
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
    ):
        super().__init__()
        self.resolution = resolution
        self.up = up
        self.use_noise = use_noise
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.padding = kernel_size // 2
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        if use_noise:
            self.register_buffer("noise_const", torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(
        self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random", fused_modconv: bool = False,
        noise_map: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """`noise_map` [N, 1, r, r]: this layer's unit noise per sample, used instead of `noise_mode`."""
        if noise_mode not in NOISE_MODES:
            raise DatasetGANError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        styles = self.affine(w)
        noise = None
        if self.use_noise and noise_map is not None:
            noise = noise_map.to(x.device, x.dtype) * self.noise_strength
        elif self.use_noise and noise_mode == "random":
            shape = [x.shape[0], 1, self.resolution, self.resolution]
            noise = torch.randn(shape, device=x.device, dtype=x.dtype) * self.noise_strength
        elif self.use_noise and noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(
            x, self.weight, styles, noise=noise, up=self.up, padding=self.padding,
            resample_filter=self.resample_filter, fused_modconv=fused_modconv,
        )
        return bias_act(x, self.bias, self.activation, clamp=self.conv_clamp)


class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 conv to image channels; no demodulation, so styles carry the weight gain."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, kernel_size: int = 1, conv_clamp: float | None = None
    ):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused_modconv: bool = False) -> torch.Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused_modconv=fused_modconv)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(torch.nn.Module):
    """One resolution: (const | conv0 with upsampling), conv1, and a skip-connection torgb."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        w_dim: int,
        resolution: int,
        img_channels: int,
        resample_filter: Sequence[float] = (1, 3, 3, 1),
        conv_clamp: float | None = None,
        **layer_kwargs: Any,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.resolution = resolution
        self.register_buffer("resample_filter", setup_filter(resample_filter))
        layer_args = dict(
            w_dim=w_dim, resolution=resolution, resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs
        )
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, **layer_args)
        self.conv1 = SynthesisLayer(out_channels, out_channels, **layer_args)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2
        self.num_torgb = 1

    def conv_layers(self) -> list[SynthesisLayer]:
        return [self.conv1] if self.in_channels == 0 else [self.conv0, self.conv1]

    def forward(
        self,
        x: torch.Tensor | None,
        img: torch.Tensor | None,
        ws: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = False,
        noise_maps: Sequence[torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        """ws: [N, num_conv + 1, w_dim]; the last slot is shared with the next block's first conv.
        `noise_maps`: one per conv layer (see `SynthesisLayer.forward`)."""
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        features = []
        for idx, layer in enumerate(self.conv_layers()):
            x = layer(x, ws[:, idx], noise_mode=noise_mode, fused_modconv=fused_modconv,
                      noise_map=None if noise_maps is None else noise_maps[idx])
            features.append(x)
        y = self.torgb(x, ws[:, self.num_conv], fused_modconv=fused_modconv)
        img = y if img is None else upsample2d(img, self.resample_filter) + y
        return x, img, features


class SynthesisNetwork(torch.nn.Module):
    """ws -> image through blocks b4, b8, ..., b{img_resolution}."""

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_fp16_res: int = 0,  # accepted for NVIDIA configs; precision is chosen by the caller
        **block_kwargs: Any,
    ):
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise DatasetGANError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.block_resolutions = [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, channels[res], w_dim, res, img_channels, **block_kwargs)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last block's torgb

    def blocks(self) -> list[SynthesisBlock]:
        return [getattr(self, f"b{res}") for res in self.block_resolutions]

    def conv_layers(self) -> list[SynthesisLayer]:
        """Every synthesis conv layer in forward order: the layers whose outputs are features."""
        return [layer for block in self.blocks() for layer in block.conv_layers()]

    def forward(
        self,
        ws: torch.Tensor,
        noise_mode: str = "random",
        fused_modconv: bool = False,
        return_features: bool = False,
        noise_maps: Sequence[torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """`noise_maps`: one unit-noise map [N, 1, r, r] per conv layer in `conv_layers()` order, used
        instead of `noise_mode` (per-sample noise that the caller draws reproducibly)."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            expected = f"[N, {self.num_ws}, {self.w_dim}]"
            raise DatasetGANError(f"ws must have shape {expected}, got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        features: list[torch.Tensor] = []
        w_idx = 0
        for block in self.blocks():
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            block_noise = None if noise_maps is None else noise_maps[len(features) : len(features) + block.num_conv]
            x, img, block_features = block(x, img, block_ws, noise_mode, fused_modconv, block_noise)
            features.extend(block_features)
            w_idx += block.num_conv
        img = img.to(torch.float32)
        return (img, features) if return_features else img


class StyleGAN2Generator(torch.nn.Module):
    """Mapping + synthesis, constructed from (and recording) NVIDIA-style init arguments."""

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None,
        synthesis_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        synthesis_kwargs = dict(synthesis_kwargs or {})
        self.init_kwargs = dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            mapping_kwargs=mapping_kwargs, synthesis_kwargs=synthesis_kwargs,
        )
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        **synthesis_kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, **synthesis_kwargs)
