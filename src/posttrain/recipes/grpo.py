"""Group relative policy optimization (GRPO, arXiv:2402.03300): RL with a reward a program can check.

Each step samples G completions for each of `rl.prompts_per_step` prompts, scores them with the reward, and
gives each completion the advantage of its reward over its group's: (r - mean) / std (std of the group, of
the whole batch, or no division as in Dr. GRPO, arXiv:2503.20783). The policy is then updated on the clipped
surrogate (PPO's, with DAPO's separate ε_low / ε_high), μ passes over minibatches, with an optional KL penalty
to the starting policy. No value model: the group is the baseline. Reads top to bottom: config -> check
inputs -> set up -> loop (sample, score, advantages, update) -> save. The step itself is rl/engine.py's.

    posttrain grpo --model.name runs/sft/final                      # the built-in arithmetic task
    posttrain grpo --model.name smollm2 --model.lora-r 16 --data.train prompts.jsonl --rl.reward math
    posttrain grpo --rl.loss-aggregation constant --grpo.scale none  # Dr. GRPO
    posttrain grpo --model.name smollm2 --rl.sampler vllm            # rollouts from a vLLM engine (docs/scale.md)

`posttrain rloo` (recipes/rloo.py) is this loop with the leave-one-out baseline.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch

from posttrain.config import DistConfig, ModelConfig, OptimConfig, RunConfig, SamplingParams, VLLMConfig, check
from posttrain.data.tokenize import use_chat_template
from posttrain.eval.document import document_run
from posttrain.files import write_jsonl
from posttrain.models.load import load_model, load_tokenizer, save_model
from posttrain.models.reference import Reference
from posttrain.rewards.functions import resolve_reward
from posttrain.rl.advantages import group_advantages, zero_advantage_groups, zero_variance_groups
from posttrain.rl.engine import (
    FlatStart,
    PromptOrder,
    evaluate_policy,
    global_std,
    make_groups,
    rollout_metrics,
    sample_step,
    update,
    update_layout,
)
from posttrain.rl.samplers import push_weights, rollout_sampler
from posttrain.rl.setup import (
    PromptDataConfig,
    RLConfig,
    check_rl_optim,
    check_run_start,
    eval_reward_spec,
    heldout_source,
    load_run_prompts,
    reward_spec,
    start_rl_run,
)
from posttrain.sampling.sampler import ModelSampler
from posttrain.sampling.vllm_sampler import VLLMSampler
from posttrain.training.checkpoint import seed_everything
from posttrain.training.distributed import Dist, distributed, parallelize
from posttrain.training.loop import end_step, finish_run, interruptible
from posttrain.training.rundir import resume_config, run_finished, run_path
from posttrain.training.summary import print_summary

# The held-out figure printed when training ends.
SUMMARY = {"eval/accuracy": "held-out accuracy {:.1%}"}


@dataclass
class GRPOSettings:
    """GRPO's own choice: how rewards become advantages."""

    scale: Literal["group", "batch", "none"] = "group"
    """Divide each group's centred rewards by the group's std (`group`, GRPO §4.1.2), by the std of every reward
    of the step (`batch`, more robust when a group barely differs), or not at all (`none`, Dr. GRPO: no
    up-weighting of near-solved or near-hopeless prompts)."""


@dataclass
class GRPOConfig:
    """GRPO: sample G completions per prompt, score them, push up those above their group's mean."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=64, temperature=1.0))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=10, max_steps=300,
                                                                   weight_decay=0.0))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="grpo", log_every=5))
    dist: DistConfig = field(default_factory=DistConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)
    grpo: GRPOSettings = field(default_factory=GRPOSettings)

    def __post_init__(self) -> None:
        check_rl_optim(self.optim)
        check(self.rl.group_size >= 2, "rl.group_size", "GRPO compares the completions of one prompt with each "
              "other, so it needs at least 2 (4-16 is usual)", self.rl.group_size)


def grpo_advantages(cfg: GRPOConfig, rewards: torch.Tensor, d: Dist) -> torch.Tensor:
    """(N,) rewards, G per group -> (N,) advantages; scale "batch" uses the std over every process's rewards."""
    if cfg.grpo.scale != "batch":
        return group_advantages(rewards, cfg.rl.group_size, cfg.grpo.scale)
    return group_advantages(rewards, cfg.rl.group_size, "none") / (global_std(rewards, d) + 1e-4)


def train(cfg: GRPOConfig, given: Collection[str] | None = None) -> Path:
    """Train; returns the run directory. Resuming, the saved config is used (training/rundir.py::resume_config)."""
    cfg = resume_config(cfg, given)
    with distributed(cfg.run.device, cfg.run.threads) as d:
        return run_policy_optimization(cfg, d, "grpo", grpo_advantages)


