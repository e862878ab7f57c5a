"""Procedural worlds: images with exact pixel labels, drawn from a seed.

A world plays the part of "real data": it renders the images a generator is trained on and
the labelled test set that measures the whole pipeline, with ground truth that is exact.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import prepare_output, sample_name, write_classes, write_pairs
from datasetgan.labels import LabelClass, parse_class_names
from datasetgan.viz import grid, overlay


WORLD_NAMES: tuple[str, ...] = ("faces",)


def get_world(name: str):
    """Return a fresh instance of the world called `name` (see `WORLD_NAMES`)."""
    # Imported here so that `datasetgan.worlds` stays importable from inside the worlds.
    if name == "faces":
        from datasetgan.worlds.faces import FacesWorld

        return FacesWorld()
    raise DatasetGANError(f"unknown world {name!r}: known worlds are {', '.join(WORLD_NAMES)}")


def split_seeds(world: str, split: str, n: int, start: int = 0) -> tuple[object, list[int]]:
    """The world and the seeds n images of its named split take, from `start` on."""
    if n < 1:
        raise DatasetGANError(f"--n must be at least 1 (got {n})")
    source = get_world(world)
    if split not in source.seed_ranges:
        raise DatasetGANError(f"unknown split {split!r}: choose from {', '.join(source.seed_ranges)}")
    return source, list(source.seed_ranges[split][start : start + n])


def render_folder(world: str, out: str | Path, n: int, resolution: int, split: str = "real_test", start: int = 0,
                  chunk: int = 256) -> tuple[Path, int]:
    """n world images of a split with their exact masks, as a labelled folder (images/, masks/, classes.json);
    -> the folder and how many were written (fewer than n where the split ends)."""
    source, seeds = split_seeds(world, split, n, start)
    folder = prepare_output(out)
    write_classes(folder, source.classes)
    for i in range(0, len(seeds), chunk):
        images, labels = source.render(seeds[i : i + chunk], resolution)
        write_pairs(folder, map(sample_name, seeds[i : i + chunk]), images.permute(0, 2, 3, 1).numpy(),
                    labels.numpy(), source.classes)
    return folder, len(seeds)


def preview(world: str, n: int, resolution: int, split: str = "real_test", scale: int = 2) -> np.ndarray:
    """A picture of n world images, each beside its exact mask overlaid, eight pairs a row."""
    source, seeds = split_seeds(world, split, n)
    images, labels = source.render(seeds, resolution)
    colors = [c.color for c in source.classes]
    tiles = []
    for image, label in zip(images.permute(0, 2, 3, 1).numpy(), labels.numpy()):
        tiles += [image, overlay(image, label, colors, alpha=0.6)]
    return grid(tiles, columns=8, scale=scale)


def parse_classes(text: str) -> list[LabelClass]:
    """'world:faces' (a world's classes) or 'background,skin,hair,...' (colours assigned)."""
    if text.startswith("world:"):
        return list(get_world(text.removeprefix("world:")).classes)
    return parse_class_names(text)


__all__ = ["WORLD_NAMES", "get_world", "parse_classes", "preview", "render_folder", "split_seeds"]
