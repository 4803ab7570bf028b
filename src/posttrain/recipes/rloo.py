"""REINFORCE leave-one-out (RLOO, arXiv:2402.14740; Kool et al. 2019): online RL whose baseline for each
completion is the mean reward of the OTHER G - 1 completions of its prompt.

    A_i = r_i - mean_{j != i} r_j = G / (G - 1) · (r_i - mean of the group)

The baseline does not depend on the completion it is subtracted from, so the policy-gradient estimate stays
unbiased, and there is no division by a standard deviation (unlike GRPO). The rest of the loop is GRPO's
(recipes/grpo.py: the same sampler, rewards, clipped update and metrics); with the default single pass over
each step's samples the sampler's log-probs are the old policy's, the ratio is 1 and the update is plain
REINFORCE with this baseline, as in the paper.

    posttrain rloo --model.name runs/sft/final
    posttrain rloo --model.name smollm2 --model.lora-r 16 --data.train prompts.jsonl --rl.reward math

Departure from the paper: its KL penalty is folded into the sequence reward; here it is GRPO's per-token
term (`--rl.kl-beta`), off by default.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch

from posttrain.config import DistConfig, ModelConfig, OptimConfig, RunConfig, SamplingParams, VLLMConfig, check
from posttrain.recipes.grpo import run_policy_optimization
from posttrain.rl.advantages import leave_one_out_advantages
from posttrain.rl.setup import PromptDataConfig, RLConfig, check_rl_optim
from posttrain.training.distributed import Dist, distributed
from posttrain.training.rundir import resume_config


@dataclass
class RLOOConfig:
    """RLOO: sample G completions per prompt; each one's baseline is the mean reward of the others."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: PromptDataConfig = field(default_factory=PromptDataConfig)
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=64, temperature=1.0))
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-4, warmup_steps=10, max_steps=300))
    run: RunConfig = field(default_factory=lambda: RunConfig(name="rloo", log_every=5))
    dist: DistConfig = field(default_factory=DistConfig)
    rl: RLConfig = field(default_factory=RLConfig)
    vllm: VLLMConfig = field(default_factory=VLLMConfig)

    def __post_init__(self) -> None:
        check_rl_optim(self.optim)
        check(self.rl.group_size >= 2, "rl.group_size", "RLOO's baseline is the mean of the OTHER completions of a "
              "prompt, so it needs at least 2 (4-8 is usual)", self.rl.group_size)


def rloo_advantages(cfg: RLOOConfig, rewards: torch.Tensor, d: Dist) -> torch.Tensor:
    """(N,) rewards, G per group -> (N,) leave-one-out advantages (each group on its own process)."""
    return leave_one_out_advantages(rewards, cfg.rl.group_size)


def train(cfg: RLOOConfig, given: Collection[str] | None = None) -> Path:
    """Train; returns the run directory. Resuming, the saved config is used (training/rundir.py::resume_config)."""
    cfg = resume_config(cfg, given)
    with distributed(cfg.run.device, cfg.run.threads) as d:
        return run_policy_optimization(cfg, d, "rloo", rloo_advantages)
