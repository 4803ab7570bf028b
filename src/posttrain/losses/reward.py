"""Reward-model losses: the Bradley-Terry pairwise loss and the InstructGPT K-wise ranking loss.

A reward model r(x, y) scores a prompt x with a completion y. Comparisons of K completions
are turned into pairs (better, worse) and trained so that σ(r_better - r_worse) is the
probability that the better one is preferred (Bradley-Terry).
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    chosen_rewards: torch.Tensor,
    rejected_rewards: torch.Tensor,
    margin: torch.Tensor | None = None,
    center_coef: float = 0.0,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Pairwise reward-model loss over N pairs; chosen_rewards and rejected_rewards are (N,).

    loss = mean(-log σ(r_c - r_r - m)) + center_coef · mean((r_c + r_r)²)

    r_c, r_r are the rewards of the chosen and rejected completions (InstructGPT,
    arXiv:2203.02155 eq. 1). m is an optional per-pair margin (N,), larger for pairs rated as
    clearly different (Llama 2, arXiv:2307.09288 §3.2.2). The centering term pulls the rewards
    toward zero mean, which the pairwise loss alone leaves free (Eisenstein et al.,
    arXiv:2312.09244; TRL's center_rewards_coefficient).
    """
    if chosen_rewards.shape != rejected_rewards.shape or chosen_rewards.dim() != 1:
        raise ValueError(
            f"expected chosen and rejected rewards of one shape (N,), got "
            f"{tuple(chosen_rewards.shape)} and {tuple(rejected_rewards.shape)}"
        )
    reward_gaps = chosen_rewards - rejected_rewards  # (N,)
    target_gaps = reward_gaps if margin is None else reward_gaps - margin  # (N,)
    loss = -F.logsigmoid(target_gaps).mean()  # arXiv:2203.02155 eq. 1
    if center_coef:
        loss = loss + center_coef * ((chosen_rewards + rejected_rewards) ** 2).mean()  # arXiv:2312.09244
    all_rewards = torch.cat([chosen_rewards, rejected_rewards]).detach()  # (2N,)
    metrics = {
        "loss": loss.detach(),
        "accuracy": (reward_gaps > 0).float().mean().detach(),
        "margin": reward_gaps.mean().detach(),
        "rewards/chosen_mean": chosen_rewards.mean().detach(),
        "rewards/rejected_mean": rejected_rewards.mean().detach(),
        "rewards/std": all_rewards.std(correction=0),
    }
    return loss, metrics


def ranking_pairs(k: int, order: list[int]) -> list[tuple[int, int]]:
    """All C(K, 2) pairs (better_index, worse_index) implied by `order`, a best-first permutation
    of range(k). Example: k=3, order=[2, 0, 1] gives [(2, 0), (2, 1), (0, 1)]."""
    if sorted(order) != list(range(k)):
        raise ValueError(f"order must list each of the {k} completion indices 0..{k - 1} once, got {order}")
    return list(itertools.combinations(order, 2))  # combinations keep the best-first order


def ranking_loss(
    rewards: torch.Tensor, order: list[int] | tuple[int, ...], margin: float | None = None, center_coef: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """InstructGPT K-wise loss for one prompt: rewards (K,) of its K completions, ranked by
    `order` (best first).

    loss = 1/C(K,2) · Σ over pairs (b, w) of -log σ(r_b - r_w - m)   (arXiv:2203.02155 eq. 1)

    All C(K, 2) pairs of a prompt stay in one batch element with weight 1/C(K, 2), rather than
    being shuffled into the dataset as separate pairs, which overfits (arXiv:2203.02155 §3.5).
    Average this loss over the prompts of a batch. `margin` (one number for every pair, as a rated
    pair has) and `center_coef` are `bradley_terry_loss`'s; a pair (K = 2) is just the Bradley-Terry loss.
    """
    if rewards.dim() != 1:
        raise ValueError(f"expected rewards of shape (K,), got {tuple(rewards.shape)}")
    pairs = ranking_pairs(rewards.shape[0], list(order))
    better_index = torch.tensor([better for better, _ in pairs], device=rewards.device)  # (C(K,2),)
    worse_index = torch.tensor([worse for _, worse in pairs], device=rewards.device)  # (C(K,2),)
    margins = None if margin is None else torch.full((len(pairs),), margin, device=rewards.device)  # (C(K,2),)
    return bradley_terry_loss(rewards[better_index], rewards[worse_index], margins, center_coef)
