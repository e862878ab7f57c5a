"""StyleGAN3 generator (alias-free, configs "T" and "R") in NVIDIA's parameter names and maths.

Module and buffer names follow NVIDIA's stylegan3 repository so that its G_ema state dicts load
with `strict=True`; every line here is our own. The filtered leaky ReLU is written with plain
torch ops as the reference path defines it (upsample, bias + lrelu + clamp, downsample), so the
same code runs on the CPU and on CUDA and stays differentiable to any order; everything is float32.

Geometry, used by `stylegan3_generator` to align features with the image: every layer's output is
a square grid of `out_size` samples at `out_sampling_rate` samples per unit, centred on the image
(sample i sits at (i + 0.5 - out_size / 2) / out_sampling_rate); the image spans [-0.5, 0.5].
Layers before the last two carry `margin_size` extra samples on each side, which absorb the
border effects of the zero-padded convolutions and filters.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from datasetgan.errors import DatasetGANError
from datasetgan.generators.stylegan2 import LRELU_GAIN, LRELU_SLOPE, FullyConnectedLayer, MappingNetwork

MAPPING_DEFAULTS = {"num_layers": 2, "w_avg_beta": 0.998}  # StyleGAN3's mapping: 2 layers, slower w_avg
CHUNK_ELEMENTS = 2**25  # values of one channel group's upsampled signal in `filtered_lrelu` (128 MiB in float32)


# ---------------------------------------------------------------------------------------------
# Filter design (what scipy.signal.firwin / kaiser_beta compute, so no scipy is needed)


def kaiser_beta(numtaps: int, width: float) -> float:
    """Kaiser window shape for a filter of `numtaps` with transition `width` (fraction of Nyquist).

    Kaiser's empirical formulas: the attenuation the taps can reach, then the beta that reaches it.
    """
    atten = 2.285 * (numtaps - 1) * math.pi * width + 7.95
    if atten > 50:
        return 0.1102 * (atten - 8.7)
    if atten > 21:
        return 0.5842 * (atten - 21) ** 0.4 + 0.07886 * (atten - 21)
    return 0.0


def design_lowpass_filter(
    numtaps: int, cutoff: float, width: float, fs: float, radial: bool = False
) -> torch.Tensor | None:
    """Kaiser-windowed low-pass FIR: 1-D separable taps, or a 2-D jinc filter when `radial`.

    None for a single tap (identity), so the layer registers no buffer, as NVIDIA's does. Designed
    in float64 with numpy, like the reference, then stored as float32 on the default device.
    """
    if numtaps == 1:
        return None
    beta = kaiser_beta(numtaps, width / (fs / 2))
    window = np.kaiser(numtaps, beta)
    if not radial:
        m = np.arange(numtaps) - (numtaps - 1) / 2
        nyquist_cutoff = cutoff / (fs / 2)
        f = nyquist_cutoff * np.sinc(nyquist_cutoff * m) * window
    else:
        x = (np.arange(numtaps) - (numtaps - 1) / 2) / fs
        r = np.hypot(*np.meshgrid(x, x))  # never 0: numtaps is even (filter_size * factor >= 2)
        jinc = torch.special.bessel_j1(torch.from_numpy(2 * np.pi * cutoff * r)).numpy() / (np.pi * r)
        f = jinc * np.outer(window, window)
    return torch.as_tensor(f / f.sum(), dtype=torch.float32)


# ---------------------------------------------------------------------------------------------
# Functional ops


def upfirdn2d(
    x: torch.Tensor,
    f: torch.Tensor | None,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = 1.0,
) -> torch.Tensor:
    """Upsample by zero insertion, pad (negative crops) [x0, x1, y0, y1], FIR-filter, decimate.

    NVIDIA's upfirdn2d semantics: each input sample is followed by `up - 1` zeros, the filter is
    a true convolution that carries `gain`, and 1-D taps (None: one tap) filter along x, then y.
    """
    f = torch.ones([1], device=x.device) if f is None else f
    f = f.to(x.dtype) * gain ** (f.ndim / 2)
    if f.ndim == 2:
        return _upfirdn_pass(x, f, (up, up), (down, down), padding)
    x = _upfirdn_pass(x, f.reshape(1, -1), (1, up), (1, down), (padding[0], padding[1], 0, 0))
    return _upfirdn_pass(x, f.reshape(-1, 1), (up, 1), (down, 1), (0, 0, padding[2], padding[3]))


def _upfirdn_pass(
    x: torch.Tensor, kernel: torch.Tensor, up: tuple[int, int], down: tuple[int, int],
    padding: tuple[int, int, int, int],
) -> torch.Tensor:
    """One upfirdn2d with a [kh, kw] kernel and per-axis (y, x) factors, as depthwise convolutions.

    Upsampling uses a strided transposed convolution, which is zero insertion followed by a full
    true convolution without multiplying the inserted zeros; cropping it by the kernel's overhang
    leaves exactly the requested padding.
    """
    channels = x.shape[1]
    weight = kernel.expand(channels, 1, *kernel.shape)
    if up != (1, 1):
        kh, kw = kernel.shape
        x = F.conv_transpose2d(x, weight, stride=up, groups=channels)
        x = F.pad(x, [padding[0] - (kw - 1), padding[1] - (kw - up[1]),
                      padding[2] - (kh - 1), padding[3] - (kh - up[0])])
        return x[:, :, :: down[0], :: down[1]]
    x = F.pad(x, list(padding))
    return F.conv2d(x, weight.flip([2, 3]), stride=down, groups=channels)


def filtered_lrelu(
    x: torch.Tensor,
    fu: torch.Tensor | None,
    fd: torch.Tensor | None,
    b: torch.Tensor,
    up: int = 1,
    down: int = 1,
    padding: tuple[int, int, int, int] = (0, 0, 0, 0),
    gain: float = LRELU_GAIN,
    slope: float = LRELU_SLOPE,
    clamp: float | None = None,
) -> torch.Tensor:
    """Alias-free nonlinearity: bias, upsample (fu), leaky ReLU with gain, clamp, downsample (fd).

    The lrelu creates frequencies above the output band; running it at `up` times the rate and
    low-pass filtering before decimation removes them instead of letting them alias. The order
    and padding rules are those of NVIDIA's reference `_filtered_lrelu_ref`.

    Every step acts on each channel alone, so the channels go through in groups whose upsampled
    signal holds at most `CHUNK_ELEMENTS` values per sample: at 1024 px one layer's upsampled
    signal is 1.4 GB in one piece, which would set the memory a whole labelling run needs. The
    groups depend on the layer alone, not on the batch, so a sample's rounding does not either.
    """
    upsampled = (x.shape[2] * up + sum(padding[2:])) * (x.shape[3] * up + sum(padding[:2]))
    group = max(1, CHUNK_ELEMENTS // max(upsampled, 1))
    if group < x.shape[1]:
        return torch.cat([filtered_lrelu(xs, fu, fd, bs, up, down, padding, gain, slope, clamp)
                          for xs, bs in zip(x.split(group, dim=1), b.split(group))], dim=1)
    x = x + b.to(x.dtype).reshape(1, -1, 1, 1)
    x = upfirdn2d(x, fu, up=up, padding=padding, gain=up**2)
    x = F.leaky_relu(x, slope) * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return upfirdn2d(x, fd, down=down)


def modulated_conv2d(
    x: torch.Tensor,
    weight: torch.Tensor,
    styles: torch.Tensor,
    input_gain: torch.Tensor,
    demodulate: bool = True,
    padding: int = 0,
) -> torch.Tensor:
    """StyleGAN3's modulated convolution, written as modulation of the activations.

    Scaling the input by the styles (and the magnitude-EMA gain), convolving with the shared
    weight and scaling the output by the demodulation coefficients equals NVIDIA's per-sample
    weights, with one convolution for the whole batch. The weights and styles are normalised
    to unit mean square first, as NVIDIA does; the styles per sample where NVIDIA uses the whole
    batch's mean. Demodulation cancels either factor except against its 1e-8 epsilon (next to a
    sum of order in_channels * k * k), and per sample keeps a sample's maths free of its batch-mates.
    """
    if demodulate:
        weight = weight * weight.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        styles = styles * styles.square().mean(dim=1, keepdim=True).rsqrt()
    x = F.conv2d(x * (styles * input_gain).reshape(*styles.shape, 1, 1), weight, padding=padding)
    if demodulate:
        dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [N, O]
        x = x * dcoefs.reshape(*dcoefs.shape, 1, 1)
    return x


# ---------------------------------------------------------------------------------------------
# Layers


class SynthesisInput(torch.nn.Module):
    """Fourier features: sinusoids of fixed random frequencies, rotated and translated by w.

    The features are continuous functions sampled on the layer's grid, so a transform (the affine
    of w, then the user's `transform` buffer) moves the content by any sub-pixel amount exactly.
    """

    def __init__(self, w_dim: int, channels: int, size: int, sampling_rate: float, bandwidth: float):
        super().__init__()
        self.w_dim, self.channels, self.size = w_dim, channels, size
        self.sampling_rate, self.bandwidth = sampling_rate, bandwidth
        # Frequencies uniform in the disc of radius `bandwidth` (a Gaussian's direction, radius
        # exp(-r^2 / 4) of its length r), phases uniform.
        freqs = torch.randn([channels, 2])
        radii = freqs.square().sum(dim=1, keepdim=True).sqrt()
        freqs = freqs / (radii * radii.square().exp().pow(0.25)) * bandwidth
        phases = torch.rand([channels]) - 0.5
        self.weight = torch.nn.Parameter(torch.randn([channels, channels]))
        self.affine = FullyConnectedLayer(w_dim, 4)
        with torch.no_grad():  # start at the identity transform: (cos, sin, tx, ty) = (1, 0, 0, 0)
            self.affine.weight.zero_()
            self.affine.bias.copy_(torch.tensor([1.0, 0.0, 0.0, 0.0]))
        self.register_buffer("transform", torch.eye(3, 3))
        self.register_buffer("freqs", freqs)
        self.register_buffer("phases", phases)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        freqs, phases = self._transformed_frequencies(w)
        # Dampen frequencies that the user's transform pushed out of band.
        amplitudes = 1 - (freqs.norm(dim=2) - self.bandwidth) / (self.sampling_rate / 2 - self.bandwidth)
        amplitudes = amplitudes.clamp(0, 1)
        coords = (torch.arange(self.size, device=w.device, dtype=torch.float32) + 0.5 - self.size / 2)
        coords = coords / self.sampling_rate
        grid = torch.stack(torch.meshgrid(coords, coords, indexing="xy"), dim=-1)  # [H, W, (x, y)]
        x = grid.unsqueeze(0) @ freqs.transpose(1, 2).unsqueeze(1)  # [N, H, W, C]
        x = torch.sin((x + phases.reshape(-1, 1, 1, self.channels)) * (2 * math.pi))
        x = x * amplitudes.reshape(-1, 1, 1, self.channels)
        x = x @ (self.weight / math.sqrt(self.channels)).t()
        return x.permute(0, 3, 1, 2)

    def _transformed_frequencies(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample frequencies [N, C, 2] and phases [N, C] after rotation, translation, transform."""
        t = self.affine(w)
        t = t / t[:, :2].norm(dim=1, keepdim=True)  # (cos, sin) of the rotation, translation
        cos, sin, tx, ty = t.unbind(dim=1)
        zero, one = torch.zeros_like(cos), torch.ones_like(cos)
        # Inverse rotation and inverse translation of the image, then the user's transform.
        m_r = torch.stack([cos, -sin, zero, sin, cos, zero, zero, zero, one], dim=1).reshape(-1, 3, 3)
        m_t = torch.stack([one, zero, -tx, zero, one, -ty, zero, zero, one], dim=1).reshape(-1, 3, 3)
        transforms = m_r @ m_t @ self.transform.unsqueeze(0)
        freqs = self.freqs.unsqueeze(0)
        phases = self.phases.unsqueeze(0) + (freqs @ transforms[:, :2, 2:]).squeeze(2)
        return freqs @ transforms[:, :2, :2], phases


