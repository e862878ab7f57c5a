"""The studio's assists in real headless Chromium: the feature magic wand and the auto-parts layer.

Expectations come from the library (the wand's region on materialised hypercolumns, the cluster
map the API serves), and the painted masks must equal them pixel for pixel.
"""

import json
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from datasetgan.annotate.wand import wand_region
from datasetgan.discovery import PartDiscovery, discover, read_mapping
from datasetgan.formats.masks import load_mask
from datasetgan.pipeline import Pipeline
from datasetgan.workspace import Workspace
from references import hypercolumns
from test_annotate_browser import (Pointer, browser, open_studio, page, page_mask, running_studio,  # noqa: F401
                                   save_and_wait, tiny_workspace)

SIZE = 32
MARGIN = 1e-4  # no pixel this close to the threshold: the server's sums may round differently


def wand_expectation(features: torch.Tensor, y: int, x: int, threshold: float, label: int) -> np.ndarray:
    """The class ids the wand paints on an empty mask, checked clear of float rounding at the threshold."""
    similarity = torch.nn.functional.cosine_similarity(features, features[:, y, x, None, None], dim=0)
    assert float((similarity - threshold).abs().min()) > MARGIN
    return wand_region(features, y, x, threshold).astype(np.uint8) * label


def wand_click(page, pointer: Pointer, x: int, y: int) -> None:
    pointer.click(x, y)
    page.wait_for_selector("#viewport:not(.busy)", state="attached")  # the region arrived and is painted


def test_the_wand_paints_exactly_the_similar_connected_region(page, tmp_path):
    workspace = tiny_workspace(tmp_path)
    pipeline = Pipeline(workspace, "cpu")
    noise_ids = workspace.config.sampling.noise_ids(["000000"])
    pyramid = pipeline.generator.synthesize(workspace.ws_for(["000000"]), noise_ids)[1]
    features = hypercolumns(pyramid, SIZE)[0]
    with running_studio(workspace) as url:
        open_studio(page, url, "000000", "new")
        pointer, keys = Pointer(page), page.keyboard

        keys.press("3")  # hair
        keys.press("w")
        assert page.locator('#tools [data-tool="wand"]').get_attribute("class") == "active"
        assert page.locator("#threshold-value").inner_text() == "0.80"
        wand_click(page, pointer, 5, 5)
        first = wand_expectation(features, 5, 5, 0.8, 2)
        similar = torch.nn.functional.cosine_similarity(features, features[:, 5, 5, None, None], dim=0) >= 0.8
        assert 1 < first.astype(bool).sum() < similar.sum()  # a similar pixel elsewhere is left out
        assert np.array_equal(page_mask(page, SIZE), first)

        keys.press("Control+z")  # one undo step takes the whole region back
        assert not page_mask(page, SIZE).any()
        keys.press("Control+y")
        assert np.array_equal(page_mask(page, SIZE), first)

        for _ in range(5):
            keys.press("]")  # with the wand, [ and ] move the threshold, not the brush size
        assert page.locator("#threshold-value").inner_text() == "0.85"
        assert page.locator("#size-value").inner_text() == "3"
        keys.press("2")  # skin
        wand_click(page, pointer, 8, 24)
        second = wand_expectation(features, 24, 8, 0.85, 1)
        expected = np.where(second > 0, second, first)
        assert np.array_equal(page_mask(page, SIZE), expected)

        save_and_wait(page)
        assert np.array_equal(load_mask(workspace.annotation_path("000000")), expected)


