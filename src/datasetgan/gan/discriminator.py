"""A small residual StyleGAN2 discriminator (equalised learning rate, minibatch std).

Only our trainer uses it, so it keeps StyleGAN2's structure (fromRGB at the top, residual
blocks that halve the resolution, a 4x4 epilogue with minibatch standard deviation) without
having to load anyone's weights.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

LRELU_GAIN = math.sqrt(2)


def blur_kernel(channels: int) -> torch.Tensor:
    """The [1,3,3,1] low-pass filter, one copy per channel, for anti-aliased downsampling."""
    taps = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(taps, taps)
    kernel = kernel / kernel.sum()
    return kernel.expand(channels, 1, 4, 4).contiguous()


class EqualConv2d(nn.Module):
    """Conv with weights stored at unit variance and scaled at run time (equalised lr).

    `gain` scales the output; with the activation, the leaky ReLU's sqrt(2) is folded in too
    (lrelu(a) * g == lrelu(a * g) for g > 0): neither costs a pass over the activations.
    With `down`, the output pixel j sees the low-passed input around 2j + 0.5, as in
    NVIDIA's conv2d_resample: the blur's zero padding includes the convolution's.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: bool = True, down: bool = False, gain: float = 1.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.gain = gain * (LRELU_GAIN if activation else 1.0)
        self.weight_gain = self.gain / math.sqrt(in_channels * kernel_size**2)
        self.activation, self.down, self.kernel_size = activation, down, kernel_size
        if down:
            self.register_buffer("blur", blur_kernel(in_channels), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stride, padding = 1, self.kernel_size // 2
        if self.down and self.kernel_size == 1:  # blur at the output's stride: a quarter of the work
            x = F.conv2d(x, self.blur, stride=2, padding=1, groups=x.shape[1])
        elif self.down:
            x = F.conv2d(x, self.blur, padding=2, groups=x.shape[1])
            stride, padding = 2, 0
        bias = None if self.bias is None else self.bias * self.gain
        x = F.conv2d(x, self.weight * self.weight_gain, bias, stride=stride, padding=padding)
        # in place: a convolution's backward needs its input, not its output
        return F.leaky_relu_(x, 0.2) if self.activation else x


class EqualLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, activation: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features))
        self.bias = nn.Parameter(torch.zeros(out_features))
        self.gain = LRELU_GAIN if activation else 1.0  # folded in as in EqualConv2d
        self.weight_gain, self.activation = self.gain / math.sqrt(in_features), activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.gain)
        return F.leaky_relu_(x, 0.2) if self.activation else x


class DiscriminatorBlock(nn.Module):
    """Two convs, the second halving the resolution, plus a 1x1 residual skip."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        # 1/sqrt(2) keeps the variance of the residual sum at that of its inputs (folded into both)
        self.conv0 = EqualConv2d(in_channels, in_channels, 3)
        self.conv1 = EqualConv2d(in_channels, out_channels, 3, down=True, gain=math.sqrt(0.5))
        self.skip = EqualConv2d(in_channels, out_channels, 1, bias=False, activation=False, down=True,
                                gain=math.sqrt(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.conv1(self.conv0(x))


class MinibatchStd(nn.Module):
    """Appends the mean std over groups of samples: lets D see a lack of variety."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:
            g -= 1
        y = x.reshape(g, n // g, c, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt().mean(dim=(1, 2, 3))  # [n // g]
        y = y.reshape(1, n // g, 1, 1, 1).expand(g, n // g, 1, h, w).reshape(n, 1, h, w)
        return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Residual discriminator; `channels(res)` mirrors the generator's channel_base/max rule."""

    def __init__(self, img_resolution: int, img_channels: int = 3, channel_base: int = 2048,
                 channel_max: int = 128, mbstd_group_size: int = 4):
        super().__init__()
        self.init_kwargs = dict(img_resolution=img_resolution, img_channels=img_channels,
                                channel_base=channel_base, channel_max=channel_max,
                                mbstd_group_size=mbstd_group_size)
        channels = lambda res: min(channel_base // res, channel_max)  # noqa: E731
        self.fromrgb = EqualConv2d(img_channels, channels(img_resolution), 1)
        resolutions = [2**k for k in range(int(math.log2(img_resolution)), 2, -1)]
        self.blocks = nn.Sequential(*[DiscriminatorBlock(channels(r), channels(r // 2)) for r in resolutions])
        c4 = channels(4)
        self.mbstd = MinibatchStd(mbstd_group_size)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4)
        self.out = EqualLinear(c4, 1, activation=False)

    def forward(self, img: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.fromrgb(img))
        x = self.conv(self.mbstd(x))
        return self.out(self.fc(x.flatten(1))).squeeze(1)
