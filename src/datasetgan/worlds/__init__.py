"""Procedural worlds: images with exact pixel labels, drawn from a seed.

A world plays the part of "real data": it renders the images a generator is trained on and
the labelled test set that measures the whole pipeline, with ground truth that is exact.
"""

from __future__ import annotations

from datasetgan.errors import DatasetGANError
from datasetgan.labels import LabelClass, parse_class_names


WORLD_NAMES: tuple[str, ...] = ("faces",)


def get_world(name: str):
    """Return a fresh instance of the world called `name` (see `WORLD_NAMES`)."""
    # Imported here so that `datasetgan.worlds` stays importable from inside the worlds.
    if name == "faces":
        from datasetgan.worlds.faces import FacesWorld

        return FacesWorld()
    raise DatasetGANError(f"unknown world {name!r}: known worlds are {', '.join(WORLD_NAMES)}")


def parse_classes(text: str) -> list[LabelClass]:
    """'world:faces' (a world's classes) or 'background,skin,hair,...' (colours assigned)."""
    if text.startswith("world:"):
        return list(get_world(text.removeprefix("world:")).classes)
    return parse_class_names(text)


__all__ = ["WORLD_NAMES", "get_world", "parse_classes"]
