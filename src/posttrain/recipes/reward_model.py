"""Reward modelling (`posttrain rm`): a Bradley-Terry reward trained on preference pairs and rankings.

The reward model r(x, y) is a causal LM's body with a scalar head, read at the last token of
prompt + response (models/heads.py). A prompt with K responses ranked best first gives C(K, 2)
pairs (better, worse); its loss is the mean over them of -log σ(r_better - r_worse)
(InstructGPT, arXiv:2203.02155 eq. 1), and all of a prompt's pairs stay in one batch element
(§3.5 there: shuffling them into separate examples overfits). A preference pair is a ranking
with K = 2. The loss is the mean over the prompt groups of an optimizer step, across
micro-batches and processes. Reads top to bottom: config -> check inputs -> set up -> loop -> save.

    posttrain rm --data.train pairs.jsonl --model.name runs/sft/final
    torchrun --nproc-per-node 2 -m posttrain rm ...      # DDP: same global batch, same update

final/ is a transformers AutoModelForSequenceClassification directory (num_labels=1) plus
reward_model.json; score with `posttrain.rewards.model.RewardFunction.load("runs/rm/final")`.
"""

from __future__ import annotations

import logging
import math
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Collection

import torch

from posttrain.config import DataConfig, DistConfig, ModelConfig, OptimConfig, RunConfig, check
from posttrain.data.rankings import RANKING_KINDS, GroupBatch, RankedGroup, group_batch, tokenize_groups
from posttrain.data.splits import train_and_heldout
from posttrain.data.tokenize import use_chat_template
from posttrain.errors import ConfigError
from posttrain.eval.document import document_run
from posttrain.losses.reward import ranking_loss
from posttrain.models.heads import load_reward_model, save_reward_model
from posttrain.models.load import load_tokenizer
from posttrain.training.checkpoint import seed_everything
from posttrain.training.distributed import Dist, check_heldout, distributed, parallelize
from posttrain.training.loop import (
    DataOrder,
    accumulate,
    end_step,
    eval_order,
    evaluate,
    finish_run,
    interruptible,
    optimizer_step,
    start_run,
)
from posttrain.training.metrics import check_trackers
from posttrain.training.optim import build_optimizer, build_scheduler
from posttrain.training.rundir import check_run_dir, resume_config, run_finished, run_path
from posttrain.training.summary import print_summary

log = logging.getLogger(__name__)

MARKER = {"kind": "bradley_terry", "pooling": "last_token"}
# The held-out figures printed when training ends (training/summary.py), formatted.
SUMMARY = {"eval/accuracy": "held-out pair accuracy {:.1%}", "eval/loss": "loss {:.4g}"}
SUM_KEYS = ("pairs", "correct", "gap", "reward", "reward_sq", "responses")  # metric sums of one batch


