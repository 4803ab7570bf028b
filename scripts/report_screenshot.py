"""Screenshot of a report for the docs: `python scripts/report_screenshot.py [REPORT.html] [OUT.png]`.

docs/img/report.png is the report of `posttrain demo` (runs/demo/report.html), taken with Debian's chromium
through Playwright, as the browser tests drive it. The top of the page is shown (runs, curves, the evaluation);
a screenshot of the whole page would be mostly answers and config tables."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

CHROMIUM = os.environ.get("POSTTRAIN_CHROMIUM", "/usr/bin/chromium")


def screenshot(report: Path, out: Path, width: int = 1280, height: int = 2600) -> Path:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(report.resolve().as_uri())
        page.screenshot(path=str(out))
        browser.close()
    return out


if __name__ == "__main__":
    report = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/demo/report.html")
    out = Path(sys.argv[2] if len(sys.argv) > 2 else "docs/img/report.png")
    print(f"wrote {screenshot(report, out)}")
