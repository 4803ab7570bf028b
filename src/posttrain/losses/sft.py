"""The supervised fine-tuning loss: summed next-token negative log-likelihood on trained tokens.

It returns the SUM and the token count rather than a mean, so that the training
engine can normalise by the number of trained tokens across all micro-batches and
processes of one optimizer step (then 1x8 and 4x2 accumulate to the same update).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from posttrain.data.collate import IGNORE_INDEX


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of -log p(label) over positions whose label is not IGNORE_INDEX (-100), and how many there are.

    logits: (B, T, V) from the model; labels: (B, T) unshifted (labels[t] is the token at t),
    so position t-1's logits predict labels[t].
    """
    shift_logits = logits[:, :-1, :].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    loss_sum = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    n_tokens = (shift_labels != IGNORE_INDEX).sum()
    return loss_sum, n_tokens
