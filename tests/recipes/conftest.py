"""Fixtures of the recipe tests."""

import os
import subprocess
import sys

import pytest


def run_one_and_two(recipe: str, common: list[str], one: list[str] = (), two: list[str] = (), env: dict | None = None
                    ) -> None:
    """`posttrain RECIPE` as one process (run name `one`, extra args `one`) and under torchrun as 2 processes
    (`two`, extra args `two`), one thread each; asserts both exit 0, showing the end of stderr when not."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    single = subprocess.run([sys.executable, "-m", "posttrain", recipe, *common, *one, "--run.name", "one"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    # --standalone: the rendezvous store takes a free port (a fixed one can still be held by an earlier run)
    pair = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "posttrain", recipe, *common, *two, "--run.name", "two"], env=env,
                          capture_output=True, text=True, timeout=600)
    assert pair.returncode == 0, pair.stderr[-3000:]


@pytest.fixture
def one_and_two_processes():
    """`run_one_and_two`: the 1-process and the 2-process torchrun run of the same recipe and arguments."""
    return run_one_and_two
