"""Pure loss functions: tensors in, `(loss, metrics)` out (policy.py: per-token losses and their sums). Imports
nothing heavier than torch.

- preference: DPO, conservative DPO, IPO, SimPO (RPO's chosen-NLL term is per pair, in recipes/dpo.py)
- reward: Bradley-Terry and K-wise ranking losses for reward models
- policy: the clipped policy-gradient loss for online RL, its token / sequence / constant-normaliser
  aggregations, entropy
"""

from posttrain.losses.policy import (
    clipped_policy_loss,
    constant_normalizer_sum,
    entropy_from_logits,
    sequence_mean_sum,
    token_sum,
)
from posttrain.losses.preference import dpo_loss, ipo_loss, simpo_loss
from posttrain.losses.reward import bradley_terry_loss, ranking_loss, ranking_pairs

__all__ = [
    "bradley_terry_loss",
    "clipped_policy_loss",
    "constant_normalizer_sum",
    "dpo_loss",
    "entropy_from_logits",
    "ipo_loss",
    "ranking_loss",
    "ranking_pairs",
    "sequence_mean_sum",
    "simpo_loss",
    "token_sum",
]
