"""PPO's rewards per completion token, from a sequence score and a per-token KL to the reference. Pure torch.

InstructGPT-style RLHF (arXiv:2203.02155 eq. 2; Ziegler et al. arXiv:1909.08593 §2.2) maximises
    R(x, y) = r(x, y) - β · KL(π(·|x) || π_ref(·|x))
and PPO spreads it over the completion's tokens: every token pays -β · kl_t (its KL estimate, k1 by default),
and the last real token also receives the reward model's score r(x, y). GAE (rl/advantages.py::gae) turns these
into advantages and returns.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def penalize_unfinished(scores: torch.Tensor, ended: torch.Tensor, penalty: float) -> torch.Tensor:
    """(N,) scores less `penalty` where the completion never ended (`ended` (N,) False: it ran into the token
    budget without an end-of-sequence or stop string): TRL's `missing_eos_penalty`. A reward model scores a cut-off
    answer as if it were whole; this makes running on unattractive."""
    if scores.shape != ended.shape or scores.dim() != 1:
        raise ValueError(f"scores {tuple(scores.shape)} and ended {tuple(ended.shape)} must share one (N,) shape")
    if penalty < 0:
        raise ValueError(f"penalty must be >= 0 (it is subtracted), got {penalty}")
    return torch.where(ended.bool(), scores, scores - penalty)


def token_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """(C,) sequence scores, (C, L) per-token KL estimates and mask -> (C, L) rewards: -kl_coef · kl on every real
    token, plus the score on each row's last real token; 0 outside the mask. Each row's real tokens must start at
    column 0 (the completion grid of rl/batch.py); a row with no real token gets nothing."""
    if kl.shape != mask.shape or kl.dim() != 2 or scores.shape != kl.shape[:1]:
        raise ValueError(f"scores {tuple(scores.shape)}, kl {tuple(kl.shape)} and mask {tuple(mask.shape)}: expected "
                         "(C,), (C, L) and (C, L)")
    mask = mask.bool()
    rewards = torch.where(mask, -kl_coef * kl, 0.0)  # (C, L)
    lengths = mask.sum(1)  # (C,)
    rows = torch.nonzero(lengths > 0).squeeze(1)
    rewards[rows, lengths[rows] - 1] += scores[rows].to(rewards.dtype)
    return rewards


def sequence_kl(kl: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(C, L) per-token KL estimates -> (C,) their sum over each completion's real tokens (the KL of the sequence,
    what the adaptive controller of arXiv:1909.08593 steers)."""
    return torch.where(mask.bool(), kl, 0.0).sum(1)


def explained_variance(values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
                       variance: Callable[[torch.Tensor], float] | None = None) -> float:
    """1 - Var(R - V) / Var(R) over the masked tokens: 1 when the value model predicts the returns exactly, 0 when
    it does no better than their mean, negative when worse; NaN when the returns do not vary. `variance`: the
    unbiased variance of a 1-D tensor, 0 below 2 values (default: of the tensor itself; PPO passes one over every
    process's values)."""
    mask = mask.bool()
    r, v = returns[mask].double(), values[mask].double()
    var_of = variance or (lambda x: float(x.var()) if x.numel() >= 2 else 0.0)
    var = var_of(r)
    return float("nan") if var == 0 else float(1 - var_of(r - v) / var)