class SynthesisLayer(torch.nn.Module):
    """Modulated conv + filtered leaky ReLU from one sampling grid to the next (or the ToRGB layer).

    The conv is a "full" convolution (padding kernel - 1), the lrelu runs at `lrelu_upsampling`
    times the higher of the two sampling rates, and the paddings below make input and output
    grids share their centre (NVIDIA's symmetric interpretation, Appendix C.3 of the paper).
    """

    def __init__(
        self,
        *,
        w_dim: int,
        is_torgb: bool,
        is_critically_sampled: bool,
        in_channels: int,
        out_channels: int,
        in_size: int,
        out_size: int,
        in_sampling_rate: int,
        out_sampling_rate: int,
        in_cutoff: float,
        out_cutoff: float,
        in_half_width: float,
        out_half_width: float,
        conv_kernel: int = 3,
        filter_size: int = 6,
        lrelu_upsampling: int = 2,
        use_radial_filters: bool = False,
        conv_clamp: float | None = 256,
        magnitude_ema_beta: float = 0.999,
    ):
        super().__init__()
        self.is_torgb, self.is_critically_sampled = is_torgb, is_critically_sampled
        self.in_channels, self.out_channels = in_channels, out_channels
        self.in_size, self.out_size = in_size, out_size
        self.in_sampling_rate, self.out_sampling_rate = in_sampling_rate, out_sampling_rate
        self.tmp_sampling_rate = max(in_sampling_rate, out_sampling_rate) * (1 if is_torgb else lrelu_upsampling)
        self.conv_kernel = 1 if is_torgb else conv_kernel
        self.conv_clamp = conv_clamp
        self.magnitude_ema_beta = magnitude_ema_beta

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, self.conv_kernel, self.conv_kernel]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("magnitude_ema", torch.ones([]))

        self.up_factor = self.tmp_sampling_rate // in_sampling_rate
        self.up_taps = filter_size * self.up_factor if self.up_factor > 1 and not is_torgb else 1
        self.register_buffer("up_filter", design_lowpass_filter(
            self.up_taps, in_cutoff, in_half_width * 2, self.tmp_sampling_rate))
        self.down_factor = self.tmp_sampling_rate // out_sampling_rate
        self.down_taps = filter_size * self.down_factor if self.down_factor > 1 and not is_torgb else 1
        self.down_radial = use_radial_filters and not is_critically_sampled
        self.register_buffer("down_filter", design_lowpass_filter(
            self.down_taps, out_cutoff, out_half_width * 2, self.tmp_sampling_rate, radial=self.down_radial))
        self.padding = self._padding()

    def _padding(self) -> tuple[int, int, int, int]:
        """Padding of the upsampled signal so the decimated output has `out_size` centred samples."""
        total = (self.out_size - 1) * self.down_factor + 1  # output size before decimation
        total -= (self.in_size + self.conv_kernel - 1) * self.up_factor  # conv output after upsampling
        total += self.up_taps + self.down_taps - 2  # what the two filters remove
        lo = (total + self.up_factor) // 2  # each upsampled sample sits at the centre of its `up` cell
        return lo, total - lo, lo, total - lo

    def forward(self, x: torch.Tensor, w: torch.Tensor, update_emas: bool = False) -> torch.Tensor:
        """`update_emas=True` (a trainer's pass) moves the input-magnitude EMA that normalises the input."""
        if update_emas:
            with torch.no_grad():
                magnitude = x.detach().to(torch.float32).square().mean()
                self.magnitude_ema.copy_(magnitude.lerp(self.magnitude_ema, self.magnitude_ema_beta))
        styles = self.affine(w)
        if self.is_torgb:  # no demodulation, so the styles carry the equalised-lr weight gain
            styles = styles * (1 / math.sqrt(self.in_channels * self.conv_kernel**2))
        x = modulated_conv2d(x, self.weight, styles, self.magnitude_ema.rsqrt(), demodulate=not self.is_torgb,
                             padding=self.conv_kernel - 1)
        return filtered_lrelu(
            x, self.up_filter, self.down_filter, self.bias, up=self.up_factor, down=self.down_factor,
            padding=self.padding, gain=1 if self.is_torgb else LRELU_GAIN, slope=1 if self.is_torgb else LRELU_SLOPE,
            clamp=self.conv_clamp,
        )


