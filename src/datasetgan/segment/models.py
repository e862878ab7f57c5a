"""Segmentation networks from torchvision, behind one constructor.

- `unet-resnet18-slim` (default): torchvision's ResNet-18 up to layer3 as encoder with a
  narrow U-Net decoder and a full-resolution skip, so that parts two pixels wide (eyes, brows
  at 64 px) survive. 3.3 M parameters. The decoder's full-resolution convolutions dominate a
  CPU step; narrowing them makes a training step 1.6x (batch 32) to 1.85x (batch 16) faster
  than `unet-resnet18`'s (bench/segmenter_speed.py).
- `unet-resnet18`: the same with a wider decoder (3.4 M parameters); the world oracles use it.
- `deeplabv3-resnet101`: the paper's downstream network (torchvision DeepLabV3).
- `deeplabv3-mobilenet`, `lraspp-mobilenet`: torchvision's light MobileNetV3 models.
Every model maps uint8-range images normalised by `normalize` to logits [N, C, H, W].
`pretrained=True` uses torchvision's cached ImageNet backbone weights (never downloaded here).
"""

from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models
from torchvision.models import segmentation

from datasetgan.errors import DatasetGANError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float, ImageNet-normalised (what torchvision backbones expect)."""
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images.float() / 255 - mean) / std


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class ResNetUNet(nn.Module):
    """ResNet-18 encoder (stem, layer1-3) with a U-Net decoder back to full resolution.

    `decoder`: the widths at 1/8, 1/4, 1/2 and full resolution; `full`: the full-resolution skip's.
    """

    def __init__(self, num_classes: int, backbone_state: dict[str, torch.Tensor] | None = None,
                 decoder: tuple[int, int, int, int] = (128, 64, 64, 32), full: int = 32):
        super().__init__()
        resnet = models.resnet18()
        if backbone_state is not None:
            resnet.load_state_dict(backbone_state)
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu)  # 1/2, 64 ch
        self.layer1 = nn.Sequential(resnet.maxpool, resnet.layer1)  # 1/4, 64 ch
        self.layer2, self.layer3 = resnet.layer2, resnet.layer3  # 1/8 128 ch, 1/16 256 ch
        self.full = conv_block(3, full)  # full resolution: keeps one-pixel structure
        w3, w2, w1, w0 = decoder
        self.up3 = conv_block(256 + 128, w3)
        self.up2 = conv_block(w3 + 64, w2)
        self.up1 = conv_block(w2 + 64, w1)
        self.up0 = conv_block(w1 + full, w0)
        self.head = nn.Conv2d(w0, num_classes, 1)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Skips at full, 1/2, 1/4, 1/8 and 1/16 resolution; the last, pooled, is world-FD's space."""
        skips = [self.full(x), self.stem(x)]
        for layer in (self.layer1, self.layer2, self.layer3):
            skips.append(layer(skips[-1]))
        return skips

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x))

    def decode(self, skips: list[torch.Tensor]) -> torch.Tensor:
        """`encode`'s outputs -> class logits at full resolution."""
        full, s1, s2, s3, x = skips
        for skip, block in ((s3, self.up3), (s2, self.up2), (s1, self.up1), (full, self.up0)):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        return self.head(x)


class TorchvisionSegmenter(nn.Module):
    """Adapts torchvision's segmentation models (which return a dict) to plain logits."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)["out"]


def _torchvision(builder):
    def build(num_classes: int, backbone_state: dict[str, torch.Tensor] | None) -> nn.Module:
        net = builder(weights=None, weights_backbone=None, num_classes=num_classes)
        if backbone_state is not None:  # the backbone keeps the classifier's module names, less its head
            features = {k.removeprefix("features."): v for k, v in backbone_state.items() if k.startswith("features.")}
            net.backbone.load_state_dict(features or {k: v for k, v in backbone_state.items()
                                                      if not k.startswith("fc.")})
        return TorchvisionSegmenter(net)

    return build


def slim_unet(num_classes: int, backbone_state: dict[str, torch.Tensor] | None = None) -> ResNetUNet:
    return ResNetUNet(num_classes, backbone_state, decoder=(96, 64, 32, 24), full=16)


ARCHITECTURES = {
    "unet-resnet18-slim": slim_unet,
    "unet-resnet18": ResNetUNet,
    "deeplabv3-resnet101": _torchvision(segmentation.deeplabv3_resnet101),
    "deeplabv3-mobilenet": _torchvision(segmentation.deeplabv3_mobilenet_v3_large),
    "lraspp-mobilenet": _torchvision(segmentation.lraspp_mobilenet_v3_large),
}
BACKBONE_WEIGHTS = {
    "unet-resnet18-slim": models.ResNet18_Weights.DEFAULT,
    "unet-resnet18": models.ResNet18_Weights.DEFAULT,
    "deeplabv3-resnet101": models.ResNet101_Weights.DEFAULT,
    "deeplabv3-mobilenet": models.MobileNet_V3_Large_Weights.DEFAULT,
    "lraspp-mobilenet": models.MobileNet_V3_Large_Weights.DEFAULT,
}


def cached_weights_path(weights: models.WeightsEnum) -> Path:
    """Where torchvision keeps (and first looks for) a weights file: TORCH_HOME/hub/checkpoints/."""
    return Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(weights.url).path).name


def check_architecture(architecture: str, pretrained: bool = False) -> None:
    """Fail before any work if the name is unknown or pretrained weights would have to be downloaded."""
    if architecture not in ARCHITECTURES:
        raise DatasetGANError(f"unknown segmenter {architecture!r}: choose from {', '.join(ARCHITECTURES)}")
    path = cached_weights_path(BACKBONE_WEIGHTS[architecture])
    if pretrained and not path.is_file():  # torchvision would download it: refuse first
        raise DatasetGANError(f"--pretrained needs torchvision's ImageNet weights for {architecture} at {path}, "
                              "which is not there and is never downloaded here: copy the file there "
                              "(or set TORCH_HOME), or train without --pretrained")


def load_backbone_state(architecture: str) -> dict[str, torch.Tensor]:
    """The cached ImageNet classifier weights, read as tensors only (torchvision would unpickle them)."""
    path = cached_weights_path(BACKBONE_WEIGHTS[architecture])
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a restricted unpickler raises several types for a foreign or damaged file
        raise DatasetGANError(f"{path}: not a torchvision weights file of plain tensors ({exc})") from exc


def build_segmenter(architecture: str, num_classes: int, pretrained: bool = False) -> nn.Module:
    check_architecture(architecture, pretrained)
    state = load_backbone_state(architecture) if pretrained else None
    return ARCHITECTURES[architecture](num_classes=num_classes, backbone_state=state)
