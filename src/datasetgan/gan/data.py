"""Where the real images of GAN training come from: a procedural world or a folder.

Each source returns the batch of a given step from the step number alone, so a resumed
run sees exactly the images an uninterrupted run would have seen.
"""

import signal
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import IMAGE_SUFFIXES
from datasetgan.worlds import get_world


class ImageSource(Protocol):
    description: str

    def batch(self, step: int, batch_size: int) -> torch.Tensor: ...


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """uint8 [N,3,H,W] -> float32 in [-1, 1], the generator's output range."""
    return images.float() / 127.5 - 1


class WorldImages:
    """Renders the world's GAN-training seeds on the fly, consecutive seeds per step."""

    def __init__(self, world: str, resolution: int, split: str = "gan_train"):
        self.world, self.resolution = get_world(world), resolution
        self.seeds = self.world.seed_ranges[split]
        self.description = f"world:{world}"

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        start = step * batch_size
        seeds = [self.seeds[(start + i) % len(self.seeds)] for i in range(batch_size)]
        images, _ = self.world.render(seeds, self.resolution)
        return to_signed(images)


def load_folder(folder: Path, resolution: int) -> torch.Tensor:
    """Every image of a folder, centre-cropped to a square and resized: uint8 [N,3,R,R]."""
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetGANError(f"{folder} holds no images ({', '.join(IMAGE_SUFFIXES)})")
    arrays = []
    for path in paths:
        image = Image.open(path).convert("RGB")
        side = min(image.size)
        left, top = (image.width - side) // 2, (image.height - side) // 2
        image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.LANCZOS)
        arrays.append(np.asarray(image))
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


class FolderImages:
    """A folder of the user's images held in memory; each step draws a seeded random batch."""

    def __init__(self, folder: str | Path, resolution: int, seed: int = 0):
        self.images = load_folder(Path(folder), resolution)
        self.seed = seed
        self.description = f"images:{folder} ({len(self.images)} images)"

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        index = torch.randint(len(self.images), (batch_size,), generator=generator)
        return to_signed(self.images[index])


def open_source(source: str, resolution: int, seed: int) -> WorldImages | FolderImages:
    """A run config's source, "world:NAME" or "images:DIR"."""
    kind, _, name = source.partition(":")
    return WorldImages(name, resolution) if kind == "world" else FolderImages(name, resolution, seed)


class _StepBatches(Dataset):
    """Item k is the whole batch of step k."""

    def __init__(self, source: ImageSource, batch_size: int):
        self.source, self.batch_size = source, batch_size

    def __getitem__(self, step: int) -> torch.Tensor:
        return self.source.batch(step, self.batch_size)


def _leave_signals_to_the_trainer(_: int) -> None:
    # Ctrl-C reaches the whole process group: the trainer finishes its step and saves, so a
    # worker must not die of it first
    for number in (signal.SIGINT, signal.SIGTERM):
        signal.signal(number, signal.SIG_IGN)


class Prefetched:
    """A source whose batches `workers` processes render ahead, in step order.

    Each worker renders whole steps with `source.batch`, so the batches, and the run, are the
    ones the source gives unaided. For a GPU, which would otherwise wait on a world's CPU renderer.
    """

    def __init__(self, source: ImageSource, batch_size: int, steps: range, workers: int):
        self.description, self._expected = source.description, steps.start
        self._batches = iter(DataLoader(_StepBatches(source, batch_size), batch_size=None, sampler=steps,
                                        num_workers=workers, prefetch_factor=4,
                                        worker_init_fn=_leave_signals_to_the_trainer))

    def __enter__(self) -> "Prefetched":
        return self

    def __exit__(self, *_) -> None:
        del self._batches  # shuts the workers down now: left to the interpreter's exit, they can hang it

    def batch(self, step: int, batch_size: int) -> torch.Tensor:
        if step != self._expected:
            raise RuntimeError(f"prefetched batches come in step order: asked for step {step}, "
                               f"rendered {self._expected} next")
        self._expected += 1
        return next(self._batches)
