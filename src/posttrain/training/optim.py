"""AdamW with parameter groups and the learning-rate schedule (warmup, then cosine/linear/constant)."""

from __future__ import annotations

import logging
import math

import torch

from posttrain.config import OptimConfig

log = logging.getLogger(__name__)


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig) -> torch.optim.AdamW:
    """Weight decay only on matrices: biases, norms and other 1-D tensors are not decayed."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    # fused: one kernel for all parameters instead of a Python loop of small ops per tensor (CPU and CUDA)
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, fused=True)


def lr_factor(step: int, total_steps: int, cfg: OptimConfig) -> float:
    """Multiplier of cfg.lr at optimizer step `step` (0-based)."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.schedule == "constant":
        return 1.0
    decay_steps = max(1, total_steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / decay_steps)
    if cfg.schedule == "cosine":
        shape = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        shape = 1.0 - progress
    return cfg.min_lr_ratio + (1.0 - cfg.min_lr_ratio) * shape


def build_scheduler(optimizer: torch.optim.Optimizer, total_steps: int, cfg: OptimConfig):
    """The warmup + decay schedule over `total_steps`; warns (one line, main process) when it ends in warm-up."""
    if total_steps <= cfg.warmup_steps and _is_main():
        log.warning(warmup_warning(total_steps, cfg.warmup_steps))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total_steps, cfg))


def warmup_warning(total_steps: int, warmup_steps: int) -> str:
    steps = f"{total_steps} optimizer step{'s' if total_steps != 1 else ''}"
    return (f"warning: the run has {steps} and optim.warmup_steps={warmup_steps}, so it ends "
            f"in warm-up (the learning rate reaches {min(1.0, total_steps / warmup_steps):.0%} of optim.lr and never "
            "decays); lower --optim.warmup-steps or raise --optim.max-steps")


def _is_main() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0
