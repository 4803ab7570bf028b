"""One micro-batch of tokenized examples as model inputs, labels and token counts."""

from __future__ import annotations

import torch

from posttrain.data.collate import IGNORE_INDEX, collate_packed, pack_lengths, pad_batch
from posttrain.data.tokenize import Example


def make_micro_batch(
    examples: list[Example], indices: list[int], pad_id: int, packing: bool, device: torch.device, max_length: int = 0,
    trim_logits: bool = False, padding_free: bool = False,
) -> dict:
    """Inputs for `model(**inputs)`, unshifted labels, trained-token and input-token counts.

    Three layouts, the same loss:
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
    chosen = [examples[i] for i in indices]
    if not chosen:
        raise ValueError("a micro-batch needs at least one example (batch size x processes > dataset?)")
    if packing or padding_free:
        row_length = max_length or max(len(e) for e in chosen)
        rows = [list(range(len(chosen)))] if padding_free and not packing else pack_lengths(
            [len(e) for e in chosen], row_length)
        batch = collate_packed([[chosen[i] for i in row] for row in rows], pad_id)
        # no KV cache: with one, transformers would not build the per-document mask
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    else:
        batch = pad_batch(chosen, pad_id, "right")
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
    return {
        "inputs": {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()},
        "labels": labels.to(device),
        "n_target": int((labels != IGNORE_INDEX).sum()),
        "n_input": sum(len(e) for e in chosen),
    }
