"""Bring annotations made in other tools into a workspace's annotations/ as index masks.

    cvat     a CVAT "Segmentation mask 1.1" export: labelmap.txt + SegmentationClass/*.png
    labelme  LabelMe JSON files (polygon, rectangle and circle shapes)
    coco     a COCO instances JSON (polygons, or RLE with pycocotools)
    masks    a folder of index-mask PNGs (palette or greyscale, values are class ids)

Each source names its candidate by file stem (000123.png -> candidate 000123), and labels map
to workspace classes by name. Everything is read and checked before anything is written, so
an import that fails leaves the workspace as it was.
"""

import json
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image

from datasetgan.errors import DatasetGANError
from datasetgan.formats.masks import load_mask, save_mask
from datasetgan.labels import IGNORE, check_class_ids
from datasetgan.annotation import candidate_size, drop_small_fragments, min_fragment_pixels
from datasetgan.workspace import CONFIG_NAME, Workspace

UNLABELLED = {"background": 0, "ignore": IGNORE}


@dataclass
class ImportedMask:
    source: str  # the file it came from, for messages
    cid: str
    mask: np.ndarray
    skipped_shapes: int = 0


@dataclass
class ImportReport:
    imported: list[str]
    replaced: list[str]  # candidates whose earlier annotation was overwritten
    pixels: dict[str, int]  # class name (and "ignore") -> pixels over all imported masks
    fragments_dropped: int
    min_fragment: int
    skipped_shapes: int

    def summary(self) -> str:
        lines = [f"imported {len(self.imported)} annotation(s), {len(self.replaced)} replacing earlier ones"]
        if self.skipped_shapes:
            lines.append(f"skipped {self.skipped_shapes} shape(s) that enclose no area (lines, points, ...)")
        if self.fragments_dropped:
            lines.append(f"{self.fragments_dropped} class fragment(s) under {self.min_fragment} pixels set to ignore")
        lines.append("pixels: " + ", ".join(f"{name} {count}" for name, count in self.pixels.items()))
        return "\n".join(lines)


def import_annotations(workspace: Workspace, source: str | Path, fmt: str, unlabelled: str = "background",
                       min_fragment: int | None = None) -> ImportReport:
    """Read, check and write annotations from another tool; `unlabelled` fills unpainted pixels.

    Classes under `min_fragment` pixels of a mask become ignore (None: the paper's rule scaled
    to the mask's size, `min_fragment_pixels`).
    """
    source = Path(source)
    if fmt not in READERS:
        raise DatasetGANError(f"unknown annotation format {fmt!r}: choose one of {', '.join(READERS)}")
    if unlabelled not in UNLABELLED:
        raise DatasetGANError(f"unlabelled must be 'background' or 'ignore', got {unlabelled!r}")
    if not source.exists():
        raise DatasetGANError(f"{source} does not exist")
    masks = READERS[fmt](workspace, source, UNLABELLED[unlabelled])
    if not masks:
        raise DatasetGANError(f"{source}: found no {fmt} annotations to import")
    check_masks(workspace, masks)
    if min_fragment is None:
        min_fragment = min_fragment_pixels(masks[0].mask.shape[-1])
    cleaned, dropped = [], 0
    for item in masks:
        mask, n = drop_small_fragments(torch.from_numpy(item.mask), min_fragment)
        cleaned.append(mask.numpy())
        dropped += n
    replaced = [m.cid for m in masks if workspace.annotation_path(m.cid).exists()]
    colors = [c.color for c in workspace.config.classes]
    for item, mask in zip(masks, cleaned):
        save_mask(workspace.annotation_path(item.cid), mask, colors)
    return ImportReport(
        imported=[m.cid for m in masks],
        replaced=replaced,
        pixels=pixel_counts(workspace, cleaned),
        fragments_dropped=dropped,
        min_fragment=min_fragment,
        skipped_shapes=sum(m.skipped_shapes for m in masks),
    )


# ---- checks shared by every format ----------------------------------------------------


