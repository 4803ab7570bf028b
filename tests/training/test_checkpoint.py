"""Checkpoints round-trip exactly and are written atomically."""

import random

import numpy as np
import torch

from posttrain.config import OptimConfig
from posttrain.training.checkpoint import (
    checkpoint_steps,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
    seed_everything,
)
from posttrain.training.optim import build_optimizer, build_scheduler


def _setup(seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Linear(4, 2)
    opt = build_optimizer(model, OptimConfig(lr=0.1, warmup_steps=2))
    sched = build_scheduler(opt, 10, OptimConfig(lr=0.1, warmup_steps=2))
    return model, opt, sched


def _step(model, opt, sched):
    loss = model(torch.randn(3, 4)).pow(2).sum()
    loss.backward()
    opt.step()
    sched.step()
    opt.zero_grad()


def test_resume_from_checkpoint_continues_identically(tmp_path):
    seed_everything(1)
    model, opt, sched = _setup()
    for _ in range(3):
        _step(model, opt, sched)
    save_checkpoint(tmp_path, 3, model, opt, sched, {"note": "x"})
    for _ in range(2):
        _step(model, opt, sched)
    expected = model.weight.detach().clone()
    after = (random.random(), float(np.random.rand()), float(torch.rand(1)))

    seed_everything(99)  # a different process state; the checkpoint must restore everything
    model2, opt2, sched2 = _setup(seed=5)
    state = load_checkpoint(latest_checkpoint(tmp_path), model2, opt2, sched2)
    assert state["step"] == 3 and state["note"] == "x"
    for _ in range(2):
        _step(model2, opt2, sched2)
    assert torch.equal(model2.weight, expected)
    assert (random.random(), float(np.random.rand()), float(torch.rand(1))) == after


def test_unfinished_checkpoint_is_ignored_and_old_ones_pruned(tmp_path):
    model, opt, sched = _setup()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model, opt, sched, {}, keep=2)
    (tmp_path / ".tmp-step-4").mkdir()  # what a kill during a write leaves behind
    assert checkpoint_steps(tmp_path) == [2, 3]
    assert latest_checkpoint(tmp_path).name == "step-3"
