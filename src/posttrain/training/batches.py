"""One micro-batch of tokenized examples as model inputs, labels and token counts."""

from __future__ import annotations

import torch

from posttrain.data.collate import IGNORE_INDEX, collate_packed, pack_lengths, pad_batch
from posttrain.data.tokenize import Example


def make_micro_batch(
    examples: list[Example], indices: list[int], pad_id: int, packing: bool, device: torch.device, max_length: int = 0
) -> dict:
    """Inputs for `model(**inputs)`, unshifted labels (B, T), trained-token and input-token counts.

    With packing, the examples are packed into as few rows of at most `max_length` tokens as
    first-fit allows; attention stays inside each document (see data/collate.py).
    """
    chosen = [examples[i] for i in indices]
    if not chosen:
        raise ValueError("a micro-batch needs at least one example (batch size x processes > dataset?)")
    if packing:
        rows = pack_lengths([len(e) for e in chosen], max_length or max(len(e) for e in chosen))
        batch = collate_packed([[chosen[i] for i in row] for row in rows], pad_id)
        # no KV cache: with one, transformers would not build the per-document mask
        inputs = {"input_ids": batch["input_ids"], "position_ids": batch["position_ids"], "use_cache": False}
    else:
        batch = pad_batch(chosen, pad_id, "right")
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}
    labels = batch["labels"]  # (B, T)
    return {
        "inputs": {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()},
        "labels": labels.to(device),
        "n_target": int((labels != IGNORE_INDEX).sum()),
        "n_input": sum(len(e) for e in chosen),
    }