def check_masks(workspace: Workspace, masks: list[ImportedMask]) -> None:
    """One mask per candidate, the candidate's size, class ids the workspace knows."""
    seen: dict[str, str] = {}
    for item in masks:
        if item.cid in seen:
            raise DatasetGANError(f"{item.source} and {seen[item.cid]} both annotate candidate {item.cid}: keep one")
        seen[item.cid] = item.source
        height, width = candidate_size(workspace, item.cid)
        if item.mask.shape != (height, width):
            raise DatasetGANError(f"{item.source}: annotation is {item.mask.shape[1]}x{item.mask.shape[0]} but "
                                  f"candidate {item.cid} is {width}x{height}: annotate the candidate image itself")
        check_class_ids(item.mask, workspace.num_classes, str(item.source))


def candidate_for(workspace: Workspace, name: str, source: str | Path) -> str:
    """The candidate a file name refers to (its stem); names that climb out of the export are refused."""
    path = PurePosixPath(name.replace("\\", "/"))  # LabelMe on Windows writes backslashes
    if path.is_absolute() or ".." in path.parts:
        raise DatasetGANError(f"{source}: image name {name!r} points outside the export: name the candidate's "
                              "file directly (e.g. 000123.png)")
    try:
        return workspace.check_id(path.stem)
    except DatasetGANError as exc:
        raise DatasetGANError(f"{source}: {exc}") from exc


def map_names(workspace: Workspace, names: Iterable[str], source: str | Path) -> dict[str, int]:
    """Label names -> class ids by name; 'background' means class 0 unless a class is named so."""
    index = {c.name: i for i, c in enumerate(workspace.config.classes)}
    index.setdefault("background", 0)
    names = set(names)
    unknown = sorted(names - set(index))
    if unknown:
        known = ", ".join(c.name for c in workspace.config.classes)
        raise DatasetGANError(f"{source}: label(s) {', '.join(unknown)} are not workspace classes ({known}): "
                              f"rename them in the tool or add them to {CONFIG_NAME}")
    return {name: index[name] for name in names}


def pixel_counts(workspace: Workspace, masks: list[np.ndarray]) -> dict[str, int]:
    counts = sum(np.bincount(m.ravel(), minlength=256) for m in masks)
    names = [c.name for c in workspace.config.classes] + ["ignore"]
    ids = list(range(workspace.num_classes)) + [IGNORE]
    return {name: int(counts[i]) for name, i in zip(names, ids)}


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DatasetGANError(f"{path}: cannot read JSON ({exc})") from exc


# ---- rasterising shapes ---------------------------------------------------------------
# Coordinates are pixel corners (pixel i spans [i, i+1)), as COCO defines them and as LabelMe
# and CVAT draw; a pixel belongs to a shape when its centre lies inside. This keeps areas
# unbiased, unlike PIL's ImageDraw, which rounds vertices and paints the boundary (about +1 pixel
# of width per edge).


def polygon_pixels(points: list[tuple[float, float]], height: int, width: int) -> np.ndarray:
    """Even-odd scanline fill at pixel centres: each edge toggles insideness right of its crossing."""
    xs, ys = np.asarray(points, dtype=np.float64).T
    next_xs, next_ys = np.roll(xs, -1), np.roll(ys, -1)
    centre_y = np.arange(height)[:, None] + 0.5
    crosses = (ys <= centre_y) != (next_ys <= centre_y)  # [H, edges], half-open so a vertex counts once
    with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges never cross
        cross_x = xs + (centre_y - ys) * (next_xs - xs) / (next_ys - ys)
    rows, edges = np.nonzero(crosses)
    # first pixel whose centre is at or right of the crossing: a centre on an edge goes to the shape
    # on its right (and below), so shapes sharing an edge neither overlap nor leave a gap
    first_inside = np.clip(np.ceil(cross_x[rows, edges] - 0.5).astype(np.int64), 0, width)
    toggles = np.zeros((height, width + 1), dtype=np.int64)
    np.add.at(toggles, (rows, first_inside), 1)
    return np.cumsum(toggles, axis=1)[:, :width] % 2 == 1


def circle_pixels(centre: tuple[float, float], rim: tuple[float, float], height: int, width: int) -> np.ndarray:
    radius = math.dist(centre, rim)
    dy = np.arange(height)[:, None] + 0.5 - centre[1]
    dx = np.arange(width)[None, :] + 0.5 - centre[0]
    return dx**2 + dy**2 <= radius**2


# ---- CVAT -----------------------------------------------------------------------------


