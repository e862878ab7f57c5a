"""Names users give generators: `builtin:NAME` for the models we ship, or a file path."""

from importlib import resources
from pathlib import Path

import torch

from datasetgan.errors import DatasetGANError
from datasetgan.generators.base import Generator
from datasetgan.generators.checkpoint import load_network
from datasetgan.generators.loaders import SUPPORTED, load_network_file
from datasetgan.generators.stylegan2 import StyleGAN2Generator
from datasetgan.generators.stylegan2_generator import StyleGAN2

BUILTIN = {"faces64": "faces64.safetensors"}


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise DatasetGANError(f"unknown built-in generator {name!r}: choose from {', '.join(BUILTIN)}")
    return Path(str(resources.files("datasetgan.generators") / "weights" / BUILTIN[name]))


def load_network_ref(ref: str) -> StyleGAN2Generator:
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


def load_generator(ref: str, device: str | torch.device = "auto") -> Generator:
    """The generator `ref` names, ready on `device`. Every file read today holds a StyleGAN2; a
    second architecture adds its module under `generators/` and its branch here, nowhere else."""
    return StyleGAN2(load_network_ref(ref), device=device)
