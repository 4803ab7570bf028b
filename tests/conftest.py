"""Session-wide test settings: offline hub, a cache shared by the whole test session, the tiny model."""

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The SmolLM2 GGUF conversion (~30 s) and the tiny model are cached once per checkout.
os.environ.setdefault("POSTTRAIN_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "posttrain"))


@pytest.fixture(scope="session")
def tiny_dir() -> Path:
    """The built-in tiny model directory (built once, cached)."""
    from posttrain.models.load import resolve_model_dir

    return resolve_model_dir("tiny")


CHROMIUM = os.environ.get("POSTTRAIN_CHROMIUM", "/usr/bin/chromium")
# Flags for a closed network: without the background-networking ones chromium keeps dialling out.
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


@pytest.fixture(scope="session")
def browser():
    """Headless Debian chromium driven by Playwright (`make test` installs it; a missing one fails, never skips)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} not found: run `make chromium` (Debian's chromium package) or set POSTTRAIN_CHROMIUM")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, tmp_path):
    """A fresh page in its own browser context (cookies and storage do not leak between tests)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    pg = context.new_page()
    yield pg
    context.close()
