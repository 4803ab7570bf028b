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
