"""StyleGAN1 generator as the DatasetGAN release runs it, in the release's parameter names.

The DatasetGAN release (nv-tlabs/datasetGAN_release, `models/stylegan1.py`, a PyTorch port of
NVIDIA's StyleGAN1) builds `g_all = Sequential(g_mapping, truncation, g_synthesis)` and ships
`*.for_g_all.pt` state dicts of it plus the average latent as a separate
`avg_latent_stylegan1.npy`. `StyleGAN1Generator` holds `g_mapping` and `g_synthesis` under those
names, so a release state dict loads with `strict=True`; the average latent is our buffer
`avg_latent` [18, 512], outside both prefixes (the release's truncation module has no tensors).
Our own save of `state_dict()` therefore round-trips as is, and a release dict plus its `.npy`
loads through `load_g_all` / `load_release_generator`. Every line here is our own.

The maths, as the release computes it:

- equalised learning rate: weights are stored at unit scale and multiplied at run time by
  gain / sqrt(fan_in) (times the layer's learning-rate multiplier, 0.01 in the mapping, whose
  biases are scaled by the same 0.01); gain sqrt(2) for layers followed by a leaky ReLU, 1 for
  style modulation and `torgb`. The leaky ReLU (slope 0.2) itself carries no gain.
- mapping: pixel norm of z (eps 1e-8), 8 dense layers of 512 + leaky ReLU, w broadcast to 18
  slots whatever the resolution (the synthesis reads the first 2 log2(resolution) - 2).
- synthesis, per layer: conv -> layer epilogue = noise (per-channel weight x one per-pixel
  map) -> leaky ReLU -> instance norm (eps 1e-5, no affine) -> style mod x * (1 + s) + b with
  [s, b] = dense(w). The 4x4 block starts from a learned constant plus a per-channel bias.
- upsampling conv (`conv0_up`): below 128 px output, nearest x2 then 3x3 conv; at 128 px and
  above, the fused form: one stride-2 transposed conv whose 4x4 kernel is the sum of the 3x3
  kernel at its four 1-pixel offsets. Either way the [1, 2, 1] x [1, 2, 1] / 16 blur (the
  `intermediate` buffer, stored in the checkpoints) follows, then the bias. The release builds
  the fused kernel without flipping it, so at >= 128 px it equals nearest x2 + conv with the
  spatially flipped kernel; checkpoints were converted for exactly this, so we keep it.
- `torgb`: a 1x1 conv (gain 1) on the last block's output; the image is not clamped here.

Noise is never drawn inside the network: `synthesis` takes one unit noise map per noise layer
from the caller (the release draws fresh maps on every call unless a layer's `.noise` is set).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from datasetgan.errors import DatasetGANError

DLATENT_SIZE = 512
NUM_WS = 18  # the release's G_mapping always broadcasts w to 18 slots (a 1024 px synthesis)
MAPPING_LAYERS = 8
MAPPING_LR_MUL = 0.01
LRELU_SLOPE = 0.2
HE_GAIN = math.sqrt(2.0)  # the He-init gain of layers followed by a leaky ReLU
PIXEL_NORM_EPS = 1e-8
INSTANCE_NORM_EPS = 1e-5  # torch.nn.InstanceNorm2d's default, which the release uses
FUSED_UPSCALE_MIN_RES = 128  # output resolution from which the release fuses upscale and conv
BLUR_TAPS = (1.0, 2.0, 1.0)
MAX_RESOLUTION = 2 ** (NUM_WS // 2 + 1)  # 18 style slots feed at most 1024 px


# ---------------------------------------------------------------------------------------------
# Layers


class EqualizedLinear(torch.nn.Module):
    """Dense layer with equalised learning rate (the release's MyLinear)."""

    def __init__(self, in_features: int, out_features: int, gain: float, lr_mul: float = 1.0):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = torch.nn.Parameter(torch.zeros(out_features))
        self.w_mul = gain / math.sqrt(in_features) * lr_mul
        self.b_mul = lr_mul

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight * self.w_mul, self.bias * self.b_mul)


