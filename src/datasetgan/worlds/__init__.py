"""Procedural worlds: images with exact pixel labels, drawn from a seed.

A world plays the part of "real data": it renders the images a generator is trained on and
the labelled test set that measures the whole pipeline, with ground truth that is exact.
"""

from __future__ import annotations

from dataclasses import dataclass

from datasetgan.errors import DatasetGANError


@dataclass(frozen=True)
class LabelClass:
    """One segmentation class: its position in `classes` is its label id."""

    name: str
    color: tuple[int, int, int]


WORLD_NAMES: tuple[str, ...] = ("faces",)


def get_world(name: str):
    """Return a fresh instance of the world called `name` (see `WORLD_NAMES`)."""
    # Imported here so that `datasetgan.worlds` stays importable from inside the worlds.
    if name == "faces":
        from datasetgan.worlds.faces import FacesWorld

        return FacesWorld()
    raise DatasetGANError(f"unknown world {name!r}: known worlds are {', '.join(WORLD_NAMES)}")


__all__ = ["LabelClass", "WORLD_NAMES", "get_world"]
