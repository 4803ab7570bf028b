"""The value model's loss for PPO: squared error to the returns, with PPO's value clipping. Pure torch.

    L_V = ½ max((V - R)², (clip(V, V_old - ε, V_old + ε) - R)²)     per token

V: the value model now, V_old: its values when the rollout was scored, R: the GAE returns (rl/advantages.py).
The clip keeps a pass of minibatch updates from moving a value far from the one the advantages were computed
with (arXiv:1707.06347's baselines code; "The 37 implementation details of PPO", detail 9, and TRL's PPOTrainer:
the max of the clipped and unclipped errors, halved).
"""

from __future__ import annotations

import math

import torch


def clipped_value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       clip: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token ½ max((V - R)², (clip(V, V_old ± clip) - R)²), (B, T), 0 where mask is False, and the clip mask
    (B, T): tokens where the clipped error is the larger (its gradient to V is cut). clip=inf: plain ½ (V - R)²."""
    if not (values.shape == old_values.shape == returns.shape == mask.shape) or values.dim() != 2:
        raise ValueError(f"values {tuple(values.shape)}, old_values {tuple(old_values.shape)}, returns "
                         f"{tuple(returns.shape)} and mask {tuple(mask.shape)} must share one (B, T) shape")
    if not clip > 0:
        raise ValueError(f"clip must be > 0 (inf for no clipping), got {clip}")
    mask = mask.bool()
    if math.isinf(clip):  # old + (V - old) can differ from V in the last bit
        clipped_values = values
    else:
        clipped_values = old_values + (values - old_values).clamp(-clip, clip)  # (B, T)
    unclipped_error = (values - returns) ** 2
    clipped_error = (clipped_values - returns) ** 2
    loss = torch.where(mask, 0.5 * torch.maximum(unclipped_error, clipped_error), 0.0)  # (B, T)
    return loss, mask & (clipped_error > unclipped_error)