class BlurLayer(torch.nn.Module):
    """Depthwise [1, 2, 1] x [1, 2, 1] / 16 low-pass filter applied after upsampling."""

    def __init__(self):
        super().__init__()
        taps = torch.tensor(BLUR_TAPS)
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        channels = x.shape[1]
        kernel = self.kernel.to(x.dtype).expand(channels, -1, -1, -1)
        return F.conv2d(x, kernel, padding=self.kernel.shape[-1] // 2, groups=channels)


class EqualizedConv2d(torch.nn.Module):
    """Conv with equalised learning rate (the release's MyConv2d); with `upscale`, doubles the
    resolution first and blurs after (`intermediate`), the bias added last."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, gain: float, upscale: bool = False):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = torch.nn.Parameter(torch.zeros(out_channels))
        self.w_mul = gain / math.sqrt(in_channels * kernel_size**2)
        self.upscale = upscale
        self.intermediate = BlurLayer() if upscale else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight * self.w_mul
        if not self.upscale:
            return F.conv2d(x, weight, self.bias, padding=weight.shape[-1] // 2)
        if 2 * min(x.shape[2:]) >= FUSED_UPSCALE_MIN_RES:
            x = F.conv_transpose2d(x, fused_upscale_kernel(weight), stride=2, padding=1)
        else:
            x = F.conv2d(upscale2d(x), weight, padding=weight.shape[-1] // 2)
        return self.intermediate(x) + self.bias.view(1, -1, 1, 1)


def upscale2d(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour x2: every pixel becomes a 2x2 square."""
    return x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)


def fused_upscale_kernel(weight: torch.Tensor) -> torch.Tensor:
    """The 4x4 transposed-conv kernel [in, out, 4, 4] of the release's fused upscale + 3x3 conv:
    the kernel summed over its four placements in a zero-padded 5x5 (no flip, as in the release)."""
    w = F.pad(weight.transpose(0, 1), (1, 1, 1, 1))
    return w[:, :, 1:, 1:] + w[:, :, :-1, 1:] + w[:, :, 1:, :-1] + w[:, :, :-1, :-1]