def read_cvat(workspace: Workspace, source: Path, fill: int) -> list[ImportedMask]:
    labelmap, class_dir = source / "labelmap.txt", source / "SegmentationClass"
    if not labelmap.is_file() or not class_dir.is_dir():
        raise DatasetGANError(f"{source}: not a CVAT 'Segmentation mask 1.1' export (needs labelmap.txt and "
                              "SegmentationClass/): unzip the export and pass its folder")
    colour_names = parse_labelmap(labelmap)
    ids = map_names(workspace, colour_names.values(), labelmap)
    by_colour = {rgb: ids[name] for rgb, name in colour_names.items()}
    return [ImportedMask(str(p), candidate_for(workspace, p.name, p), colours_to_ids(p, by_colour))
            for p in sorted(class_dir.rglob("*.png"))]


def parse_labelmap(path: Path) -> dict[tuple[int, int, int], str]:
    """`name:r,g,b:parts:actions` lines (comments start with #) -> {colour: name}."""
    colours = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        try:
            name, rgb, _parts, _actions = line.rsplit(":", 3)
            colour = tuple(int(v) for v in rgb.split(","))
        except ValueError:
            colour = ()
        if len(colour) != 3:
            raise DatasetGANError(f"{path}, line {number}: expected 'name:r,g,b:parts:actions', got {line!r}")
        colours[colour] = name
    return colours


def colours_to_ids(path: Path, by_colour: dict[tuple[int, int, int], int]) -> np.ndarray:
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"), dtype=np.uint32)
    except (OSError, ValueError) as exc:
        raise DatasetGANError(f"{path}: cannot read mask ({exc})") from exc
    codes = rgb[..., 0] << 16 | rgb[..., 1] << 8 | rgb[..., 2]
    present, inverse = np.unique(codes, return_inverse=True)
    colours = [((c >> 16) & 255, (c >> 8) & 255, c & 255) for c in present.tolist()]
    unknown = [c for c in colours if c not in by_colour]
    if unknown:
        raise DatasetGANError(f"{path}: colour {unknown[0]} is not in labelmap.txt ({len(unknown)} unknown "
                              "colour(s)): export the masks and labelmap from the same CVAT task")
    return np.array([by_colour[c] for c in colours], dtype=np.uint8)[inverse].reshape(codes.shape)


# ---- LabelMe --------------------------------------------------------------------------


@dataclass
class LabelMeShape:
    label: str
    kind: str
    points: list[tuple[float, float]]


def read_labelme(workspace: Workspace, source: Path, fill: int) -> list[ImportedMask]:
    files = [source] if source.is_file() else sorted(source.glob("*.json"))
    return [labelme_mask(workspace, path, fill) for path in files]


def labelme_mask(workspace: Workspace, path: Path, fill: int) -> ImportedMask:
    """Shapes painted in file order, so later shapes lie on top."""
    image_name, height, width, shapes = parse_labelme(path)
    cid = candidate_for(workspace, image_name, path)
    ids = map_names(workspace, (s.label for s in shapes), path)
    mask = np.full((height, width), fill, dtype=np.uint8)
    skipped = 0
    for shape in shapes:
        region = shape_pixels(shape, height, width)
        if region is None:
            skipped += 1
        else:
            mask[region] = ids[shape.label]
    return ImportedMask(str(path), cid, mask, skipped)


def parse_labelme(path: Path) -> tuple[str, int, int, list[LabelMeShape]]:
    doc = read_json(path)
    try:
        shapes = [LabelMeShape(str(s["label"]), s.get("shape_type") or "polygon",  # old files omit the type
                               [(float(x), float(y)) for x, y in s["points"]]) for s in doc["shapes"]]
        return str(doc["imagePath"]), int(doc["imageHeight"]), int(doc["imageWidth"]), shapes
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetGANError(f"{path}: not a LabelMe annotation (missing or malformed {exc})") from exc


def shape_pixels(shape: LabelMeShape, height: int, width: int) -> np.ndarray | None:
    """The pixels a shape covers, or None for shapes with no area (lines, points) or too few points."""
    points = shape.points
    if shape.kind == "polygon" and len(points) >= 3:
        return polygon_pixels(points, height, width)
    if shape.kind == "rectangle" and len(points) == 2:
        (x0, y0), (x1, y1) = points
        return polygon_pixels([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], height, width)
    if shape.kind == "circle" and len(points) == 2:
        return circle_pixels(points[0], points[1], height, width)
    return None


# ---- COCO -----------------------------------------------------------------------------


