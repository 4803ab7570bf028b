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
import random
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch

from posttrain.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from posttrain.data.collate import pad_batch
from posttrain.data.load import default_heldout, describe_source, load_records, row_location
from posttrain.data.records import Messages, PreferencePair, Ranking
from posttrain.data.tokenize import Example
from posttrain.errors import ConfigError, DataError
from posttrain.losses.reward import bradley_terry_loss, ranking_pairs
from posttrain.models.heads import load_reward_model, save_reward_model
from posttrain.models.load import load_tokenizer
from posttrain.rewards.model import reward_input_ids
from posttrain.training.checkpoint import seed_everything, unwrap
from posttrain.training.distributed import Dist, all_reduce_sum, setup_distributed, teardown
from posttrain.training.loop import Schedule, accumulate, end_step, finish_run, optimizer_step, start_run
from posttrain.training.optim import build_optimizer, build_scheduler
from posttrain.training.rundir import check_run_dir

log = logging.getLogger(__name__)

RM_KINDS = (PreferencePair, Ranking)
MARKER = {"kind": "bradley_terry", "pooling": "last_token"}
SUM_KEYS = ("pairs", "correct", "gap", "reward", "reward_sq", "responses")  # metric sums of one batch


@dataclass
class RewardModelConfig:
    """Reward model: a scalar head on a causal LM, trained with the Bradley-Terry loss on preference
    pairs (prompt, chosen, rejected) and rankings (prompt, responses, order)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=lambda: DataConfig(train=""))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=3e-4, warmup_steps=10, batch_size=16))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="rm"))
    margin: bool = False
    """Subtract each pair's `margin` field (where the record has one) from its reward gap, so pairs rated
    as clearly different must be separated by more (Llama 2, arXiv:2307.09288 §3.2.2)."""
    center_coef: float = 0.0
    """Weight of center_coef * mean((r_chosen + r_rejected)^2), which pulls rewards toward zero mean
    (arXiv:2312.09244); the pairwise loss alone leaves their offset free."""
    eval_fraction: float = 0.1
    """When data.eval is unset: the fraction of prompts held out (chosen by run.seed) for eval/accuracy;
    0 trains on everything and skips evaluation."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ConfigError(f"eval_fraction={self.eval_fraction!r}: must be in [0, 1)")
        if self.center_coef < 0:
            raise ConfigError(f"center_coef={self.center_coef!r}: must be >= 0")
        if self.data.truncation == "truncate":
            raise ConfigError("data.truncation='truncate': rm reads the reward at the last token, which truncation "
                              "cuts off; use error or skip")
        if self.data.packing:
            raise ConfigError("data.packing: rm batches whole prompt groups and does not pack; drop --data.packing")


# -- data: records -> tokenized prompt groups ---------------------------------------------------


@dataclass(frozen=True)
class RankedGroup:
    """One prompt's K tokenized responses (prompt + response tokens each), ranked best first by `order`."""

    prompt: Messages
    sequences: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    margin: float | None = None  # pairs only: how clearly the chosen response won

    def __len__(self) -> int:
        return sum(len(s) for s in self.sequences)


def tokenize_group(record: PreferencePair | Ranking, tokenizer, max_length: int, truncation: str) -> RankedGroup | None:
    """A record as a RankedGroup; None when a response is too long and truncation is "skip"."""
    if isinstance(record, PreferencePair):
        responses, order, margin = (record.chosen, record.rejected), (0, 1), record.margin
    else:
        responses, order, margin = record.responses, record.order, None
    sequences = tuple(tuple(reward_input_ids(record.prompt, r, tokenizer)) for r in responses)
    longest = max(len(s) for s in sequences)
    if longest > max_length:
        if truncation == "skip":
            return None
        raise DataError(f"a response with its prompt is {longest} tokens, more than data.max_length={max_length} "
                        "(raise --data.max-length, or pass --data.truncation skip to drop such rows)")
    if len(set(sequences)) < len(sequences):
        raise DataError("two responses give the same tokens; a preference needs different responses")
    return RankedGroup(record.prompt, sequences, tuple(order), margin)


