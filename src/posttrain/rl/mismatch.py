"""Correcting for the sampler/trainer mismatch: truncated importance sampling (TIS).

An inference engine (vLLM) computes the policy's log-probs with other kernels, another batch order and often
another precision than the trainer, so the tokens it samples come from a distribution π_engine slightly off the
trainer's π_old, even right after the weights were pushed to it: "on-policy" RL is in fact off-policy
(Yao et al., "Your Efficient RL Framework Secretly Brings You Off-Policy RL Training", 2025,
https://fengyao.notion.site/off-policy-rl). Their fix, as verl and TRL apply it (TRL:
`vllm_importance_sampling_mode="token_truncate"`), weighs each token's policy-gradient loss by the importance
ratio between the two, truncated from above so that one token the engine found unlikely cannot dominate:

    w_t = min(exp(logp_old_t - logp_engine_t), C)          (the weight carries no gradient)
    loss_t = w_t * clipped_surrogate_t(π_θ / π_old)        (the KL term, if any, is not weighted)

`logp_old` comes from a forward of the trainer's policy before the update (so the clipped ratio π_θ/π_old
keeps its meaning) and `logp_engine` from the engine's sampling. Truncating only from above (C >= 1) keeps the
weight at 1 where the two agree and biases the estimate a little only where the trainer finds a token much more
likely than the engine did.
"""

from __future__ import annotations

import torch


def truncated_importance_weights(old_logps: torch.Tensor, sampler_logps: torch.Tensor, mask: torch.Tensor,
                                 cap: float) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token TIS weights min(exp(old_logps - sampler_logps), cap), (C, L) -> (C, L), 0 off the mask, and
    metric sums over the masked tokens: `tis_weight_sum` (of the truncated weights), `tis_clipped_tokens` (tokens
    whose ratio was above the cap) and `tis_abs_logp_diff_sum` (|old_logps - sampler_logps|).

    `old_logps`: the trainer's log-probs of the sampled tokens before the update; `sampler_logps`: the engine's,
    from sampling (raw softmax at temperature 1); `mask` (C, L) bool: real completion tokens; `cap`: C >= 1.
    No gradient flows through the weights."""
    if not (old_logps.shape == sampler_logps.shape == mask.shape):
        raise ValueError(f"shapes differ: old_logps {tuple(old_logps.shape)}, sampler_logps "
                         f"{tuple(sampler_logps.shape)}, mask {tuple(mask.shape)} (all (C, L))")
    if cap < 1:
        raise ValueError(f"cap={cap}: must be >= 1 (a cap below 1 would down-weight tokens the two agree on)")
    diff = torch.where(mask, old_logps.detach() - sampler_logps.detach(), 0.0)  # (C, L)
    ratio = torch.exp(diff)  # (C, L): 1 off the mask
    weights = torch.where(mask, ratio.clamp(max=cap), 0.0)  # (C, L)
    sums = {"tis_weight_sum": float(weights.sum()), "tis_clipped_tokens": float(((ratio > cap) & mask).sum()),
            "tis_abs_logp_diff_sum": float(diff.abs().sum())}
    return weights, sums
