"""Math tier: the learning-rate schedule and AdamW parameter groups."""

import math

import pytest
import torch

from posttrain.config import OptimConfig
from posttrain.training.optim import build_optimizer, lr_factor


def test_warmup_is_linear_from_the_first_step():
    """warmup_steps=4: steps 0..3 get 1/4, 2/4, 3/4, 4/4 of lr."""
    cfg = OptimConfig(warmup_steps=4, schedule="constant")
    assert [lr_factor(s, 10, cfg) for s in range(5)] == [0.25, 0.5, 0.75, 1.0, 1.0]


def test_cosine_reaches_min_ratio_at_the_end_and_half_in_the_middle():
    """No warmup, 10 steps, min ratio 0.1: middle = 0.1 + 0.9 * (1 + cos(pi/2)) / 2 = 0.55."""
    cfg = OptimConfig(schedule="cosine", min_lr_ratio=0.1)
    assert lr_factor(0, 10, cfg) == pytest.approx(1.0)
    assert lr_factor(5, 10, cfg) == pytest.approx(0.55)
    assert lr_factor(10, 10, cfg) == pytest.approx(0.1)


def test_linear_decay_after_warmup():
    """warmup 2 of 12 steps, then linear to 0 over 10: step 7 is halfway -> 0.5."""
    cfg = OptimConfig(schedule="linear", warmup_steps=2)
    assert lr_factor(7, 12, cfg) == pytest.approx(0.5)
    assert lr_factor(12, 12, cfg) == pytest.approx(0.0)


def test_weight_decay_only_on_matrices():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4))
    opt = build_optimizer(model, OptimConfig(weight_decay=0.1))
    decayed, plain = opt.param_groups
    assert decayed["weight_decay"] == 0.1 and plain["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decayed["params"]) and len(decayed["params"]) == 1
    assert all(p.ndim == 1 for p in plain["params"]) and len(plain["params"]) == 3
    assert math.isclose(opt.param_groups[0]["lr"], 1e-3)


def test_a_run_that_ends_in_warmup_is_warned_about_once(caplog):
    """max_steps 5 <= warmup_steps 20: the lr reaches 5/20 = 25% of optim.lr and never decays. 21 steps: no warning."""
    from posttrain.training.optim import build_scheduler

    model = torch.nn.Linear(2, 2)
    cfg = OptimConfig(warmup_steps=20, max_steps=5)
    with caplog.at_level("WARNING", logger="posttrain.training.optim"):
        build_scheduler(build_optimizer(model, cfg), 5, cfg)
        build_scheduler(build_optimizer(model, cfg), 21, cfg)
    assert [r.getMessage() for r in caplog.records] == [
        "warning: the run has 5 optimizer steps and optim.warmup_steps=20, so it ends in warm-up (the learning rate "
        "reaches 25% of optim.lr and never decays); lower --optim.warmup-steps or raise --optim.max-steps"]
