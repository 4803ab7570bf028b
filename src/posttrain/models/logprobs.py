"""Log-probabilities of given tokens under a causal LM's logits, per token and per sequence.

Every preference and RL loss starts here: `token_logps` turns logits into log p(token) without
building a full (B, T, V) log-softmax, and `sequence_logps` / `average_sequence_logps` reduce
over the completion mask (sums for DPO, length-averages for SimPO and IPO). `pair_logps` runs a
model over a `PairBatch` (either layout) and returns both responses' log-probs.
"""

from __future__ import annotations

import inspect

import torch

from posttrain.data.collate import IGNORE_INDEX
from posttrain.data.preference import CHOSEN, REJECTED, PairBatch
from posttrain.models.last_layer import last_layer_at

# Rows of logits handled at once: bounds the float32 temporaries to about 256 MB.
_CHUNK_ELEMENTS = 2**26


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the causal LM's forward takes `logits_to_keep` (transformers' Llama, Qwen, Mistral, ... do): then
    the LM head can run on the last positions only, where the loss needs logits. Looks through DDP and peft."""
    from posttrain.models.lora import transformers_model

    return "logits_to_keep" in inspect.signature(transformers_model(model).forward).parameters


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(labels[b, t] | logits[b, t]) for each position; 0 where the label is IGNORE_INDEX.

    Labels are already aligned with the logits: for a causal LM pass logits[:, :-1] and input_ids[:, 1:].
    Computed as logit[label] - logsumexp(logits) in float32, a chunk of rows at a time, so that
    bf16 logits never become a whole (B, T, V) float32 tensor in the forward pass.
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree")
    keep_mask = labels != IGNORE_INDEX  # (B, T)
    safe_labels = torch.where(keep_mask, labels, 0)  # (B, T): -100 would index out of range
    flat_logits = logits.reshape(-1, logits.shape[-1])  # (B*T, V)
    chosen_logits = flat_logits.gather(-1, safe_labels.reshape(-1, 1)).squeeze(-1).float()  # (B*T,)
    rows_per_chunk = max(1, _CHUNK_ELEMENTS // logits.shape[-1])
    log_normalizers = torch.cat(
        [torch.logsumexp(chunk.float(), dim=-1) for chunk in flat_logits.split(rows_per_chunk)]
    )  # (B*T,)
    logps = (chosen_logits - log_normalizers).reshape(labels.shape)  # (B, T)
    return torch.where(keep_mask, logps, 0.0)


def gathered_token_logps(logits: torch.Tensor, predictors: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(targets[b, n] | logits[b, predictors[b, n]]): (B, T, V), (B, N), (B, N) -> (B, N); 0 where the
    target is IGNORE_INDEX. For layouts where a token is not predicted by the position just before it
    (the shared-prompt pair rows of data/preference.py)."""
    return token_logps(predictor_logits(logits, predictors), targets)


def predictor_logits(logits: torch.Tensor, predictors: torch.Tensor) -> torch.Tensor:
    """The logits at the positions `predictors` (B, N) name, per row: (B, T, V) -> (B, N, V)."""
    return logits.gather(1, predictors[..., None].expand(-1, -1, logits.shape[-1]))


def sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of token log-probs over the positions where `mask` is nonzero: (B, T) -> (B,)."""
    if token_logps.shape != mask.shape:
        raise ValueError(f"token_logps {tuple(token_logps.shape)} and mask {tuple(mask.shape)} disagree")
    return (token_logps * mask.to(token_logps.dtype)).sum(-1)  # (B,)


def average_sequence_logps(token_logps: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token log-prob over the masked positions, (B, T) -> (B,): SimPO's length-normalized
    log-likelihood (arXiv:2405.14734 eq. 4). An empty mask gives 0 rather than NaN."""
    token_counts = mask.to(token_logps.dtype).sum(-1).clamp(min=1)  # (B,)
    return sequence_logps(token_logps, mask) / token_counts


def response_logps(model: torch.nn.Module, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token log-probs of the batch's responses and where they are: (B, N) log-probs, chosen mask, rejected mask."""
    if batch.positions is not None:  # one row per pair, the last layer at the response positions only
        valid = batch.targets != IGNORE_INDEX  # (B, N)
        with last_layer_at(model, batch.positions, valid):
            logits = model(**batch.inputs).logits  # (1, M, V): one position per response token, row by row
        flat = token_logps(logits[0], batch.targets[valid])  # (M,)
        logps = torch.zeros(valid.shape, dtype=flat.dtype, device=flat.device).masked_scatter(valid, flat)  # (B, N)
        return logps, batch.target_segment == CHOSEN, batch.target_segment == REJECTED
    logits = model(**batch.inputs).logits  # (rows, T - first, V)
    if batch.shared_prompt:  # one row per pair
        logps = gathered_token_logps(logits, batch.predictors, batch.targets)  # (B, N)
        return logps, batch.target_segment == CHOSEN, batch.target_segment == REJECTED
    logps = token_logps(logits[:, :-1], batch.targets)  # (2B, T - first - 1)
    mask = batch.completion_mask  # (2B, T - first - 1)
    chosen, rejected = logps.chunk(2)  # (B, T - first - 1) each
    none = torch.zeros_like(mask[: len(chosen)])
    return (torch.cat([chosen, rejected], 1), torch.cat([mask[: len(chosen)], none], 1),
            torch.cat([none, mask[len(chosen) :]], 1))  # (B, 2(T - first - 1)) each


def pair_logps(model: torch.nn.Module, batch: PairBatch, average: bool
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(chosen, rejected, chosen per-token mean), each (B,), from one forward over the batch's pairs.
    `average`: chosen and rejected are per-token means (IPO, SimPO), else sums (DPO)."""
    logps, chosen_mask, rejected_mask = response_logps(model, batch)  # (B, N) each
    reduce = average_sequence_logps if average else sequence_logps
    chosen_mean = average_sequence_logps(logps, chosen_mask)
    return reduce(logps, chosen_mask), reduce(logps, rejected_mask), chosen_mean
