"""Regenerate docs/images/studio.png, the README's picture of the annotation studio. Run by hand:

    make venv browser && .venv/bin/python docs/screenshots.py

It takes the picture with the function that tests/test_annotate_browser.py checks
(`screenshot_studio`: a workspace in a temporary folder, the studio in headless Chromium), so
the picture shows what the tests see; the tests themselves write only to temporary folders.
"""

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # the test helpers (and their conftest) are the code path

from playwright.sync_api import sync_playwright  # noqa: E402

from test_annotate_browser import VIEWPORT, launch, screenshot_studio  # noqa: E402


def main() -> None:
    out = ROOT / "docs" / "images" / "studio.png"
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as playwright:
        browser = launch(playwright)
        screenshot_studio(browser.new_page(viewport=VIEWPORT), Path(tmp), out)
        browser.close()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
