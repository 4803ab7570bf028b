"""Pure loss functions: tensors in, `(loss, metrics)` out. Imports nothing heavier than torch.

- preference: DPO, conservative DPO, IPO, SimPO (RPO's chosen-NLL term is per pair, in recipes/dpo.py)
- reward: Bradley-Terry and K-wise ranking losses for reward models
"""

from posttrain.losses.preference import dpo_loss, ipo_loss, simpo_loss
from posttrain.losses.reward import bradley_terry_loss, ranking_loss, ranking_pairs

__all__ = [
    "bradley_terry_loss",
    "dpo_loss",
    "ipo_loss",
    "ranking_loss",
    "ranking_pairs",
    "simpo_loss",
]
