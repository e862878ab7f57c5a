"""A labelled image folder on disk: images/, masks/, classes.json (+ manifest.jsonl).

The same layout serves the world's renders, the factory's synthetic datasets and the
user's own real test images, so that every consumer reads one format. A generated dataset
adds manifest.jsonl, one JSON record per sample (name, seed, w, w_index, score, kept, and the
class a conditional generator drew it for as condition), and
names its samples by seed (`sample_name`); its consumers read only the kept samples.
"""

import json
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from datasetgan.errors import DatasetGANError
from datasetgan.fileio import atomic_write, writable_folder
from datasetgan.formats.masks import save_image, save_mask
from datasetgan.labels import LabelClass

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
MANIFEST = "manifest.jsonl"


def sample_name(seed: int) -> str:
    return f"{seed:010d}"


def write_records(path: Path, records: Sequence[dict]) -> None:
    """JSON lines, written atomically."""
    text = "".join(json.dumps(r) + "\n" for r in records)
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def read_records(path: Path) -> list[dict]:
    try:
        return [json.loads(line) for line in path.read_text().splitlines()]
    except ValueError as exc:
        raise DatasetGANError(f"{path}: not a datasetgan record file ({exc})") from exc


def write_manifest(folder: Path, records: Sequence[dict]) -> None:
    write_records(folder / MANIFEST, records)


def read_manifest(folder: Path, kept_only: bool = True) -> list[dict]:
    """A generated dataset's records in generation order (only the kept ones by default)."""
    path = folder / MANIFEST
    if not path.is_file():
        raise DatasetGANError(f"{folder} has no {MANIFEST}: finish generating it (or merge its shards) first")
    try:
        return [r for r in read_records(path) if r["kept"] or not kept_only]
    except (KeyError, TypeError) as exc:
        raise DatasetGANError(f"{path}: not a datasetgan manifest ({exc})") from exc


def labelled_pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths: a generated dataset's kept samples, else every pair of a plain folder."""
    if not (folder / MANIFEST).is_file():
        return list_pairs(folder)
    pairs = [(folder / "images" / f"{r['name']}.png", folder / "masks" / f"{r['name']}.png")
             for r in read_manifest(folder)]
    missing = [path for pair in pairs for path in pair if not path.is_file()]
    if missing:
        raise DatasetGANError(f"{len(missing)} file(s) listed in {folder / MANIFEST} are missing (first: {missing[0]})")
    return pairs


def prepare_output(folder: str | Path) -> Path:
    """Create the folder (and images/, masks/) or say clearly why it cannot be written."""
    folder = writable_folder(folder)
    for sub in ("images", "masks"):
        writable_folder(folder / sub)
    return folder


def write_classes(folder: Path, classes: Sequence[LabelClass]) -> None:
    payload = {
        "ignore_index": 255,
        "classes": [{"id": i, "name": c.name, "color": list(c.color)} for i, c in enumerate(classes)],
    }
    atomic_write(folder / "classes.json", lambda tmp: Path(tmp).write_text(json.dumps(payload, indent=2)))


def read_classes(folder: str | Path) -> list[LabelClass]:
    path = Path(folder) / "classes.json"
    if not path.is_file():
        raise DatasetGANError(f"{path} is missing: a dataset folder needs classes.json beside images/ and masks/")
    try:
        entries = json.loads(path.read_text())["classes"]
        return [LabelClass(e["name"], tuple(e["color"])) for e in sorted(entries, key=lambda e: e["id"])]
    except (ValueError, KeyError, TypeError) as exc:
        raise DatasetGANError(f"{path}: not a valid classes file ({exc})") from exc


def write_pairs(
    folder: Path, names: Iterable[str], images: np.ndarray, masks: np.ndarray, classes: Sequence[LabelClass]
) -> None:
    """Write [N,H,W,3] images and [N,H,W] masks as images/NAME.png and masks/NAME.png."""
    colors = [c.color for c in classes]
    for name, image, mask in zip(names, images, masks):
        save_image(folder / "images" / f"{name}.png", image)
        save_mask(folder / "masks" / f"{name}.png", mask, colors)


def list_pairs(folder: str | Path) -> list[tuple[Path, Path]]:
    """(image, mask) paths of a labelled folder, matched by file stem; errors say what is missing."""
    folder = Path(folder)
    image_dir, mask_dir = folder / "images", folder / "masks"
    if not image_dir.is_dir() or not mask_dir.is_dir():
        raise DatasetGANError(f"{folder}: expected sub-folders images/ and masks/")
    images = {p.stem: p for p in sorted(image_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    masks = {p.stem: p for p in sorted(mask_dir.iterdir()) if p.suffix.lower() == ".png"}
    if not images:
        raise DatasetGANError(f"{image_dir} holds no images")
    unmatched = sorted(set(images) - set(masks))
    if unmatched:
        raise DatasetGANError(
            f"{len(unmatched)} image(s) in {image_dir} have no mask in {mask_dir} (first: {unmatched[0]})"
        )
    return [(images[k], masks[k]) for k in sorted(images)]
