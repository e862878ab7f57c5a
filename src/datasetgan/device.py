"""The machine: a user's device string as a torch.device, and the CPU allocator's setting."""

import ctypes

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


def keep_freed_memory() -> None:
    """Let glibc's malloc keep large freed blocks for reuse instead of returning them to the OS.

    By default every block above 32 MB is mapped afresh and unmapped at free, so each large
    activation of a CPU training step is page-faulted in again by the kernel: the elementwise
    passes of GAN training ran 5x slower and NVIDIA's trainer 1.3x (bench/gan_speed.py). Raising
    malloc's mmap and trim thresholds keeps the pages; a process setting, so only entry points
    (the CLI, benchmarks) call it. A no-op where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, (1 << 31) - 1)