class NoiseLayer(torch.nn.Module):
    """Adds one per-pixel noise map (shared by all channels), scaled per channel by `weight`."""

    def __init__(self, channels: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:
            return x
        return x + self.weight.view(1, -1, 1, 1) * noise.to(x.device, x.dtype)


class TopEpilogue(torch.nn.Module):
    """The release's `top_epi`: noise, leaky ReLU, instance norm (only the noise has weights)."""

    def __init__(self, channels: int):
        super().__init__()
        self.noise = NoiseLayer(channels)

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        x = F.leaky_relu(self.noise(x, noise), LRELU_SLOPE)
        return F.instance_norm(x, eps=INSTANCE_NORM_EPS)


class StyleMod(torch.nn.Module):
    """AdaIN's style half: per-channel scale (1 + s) and shift b, [s, b] a dense map of w."""

    def __init__(self, channels: int):
        super().__init__()
        self.lin = EqualizedLinear(DLATENT_SIZE, 2 * channels, gain=1.0)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        style = self.lin(w).view(-1, 2, x.shape[1], 1, 1)
        return x * (style[:, 0] + 1) + style[:, 1]


class LayerEpilogue(torch.nn.Module):
    """What follows every synthesis conv: `top_epi` (noise, activation, norm), then `style_mod`."""

    def __init__(self, channels: int):
        super().__init__()
        self.top_epi = TopEpilogue(channels)
        self.style_mod = StyleMod(channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.style_mod(self.top_epi(x, noise), w)


# ---------------------------------------------------------------------------------------------
# Blocks and networks


class InputBlock(torch.nn.Module):
    """4x4: learned constant + bias -> epi1 -> conv -> epi2."""

    def __init__(self, channels: int):
        super().__init__()
        self.const = torch.nn.Parameter(torch.ones(1, channels, 4, 4))
        self.bias = torch.nn.Parameter(torch.ones(channels))
        self.epi1 = LayerEpilogue(channels)
        self.conv = EqualizedConv2d(channels, channels, 3, gain=HE_GAIN)
        self.epi2 = LayerEpilogue(channels)

    def forward(self, ws: torch.Tensor, noise: Sequence[torch.Tensor | None]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(output after epi2, output of the conv before it), as the release's block returns them."""
        x = self.const.expand(ws.shape[0], -1, -1, -1) + self.bias.view(1, -1, 1, 1)
        x = self.conv(self.epi1(x, ws[:, 0], noise[0]))
        return self.epi2(x, ws[:, 1], noise[1]), x


class GSynthesisBlock(torch.nn.Module):
    """2x resolution: upsampling conv0_up -> epi1 -> conv1 -> epi2."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0_up = EqualizedConv2d(in_channels, out_channels, 3, gain=HE_GAIN, upscale=True)
        self.epi1 = LayerEpilogue(out_channels)
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3, gain=HE_GAIN)
        self.epi2 = LayerEpilogue(out_channels)

    def forward(self, x: torch.Tensor, ws: torch.Tensor, noise: Sequence[torch.Tensor | None]
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(output after epi2, output of conv1 before it), as the release's block returns them."""
        x = self.conv1(self.epi1(self.conv0_up(x), ws[:, 0], noise[0]))
        return self.epi2(x, ws[:, 1], noise[1]), x


class G_mapping(torch.nn.Module):  # the release's (and NVIDIA's) name
    """z -> w: pixel norm, then 8 dense layers (`dense0..7`) with leaky ReLU, w broadcast to 18 slots."""

    def __init__(self):
        super().__init__()
        for idx in range(MAPPING_LAYERS):
            layer = EqualizedLinear(DLATENT_SIZE, DLATENT_SIZE, gain=HE_GAIN, lr_mul=MAPPING_LR_MUL)
            self.add_module(f"dense{idx}", layer)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z * torch.rsqrt(z.square().mean(dim=1, keepdim=True) + PIXEL_NORM_EPS)
        for layer in self.children():
            x = F.leaky_relu(layer(x), LRELU_SLOPE)
        return x.unsqueeze(1).expand(-1, NUM_WS, -1)


def block_channels(resolution: int, fmap_base: int, fmap_max: int) -> dict[int, int]:
    """Channels of each block by resolution: min(fmap_base / 2^(log2(res) - 1), fmap_max)."""
    return {2**r: min(int(fmap_base / 2 ** (r - 1)), fmap_max) for r in range(2, int(math.log2(resolution)) + 1)}


class G_synthesis(torch.nn.Module):  # the release's (and NVIDIA's) name
    """ws -> image, through `blocks` ('4x4', '8x8', ...) and `torgb`; also the release's feature list."""

    def __init__(self, resolution: int, fmap_base: int, fmap_max: int):
        super().__init__()
        channels = block_channels(resolution, fmap_base, fmap_max)
        blocks: dict[str, torch.nn.Module] = {"4x4": InputBlock(channels[4])}
        for res in list(channels)[1:]:
            blocks[f"{res}x{res}"] = GSynthesisBlock(channels[res // 2], channels[res])
        self.blocks = torch.nn.ModuleDict(blocks)
        self.torgb = EqualizedConv2d(channels[resolution], 3, 1, gain=1.0)

    def forward(self, ws: torch.Tensor, noise_maps: Sequence[torch.Tensor | None]
                ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(image, features): per block, its output after epi2 and its last conv's output before
        epi2, the two tensors the release's G_synthesis collects in its result list."""
        input_block, *blocks = self.blocks.values()
        x, before_epi2 = input_block(ws[:, :2], noise_maps[:2])
        features = [x, before_epi2]
        for idx, block in enumerate(blocks, start=1):
            layers = slice(2 * idx, 2 * idx + 2)
            x, before_epi2 = block(x, ws[:, layers], noise_maps[layers])
            features += [x, before_epi2]
        return self.torgb(x), features


# ---------------------------------------------------------------------------------------------
# The generator


class StyleGAN1Generator(torch.nn.Module):
    """The release's g_all: `g_mapping` + truncation towards `avg_latent` + `g_synthesis`.

    `state_dict()` is the release's g_all dict plus `avg_latent`, so our own save reloads with
    `strict=True`; `load_g_all` takes a release dict and its separate average latent.
    """

    z_dim = DLATENT_SIZE
    c_dim = 0
    w_dim = DLATENT_SIZE
    img_channels = 3
    num_ws = NUM_WS

    def __init__(self, resolution: int = 1024, fmap_base: int = 8192, fmap_max: int = 512):
        super().__init__()
        _check_architecture(resolution, fmap_base, fmap_max)
        self.init_kwargs = dict(resolution=resolution, fmap_base=fmap_base, fmap_max=fmap_max)
        self.img_resolution = resolution
        self.g_mapping = G_mapping()
        self.g_synthesis = G_synthesis(resolution, fmap_base, fmap_max)
        self.register_buffer("avg_latent", torch.zeros(NUM_WS, DLATENT_SIZE))

    @property
    def block_channels(self) -> dict[int, int]:
        """Channels of each synthesis block, by resolution (4, 8, ..., img_resolution)."""
        return block_channels(self.img_resolution, self.init_kwargs["fmap_base"], self.init_kwargs["fmap_max"])

    @property
    def noise_resolutions(self) -> list[int]:
        """Resolution of each noise layer's map, in forward order (epi1 and epi2 of every block)."""
        return [res for res in self.block_channels for _ in range(2)]

    def forward(self, z: torch.Tensor, psi: float = 1.0, cutoff: int | None = None,
                noise_maps: Sequence[torch.Tensor] | None = None) -> torch.Tensor:
        """g_all: z -> image (noise as in `synthesis`)."""
        return self.synthesis(self.truncate(self.mapping(z), psi, cutoff), noise_maps)

    def mapping(self, z: torch.Tensor) -> torch.Tensor:
        """z [N, 512] -> untruncated ws [N, 18, 512]."""
        if z.ndim != 2 or z.shape[1] != DLATENT_SIZE:
            raise DatasetGANError(f"z has shape {list(z.shape)}, expected [N, {DLATENT_SIZE}]")
        return self.g_mapping(z.to(self.avg_latent.device, torch.float32))

    def truncate(self, ws: torch.Tensor, psi: float = 0.7, cutoff: int | None = None) -> torch.Tensor:
        """Pull the first `cutoff` slots (None: all) towards `avg_latent` by `psi` (the release's
        Truncation: threshold 0.7, max_layer 8 for faces and cars, 7 for cats and bedrooms)."""
        self._check_ws(ws)
        cutoff = NUM_WS if cutoff is None else cutoff
        if not 0 <= cutoff <= NUM_WS:
            raise DatasetGANError(f"truncation cutoff {cutoff} is out of range: give 0..{NUM_WS} style slots (or none)")
        ws = ws.to(self.avg_latent.device, torch.float32)
        return torch.cat([torch.lerp(self.avg_latent[:cutoff], ws[:, :cutoff], psi), ws[:, cutoff:]], dim=1)

    def synthesis(self, ws: torch.Tensor, noise_maps: Sequence[torch.Tensor] | None = None,
                  return_features: bool = False) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """ws [N, 18, 512] -> image [N, 3, R, R] (raw, about [-1, 1]), and with `return_features`
        the release's feature list (see `G_synthesis.forward`).

        `noise_maps`: one unit map [N or 1, 1, r, r] per noise layer in forward order (see
        `noise_resolutions`); None adds no noise, so the output is a function of ws alone.
        """
        self._check_ws(ws)
        noise = self._check_noise(noise_maps, ws.shape[0])
        img, features = self.g_synthesis(ws.to(self.avg_latent.device, torch.float32), noise)
        return (img, features) if return_features else img

    def load_g_all(self, state: Mapping[str, torch.Tensor], avg_latent: torch.Tensor) -> None:
        """Load a release g_all state dict and its average latent ([18, 512], or [512] for all slots)."""
        check_g_all_state(self, state)
        self.load_state_dict({**state, "avg_latent": broadcast_avg_latent(avg_latent)}, strict=True)

    def _check_ws(self, ws: torch.Tensor) -> None:
        if ws.ndim != 3 or tuple(ws.shape[1:]) != (NUM_WS, DLATENT_SIZE):
            raise DatasetGANError(f"ws has shape {list(ws.shape)}, expected [N, {NUM_WS}, {DLATENT_SIZE}]")

    def _check_noise(self, noise_maps: Sequence[torch.Tensor] | None, batch: int) -> list[torch.Tensor | None]:
        resolutions = self.noise_resolutions
        if noise_maps is None:
            return [None] * len(resolutions)
        if len(noise_maps) != len(resolutions):
            raise DatasetGANError(f"got {len(noise_maps)} noise maps, expected one per noise layer ({len(resolutions)})")
        for idx, (noise, res) in enumerate(zip(noise_maps, resolutions)):
            if noise.ndim != 4 or noise.shape[0] not in (1, batch) or tuple(noise.shape[1:]) != (1, res, res):
                raise DatasetGANError(f"noise map {idx} has shape {list(noise.shape)}, expected [{batch}, 1, {res}, {res}]")
        return list(noise_maps)


def _check_architecture(resolution: int, fmap_base: int, fmap_max: int) -> None:
    if resolution not in [2**r for r in range(2, int(math.log2(MAX_RESOLUTION)) + 1)]:
        raise DatasetGANError(f"resolution {resolution} is not supported: use a power of two from 4 to {MAX_RESOLUTION}")
    if min(block_channels(resolution, fmap_base, fmap_max).values()) < 1:
        raise DatasetGANError(f"fmap_base {fmap_base} and fmap_max {fmap_max} leave a block without channels: "
                              f"raise them")


def broadcast_avg_latent(avg_latent: torch.Tensor | np.ndarray) -> torch.Tensor:
    """The average latent as [18, 512] float32: a [512] one (as the release's own
    make_training_data.py re-saves it, `avg_latent[0]`) is the same for every slot."""
    avg = torch.as_tensor(avg_latent)
    if tuple(avg.shape) not in ((NUM_WS, DLATENT_SIZE), (DLATENT_SIZE,)):
        raise DatasetGANError(f"avg latent has shape {list(avg.shape)}, expected [{NUM_WS}, {DLATENT_SIZE}] "
                              f"or [{DLATENT_SIZE}] (give the release's avg_latent_stylegan1.npy)")
    if not avg.is_floating_point():
        raise DatasetGANError(f"avg latent holds {avg.dtype}, expected floats (give the release's "
                              f"avg_latent_stylegan1.npy)")
    return avg.to(torch.float32).expand(NUM_WS, DLATENT_SIZE).clone()


# ---------------------------------------------------------------------------------------------
# The release's files

_BLOCK_KEY = re.compile(r"g_synthesis\.blocks\.(\d+)x\1\.")
_REQUIRED_KEYS = ("g_mapping.dense0.weight", "g_synthesis.blocks.4x4.const", "g_synthesis.torgb.weight")


def release_init_kwargs(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """resolution, fmap_base and fmap_max of a release g_all state dict, from its names and shapes.

    fmap_max is the 4x4 block's width; fmap_base follows from the last block's width (when every
    block is at fmap_max, the smallest fmap_base that gives those widths: the same network).
    """
    missing = [key for key in _REQUIRED_KEYS if key not in state]
    if missing:
        raise DatasetGANError(f"not a DatasetGAN StyleGAN1 g_all state dict: missing {', '.join(missing)} "
                              f"(give the release's *.for_g_all.pt)")
    resolution = max(int(m.group(1)) for key in state if (m := _BLOCK_KEY.match(key)))
    fmap_max = _block_width(state, 4)
    fmap_base = _block_width(state, resolution) * resolution // 2
    return dict(resolution=resolution, fmap_base=fmap_base, fmap_max=fmap_max)


def _block_width(state: Mapping[str, torch.Tensor], res: int) -> int:
    key = "g_synthesis.blocks.4x4.const" if res == 4 else f"g_synthesis.blocks.{res}x{res}.conv1.weight"
    if key not in state or state[key].ndim != 4:
        raise DatasetGANError(f"not a DatasetGAN StyleGAN1 g_all state dict: {key} is missing or not 4-d "
                              f"(give an intact *.for_g_all.pt)")
    return int(state[key].shape[1 if res == 4 else 0])


def check_g_all_state(network: StyleGAN1Generator, state: Mapping[str, torch.Tensor]) -> None:
    """Refuse, in one line, a state dict whose names or shapes are not this network's g_all."""
    expected = {k: v.shape for k, v in network.state_dict().items() if k != "avg_latent"}
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {list(state[k].shape)} (expected {list(expected[k])})" for k in expected
             if k in state and state[k].shape != expected[k]]
    for what, keys in (("missing", missing), ("unexpected", unexpected), ("misshapen", wrong)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            raise DatasetGANError(f"not a DatasetGAN StyleGAN1 g_all state dict for {network.init_kwargs}: "
                                  f"{what} {', '.join(keys[:3])}{more}")


def load_release_generator(pt_path: str | Path, avg_latent_path: str | Path) -> StyleGAN1Generator:
    """The release's `*.for_g_all.pt` and `avg_latent_stylegan1.npy` as a network on the CPU, in eval mode.

    Both are read without running code: `torch.load(weights_only=True)` and
    `np.load(allow_pickle=False)`. The architecture is inferred from the state dict.
    """
    return release_network(Path(pt_path), _read_state_dict(Path(pt_path)), read_avg_latent(Path(avg_latent_path)))


def release_network(path: Path, state: Mapping[str, torch.Tensor], avg_latent: torch.Tensor) -> StyleGAN1Generator:
    """A g_all state dict read from `path` (for messages) and its average latent, as a network."""
    try:
        network = StyleGAN1Generator(**release_init_kwargs(state))
        network.load_g_all(state, avg_latent)
    except DatasetGANError as exc:
        raise DatasetGANError(f"{path}: {exc}") from None
    return network.eval()


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise DatasetGANError(f"no g_all checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for damaged or code-carrying files
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DatasetGANError(f"{path} is not a readable torch state dict: {first_line}") from None
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        what = "a dict with non-tensor entries" if isinstance(state, Mapping) else f"a {type(state).__name__}"
        raise DatasetGANError(f"{path} holds {what}, not a state dict of tensors (give the release's *.for_g_all.pt)")
    return dict(state)


def read_avg_latent(path: Path) -> torch.Tensor:
    if not path.is_file():
        raise DatasetGANError(f"no average latent at {path} (give the release's avg_latent_stylegan1.npy)")
    try:
        array = np.load(path, allow_pickle=False)
    except Exception as exc:  # numpy raises ValueError for pickled objects, others for damage
        raise DatasetGANError(f"{path} is not a readable .npy array: {type(exc).__name__}") from None
    if not isinstance(array, np.ndarray):
        raise DatasetGANError(f"{path} is an .npz archive, expected one .npy array of shape [{NUM_WS}, {DLATENT_SIZE}]")
    if array.dtype.kind != "f":
        raise DatasetGANError(f"{path} holds {array.dtype} values, expected a float array [{NUM_WS}, {DLATENT_SIZE}]")
    try:
        return broadcast_avg_latent(torch.from_numpy(np.ascontiguousarray(array)))
    except DatasetGANError as exc:
        raise DatasetGANError(f"{path}: {exc}") from None
