"""Direct preference losses on sequence log-probs: DPO, conservative DPO, IPO and SimPO.

Symbols used throughout, per preference pair (x, y_c chosen, y_r rejected):
    πc, πr      log π_θ(y_c | x), log π_θ(y_r | x): policy log-probs (summed over tokens for DPO;
                length-averaged for IPO and SimPO, which the recipes pass)
    refc, refr  the same under the frozen reference model π_ref
    h           (πc - refc) - (πr - refr): how much more the policy prefers y_c than π_ref does
    β           inverse temperature: scales the implicit reward β(π - ref) (DPO) or the
                average log-likelihood (SimPO)

Each function returns (loss averaged over the batch, metrics of detached scalars). Metric names
follow TRL so that logs compare side by side.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise ValueError(f"expected 1-D tensors of one shape (B,), got {shapes}")


def _reward_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
) -> dict[str, torch.Tensor]:
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": (chosen_rewards - rejected_rewards).mean(),
        "rewards/accuracies": (chosen_rewards > rejected_rewards).float().mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Sigmoid DPO, optionally conservative. All inputs are summed sequence log-probs, (B,).

    loss = -(1 - ε) log σ(βh) - ε log σ(-βh)

    With ε = 0 this is DPO (arXiv:2305.18290 eq. 7). ε > 0 is conservative DPO (cDPO, Mitchell
    2023, "A note on DPO with noisy preferences"): it assumes each label is flipped with
    probability ε, so the loss stops pushing h once σ(βh) = 1 - ε. The implicit rewards
    β(πc - refc) and β(πr - refr) are logged as rewards/chosen and rewards/rejected.
    """
    _check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps)  # (B,)
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps)  # (B,)
    scaled_margin = chosen_rewards - rejected_rewards  # (B,) = βh
    losses = (
        -(1 - label_smoothing) * F.logsigmoid(scaled_margin)  # arXiv:2305.18290 eq. 7
        - label_smoothing * F.logsigmoid(-scaled_margin)  # cDPO: the label may be flipped
    )  # (B,)
    metrics = _reward_metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps)
    return losses.mean(), metrics


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float = 0.1,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """IPO: regress h onto the target 1/(2β) instead of pushing it to infinity. Inputs are (B,).

    loss = (h - 1/(2β))²   (arXiv:2310.12036 eq. 17; there β is the regularization strength τ)

    The logps are taken as given; the DPO recipe passes length-AVERAGED log-probs here, as TRL
    does, because with summed log-probs the fixed target 1/(2β) would mean a different per-token
    margin for every length.
    """
    _check_same_shape(
        policy_chosen_logps=policy_chosen_logps,
        policy_rejected_logps=policy_rejected_logps,
        ref_chosen_logps=ref_chosen_logps,
        ref_rejected_logps=ref_rejected_logps,
    )
    chosen_logratios = policy_chosen_logps - ref_chosen_logps  # (B,)
    rejected_logratios = policy_rejected_logps - ref_rejected_logps  # (B,)
    h = chosen_logratios - rejected_logratios  # (B,)
    losses = (h - 1 / (2 * beta)) ** 2  # arXiv:2310.12036 eq. 17
    metrics = _reward_metrics(
        beta * chosen_logratios, beta * rejected_logratios, policy_chosen_logps, policy_rejected_logps
    )
    return losses.mean(), metrics


def simpo_loss(
    policy_chosen_avg_logps: torch.Tensor,
    policy_rejected_avg_logps: torch.Tensor,
    beta: float = 2.0,
    gamma_beta_ratio: float = 0.5,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """SimPO: reference-free, on length-averaged log-probs (see `average_sequence_logps`), (B,).

    loss = -log σ(β·avg_c - β·avg_r - γ),  γ = gamma_beta_ratio · β   (arXiv:2405.14734 eq. 6)

    β·avg is SimPO's implicit reward (logged as rewards/chosen, rewards/rejected) and γ is the
    target reward margin. The defaults β = 2, γ/β = 0.5 are among the settings the authors report
    (github.com/princeton-nlp/SimPO).
    """
    _check_same_shape(
        policy_chosen_avg_logps=policy_chosen_avg_logps,
        policy_rejected_avg_logps=policy_rejected_avg_logps,
    )
    chosen_rewards = beta * policy_chosen_avg_logps  # (B,)
    rejected_rewards = beta * policy_rejected_avg_logps  # (B,)
    gamma = gamma_beta_ratio * beta
    losses = -F.logsigmoid(chosen_rewards - rejected_rewards - gamma)  # arXiv:2405.14734 eq. 6
    metrics = _reward_metrics(
        chosen_rewards, rejected_rewards, policy_chosen_avg_logps, policy_rejected_avg_logps
    )
    return losses.mean(), metrics