def tokenize_groups(records: list, tokenizer, data: DataConfig, *, source: str) -> list[RankedGroup]:
    """Tokenize every record; errors name `source` and the row, skipped rows are counted."""
    groups = []
    for row, record in enumerate(records, start=1):
        try:
            group = tokenize_group(record, tokenizer, data.max_length, data.truncation)
        except DataError as e:
            raise DataError(f"{row_location(source, row)}: {e}") from None
        if group is not None:
            groups.append(group)
    if len(groups) < len(records):
        log.warning("%s: skipped %d of %d rows longer than data.max_length=%d", source,
                    len(records) - len(groups), len(records), data.max_length)
    if records and not groups:
        raise DataError(f"{source}: every row is longer than data.max_length={data.max_length}; raise --data.max-length")
    return groups


def split_by_prompt(groups: list[RankedGroup], fraction: float, seed: int) -> tuple[list[RankedGroup], list[RankedGroup]]:
    """(train, held_out): about `fraction` of the distinct prompts, with all their groups, held out; at
    least one prompt on each side when fraction > 0 and there are two or more prompts."""
    prompts = list(dict.fromkeys(g.prompt for g in groups))  # first-appearance order, then a seeded shuffle
    random.Random(seed).shuffle(prompts)
    n_held = min(len(prompts) - 1, max(1, round(fraction * len(prompts)))) if fraction > 0 else 0
    held = set(prompts[:n_held])
    return [g for g in groups if g.prompt not in held], [g for g in groups if g.prompt in held]


def prepare_data(cfg: RewardModelConfig, tokenizer) -> tuple[list[RankedGroup], list[RankedGroup], list[dict]]:
    """Load, validate and tokenize train and held-out groups. Returns train, eval, lineage entries."""
    if not cfg.data.train:
        raise ConfigError("data.train is required: pass --data.train PAIRS.jsonl (make one with posttrain data pairs)")
    records = load_records(cfg.data.train, accept=RM_KINDS, limit=cfg.data.limit)
    train = tokenize_groups(records, tokenizer, cfg.data, source=cfg.data.train)
    eval_source = cfg.data.eval or default_heldout(cfg.data.train)
    if not eval_source:
        train, held_out = split_by_prompt(train, cfg.eval_fraction, cfg.run.seed)
        return train, held_out, [describe_source(cfg.data.train)]
    evals = tokenize_groups(load_records(eval_source, accept=RM_KINDS), tokenizer, cfg.data, source=eval_source)
    return train, evals, [describe_source(cfg.data.train), describe_source(eval_source)]


def make_group_batch(groups: list[RankedGroup], indices: list[int], pad_id: int, device: torch.device,
                     use_margin: bool) -> dict:
    """All responses of the chosen groups as one right-padded batch, and what the loss needs per group."""
    chosen = [groups[i] for i in indices]
    if not chosen:
        raise ValueError("a micro-batch needs at least one group (batch size x processes > dataset?)")
    padded = pad_batch([Example(list(s), [False] * len(s)) for g in chosen for s in g.sequences], pad_id, "right")
    return {
        "input_ids": padded["input_ids"].to(device),  # (N, T), N = responses of all chosen groups
        "attention_mask": padded["attention_mask"].to(device),  # (N, T)
        "sizes": [len(g.sequences) for g in chosen],
        "orders": [g.order for g in chosen],
        "margins": [g.margin if use_margin else None for g in chosen],
        "count": len(chosen),
        "n_input": sum(len(g) for g in chosen),
    }


# -- loss ---------------------------------------------------------------------------------------


