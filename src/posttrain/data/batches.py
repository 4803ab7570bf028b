"""SFT examples to one micro-batch: model inputs, labels and token counts, as an `SFTBatch`.

Every recipe's batch is a small dataclass made in `data/` (`SFTBatch` here, `PairBatch` in
`data/preference.py`, `GroupBatch` in `data/rankings.py`), each with the two counts the training engine
reads: `count`, the units the loss is summed over (trained tokens, pairs, prompt groups), and `n_input`,
the tokens that went through the model (for tokens/s).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from posttrain.data.collate import IGNORE_INDEX, collate_packed, pack_lengths, pad_batch
from posttrain.data.tokenize import Example


@dataclass
class SFTBatch:
    """A micro-batch of SFT examples.

    `inputs` go to `model(**inputs)`: input_ids (rows, T) with attention_mask (rows, T) for padded rows,
    or position_ids (rows, T) for packed and padding-free rows; `logits_to_keep` (K,) when trimmed.
    `labels` (rows, T), or (rows, K) when trimmed, are unshifted (labels[t] is the token at t, -100 where
    no loss), so the loss shifts them.
    """

    inputs: dict[str, Any]
    labels: torch.Tensor  # (rows, T) or (rows, K)
    count: int  # trained tokens: what the loss is summed over
    n_input: int  # input tokens


def sft_batch(
    examples: list[Example], indices: list[int], pad_id: int, packing: bool, device: torch.device, max_length: int = 0,
    trim_logits: bool = False, padding_free: bool = False,
) -> SFTBatch:
    """The examples at `indices` as one micro-batch. Three layouts, the same loss:

    - padded (default): one right-padded row per example, (B, T).
    - `packing`: the examples packed into as few rows of at most `max_length` tokens as first-fit
      allows; attention stays inside each document (see data/collate.py).
    - `padding_free`: every example in ONE row, back to back, (1, N) with N the real tokens; no pad
      token is computed. Use it with `models.attention.use_varlen_attention(model)`, which keeps
      attention per document without an (N, N) mask.
    With `trim_logits` (models whose forward takes `logits_to_keep`), the LM head runs only at the
    positions the loss reads: every trained token and the one before it (whose logits predict it),
    in any row. `labels` keeps those columns only, (rows, K), so the shifted loss is unchanged.
    """
    selected = [examples[i] for i in indices]
    if not selected:
        raise ValueError("a micro-batch needs at least one example (batch size x processes > dataset?)")
    if packing or padding_free:
        row_length = max_length or max(len(e) for e in selected)
        rows = [list(range(len(selected)))] if padding_free and not packing else pack_lengths(
            [len(e) for e in selected], row_length)
        batch = collate_packed([[selected[i] for i in row] for row in rows], pad_id)
        # no KV cache: with one, transformers would not build the per-document mask
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    else:
        batch = pad_batch(selected, pad_id, "right")
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    labels = batch["labels"]  # (B, T)
    if trim_logits:
        trained = (labels != IGNORE_INDEX).any(0)  # (T,)
        # a trained token and the position before it: within the kept columns every trained token still directly
        # follows its predictor, and any other pair of neighbours has an untrained (ignored) label
        keep = (trained | torch.cat([trained[1:], trained.new_zeros(1)])).nonzero().squeeze(1)  # (K,)
        if len(keep) >= 2:
            labels = labels[:, keep]  # (rows, K)
            inputs["logits_to_keep"] = keep
    return SFTBatch(
        inputs={k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()},
        labels=labels.to(device),
        count=int((labels != IGNORE_INDEX).sum()),
        n_input=sum(len(e) for e in selected),
    )