@dataclass
class RewardModelConfig:
    """Reward model: a scalar head on a causal LM, trained with the Bradley-Terry loss on preference
    pairs (prompt, chosen, rejected) and rankings (prompt, responses, order)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(train="builtin:arithmetic-pairs"))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, warmup_steps=10, batch_size=16))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="rm"))
    dist: DistConfig = field(default_factory=DistConfig)
    margin: bool = False
    """Subtract each pair's `margin` field (where the record has one) from its reward gap, so pairs rated
    as clearly different must be separated by more (Llama 2, arXiv:2307.09288 §3.2.2)."""
    center_coef: float = 0.0
    """Weight of center_coef * mean((r_chosen + r_rejected)^2), which pulls rewards toward zero mean
    (arXiv:2312.09244); the pairwise loss alone leaves their offset free."""

    def __post_init__(self) -> None:
        check(self.center_coef >= 0, "center_coef", "must be >= 0", self.center_coef)
        if self.data.truncation == "truncate":
            raise ConfigError("data.truncation='truncate': rm reads the reward at the last token, which truncation "
                              "cuts off; use error or skip")
        if self.data.packing:
            raise ConfigError("data.packing: rm batches whole prompt groups and does not pack; drop --data.packing")
        if self.model.lora_save == "adapter":
            raise ConfigError("model.lora_save='adapter': rm saves its score head with the body, merged; "
                              "drop --model.lora-save")


def prepare_data(cfg: RewardModelConfig, tokenizer) -> tuple[list[RankedGroup], list[RankedGroup], list[dict]]:
    """Load, validate and tokenize train and held-out groups (data/splits.py's held-out policy, by prompt),
    after setting data.chat_template on `tokenizer`."""
    if not cfg.data.train:
        raise ConfigError("data.train is empty: pass --data.train PAIRS.jsonl (make one with posttrain data pairs)")
    use_chat_template(tokenizer, cfg.data.chat_template)
    return train_and_heldout(cfg.data, RANKING_KINDS,
                             lambda records, source: tokenize_groups(records, tokenizer, cfg.data, source=source),
                             key=lambda g: g.prompt, seed=cfg.run.seed)


# -- loss ---------------------------------------------------------------------------------------


def rm_step_loss(model: torch.nn.Module, batch: GroupBatch, center_coef: float = 0.0) -> tuple[torch.Tensor, dict]:
    """The loss SUMMED over the batch's prompt groups and the metric sums of SUM_KEYS."""
    rewards = model(batch.input_ids, batch.attention_mask)  # (N,)
    loss_sum = rewards.new_zeros(())
    sums = dict.fromkeys(SUM_KEYS[:3], 0.0)
    for group_rewards, order, margin in zip(rewards.split(batch.sizes), batch.orders, batch.margins):
        loss, m = ranking_loss(group_rewards, order, margin, center_coef)
        n_pairs = math.comb(len(order), 2)
        loss_sum = loss_sum + loss
        sums = {"pairs": sums["pairs"] + n_pairs, "correct": sums["correct"] + m["accuracy"] * n_pairs,
                "gap": sums["gap"] + m["margin"] * n_pairs}
    r = rewards.detach().float()
    return loss_sum, {**sums, "reward": r.sum(), "reward_sq": (r**2).sum(), "responses": float(r.numel())}


def rm_metrics(per_group: dict[str, float], prefix: str) -> dict[str, float]:
    """Logged metrics from metric sums divided by the number of groups (as `accumulate` returns them)."""
    mean = per_group["reward"] / per_group["responses"]
    return {
        f"{prefix}/accuracy": per_group["correct"] / per_group["pairs"],  # over all pairs, not groups
        f"{prefix}/margin": per_group["gap"] / per_group["pairs"],  # mean r_better - r_worse
        f"{prefix}/rewards_mean": mean,
        f"{prefix}/rewards_std": math.sqrt(max(0.0, per_group["reward_sq"] / per_group["responses"] - mean**2)),
        f"{prefix}/pairs_per_group": per_group["pairs"],
    }


# -- training -----------------------------------------------------------------------------------


def train(cfg: RewardModelConfig, given: Collection[str] | None = None) -> Path:
    """Train; returns the run directory. Resuming, the run's saved config is used: the options in `given` (dotted
    names, those set on the command line or in --config; None, as from Python: every field of cfg) must agree
    with it (training/rundir.py::resume_config)."""
    cfg = resume_config(cfg, given)
    with distributed(cfg.run.device, cfg.run.threads) as d:
        return _train(cfg, d)


def _train(cfg: RewardModelConfig, d: Dist) -> Path:
    if run_finished(cfg.run, d.is_main):  # resuming a finished run changes nothing
        return run_path(cfg.run)
    # -- check every input before anything is written; the run directory last, so a data error shows first --
    tokenizer = load_tokenizer(cfg.model.name)
    train_groups, eval_groups, data_lineage = prepare_data(cfg, tokenizer)
    with_margin = sum(g.margin is not None for g in train_groups)
    if cfg.margin and with_margin < len(train_groups) and d.is_main:  # the option would do less than asked
        print(f"warning: --margin: {with_margin} of {len(train_groups)} training groups carry a margin (a pair's "
              "`margin` field; rankings have none); the others train without one", file=sys.stderr)
    check_heldout(len(eval_groups), d, cfg.dist, source=cfg.data.eval)
    check_trackers(cfg.run.trackers)
    check_run_dir(cfg.run, d.world_size)

    # -- set up ------------------------------------------------------------------------------
    seed_everything(cfg.run.seed)
    model, _ = load_reward_model(cfg.model, d.device, seed=cfg.run.seed)  # the data's tokenizer is the one saved
    model.train()
    model = parallelize(model, d, cfg.dist)  # DDP or FSDP2 under torchrun (--dist.strategy)
    optimizer = build_optimizer(model, cfg.optim)
    order = DataOrder([len(g) for g in train_groups], cfg.optim.batch_size * d.world_size,
                      cfg.optim.grad_accum, cfg.run.seed, cfg.data.bucket_by_length)
    total_steps = order.total_steps(cfg.optim.max_steps, cfg.optim.epochs)
    scheduler = build_scheduler(optimizer, total_steps, cfg.optim)
    run = start_run(cfg.run, cfg, d, model, optimizer, scheduler, total_steps, data_lineage, cfg.model.name, "rm")
    loss_fn = partial(rm_step_loss, center_coef=cfg.center_coef)

    def make_batch(groups: list[RankedGroup], indices: list[int]) -> GroupBatch:
        return group_batch(groups, indices, tokenizer.pad_token_id, d.device, cfg.margin)

    def evaluate_heldout() -> dict[str, float]:
        batches = (make_batch(eval_groups, b)
                   for b in eval_order([len(g) for g in eval_groups], cfg.optim.batch_size, d))
        per_group = evaluate(model, batches, loss_fn, SUM_KEYS, d)
        return {"eval/loss": per_group["loss"], **rm_metrics(per_group, "eval")}

    # -- loop --------------------------------------------------------------------------------
    with interruptible(run, model, optimizer, scheduler):  # Ctrl-C: keep the last step, say how to resume
        for step in range(run.start_step, total_steps):
            micro = [make_batch(train_groups, b[d.rank :: d.world_size]) for b in order.step_batches(step)]
            loss, per_group = accumulate(model, micro, loss_fn, d)
            grad_norm = optimizer_step(model, optimizer, scheduler, cfg.optim.max_grad_norm, loss, run, step + 1)
            metrics = {"train/loss": loss, **rm_metrics(per_group, "train"), "train/grad_norm": grad_norm,
                       "train/lr": scheduler.get_last_lr()[0], "train/epoch": (step + 1) / order.steps_per_epoch}
            end_step(run, step + 1, metrics, sum(m.n_input for m in micro), evaluate_heldout if eval_groups else None,
                     model, optimizer, scheduler)

    # -- save --------------------------------------------------------------------------------
    finish_run(run, model, tokenizer, save=lambda plain, out: save_reward_model(plain, tokenizer, out, MARKER))
    if d.is_main:  # report.html and the model card final/README.md
        document_run(run.dir, "rm")
    return print_summary(run.dir, "rm", SUMMARY, cfg.run.progress and d.is_main)
