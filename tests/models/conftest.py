"""Fixtures for the model tests: a cache private to this test session.

Tests that build or convert into the cache ask for `isolated_cache`, so they exercise the build path
instead of finding a model a previous run left behind. The SmolLM2 test does not: it uses the cache the
session is configured with (tests/conftest.py points it at one per checkout), so CI converts only once.
"""

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("posttrain-cache")


@pytest.fixture
def isolated_cache(session_cache, monkeypatch) -> Path:
    """POSTTRAIN_CACHE -> a directory shared by this session's model tests only."""
    monkeypatch.setenv("POSTTRAIN_CACHE", str(session_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return session_cache


@pytest.fixture
def empty_cache(tmp_path, monkeypatch) -> Path:
    """POSTTRAIN_CACHE -> a new empty directory, for tests that watch a build happen."""
    monkeypatch.setenv("POSTTRAIN_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path / "cache"
