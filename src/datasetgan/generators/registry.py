"""Names users give generators: `builtin:NAME` for the models we ship, or a file path."""

from importlib import resources
from pathlib import Path

import torch

from datasetgan.errors import DatasetGANError
from datasetgan.generators.base import Generator
from datasetgan.generators.checkpoint import load_network
from datasetgan.generators.stylegan2 import StyleGAN2Generator

BUILTIN = {"faces64": "faces64.safetensors"}


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise DatasetGANError(f"unknown built-in generator {name!r}: choose from {', '.join(BUILTIN)}")
    return Path(str(resources.files("datasetgan.generators") / "weights" / BUILTIN[name]))


def load_network_ref(ref: str) -> StyleGAN2Generator:
    """`builtin:NAME` or a path to one of our generator files -> network on the CPU."""
    if ref.startswith("builtin:"):
        return load_network(builtin_path(ref.removeprefix("builtin:")))
    path = Path(ref)
    if path.suffix != ".safetensors":
        raise DatasetGANError(
            f"unknown generator {ref!r}: give builtin:NAME ({', '.join(BUILTIN)}) or a .safetensors generator file"
        )
    return load_network(path)


def load_generator(ref: str, device: str | torch.device = "auto") -> Generator:
    return Generator(load_network_ref(ref), device=device)
