"""Our generator file format: one safetensors file, init arguments in its metadata, no pickle.

The metadata's `format` names the architecture (`FORMATS`); every network class records the
arguments it was built with (`init_kwargs`), so the file rebuilds it exactly.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from datasetgan.errors import DatasetGANError
from datasetgan.fileio import save_tensors
from datasetgan.generators.stylegan1 import StyleGAN1Generator
from datasetgan.generators.stylegan2 import StyleGAN2Generator
from datasetgan.generators.stylegan3 import StyleGAN3Generator

Network = StyleGAN1Generator | StyleGAN2Generator | StyleGAN3Generator
FORMATS: dict[str, type[Network]] = {
    "datasetgan.stylegan2": StyleGAN2Generator,
    "datasetgan.stylegan3": StyleGAN3Generator,
    "datasetgan.stylegan1": StyleGAN1Generator,
}


def save_generator(network: Network, path: str | Path) -> None:
    """Write the state dict and `init_kwargs`, enough to rebuild the network exactly."""
    state = {name: t.detach().to("cpu").contiguous() for name, t in network.state_dict().items()}
    fmt = next(name for name, cls in FORMATS.items() if isinstance(network, cls))
    metadata = {"format": fmt, "init_kwargs": json.dumps(network.init_kwargs)}
    save_tensors(path, state, metadata)


def load_network(path: str | Path) -> Network:
    """Rebuild a network saved by `save_generator`, on the CPU, in eval mode."""
    metadata, state = _read(Path(path))
    cls = FORMATS.get(metadata.get("format"))
    if cls is None:
        raise DatasetGANError(
            f"{path} is not a datasetgan generator file (metadata format is {metadata.get('format')!r}, "
            f"expected one of {', '.join(FORMATS)})"
        )
    try:
        network = cls(**json.loads(metadata["init_kwargs"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise DatasetGANError(f"{path} has unusable init_kwargs in its metadata: {exc}") from exc
    try:
        network.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DatasetGANError(f"{path}: weights do not fit the network its init_kwargs describe: {exc}") from exc
    return network.eval()


def _read(path: Path) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    if not path.is_file():
        raise DatasetGANError(f"no generator file at {path}")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return f.metadata() or {}, {name: f.get_tensor(name) for name in f.keys()}
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise DatasetGANError(f"{path} is not a readable safetensors file: {exc}") from exc