class SynthesisNetwork(torch.nn.Module):
    """ws -> image: Fourier input, `num_layers` synthesis layers, ToRGB, times `output_scale`.

    Cutoffs and stopbands rise geometrically from the first layer to the last critically sampled
    ones; each layer's sampling rate is the power of two that holds its stopband (at most the
    image resolution), and its channels fall as its cutoff rises.
    """

    def __init__(
        self,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        channel_base: int = 32768,
        channel_max: int = 512,
        num_layers: int = 14,
        num_critical: int = 2,
        first_cutoff: float = 2,
        first_stopband: float = 2**2.1,
        last_stopband_rel: float = 2**0.3,
        margin_size: int = 10,
        output_scale: float = 0.25,
        num_fp16_res: int = 4,  # accepted for NVIDIA configs; this implementation computes in float32
        **layer_kwargs: Any,
    ):
        _check_config(img_resolution, img_channels, num_layers, num_critical, margin_size)
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_layers, self.num_critical = num_layers, num_critical
        self.margin_size, self.output_scale = margin_size, output_scale
        self.num_ws = num_layers + 2

        last_cutoff = img_resolution / 2
        last_stopband = last_cutoff * last_stopband_rel
        exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
        cutoffs = first_cutoff * (last_cutoff / first_cutoff) ** exponents
        stopbands = first_stopband * (last_stopband / first_stopband) ** exponents
        sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
        half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
        sizes = sampling_rates + margin_size * 2
        sizes[-2:] = img_resolution
        channels = np.rint(np.minimum((channel_base / 2) / cutoffs, channel_max))
        channels[-1] = img_channels

        self.input = SynthesisInput(w_dim, int(channels[0]), int(sizes[0]), float(sampling_rates[0]), float(cutoffs[0]))
        self.layer_names = []
        for idx in range(num_layers + 1):
            prev = max(idx - 1, 0)
            layer = SynthesisLayer(
                w_dim=w_dim, is_torgb=idx == num_layers, is_critically_sampled=idx >= num_layers - num_critical,
                in_channels=int(channels[prev]), out_channels=int(channels[idx]),
                in_size=int(sizes[prev]), out_size=int(sizes[idx]),
                in_sampling_rate=int(sampling_rates[prev]), out_sampling_rate=int(sampling_rates[idx]),
                in_cutoff=cutoffs[prev], out_cutoff=cutoffs[idx],
                in_half_width=half_widths[prev], out_half_width=half_widths[idx],
                **layer_kwargs,
            )
            name = f"L{idx}_{layer.out_size}_{layer.out_channels}"
            setattr(self, name, layer)
            self.layer_names.append(name)

    def layers(self) -> list[SynthesisLayer]:
        """L0 ... ToRGB in forward order."""
        return [getattr(self, name) for name in self.layer_names]

    def forward(
        self, ws: torch.Tensor, return_features: bool = False, update_emas: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """Image [N, C, R, R]; with `return_features`, also every layer's raw output before ToRGB
        (margins included), in forward order."""
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise DatasetGANError(f"ws must have shape [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32).unbind(dim=1)
        x = self.input(ws[0])
        features = []
        for layer, w in zip(self.layers(), ws[1:]):
            x = layer(x, w, update_emas=update_emas)
            features.append(x)
        img = x * self.output_scale
        return (img, features[:-1]) if return_features else img


def _check_config(img_resolution: int, img_channels: int, num_layers: int, num_critical: int,
                  margin_size: int) -> None:
    """One-line errors for configurations the layer geometry cannot be built from."""
    if img_resolution < 4 or img_resolution & (img_resolution - 1):
        raise DatasetGANError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
    if img_channels < 1:
        raise DatasetGANError(f"img_channels must be at least 1, got {img_channels}")
    if not 0 <= num_critical < num_layers:
        raise DatasetGANError(f"need 0 <= num_critical < num_layers, got {num_critical} and {num_layers}")
    if margin_size < 0:
        raise DatasetGANError(f"margin_size must be >= 0, got {margin_size}")


class StyleGAN3Generator(torch.nn.Module):
    """Mapping + synthesis, constructed from (and recording) NVIDIA's init arguments.

    The synthesis arguments come flattened, as the stylegan3 repository pickles them.
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        img_resolution: int,
        img_channels: int,
        mapping_kwargs: dict[str, Any] | None = None,
        **synthesis_kwargs: Any,
    ):
        super().__init__()
        mapping_kwargs = dict(mapping_kwargs or {})
        self.init_kwargs = dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            mapping_kwargs=mapping_kwargs, **synthesis_kwargs,
        )
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_ws=self.num_ws, **{**MAPPING_DEFAULTS, **mapping_kwargs})

    def forward(
        self,
        z: torch.Tensor,
        c: torch.Tensor | None = None,
        truncation_psi: float = 1.0,
        truncation_cutoff: int | None = None,
        update_emas: bool = False,
        **synthesis_kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)