def group_loss(rewards: torch.Tensor, order: tuple[int, ...], margin: float | None, center_coef: float
               ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One prompt's loss over its C(K,2) pairs, rewards (K,). Without margin and centering this is exactly
    losses.reward.ranking_loss (arXiv:2203.02155 eq. 1); with them, bradley_terry_loss adds both."""
    pairs = ranking_pairs(rewards.shape[0], list(order))
    better = torch.tensor([b for b, _ in pairs], device=rewards.device)  # (C(K,2),)
    worse = torch.tensor([w for _, w in pairs], device=rewards.device)  # (C(K,2),)
    margins = None if margin is None else torch.full((len(pairs),), margin, device=rewards.device)
    return bradley_terry_loss(rewards[better], rewards[worse], margins, center_coef)


def rm_step_loss(model: torch.nn.Module, batch: dict, center_coef: float = 0.0) -> tuple[torch.Tensor, dict]:
    """The loss SUMMED over the batch's prompt groups and the metric sums of SUM_KEYS."""
    rewards = model(batch["input_ids"], batch["attention_mask"])  # (N,)
    loss_sum = rewards.new_zeros(())
    sums = dict.fromkeys(SUM_KEYS[:3], 0.0)
    for group_rewards, order, margin in zip(rewards.split(batch["sizes"]), batch["orders"], batch["margins"]):
        loss, m = group_loss(group_rewards, order, margin, center_coef)
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


def train(cfg: RewardModelConfig) -> Path:
    d = setup_distributed(cfg.run.device)
    try:
        return _train(cfg, d)
    finally:
        teardown(d)


def _train(cfg: RewardModelConfig, d: Dist) -> Path:
    # -- check every input before anything is written ----------------------------------------
    check_run_dir(cfg.run)
    train_groups, eval_groups, data_lineage = prepare_data(cfg, load_tokenizer(cfg.model.name))

    # -- set up ------------------------------------------------------------------------------
    seed_everything(cfg.run.seed)
    model, tokenizer = load_reward_model(cfg.model, d.device, seed=cfg.run.seed)
    model.train()
    if d.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = build_optimizer(model, cfg.optim)
    schedule = Schedule([len(g) for g in train_groups], cfg.optim.batch_size * d.world_size,
                        cfg.optim.grad_accum, cfg.run.seed, cfg.data.bucket_by_length)
    total_steps = schedule.total_steps(cfg.optim.max_steps, cfg.optim.epochs)
    scheduler = build_scheduler(optimizer, total_steps, cfg.optim)
    run = start_run(cfg.run, cfg, d, model, optimizer, scheduler, total_steps, data_lineage, cfg.model.name, "rm")
    loss_fn = partial(rm_step_loss, center_coef=cfg.center_coef)

    def batch(indices: list[int]) -> dict:
        return make_group_batch(train_groups, indices, tokenizer.pad_token_id, d.device, cfg.margin)

    def evaluate() -> dict[str, float]:
        return evaluate_groups(model, eval_groups, cfg.optim.batch_size, tokenizer.pad_token_id, d, loss_fn, cfg.margin)

    # -- loop --------------------------------------------------------------------------------
    for step in range(run.start_step, total_steps):
        micro = [batch(b[d.rank :: d.world_size]) for b in schedule.step_batches(step)]
        loss, per_group = accumulate(model, micro, loss_fn, d)
        grad_norm = optimizer_step(model, optimizer, scheduler, cfg.optim.max_grad_norm, loss, run, step + 1)
        metrics = {"train/loss": loss, **rm_metrics(per_group, "train"), "train/grad_norm": grad_norm,
                   "train/lr": scheduler.get_last_lr()[0], "train/epoch": (step + 1) / schedule.steps_per_epoch}
        end_step(run, step + 1, metrics, sum(m["n_input"] for m in micro), evaluate if eval_groups else None,
                 model, optimizer, scheduler)

    # -- save --------------------------------------------------------------------------------
    return finish_run(run, model, tokenizer, save=lambda out: save_reward_model(unwrap(model), tokenizer, out, MARKER))


@torch.no_grad()
def evaluate_groups(model: torch.nn.Module, groups: list[RankedGroup], batch_size: int, pad_id: int, d: Dist,
                    loss_fn, use_margin: bool) -> dict[str, float]:
    """eval/loss (mean over groups) and eval/accuracy (over all pairs) of held-out groups, over all processes."""
    model.eval()
    order = sorted(range(len(groups)), key=lambda i: len(groups[i]))
    totals = torch.zeros(2 + len(SUM_KEYS), dtype=torch.float64)  # loss, groups, SUM_KEYS
    for j in range(d.rank * batch_size, len(order), batch_size * d.world_size):
        b = make_group_batch(groups, order[j : j + batch_size], pad_id, d.device, use_margin)
        loss, sums = loss_fn(unwrap(model), b)
        totals += torch.tensor([float(loss), b["count"], *(float(sums[k]) for k in SUM_KEYS)], dtype=torch.float64)
    model.train()
    totals = all_reduce_sum(totals, d).tolist()
    n_groups = max(1.0, totals[1])
    per_group = {k: v / n_groups for k, v in zip(SUM_KEYS, totals[2:])}
    return {"eval/loss": totals[0] / n_groups, **rm_metrics(per_group, "eval")}
