"""Direct preference losses on sequence log-probs: DPO, conservative DPO, IPO and SimPO.

Symbols used throughout, per preference pair (x, y_c chosen, y_r rejected):
    πc, πr      log π_θ(y_c | x), log π_θ(y_r | x): policy log-probs (summed over tokens for DPO;
                length-averaged for IPO and SimPO, which the recipes pass)
    refc, refr  the same under the frozen reference model π_ref
    h           (πc - refc) - (πr - refr): how much more the policy prefers y_c than π_ref does
    β           inverse temperature: scales the implicit reward β(π - ref) (DPO) or the
                average log-likelihood (SimPO)

Each function returns (loss averaged over the batch, metrics of detached scalars). Metric names
follow TRL so that logs compare side by side; rewards/accuracies counts a pair only when its margin
beats float noise (TIE_RTOL), so that a policy equal to its reference scores 0, not a coin flip.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# The objective-specific parameters, by the one objective that reads each (dpo_loss's label_smoothing, simpo_loss's
# gamma/beta ratio): the DPO recipe refuses one given with another objective, and a model card leaves it out there.
ONE_OBJECTIVE_PARAMETERS = {"label_smoothing": "dpo", "simpo_gamma_beta_ratio": "simpo"}


def _check_same_shape(**tensors: torch.Tensor) -> None:
    shapes = {name: tuple(t.shape) for name, t in tensors.items()}
    if len(set(shapes.values())) != 1 or len(next(iter(shapes.values()))) != 1:
        raise ValueError(f"expected 1-D tensors of one shape (B,), got {shapes}")


# A pair counts as a win in rewards/accuracies only when its reward margin exceeds this fraction of the magnitudes
# the margin is computed from (β·(|πc| + |refc| + |πr| + |refr|), or β·(|avg_c| + |avg_r|) for SimPO). At step 1
# the policy IS the reference, yet its log-probs, computed in another batch layout than the cached reference's,
# differ by float32 rounding (~1e-6 relative); such margins are ties, and a tie is not a win. 1e-4 leaves a wide
# berth above float32 rounding (a bfloat16 policy's rounding, ~1e-2 relative, is not covered) while any margin
# training makes is far larger.
TIE_RTOL = 1e-4


def _reward_metrics(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    scale: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """TRL's metrics; `scale` (B,) is the magnitude of each pair's margin terms, for the tie tolerance TIE_RTOL."""
    chosen_rewards, rejected_rewards = chosen_rewards.detach(), rejected_rewards.detach()
    margins = chosen_rewards - rejected_rewards  # (B,)
    return {
        "rewards/chosen": chosen_rewards.mean(),
        "rewards/rejected": rejected_rewards.mean(),
        "rewards/margins": margins.mean(),
        "rewards/accuracies": (margins > TIE_RTOL * scale.detach()).float().mean(),
        "logps/chosen": policy_chosen_logps.detach().mean(),
        "logps/rejected": policy_rejected_logps.detach().mean(),
    }


def _magnitude(beta: float, *logps: torch.Tensor) -> torch.Tensor:
    """β·Σ|logps| per pair (B,): the scale of a margin computed from these log-probs."""
    return beta * sum(t.detach().abs() for t in logps)


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
    scale = _magnitude(beta, policy_chosen_logps, ref_chosen_logps, policy_rejected_logps, ref_rejected_logps)
    metrics = _reward_metrics(chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps, scale)
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
    scale = _magnitude(beta, policy_chosen_logps, ref_chosen_logps, policy_rejected_logps, ref_rejected_logps)
    metrics = _reward_metrics(
        beta * chosen_logratios, beta * rejected_logratios, policy_chosen_logps, policy_rejected_logps, scale
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
        chosen_rewards, rejected_rewards, policy_chosen_avg_logps, policy_rejected_avg_logps,
        _magnitude(beta, policy_chosen_avg_logps, policy_rejected_avg_logps),
    )
    return losses.mean(), metrics
