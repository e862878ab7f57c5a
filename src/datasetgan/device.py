"""One place that turns a user's device string into a torch.device."""

import torch

from datasetgan.errors import DatasetGANError


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """`auto` picks CUDA when present, else CPU; anything else is passed to torch."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise DatasetGANError(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda[:N]'") from exc
