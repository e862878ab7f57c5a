"""Images for downstream training and evaluation, read into memory.

Reads both a generated dataset (manifest.jsonl: only kept samples) and a plain folder of
images/ + masks/ + classes.json, such as `datasetgan world render` writes or a user's
real test set; and unlabelled real images for self-training.
"""

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from datasetgan.errors import DatasetGANError
from datasetgan.formats.dataset import IMAGE_SUFFIXES, labelled_pairs, read_classes
from datasetgan.formats.masks import load_mask
from datasetgan.labels import LabelClass, check_class_ids


def labelled_names(folder: str | Path) -> list[str]:
    """The sample names (file stems) in the order load_labelled returns them."""
    return [image.stem for image, _ in labelled_pairs(Path(folder))]


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except (OSError, ValueError) as exc:
        raise DatasetGANError(f"{path}: cannot read image ({exc})") from exc


def load_labelled(folder: str | Path) -> tuple[torch.Tensor, torch.Tensor, list[LabelClass]]:
    """-> images uint8 [N,3,H,W], masks uint8 [N,H,W], classes; checks sizes and class ids."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetGANError(f"{folder} is not a folder")
    classes = read_classes(folder)
    pairs = labelled_pairs(folder)
    if not pairs:
        raise DatasetGANError(f"{folder} holds no labelled images")
    images, masks = [], []
    for image_path, mask_path in pairs:
        image = read_image(image_path)
        mask = load_mask(mask_path)
        if mask.shape != image.shape[:2]:
            raise DatasetGANError(f"{mask_path}: mask size {mask.shape[::-1]} differs from its image {image.shape[1::-1]}")
        if images and image.shape != images[0].shape:
            raise DatasetGANError(f"{image_path}: {image.shape[1]}x{image.shape[0]} differs from the first image; "
                                  "resize the dataset to one size first")
        images.append(image)
        masks.append(mask)
    masks_array = np.stack(masks)
    check_class_ids(masks_array, len(classes), f"{folder}/masks", hint=f": classes.json lists {len(classes)}")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(masks_array), classes


def load_unlabelled(folder: str | Path) -> torch.Tensor:
    """Every image under a folder (under its images/ if it has one, as `world render` writes it):
    uint8 [N,3,H,W], all of one size."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DatasetGANError(f"{folder} is not a folder of unlabelled images")
    source = folder / "images" if (folder / "images").is_dir() else folder
    paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise DatasetGANError(f"{source} holds no images ({', '.join(IMAGE_SUFFIXES)}): give a folder of unlabelled "
                              "real images")
    images = [read_image(path) for path in paths]
    for path, image in zip(paths, images):
        if image.shape != images[0].shape:
            raise DatasetGANError(f"{path}: {image.shape[1]}x{image.shape[0]} differs from {paths[0].name}; "
                                  "resize the unlabelled images to one size first")
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def check_same_classes(train: Sequence[LabelClass | str], test: Sequence[LabelClass | str], train_name: str,
                       test_name: str) -> None:
    """A segmenter trained on one class list cannot be scored against another (classes or their names)."""
    a, b = ([c if isinstance(c, str) else c.name for c in side] for side in (train, test))
    if a != b:
        raise DatasetGANError(f"class lists differ: {train_name} has {a}, {test_name} has {b}; "
                              "they must match in names and order")
