"""Policy-gradient losses for online RL: the clipped surrogate per token, three ways to aggregate it, entropy.

`clipped_policy_loss` gives a (B, T) per-token loss. An aggregation turns it into `(loss_sum, units)` for one
micro-batch, so that Σ loss_sum / Σ units over a step's micro-batches (training/loop.py's `accumulate` divides
each loss_sum by the step's total units) is the loss of the whole step, whatever the micro-batch split:
    token_sum                 Σ tokens / tokens in the step            token mean (DAPO, arXiv:2503.14476 §3.3)
    sequence_mean_sum         Σ rows (row's token mean) / rows         sequence mean (GRPO, arXiv:2402.03300 eq. 3)
    constant_normalizer_sum   Σ tokens / max_tokens / rows             Dr. GRPO (arXiv:2503.20783)
"""

from __future__ import annotations

import torch

# Rows of logits whose entropy is computed at once: bounds the float32 temporaries to about 256 MB (the same
# budget as models/logprobs.py, not imported so that posttrain.losses stays torch-only).
_CHUNK_ELEMENTS = 2**26


def clipped_policy_loss(logps: torch.Tensor, old_logps: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                        eps_low: float, eps_high: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(ρA, clip(ρ, 1 - eps_low, 1 + eps_high) A) with ρ = exp(logps - old_logps) (PPO,
    arXiv:1707.06347 eq. 7; separate eps_low / eps_high are DAPO's clip-higher, arXiv:2503.14476 §3.1).

    logps, old_logps, mask: (B, T); advantages: (B,) (one per completion) or (B, T). Returns the loss, 0 where
    mask is False, and the clip mask (B, T): tokens whose gradient the clip removed (ρ > 1 + eps_high with A > 0,
    or ρ < 1 - eps_low with A < 0).
    """
    if not (logps.shape == old_logps.shape == mask.shape) or logps.dim() != 2:
        raise ValueError(f"logps {tuple(logps.shape)}, old_logps {tuple(old_logps.shape)} and mask "
                         f"{tuple(mask.shape)} must share one (B, T) shape")
    if advantages.shape not in (logps.shape[:1], logps.shape):
        raise ValueError(f"advantages {tuple(advantages.shape)} must be (B,) or (B, T) for logps "
                         f"{tuple(logps.shape)}")
    adv = advantages[:, None] if advantages.dim() == 1 else advantages  # (B, 1) or (B, T)
    if not (0 <= eps_low <= 1 and eps_high >= 0):
        raise ValueError(f"need 0 <= eps_low <= 1 and eps_high >= 0, got {eps_low}, {eps_high}")
    mask = mask.bool()
    # masked before exp: padding's log-probs may be anything, and exp(inf) would send NaN through the gradient
    ratio = torch.exp(torch.where(mask, logps - old_logps, 0.0))  # (B, T)
    unclipped = ratio * adv
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high) * adv
    loss = torch.where(mask, -torch.minimum(unclipped, clipped), 0.0)  # (B, T)
    clip_mask = mask & (((ratio > 1 + eps_high) & (adv > 0)) | ((ratio < 1 - eps_low) & (adv < 0)))
    return loss, clip_mask


def _check(per_token: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    if per_token.shape != mask.shape or per_token.dim() != 2:
        raise ValueError(f"per_token {tuple(per_token.shape)} and mask {tuple(mask.shape)} must share one (B, T) "
                         "shape")
    return torch.where(mask.bool(), per_token, 0.0)  # (B, T)


def token_sum(per_token: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum over the masked tokens, their number): every token of the step weighs the same."""
    return _check(per_token, mask).sum(), int(mask.sum())


def sequence_mean_sum(per_token: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, int]:
    """(sum over rows of the row's token mean, rows): every completion weighs the same, whatever its length.
    A row with no masked token contributes 0 and still counts as a row."""
    lengths = mask.sum(-1).clamp(min=1)  # (B,)
    return (_check(per_token, mask).sum(-1) / lengths).sum(), per_token.shape[0]


def constant_normalizer_sum(per_token: torch.Tensor, mask: torch.Tensor, max_tokens: int
                            ) -> tuple[torch.Tensor, int]:
    """(sum over the masked tokens / max_tokens, rows): each row's token sum over a constant (the completion
    budget), so no length bias from dividing by the row's own length (Dr. GRPO)."""
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    return _check(per_token, mask).sum() / max_tokens, per_token.shape[0]


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the next-token distribution at each position, (B, T, V) -> (B, T) in float32:
    H = logsumexp(z) - Σ softmax(z) z, a chunk of rows at a time. Differentiable; the chunking saves memory
    only under no_grad (for logging), where each chunk's softmax is freed before the next."""
    if logits.dim() != 3:
        raise ValueError(f"logits must be (B, T, V), got {tuple(logits.shape)}")
    flat = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
    rows = max(1, _CHUNK_ELEMENTS // logits.shape[-1])
    parts = []
    for chunk in flat.split(rows):
        z = chunk.float()
        parts.append(torch.logsumexp(z, -1) - (torch.softmax(z, -1) * z).sum(-1))
    return torch.cat(parts).reshape(logits.shape[:-1])  # (B, T)
