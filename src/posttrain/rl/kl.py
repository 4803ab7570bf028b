"""KL between the policy and its reference, per token, and the controllers that set its coefficient β.

Estimators of KL(π || π_ref) from tokens sampled from π, with log-ratio x = logp - ref_logp
(Schulman 2020, "Approximating KL divergence", http://joschu.net/blog/kl-approx.html):
    k1 = x                     unbiased, high variance, can be negative
    k2 = x² / 2                biased, low variance, >= 0
    k3 = e^{-x} - (-x) - 1     unbiased, low variance, >= 0 (0 iff x = 0); GRPO's (arXiv:2402.03300 eq. 4)

The controllers hold β between steps for PPO: fixed, or adapted toward a target KL (arXiv:1909.08593 §2.2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch


def kl_penalty(logps: torch.Tensor, ref_logps: torch.Tensor, estimator: Literal["k1", "k2", "k3"]
               ) -> torch.Tensor:
    """Per-token KL estimate, (B, T) -> (B, T); the caller masks padding."""
    if logps.shape != ref_logps.shape:
        raise ValueError(f"logps {tuple(logps.shape)} and ref_logps {tuple(ref_logps.shape)} disagree")
    log_ratio = logps - ref_logps  # (B, T)
    if estimator == "k1":
        return log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    if estimator == "k3":
        return torch.exp(-log_ratio) + log_ratio - 1  # = exp(ref - logp) - (ref - logp) - 1
    raise ValueError(f'estimator must be "k1", "k2" or "k3", got {estimator!r}')


@dataclass
class FixedKLController:
    """β that never changes."""

    value: float

    def update(self, current_kl: float, n_steps: int) -> None:
        """Nothing to adapt; the same call as AdaptiveKLController's so that callers need not tell them apart."""

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])


@dataclass
class AdaptiveKLController:
    """β steered toward a target KL (Ziegler et al., arXiv:1909.08593 §2.2): after each batch of n_steps samples,
        e = clip(KL / target - 1, -0.2, 0.2),   β <- β (1 + e · n_steps / horizon)
    so β grows while the KL is above target and shrinks below it, by at most 0.2 · n_steps / horizon a step."""

    value: float
    """β now (starts at the initial coefficient)."""
    target: float
    """The KL (nats per sequence, as measured by the caller) that β steers toward."""
    horizon: int
    """Samples over which the error is corrected (the paper's 10,000)."""

    def __post_init__(self) -> None:
        if self.target <= 0 or self.horizon <= 0:
            raise ValueError(f"target ({self.target}) and horizon ({self.horizon}) must be > 0")

    def update(self, current_kl: float, n_steps: int) -> None:
        error = min(max(current_kl / self.target - 1, -0.2), 0.2)  # proportional error, clipped
        self.value *= 1 + error * n_steps / self.horizon

    def state_dict(self) -> dict[str, Any]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.value = float(state["value"])
