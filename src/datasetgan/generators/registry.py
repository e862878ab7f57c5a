"""Names users give generators: `builtin:NAME` for the models we ship, or a file path."""

from importlib import resources
from pathlib import Path
from typing import Any

import torch

from datasetgan.errors import DatasetGANError
from datasetgan.generators.base import Generator
from datasetgan.generators.checkpoint import Network, load_network
from datasetgan.generators.loaders import ARCHITECTURES, SUPPORTED, load_network_file
from datasetgan.generators.stylegan1 import StyleGAN1Generator
from datasetgan.generators.stylegan1_generator import StyleGAN1
from datasetgan.generators.stylegan2_generator import StyleGAN2
from datasetgan.generators.stylegan3 import StyleGAN3Generator
from datasetgan.generators.stylegan3_generator import StyleGAN3

BUILTIN = {"faces64": "faces64.safetensors"}


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise DatasetGANError(f"unknown built-in generator {name!r}: choose from {', '.join(BUILTIN)}")
    return Path(str(resources.files("datasetgan.generators") / "weights" / BUILTIN[name]))


def load_network_ref(ref: str) -> Network:
    """`builtin:NAME` or a path to a generator file (recognised by content) -> network on the CPU.

    Files: our .safetensors, NVIDIA .pkl (read without running the code they carry) and
    rosinality .pt/.pth checkpoints; see `datasetgan.generators.loaders`.
    """
    if ref.startswith("builtin:"):
        return load_network(builtin_path(ref.removeprefix("builtin:")))
    path = Path(ref)
    if not path.is_file():
        raise DatasetGANError(
            f"unknown generator {ref!r}: give builtin:NAME ({', '.join(BUILTIN)}) or the path of a generator file "
            f"(datasetgan reads {SUPPORTED})"
        )
    return load_network_file(path)


def as_generator(network: Network, device: str | torch.device = "auto") -> Generator:
    """A network wrapped as a DatasetGAN `Generator` of its architecture, ready on `device`."""
    if isinstance(network, StyleGAN3Generator):
        return StyleGAN3(network, device=device)
    if isinstance(network, StyleGAN1Generator):
        return StyleGAN1(network, device=device)
    return StyleGAN2(network, device=device)


def load_generator(ref: str, device: str | torch.device = "auto") -> Generator:
    """The generator `ref` names, ready on `device`. An architecture adds its modules under
    `generators/`, its format in `checkpoint.FORMATS` and its branch in `as_generator`."""
    return as_generator(load_network_ref(ref), device)


def describe(network: Network) -> dict[str, Any]:
    """What `datasetgan generator info` prints: architecture, classes, config, feature layers and
    the per-pixel feature size (the levels of the pyramid the interpreter reads)."""
    generator = as_generator(network, "cpu")
    layers = [{"name": layer.name, "channels": layer.channels, "resolution": layer.resolution}
              for layer in generator.feature_layers]
    return {
        "architecture": ARCHITECTURES[type(network)],
        "init_kwargs": network.init_kwargs,
        "resolution": generator.resolution,
        "img_channels": network.img_channels,
        "z_dim": network.z_dim,
        "c_dim": network.c_dim,
        "w_dim": network.w_dim,
        "num_ws": network.num_ws,
        "parameters": sum(p.numel() for p in network.parameters()),
        "feature_layers": layers,
        "feature_dim": sum(layer["channels"] for layer in layers),
    }
