"""The annotation studio end to end, in real headless Chromium: paint, fill, undo, save, pre-annotate.

Expectations are computed from the view the test sets (zoom 8, image at the viewport's corner),
so a stroke that lands one pixel off fails.
"""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import sync_playwright


from conftest import make_workspace
from datasetgan.annotate.server import serve_in_background
from datasetgan.formats.masks import IGNORE, load_mask, save_image, save_mask
from datasetgan.pipeline import Pipeline
from datasetgan.workspace import Workspace

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

ZOOM = 8
VIEWPORT = {"width": 1280, "height": 800}
TINY_INTERPRETER = {"members": 2, "max_epochs": 1, "min_epochs": 0, "hidden": [16, 8]}
TIMEOUT_MS = 60_000


def tiny_workspace(root: Path, size: int = 32, classes: str = "background,skin,hair", n: int = 3) -> Workspace:
    return make_workspace(root, classes, n, TINY_INTERPRETER, size)


running_studio = serve_in_background  # the studio in a thread, on a free port


def launch(playwright):
    """Debian's Chromium, headless (Playwright downloads no browser)."""
    if not CHROMIUM.is_file():
        raise FileNotFoundError(f"no Chromium at {CHROMIUM}: apt-get install chromium (`make browser`)")
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        browser = launch(playwright)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    """A page that fails the test on any script error (failed requests such as a 404 are fine)."""
    page = browser.new_page(viewport=VIEWPORT)
    page.set_default_timeout(TIMEOUT_MS)
    errors = []

    def console_error(message) -> None:
        if message.type == "error" and "Failed to load resource" not in message.text:
            errors.append(message.text)

    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", console_error)
    yield page
    page.close()
    assert not errors, errors


def open_studio(page, url: str, cid: str, source: str) -> None:
    page.goto(url)
    page.wait_for_selector(f'#stage[data-candidate="{cid}"][data-source="{source}"]', state="attached")


def page_mask(page, size: int) -> np.ndarray:
    return np.array(page.evaluate("studio.mask()"), np.uint8).reshape(size, size)


class Pointer:
    """Mouse positions at the centres of image pixels, for the view the test fixes."""

    def __init__(self, page):
        page.evaluate(f"studio.setView({ZOOM}, 0, 0)")
        self.page, self.box = page, page.locator("#stage").bounding_box()

    def at(self, x: int, y: int) -> tuple[float, float]:
        return self.box["x"] + (x + 0.5) * ZOOM, self.box["y"] + (y + 0.5) * ZOOM

    def click(self, x: int, y: int) -> None:
        self.page.mouse.click(*self.at(x, y))

    def drag(self, *pixels: tuple[int, int]) -> None:
        self.page.mouse.move(*self.at(*pixels[0]))
        self.page.mouse.down()
        for pixel in pixels[1:]:
            self.page.mouse.move(*self.at(*pixel), steps=6)
        self.page.mouse.up()


def save_and_wait(page) -> None:
    page.keyboard.press("Control+s")
    page.wait_for_selector('body[data-save="saved"]')


def test_paint_fill_polygon_undo_and_save_exact_pixels(page, tmp_path):
    workspace = tiny_workspace(tmp_path)
    with running_studio(workspace) as url:
        open_studio(page, url, "000000", "new")
        pointer = Pointer(page)
        keys = page.keyboard
        expected = np.zeros((32, 32), np.uint8)

        keys.press("3")  # hair (class 2)
        keys.press("[")
        keys.press("[")  # brush 3 -> 1 pixel
        pointer.drag((4, 4), (12, 4), (12, 12), (4, 12), (4, 4))  # a closed square outline
        expected[4, 4:13] = expected[12, 4:13] = expected[4:13, 4] = expected[4:13, 12] = 2

        keys.press("f")
        keys.press("2")  # skin (class 1)
        pointer.click(8, 8)  # flood fill inside the outline only
        expected[5:12, 5:12] = 1

        keys.press("l")
        keys.press("i")  # the ignore label
        for corner in ((20, 2), (27, 2), (27, 9), (20, 9)):
            pointer.click(*corner)
        keys.press("Enter")
        expected[2:10, 20:28] = IGNORE

        keys.press("3")  # hair: a freehand lasso, closed on release
        pointer.drag((2, 20), (9, 20), (9, 27), (2, 27), (2, 21))
        expected[20:28, 2:10] = 2

        keys.press("e")
        pointer.click(12, 8)  # the eraser paints background
        expected[8, 12] = 0
        assert np.array_equal(page_mask(page, 32), expected)

        keys.press("b")
        keys.press("2")  # skin again (the polygon left the ignore label picked)
        keys.press("]")
        keys.press("]")  # brush 1 -> 3 pixels
        pointer.click(20, 20)
        assert (page_mask(page, 32)[19:22, 19:22] == 1).all()
        keys.press("Control+z")  # undo the last stroke only
        assert np.array_equal(page_mask(page, 32), expected)

        save_and_wait(page)
        assert np.array_equal(load_mask(workspace.annotation_path("000000")), expected)
        page.wait_for_selector('#image-list li.done[data-id="000000"]', state="attached")

        page.reload()
        page.wait_for_selector('#stage[data-candidate="000001"]', state="attached")  # opens the first to do
        page.click('#image-list li[data-id="000000"]')
        page.wait_for_selector('#stage[data-candidate="000000"][data-source="annotation"]', state="attached")
        assert np.array_equal(page_mask(page, 32), expected)