def get(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return response.read()


def wait_for_mapping(url: str, cluster: int, name: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while (mapping := json.loads(get(f"{url}api/parts/mapping"))["mapping"])[str(cluster)] != name:
        assert time.monotonic() < deadline, f"cluster {cluster} was not mapped to {name}"
        time.sleep(0.05)
    return mapping


def test_auto_parts_paint_a_whole_cluster_and_shift_click_maps_it_for_all_images(page, tmp_path):
    workspace = tiny_workspace(tmp_path)
    model = discover(Pipeline(workspace, "cpu"), 4, samples=4, pixels_per_image=256, seed=0, progress=False)
    model.save(workspace.parts_dir)
    with running_studio(workspace) as url:
        open_studio(page, url, "000000", "new")
        clusters = np.frombuffer(get(f"{url}api/candidates/000000/clusters"), "<u2").reshape(SIZE, SIZE)
        assert len(np.unique(clusters)) > 2
        pointer, keys = Pointer(page), page.keyboard

        keys.press("a")
        page.wait_for_selector('#stage[data-parts="000000"]', state="attached")
        assert page.locator("#parts").get_attribute("class") == "active"
        keys.press("2")  # skin: a click paints the clicked pixel's whole cluster in this image
        pointer.click(16, 16)
        painted = clusters == clusters[16, 16]
        expected = painted.astype(np.uint8)
        assert np.array_equal(page_mask(page, SIZE), expected)

        y, x = np.argwhere(~painted)[0]  # a pixel of another cluster
        other = int(clusters[y, x])
        keys.press("3")  # hair, for this cluster in every image
        keys.down("Shift")
        pointer.click(int(x), int(y))
        keys.up("Shift")
        before = expected.copy()
        expected[clusters == other] = 2
        assert np.array_equal(page_mask(page, SIZE), expected)
        mapping = wait_for_mapping(url, other, "hair")
        assert mapping == {str(c): "hair" if c == other else "ignore" for c in range(4)}
        assert read_mapping(workspace, PartDiscovery.load(workspace.parts_dir))[other] == "hair"

        keys.press("Control+z")  # the painting is one undo step (the mapping stays)
        assert np.array_equal(page_mask(page, SIZE), before)
        keys.press("Control+y")

        keys.press("a")  # the layer off: clicks paint with the tool again (a 3-pixel brush)
        assert page.locator("#parts-layer").get_attribute("hidden") is not None
        keys.press("1")
        pointer.click(int(x), int(y))
        brushed = expected.copy()
        brushed[max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = 0
        assert np.array_equal(page_mask(page, SIZE), brushed)

        save_and_wait(page)
        assert np.array_equal(load_mask(workspace.annotation_path("000000")), brushed)


def screenshot_parts(page, root: Path, out: Path) -> np.ndarray:
    """The README's picture of the assists: a built-in generator face under its discovered parts,
    with two parts already painted by clicks; -> the mask those clicks painted."""
    from datasetgan.worlds import parse_classes  # here: only the screenshot uses the faces world's classes

    workspace = Workspace.init(root / "faces", "builtin:faces64", parse_classes("world:faces"))
    pipeline = Pipeline(workspace, "cpu")
    pipeline.sample(range(4))
    discover(pipeline, 16, samples=32, pixels_per_image=512, seed=0, progress=False).save(workspace.parts_dir)
    with running_studio(workspace) as url:
        open_studio(page, url, "000000", "new")
        clusters = np.frombuffer(get(f"{url}api/candidates/000000/clusters"), "<u2").reshape(64, 64)
        pointer = Pointer(page)
        page.keyboard.press("a")
        page.wait_for_selector('#stage[data-parts="000000"]', state="attached")
        expected = np.zeros((64, 64), np.uint8)
        for key, label, (x, y) in (("2", 1, (32, 36)), ("3", 2, (32, 12))):  # skin, then hair
            page.keyboard.press(key)
            pointer.click(x, y)
            expected[clusters == clusters[y, x]] = label
        box = page.locator("#stage").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.3, box["y"] + box["height"] * 0.7)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        assert np.array_equal(page_mask(page, 64), expected)
    return expected


def test_parts_screenshot_for_the_docs(page, tmp_path):
    painted = screenshot_parts(page, tmp_path, tmp_path / "parts.png")
    assert len(np.unique(painted)) == 3  # background and the two clicked parts
    picture = np.asarray(Image.open(tmp_path / "parts.png").convert("RGB"))
    box = page.locator("#stage").bounding_box()
    stage = picture[int(box["y"]) : int(box["y"] + box["height"]), int(box["x"]) : int(box["x"] + box["width"])]
    assert len(np.unique(stage.reshape(-1, 3), axis=0)) > 500  # the face under its coloured parts, not a blank stage
