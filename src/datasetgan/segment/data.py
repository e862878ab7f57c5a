"""Labelled images for downstream training and evaluation, read into memory.

Reads both a generated dataset (manifest.jsonl: only kept samples) and a plain folder of
images/ + masks/ + classes.json, such as `datasetgan world render` writes or a user's
real test set.
"""

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import list_pairs, read_classes
from datasetgan.formats.masks import IGNORE, load_mask
from datasetgan.worlds import LabelClass


def pairs_of(folder: Path) -> list[tuple[Path, Path]]:
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        return list_pairs(folder)
    records = [json.loads(line) for line in manifest.read_text().splitlines()]
    return [(folder / "images" / f"{r['name']}.png", folder / "masks" / f"{r['name']}.png") for r in records if r["kept"]]


def load_labelled(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor, list[LabelClass]]:
    """-> images uint8 [N,3,H,W], masks uint8 [N,H,W], classes; checks sizes and class ids."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetGANError(f"{folder} is not a folder")
    classes = read_classes(folder)
    pairs = pairs_of(folder)
    if not pairs:
        raise DatasetGANError(f"{folder} holds no labelled images")
    images, masks = [], []
    for image_path, mask_path in pairs:
        image = np.asarray(Image.open(image_path).convert("RGB"))
        mask = load_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DatasetGANError(f"{mask_path}: mask size {mask.shape[::-1]} differs from its image {image.shape[1::-1]}")
        if images and image.shape != images[0].shape:
            raise DatasetGANError(f"{image_path}: {image.shape[1]}x{image.shape[0]} differs from the first image; "
                                  "resize the dataset to one size first")
        images.append(image)
        masks.append(mask)
    masks_array = np.stack(masks)
    bad = np.unique(masks_array[(masks_array >= len(classes)) & (masks_array != IGNORE)])
    if len(bad):
        raise DatasetGANError(f"{folder}: masks hold class ids {bad.tolist()[:5]} but classes.json lists {len(classes)}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks_array), classes


def check_same_classes(train: list[LabelClass], test: list[LabelClass], train_name: str, test_name: str) -> None:
    """A segmenter trained on one class list cannot be scored against another."""
    a, b = [c.name for c in train], [c.name for c in test]
    if a != b:
        raise DatasetGANError(f"class lists differ: {train_name} has {a}, {test_name} has {b}; "
                              "they must match in names and order")