def test_train_now_pre_annotates_and_a_reload_shows_the_saved_mask(page, tmp_path):
    workspace = tiny_workspace(tmp_path)
    first = np.zeros((32, 32), np.uint8)
    first[:, 16:], first[:8] = 1, 2
    save_mask(workspace.annotation_path("000000"), first, [c.color for c in workspace.config.classes])
    with running_studio(workspace) as url:
        open_studio(page, url, "000001", "new")  # the first candidate without an annotation
        page.click("#train")
        page.wait_for_selector('#train-status[data-state="done"]')
        page.wait_for_selector('#stage[data-candidate="000001"][data-source="prediction"]', state="attached")
        predicted = Pipeline(workspace, "cpu").label(["000001"]).mask[0].numpy()
        assert np.array_equal(page_mask(page, 32), predicted)

        page.keyboard.press("h")
        page.wait_for_selector("#heat-layer:not([hidden])", state="attached")
        page.select_option("#order", "uncertainty")
        page.wait_for_selector("#image-list .score")
        shown = [float(s) for s in page.locator("#image-list .score").all_inner_texts()]
        assert len(shown) == 3 and shown == sorted(shown, reverse=True)

        page.keyboard.press("1")  # background
        Pointer(page).click(5, 5)
        edited = predicted.copy()
        edited[5, 5] = 0
        page.wait_for_selector('body[data-save="dirty"]')
        page.wait_for_selector('body[data-save="saved"]')  # autosaved 2 s after the stroke
        assert np.array_equal(load_mask(workspace.annotation_path("000001")), edited)

        page.reload()
        page.wait_for_selector('#stage[data-candidate="000002"]', state="attached")
        page.click('#image-list li[data-id="000001"]')
        page.wait_for_selector('#stage[data-candidate="000001"][data-source="annotation"]', state="attached")
        assert np.array_equal(page_mask(page, 32), edited)


def screenshot_studio(page, root: Path, out: Path) -> np.ndarray:
    """The README's picture: a 64x64 face (from the faces world) with its mask, zoomed in; -> that mask.

    docs/screenshots.py writes it to docs/images/studio.png; the test below, to a temporary folder.
    """
    from datasetgan.worlds import get_world  # here: only the screenshot depends on the faces world

    workspace = tiny_workspace(root, size=64, classes="world:faces", n=8)
    images, labels = get_world("faces").render([3, 5], 64)
    colors = [c.color for c in workspace.config.classes]
    for cid, image, mask in zip(("000000", "000001"), images, labels):
        save_image(workspace.candidate_image(cid), image.permute(1, 2, 0).numpy())
        save_mask(workspace.annotation_path(cid), mask.numpy(), colors)
    with running_studio(workspace) as url:
        open_studio(page, url, "000002", "new")
        page.click('#image-list li[data-id="000000"]')
        page.wait_for_selector('#stage[data-candidate="000000"][data-source="annotation"]', state="attached")
        page.keyboard.press("4")
        page.keyboard.press("z")
        box = page.locator("#stage").bounding_box()
        page.mouse.move(box["x"] + box["width"] * 0.62, box["y"] + box["height"] * 0.4)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
    return labels[0].numpy()


def test_screenshot_for_the_docs(page, tmp_path):
    shown = screenshot_studio(page, tmp_path, tmp_path / "studio.png")
    assert np.array_equal(page_mask(page, 64), shown) and len(np.unique(shown)) > 3  # the face's parts, as saved
    picture = np.asarray(Image.open(tmp_path / "studio.png").convert("RGB"))
    assert picture.shape == (VIEWPORT["height"], VIEWPORT["width"], 3)
    box = page.locator("#stage").bounding_box()
    stage = picture[int(box["y"]) : int(box["y"] + box["height"]), int(box["x"]) : int(box["x"] + box["width"])]
    assert len(np.unique(stage.reshape(-1, 3), axis=0)) > 500  # the zoomed face under its mask, not a blank stage