def run_policy_optimization(cfg, d: Dist, label: str, advantages: Callable[..., torch.Tensor]) -> Path:
    """The GRPO loop with `advantages(cfg, rewards, d)`: GRPO's group-normalised ones, RLOO's leave-one-out, or
    any (N,) -> (N,) function of the step's rewards. `rewards` are this process's share of the step (G per
    prompt, adjacent); a statistic over the whole step (a batch mean or std) must be taken over every process
    (`rl.engine.global_moments`, which every process calls). A group whose advantages are all 0 counts as one
    with nothing to teach (--rl.drop-zero-variance, the flat-start note). `label` is the command: the run's
    name in its progress, lineage and closing line, and the model card's algorithm (eval/document.py's
    ALGORITHMS). `cfg` has the sections GRPOConfig has (grpo's own excepted)."""
    if run_finished(cfg.run, d.is_main):  # resuming a finished run changes nothing
        return run_path(cfg.run)
    # -- check every input before anything is sampled or written -----------------------------------------
    tokenizer = load_tokenizer(cfg.model.name)
    use_chat_template(tokenizer, cfg.data.chat_template)
    spec = reward_spec(cfg.rl.reward, cfg.data.train, "rl.reward")
    reward = resolve_reward(spec, tokenizer=tokenizer, device=cfg.run.device, option="rl.reward")
    eval_source = heldout_source(cfg.data)
    eval_reward = None if not eval_source else resolve_reward(
        eval_reward_spec(cfg.rl.eval_reward, spec, eval_source), tokenizer=tokenizer, device=cfg.run.device,
        option="rl.eval_reward" if cfg.rl.eval_reward else "rl.reward")
    prompts = load_run_prompts(cfg.data, tokenizer, cfg.model.name, reward, eval_reward)
    order = PromptOrder(len(prompts.train), cfg.rl.prompts_per_step, cfg.run.seed)
    check_run_start(cfg, d, len(prompts.heldout))

    # -- set up ---------------------------------------------------------------------------------------------
    seed_everything(cfg.run.seed)
    model, _ = load_model(cfg.model, d.device)
    # the starting policy, before any update or checkpoint load (under LoRA: the base, adapters off)
    reference = Reference(model, keep_copy=True) if cfg.rl.kl_beta > 0 else None
    layout = update_layout(model, tokenizer, cfg.data.share_prompt, d.device)  # the reference: the same model or a copy
    model.train()
    policy = model
    model = parallelize(model, d, cfg.dist, reference)  # DDP or FSDP2 under torchrun (--dist.strategy)
    run, optimizer, scheduler = start_rl_run(cfg, d, model, order.steps_per_epoch, prompts, label, spec)
    group_size = cfg.rl.group_size
    sampler = rollout_sampler(cfg, policy, tokenizer)
    engine = sampler if isinstance(sampler, VLLMSampler) else None  # its weights are pushed after each update
    eval_sampler = engine or ModelSampler(policy, tokenizer, batch_size=64)

    def evaluate_heldout(step: int) -> dict[str, float]:
        metrics, samples = evaluate_policy(policy, eval_sampler, prompts.heldout, prompts.heldout_ids, eval_reward,
                                           cfg.sampling, d)
        if d.is_main:
            write_jsonl(samples, run.dir / "samples" / f"eval-step-{step}.jsonl")
        return metrics

    # -- loop -----------------------------------------------------------------------------------------------
    completions_done = 0
    flat_start = FlatStart(run.total_steps - run.start_step, group_size)  # says so when the first steps learn nothing
    with interruptible(run, model, optimizer, scheduler):  # Ctrl-C: keep the last step, say how to resume
        if prompts.heldout and run.start_step == 0:
            run.sink.log(0, evaluate_heldout(0))  # the starting policy, to compare with
        for step in range(run.start_step, run.total_steps):
            sampled = sample_step(sampler, reward, prompts, order, step, cfg, d)
            rollout, scores = sampled.rollout, sampled.scores
            rewards = torch.tensor(scores.total, dtype=torch.float32)  # (N,), G per group
            adv = advantages(cfg, rewards, d)  # (N,)
            zero_std = zero_variance_groups(rewards, group_size)  # (groups,) G equal rewards
            no_signal = zero_advantage_groups(adv, group_size)  # (groups,) all advantages 0: nothing to learn
            groups = make_groups(rollout, adv, group_size, sampled.positions)
            if cfg.rl.drop_zero_variance:
                groups = groups.select([g for g in range(len(groups)) if not no_signal[g]])
            t1 = time.perf_counter()
            stats = update(model, optimizer, scheduler, groups, cfg.rl, layout, cfg.sampling.max_new_tokens,
                           cfg.optim.max_grad_norm, run, step + 1, d, reference, policy)
            update_seconds = time.perf_counter() - t1
            stats |= push_weights(engine, policy)  # before end_step: a held-out evaluation there samples with it
            completions_done += cfg.rl.prompts_per_step * group_size
            tokens = sum(len(p) + len(c) for p, c in zip(rollout.prompt_ids, rollout.completion_ids))
            metrics = {**stats, **rollout_metrics(rollout, scores, rewards, group_size, zero_std, sampled.seconds, d),
                       "train/lr": scheduler.get_last_lr()[0], "perf/update_seconds": update_seconds,
                       "perf/completions_per_second": completions_done / max(1e-9, time.perf_counter() - run.t0)}
            if (note := flat_start.see(metrics, bool(no_signal.all()))) and d.is_main:
                print(note, file=sys.stderr)
            end_step(run, step + 1, metrics, tokens, (lambda s=step + 1: evaluate_heldout(s)) if prompts.heldout
                     else None, model, optimizer, scheduler)

    # -- save -----------------------------------------------------------------------------------------------
    finish_run(run, model, tokenizer, save=lambda plain, out: save_model(plain, tokenizer, out, cfg.model))
    if d.is_main:  # report.html and the model card final/README.md
        document_run(run.dir, label)
    return print_summary(run.dir, label, SUMMARY, cfg.run.progress and d.is_main)