@dataclass
class CocoImage:
    file_name: str
    height: int
    width: int


def read_coco(workspace: Workspace, source: Path, fill: int) -> list[ImportedMask]:
    path = single_json(source)
    images, categories, annotations = parse_coco(path)
    ids = map_names(workspace, {categories[cat] for _, cat, _ in annotations}, path)
    per_image = defaultdict(list)
    for image_id, cat, segmentation in annotations:
        per_image[image_id].append((ids[categories[cat]], segmentation))
    return [coco_mask(workspace, path, image, per_image[image_id], fill) for image_id, image in images.items()]


def single_json(source: Path) -> Path:
    if source.is_file():
        return source
    found = sorted(source.rglob("*.json"))
    if len(found) != 1:
        raise DatasetGANError(f"{source}: expected one COCO JSON file in the folder, found {len(found)}: "
                              "pass the file itself")
    return found[0]


def parse_coco(path: Path) -> tuple[dict[int, CocoImage], dict[int, str], list[tuple[int, int, object]]]:
    doc = read_json(path)
    try:
        images = {int(i["id"]): CocoImage(str(i["file_name"]), int(i["height"]), int(i["width"]))
                  for i in doc["images"]}
        categories = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
        annotations = [(int(a["image_id"]), int(a["category_id"]), a.get("segmentation"))
                       for a in doc["annotations"]]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DatasetGANError(f"{path}: not a COCO instances file (missing or malformed {exc})") from exc
    for image_id, cat, _ in annotations:
        if image_id not in images or cat not in categories:
            raise DatasetGANError(f"{path}: an annotation refers to image id {image_id} / category id {cat}, "
                                  "which the file does not list")
    return images, categories, annotations


def coco_mask(workspace: Workspace, path: Path, image: CocoImage, objects: list[tuple[int, object]],
              fill: int) -> ImportedMask:
    """Objects painted in file order, so later annotations lie on top."""
    source = f"{path} ({image.file_name})"
    cid = candidate_for(workspace, image.file_name, source)
    mask = np.full((image.height, image.width), fill, dtype=np.uint8)
    skipped = 0
    for class_id, segmentation in objects:
        region = segmentation_pixels(segmentation, image, source)
        if region is None:
            skipped += 1
        else:
            mask[region] = class_id
    return ImportedMask(source, cid, mask, skipped)


def segmentation_pixels(segmentation: object, image: CocoImage, source: str) -> np.ndarray | None:
    """Polygons (flat x, y lists, united) or an RLE dict; None when there is no area."""
    if isinstance(segmentation, dict):
        return rle_pixels(segmentation, image, source)
    polygons = [p for p in segmentation or [] if isinstance(p, list) and len(p) >= 6]
    if not polygons:
        return None
    region = np.zeros((image.height, image.width), dtype=bool)
    for flat in polygons:
        region |= polygon_pixels(list(zip(flat[0::2], flat[1::2])), image.height, image.width)
    return region


def rle_pixels(rle: dict, image: CocoImage, source: str) -> np.ndarray:
    try:
        from pycocotools import mask as coco_rle
    except ImportError as exc:
        raise DatasetGANError(f"{source}: RLE segmentations need pycocotools: pip install datasetgan[coco]") from exc
    if list(rle.get("size", [])) != [image.height, image.width]:
        raise DatasetGANError(f"{source}: RLE size {rle.get('size')} differs from the image's "
                              f"[{image.height}, {image.width}]")
    if isinstance(rle.get("counts"), list):  # uncompressed RLE: compress first, as pycocotools expects
        rle = coco_rle.frPyObjects(rle, image.height, image.width)
    return coco_rle.decode(rle).astype(bool)


# ---- index masks ----------------------------------------------------------------------


def read_masks(workspace: Workspace, source: Path, fill: int) -> list[ImportedMask]:
    """Index masks are already in the workspace's form: read, then checked and copied like the rest."""
    if not source.is_dir():
        raise DatasetGANError(f"{source}: the masks format takes a folder of index-mask PNGs")
    return [ImportedMask(str(p), candidate_for(workspace, p.name, p), load_mask(p))
            for p in sorted(source.glob("*.png"))]


READERS: dict[str, Callable[[Workspace, Path, int], list[ImportedMask]]] = {
    "cvat": read_cvat,
    "labelme": read_labelme,
    "coco": read_coco,
    "masks": read_masks,
}
