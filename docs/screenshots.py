"""Regenerate docs/images/studio.png and studio-parts.png, the README's pictures of the annotation
studio (painting; the auto-parts layer). Run by hand:

    make venv browser && .venv/bin/python docs/screenshots.py

It takes each picture with the function the browser tests check (`screenshot_studio`,
`screenshot_parts`: a workspace in a temporary folder, the studio in headless Chromium), so the
pictures show what the tests see; the tests themselves write only to temporary folders.
"""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers (and their conftest) are the code path

from playwright.sync_api import sync_playwright  # noqa: E402

from test_annotate_browser import VIEWPORT, launch, screenshot_studio  # noqa: E402
from test_studio_assists_browser import screenshot_parts  # noqa: E402

PICTURES = {"studio.png": screenshot_studio, "studio-parts.png": screenshot_parts}


def main() -> None:
    with sync_playwright() as playwright:
        browser = launch(playwright)
        for name, take in PICTURES.items():
            with tempfile.TemporaryDirectory() as tmp:
                take(browser.new_page(viewport=VIEWPORT), Path(tmp), ROOT / "docs" / "images" / name)
            print(f"wrote docs/images/{name}")
        browser.close()


if __name__ == "__main__":
    main()
