"""`rl.engine.policy_metrics`: per-token figures are sums over the step's tokens divided by their count, and a step
that trained no token (every group left out by --rl.drop-zero-variance) reports no per-token figure at all."""

from __future__ import annotations

import pytest

from posttrain.rl.engine import Passes, policy_metrics


def test_per_token_figures_are_sums_over_tokens():
    done = Passes({"tokens": 4.0, "clip_tokens": 1.0, "ratio_sum": 4.2, "approx_kl_sum": 0.08, "entropy_sum": 6.0},
                  losses=[0.5, 0.3], norms=[1.0, 3.0], passes=1, trained_tokens=4.0)
    assert policy_metrics(done) == pytest.approx({"train/loss": 0.4, "train/grad_norm": 2.0, "train/clip_ratio": 0.25,
                                                  "train/ratio_mean": 1.05, "train/approx_kl": 0.02,
                                                  "train/entropy": 1.5})


def test_a_step_without_tokens_reports_no_ratio_entropy_or_kl():
    done = Passes({"tokens": 0.0}, losses=[0.0], norms=[0.0], passes=1, trained_tokens=0.0)
    assert set(policy_metrics(done)) == {"train/loss", "train/grad_norm"}  # not ratio 0, entropy 0
