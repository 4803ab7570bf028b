"""Advantages for online RL: what each sampled completion (or token) gained over a baseline. Pure torch.

Rewards arrive as one flat (N,) tensor of N = groups x G scores, the G completions of one prompt adjacent
(the sampler's order). Group statistics use torch.std's unbiased estimate (Bessel's correction), as TRL's
GRPOTrainer does, so advantages compare across the two implementations. A group of one sample has no spread:
its std is taken as 0 rather than NaN, and since its centred reward is 0 its advantage is 0, never NaN.
"""

from __future__ import annotations

from typing import Literal

import torch


def _groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) rewards as (N // G, G) rows (integer rewards made float), one per prompt; N must be a multiple of G."""
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D (N,), got shape {tuple(rewards.shape)}")
    if group_size < 1 or len(rewards) % group_size:
        raise ValueError(f"group_size {group_size} must be >= 1 and divide the number of rewards {len(rewards)}: "
                         "rewards hold the G completions of each prompt side by side")
    return (rewards if rewards.is_floating_point() else rewards.float()).view(-1, group_size)


def _std(values: torch.Tensor) -> torch.Tensor:
    """Unbiased std of each row, (rows, n) -> (rows, 1), as torch.std and TRL; 0 for n = 1 instead of NaN."""
    if values.shape[1] < 2:
        return torch.zeros_like(values[:, :1])
    return values.std(1, keepdim=True)


def _centered(grouped: torch.Tensor, baseline: torch.Tensor) -> torch.Tensor:
    """grouped - baseline, exactly 0 in a group whose rewards are all equal: float rounding leaves their mean a
    few ulps off (8 rewards of 0.7 in float32: 6e-8), which the group's std (as small) would scale up to an
    advantage of ~6e-4 instead of 0 (with eps 1e-4), a gradient from a group that has nothing to teach."""
    flat = grouped.amax(1, keepdim=True) == grouped.amin(1, keepdim=True)  # (groups, 1)
    return torch.where(flat, 0.0, grouped - baseline)


def group_advantages(rewards: torch.Tensor, group_size: int, scale: Literal["group", "batch", "none"] = "group",
                     eps: float = 1e-4) -> torch.Tensor:
    """(r - mean of r's group) / (std + eps): (N,) -> (N,).

    scale "group": std of the group (GRPO, arXiv:2402.03300 §4.1.2); "batch": std of all N rewards (TRL's
    scale_rewards="batch"; pass the global batch's rewards under DDP); "none": no division, Dr. GRPO's unbiased
    advantages (arXiv:2503.20783), which do not up-weight prompts whose rewards barely differ.
    """
    grouped = _groups(rewards, group_size)  # (groups, G)
    centered = _centered(grouped, grouped.mean(1, keepdim=True))  # (groups, G)
    if scale == "group":
        centered = centered / (_std(grouped) + eps)
    elif scale == "batch":
        centered = centered / (_std(grouped.reshape(1, -1)) + eps)  # (1, 1)
    elif scale != "none":
        raise ValueError(f'scale must be "group", "batch" or "none", got {scale!r}')
    return centered.flatten()  # (N,)


def leave_one_out_advantages(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """r_i minus the mean reward of the OTHER G - 1 samples of its group (RLOO, arXiv:2402.14740;
    Kool et al. 2019): (N,) -> (N,). Equals G / (G - 1) · (r_i - group mean). Needs G >= 2."""
    grouped = _groups(rewards, group_size)  # (groups, G)
    if group_size < 2:
        raise ValueError("leave-one-out advantages need group_size >= 2: the baseline is the other samples' mean")
    baseline = (grouped.sum(1, keepdim=True) - grouped) / (group_size - 1)  # (groups, G)
    return _centered(grouped, baseline).flatten()  # (N,)


def zero_variance_groups(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) -> (N // G,) bool: True where all G rewards of a group are equal, so every advantage in it is 0 and
    the group carries no gradient (DAPO's dynamic sampling drops them, arXiv:2503.14476 §3.2). Exact equality:
    verifiable rewards are discrete. A group of one is always True."""
    grouped = _groups(rewards, group_size)  # (groups, G)
    return grouped.amax(1) == grouped.amin(1)


def zero_advantage_groups(advantages: torch.Tensor, group_size: int) -> torch.Tensor:
    """(N,) -> (N // G,) bool: True where every advantage of a group is 0, so the group carries no gradient from
    the reward. With a per-group baseline (GRPO's, RLOO's) these are the groups of equal rewards
    (`zero_variance_groups`); with a baseline over the whole batch (REINFORCE++) a group of equal rewards still
    has advantages, and only this says which groups teach nothing."""
    return (_groups(advantages, group_size) == 0).all(1)


def whiten(values: torch.Tensor, mask: torch.Tensor | None = None, shift_mean: bool = True,
           eps: float = 1e-8, moments: tuple[float, float] | None = None) -> torch.Tensor:
    """(values - mean) / sqrt(var + eps) over the positions where `mask` is True (all when None); same shape out,
    0 outside the mask. Unbiased variance, like TRL's masked_whiten. shift_mean=False adds the mean back: only the
    spread is rescaled (PPO whitens rewards that way, advantages with the shift; arXiv:1909.08593's code).
    `moments`: (mean, variance) to use instead of the masked values' own, e.g. over every process's values."""
    mask = torch.ones_like(values, dtype=torch.bool) if mask is None else mask.bool()
    if mask.shape != values.shape:
        raise ValueError(f"mask {tuple(mask.shape)} and values {tuple(values.shape)} disagree")
    if moments is None:
        count = mask.sum()
        if count < 2:
            raise ValueError(f"whiten needs at least 2 positions in the mask to estimate a spread, got {int(count)}")
        selected = values[mask]  # (count,)
        mean, var = selected.mean(), selected.var()
    else:
        mean, var = (torch.tensor(m, dtype=values.dtype) for m in moments)
    whitened = (values - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask, whitened, 0.0)


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation (arXiv:1506.02438 eq. 16) over completion tokens, all rows at once.

    rewards, values, mask: (B, T); each row's True positions are one contiguous run (its completion, with any
    padding on either side). Past a row's last token the episode has ended: no bootstrap from V.
        δ_t = r_t + γ m_{t+1} V_{t+1} - V_t,   A_t = δ_t + γλ m_{t+1} A_{t+1}
    Returns (advantages, returns = advantages + values), both (B, T) and 0 outside the mask.
    """
    if not (rewards.shape == values.shape == mask.shape) or rewards.dim() != 2:
        raise ValueError(f"rewards {tuple(rewards.shape)}, values {tuple(values.shape)} and mask "
                         f"{tuple(mask.shape)} must share one (B, T) shape")
    if not (0 <= gamma <= 1 and 0 <= lam <= 1):
        raise ValueError(f"gamma ({gamma}) and lam ({lam}) must lie in [0, 1]")
    mask = mask.bool()
    starts = mask[:, 1:] & ~mask[:, :-1]  # (B, T - 1): a False -> True step
    if (starts.sum(1) + mask[:, 0] > 1).any():
        raise ValueError("each row of mask must be one contiguous run of True (a completion and its padding)")
    m = mask.to(values.dtype)  # (B, T)
    rewards, values = rewards * m, values * m
    advantages = torch.zeros_like(values)  # (B, T)
    next_value = next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # (B,); next_* are 0 past a row's end
        next_advantage = (delta + gamma * lam * next_advantage) * m[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    return advantages, advantages + values
