"""bench/common.py: the per-step rate that the SFT bench's "median step" column reports."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from common import StepTimes  # noqa: E402


def test_median_rate_pairs_each_interval_with_the_step_it_timed():
    """Stamps after steps 0..3 at t = 0, 1, 3, 4 s: step 1 took 1 s, step 2 took 2 s, step 3 took 1 s.
    With 10, 100, 100, 300 tokens the rates are 100, 50, 300 tokens/s (step 0 left out): median 100.
    Mean tokens / median seconds would say 127.5; pairing each interval with the step before it, 10 / 50 / 100: 50."""
    times = StepTimes()
    times.stamps = [0.0, 1.0, 3.0, 4.0]
    assert times.median_rate([10, 100, 100, 300]) == pytest.approx(100.0)


def test_median_rate_counts_real_optimizer_steps():
    p = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([p], lr=0.1)
    with StepTimes() as times:
        for _ in range(3):
            p.grad = torch.ones(1)
            opt.step()
    assert len(times.stamps) == 3 and times.median_rate([1, 1, 1]) > 0
    with pytest.raises(ValueError, match="2 token counts for 3 optimizer steps"):
        times.median_rate([1, 1])
