"""Importers: each format round-trips a fixture built here; bad input fails and writes nothing."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datasetgan.errors import DatasetGANError
from datasetgan.formats.importers import import_annotations, polygon_pixels
from datasetgan.formats.masks import IGNORE, load_mask
from datasetgan.workspace import ClassSpec, Workspace

SIZE = 16
CLASSES = [ClassSpec(name="background", color=(0, 0, 0)), ClassSpec(name="skin", color=(200, 150, 120)),
           ClassSpec(name="hair", color=(60, 40, 20))]


@pytest.fixture
def workspace(tmp_path):
    ws = Workspace.init(tmp_path / "ws", "builtin:faces64", CLASSES)
    images = torch.randint(0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ws.add_candidates([1, 2, 3], torch.randn(3, 2, 4), images)
    return ws


def expected_two_rectangles() -> np.ndarray:
    """skin over x 2..9, y 3..7, then hair over x 6..11, y 5..11 painted on top."""
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[3:8, 2:10] = 1
    mask[5:12, 6:12] = 2
    return mask


def assert_nothing_written(workspace):
    assert list(workspace.annotations_dir.iterdir()) == []


# ---- CVAT ------------------------------------------------------------------------------


def write_cvat(folder, masks: dict[str, np.ndarray], labelmap: dict[str, tuple[int, int, int]]):
    (folder / "SegmentationClass").mkdir(parents=True)
    (folder / "SegmentationObject").mkdir()
    lines = ["# label:color_rgb:parts:actions"] + [f"{n}:{r},{g},{b}::" for n, (r, g, b) in labelmap.items()]
    (folder / "labelmap.txt").write_text("\n".join(lines) + "\n")
    for name, rgb in masks.items():
        Image.fromarray(rgb, "RGB").save(folder / "SegmentationClass" / f"{name}.png")


def paint(ids: np.ndarray, colours: list[tuple[int, int, int]]) -> np.ndarray:
    return np.array(colours, np.uint8)[ids]


def test_cvat_maps_colours_by_label_name(workspace, tmp_path):
    colours = [(0, 0, 0), (250, 50, 83), (36, 179, 83)]  # CVAT's own colours, not the workspace's
    labelmap = {"background": colours[0], "hair": colours[2], "skin": colours[1]}
    expected = expected_two_rectangles()
    write_cvat(tmp_path / "cvat", {"000001": paint(expected, colours), "000002": paint(expected.T, colours)},
               labelmap)
    report = import_annotations(workspace, tmp_path / "cvat", "cvat")
    assert report.imported == ["000001", "000002"] and report.replaced == []
    assert np.array_equal(load_mask(workspace.annotation_path("000001")), expected)
    assert np.array_equal(load_mask(workspace.annotation_path("000002")), expected.T)
    assert report.pixels["skin"] == 2 * (expected == 1).sum() and report.pixels["ignore"] == 0


def test_cvat_colour_not_in_labelmap(workspace, tmp_path):
    colours = [(0, 0, 0), (250, 50, 83), (36, 179, 83)]
    stray = paint(expected_two_rectangles(), colours)
    stray[0, 0] = (1, 2, 3)
    write_cvat(tmp_path / "cvat", {"000001": paint(expected_two_rectangles(), colours), "000002": stray},
               {"background": colours[0], "skin": colours[1], "hair": colours[2]})
    with pytest.raises(DatasetGANError, match=r"000002\.png: colour \(1, 2, 3\) is not in labelmap"):
        import_annotations(workspace, tmp_path / "cvat", "cvat")
    assert_nothing_written(workspace)


def test_cvat_unknown_label_is_listed(workspace, tmp_path):
    write_cvat(tmp_path / "cvat", {"000001": np.zeros((SIZE, SIZE, 3), np.uint8)},
               {"background": (0, 0, 0), "beard": (1, 1, 1), "eyes": (2, 2, 2)})
    with pytest.raises(DatasetGANError, match="beard, eyes are not workspace classes"):
        import_annotations(workspace, tmp_path / "cvat", "cvat")
    assert_nothing_written(workspace)


# ---- LabelMe ---------------------------------------------------------------------------


def labelme_doc(image_path: str, shapes: list[dict], size=(SIZE, SIZE)) -> dict:
    return {"version": "5.4.1", "flags": {}, "shapes": shapes, "imagePath": image_path, "imageData": None,
            "imageHeight": size[0], "imageWidth": size[1]}


def shape(label: str, points, kind="polygon") -> dict:
    return {"label": label, "points": points, "group_id": None, "shape_type": kind, "flags": {}}


TWO_RECTANGLES = [shape("skin", [[2, 3], [10, 3], [10, 8], [2, 8]]),  # a polygon
                  shape("hair", [[12, 12], [6, 5]], "rectangle"),  # corners in any order
                  shape("skin", [[0, 0], [15, 15]], "line")]  # no area: skipped and counted


def write_labelme(folder, docs: dict[str, dict]):
    folder.mkdir(parents=True, exist_ok=True)
    for name, doc in docs.items():
        (folder / f"{name}.json").write_text(json.dumps(doc))


def test_labelme_paints_shapes_in_file_order(workspace, tmp_path):
    write_labelme(tmp_path / "lm", {"000001": labelme_doc("000001.png", TWO_RECTANGLES)})
    report = import_annotations(workspace, tmp_path / "lm", "labelme")
    assert np.array_equal(load_mask(workspace.annotation_path("000001")), expected_two_rectangles())
    assert report.skipped_shapes == 1 and "skipped 1 shape" in report.summary()


def test_labelme_unlabelled_pixels_can_be_ignored(workspace, tmp_path):
    write_labelme(tmp_path / "lm", {"000001": labelme_doc("000001.png", TWO_RECTANGLES)})
    import_annotations(workspace, tmp_path / "lm", "labelme", unlabelled="ignore")
    expected = expected_two_rectangles()
    expected[expected == 0] = IGNORE
    assert np.array_equal(load_mask(workspace.annotation_path("000001")), expected)


def test_labelme_circle_covers_its_area(workspace, tmp_path):
    write_labelme(tmp_path / "lm", {"000001": labelme_doc("000001.png", [shape("hair", [[8, 8], [8, 13]], "circle")])})
    import_annotations(workspace, tmp_path / "lm", "labelme")
    mask = load_mask(workspace.annotation_path("000001"))
    assert abs((mask == 2).sum() - np.pi * 25) < 6 and mask[8, 8] == 2 and mask[0, 0] == 0


def test_small_fragments_become_ignore(workspace, tmp_path):
    speck = shape("hair", [[0, 0], [3, 0], [3, 3], [0, 3]])  # 9 pixels: under a 20-pixel minimum
    write_labelme(tmp_path / "lm", {"000001": labelme_doc("000001.png", [TWO_RECTANGLES[0], speck])})
    report = import_annotations(workspace, tmp_path / "lm", "labelme", min_fragment=20)
    mask = load_mask(workspace.annotation_path("000001"))
    assert (mask[:3, :3] == IGNORE).all() and report.fragments_dropped == 1 and report.pixels["ignore"] == 9


def test_labelme_unknown_class_writes_nothing(workspace, tmp_path):
    write_labelme(tmp_path / "lm", {"000001": labelme_doc("000001.png", TWO_RECTANGLES),
                                    "000002": labelme_doc("000002.png", [shape("beard", [[0, 0], [5, 0], [5, 5]])])})
    with pytest.raises(DatasetGANError, match=r"000002\.json: label\(s\) beard are not workspace classes"):
        import_annotations(workspace, tmp_path / "lm", "labelme")
    assert_nothing_written(workspace)


def test_labelme_wrong_image_size(workspace, tmp_path):
    write_labelme(tmp_path / "lm", {"000001": labelme_doc("000001.png", TWO_RECTANGLES, size=(32, 16))})
    with pytest.raises(DatasetGANError, match=r"000001\.json: annotation is 16x32 but candidate 000001 is 16x16"):
        import_annotations(workspace, tmp_path / "lm", "labelme")
    assert_nothing_written(workspace)


# ---- COCO ------------------------------------------------------------------------------


def coco_doc(images: list[tuple[int, str]], annotations: list[tuple[int, int, object]]) -> dict:
    return {"images": [{"id": i, "file_name": name, "width": SIZE, "height": SIZE} for i, name in images],
            "categories": [{"id": 1, "name": "skin"}, {"id": 7, "name": "hair"}],
            "annotations": [{"id": k, "image_id": i, "category_id": c, "segmentation": seg, "iscrowd": 0}
                            for k, (i, c, seg) in enumerate(annotations)]}


def write_coco(tmp_path, doc) -> Path:
    path = tmp_path / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def test_coco_polygons(workspace, tmp_path):
    doc = coco_doc([(10, "000003.jpg")], [(10, 1, [[2, 3, 10, 3, 10, 8, 2, 8]]),
                                          (10, 7, [[6, 5, 12, 5, 12, 12, 6, 12], [0, 14, 3, 14, 3, 14.3]])])
    report = import_annotations(workspace, write_coco(tmp_path, doc), "coco")
    expected = expected_two_rectangles()  # the sliver (y 14..14.3) covers no pixel centre
    assert report.imported == ["000003"]
    assert np.array_equal(load_mask(workspace.annotation_path("000003")), expected)


def test_coco_rle_compressed_and_uncompressed(workspace, tmp_path):
    from pycocotools import mask as coco_rle  # the reference encoder (a dev extra)

    hair = np.zeros((SIZE, SIZE), np.uint8)
    hair[5:12, 6:12] = 1
    compressed = coco_rle.encode(np.asfortranarray(hair))
    compressed["counts"] = compressed["counts"].decode()  # as stored in JSON
    skin = np.zeros((SIZE, SIZE), np.uint8)
    skin[3:8, 2:10] = 1
    flat = skin.ravel(order="F")  # uncompressed RLE: run lengths, column-major, starting with zeros
    changes = np.flatnonzero(np.diff(flat)) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    doc = coco_doc([(1, "000001.png")], [(1, 1, {"size": [SIZE, SIZE], "counts": counts}), (1, 7, compressed)])
    import_annotations(workspace, write_coco(tmp_path, doc), "coco")
    assert np.array_equal(load_mask(workspace.annotation_path("000001")), expected_two_rectangles())


def test_coco_rle_without_pycocotools_says_what_to_install(workspace, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)
    doc = coco_doc([(1, "000001.png")], [(1, 1, {"size": [SIZE, SIZE], "counts": [SIZE * SIZE]})])
    with pytest.raises(DatasetGANError, match=r"pip install datasetgan\[coco\]"):
        import_annotations(workspace, write_coco(tmp_path, doc), "coco")


def test_coco_path_outside_the_export(workspace, tmp_path):
    doc = coco_doc([(1, "000001.png"), (2, "../000002.png")], [(1, 1, [[2, 3, 10, 3, 10, 8, 2, 8]])])
    with pytest.raises(DatasetGANError, match=r"'\.\./000002\.png' points outside the export"):
        import_annotations(workspace, write_coco(tmp_path, doc), "coco")
    assert_nothing_written(workspace)


def test_coco_wrong_image_size(workspace, tmp_path):
    doc = coco_doc([(1, "000001.png"), (2, "000002.png")], [])
    doc["images"][1]["width"] = 20
    with pytest.raises(DatasetGANError, match=r"000002\.png\): annotation is 20x16 but candidate 000002 is 16x16"):
        import_annotations(workspace, write_coco(tmp_path, doc), "coco")
    assert_nothing_written(workspace)


# ---- index masks -----------------------------------------------------------------------


def test_masks_are_validated_and_copied(workspace, tmp_path):
    (tmp_path / "masks").mkdir()
    Image.fromarray(expected_two_rectangles(), "L").save(tmp_path / "masks" / "000002.png")
    import_annotations(workspace, tmp_path / "masks", "masks")
    saved = Image.open(workspace.annotation_path("000002"))
    assert saved.mode == "P" and np.array_equal(np.asarray(saved), expected_two_rectangles())


def test_masks_unknown_candidate(workspace, tmp_path):
    (tmp_path / "masks").mkdir()
    for name in ("000001", "000099"):
        Image.fromarray(expected_two_rectangles(), "L").save(tmp_path / "masks" / f"{name}.png")
    with pytest.raises(DatasetGANError, match=r"000099\.png: unknown candidate 000099"):
        import_annotations(workspace, tmp_path / "masks", "masks")
    assert_nothing_written(workspace)


def test_masks_class_id_out_of_range(workspace, tmp_path):
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.full((SIZE, SIZE), 3, np.uint8), "L").save(tmp_path / "masks" / "000001.png")
    with pytest.raises(DatasetGANError, match=r"class ids \[3\] are outside 0\.\.2"):
        import_annotations(workspace, tmp_path / "masks", "masks")
    assert_nothing_written(workspace)


def test_import_replaces_an_earlier_annotation(workspace, tmp_path):
    (tmp_path / "masks").mkdir()
    Image.fromarray(expected_two_rectangles(), "L").save(tmp_path / "masks" / "000001.png")
    import_annotations(workspace, tmp_path / "masks", "masks")
    assert import_annotations(workspace, tmp_path / "masks", "masks").replaced == ["000001"]


def test_unknown_format(workspace, tmp_path):
    with pytest.raises(DatasetGANError, match="unknown annotation format 'voc'"):
        import_annotations(workspace, tmp_path, "voc")


def test_polygon_fill_is_exact_for_pixel_aligned_triangles():
    # the lower-left half of a 4x4 square: pixel centres strictly below the diagonal
    region = polygon_pixels([(0, 0), (4, 4), (0, 4)], 4, 4)
    assert np.array_equal(region, np.tril(np.ones((4, 4), bool), k=-1))
