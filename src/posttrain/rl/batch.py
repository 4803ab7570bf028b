"""Sampled groups as model inputs for the policy update, and the token log-probs read back in completion layout.

A group is one prompt and its G completions. Two layouts give the same log-probs:

- shared prompt (default where the attention takes a 4D mask: sdpa, eager): each group as one span
  [prompt, c_1, ..., c_G], with a block mask so that completion k sees the prompt and its own earlier tokens
  only, and position ids that restart after the prompt for each completion (prefix sharing, arXiv:2410.20305).
  The prompt goes through the model once per group instead of G times. The spans are packed into rows no wider
  than the longest span (first-fit decreasing), a span seeing nothing of the others in its row: with prompts of
  mixed lengths most rows take two or more groups, and fewer positions are padding;
- one row per completion, [prompt, c_k], right-padded.

Either way `completion_logps(model, batch)` returns the log-probs in a (C, L) grid, one row per completion of the
micro-batch (C = groups x G, L the longest completion), with `batch.mask` (C, L) True on real tokens: the shape
the losses in `losses/policy.py` and the KL estimators in `rl/kl.py` take. `completion_values` reads PPO's value
model at the same positions; `completion_logps_and_values` reads a value head on the policy itself from the
policy's one forward (PPO's `value_model=shared`).

With `last_layer=True` the last decoder layer runs at the scored positions only (models/last_layer.py): the
forward's output is then (1, M, ·), one position per scored token of the micro-batch (M of them, row by row), and
`predictors`, `targets` and `slots` are (1, M) along it.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from posttrain.data.collate import pack_lengths
from posttrain.losses.policy import entropy_from_logits
from posttrain.models.last_layer import last_layer_at
from posttrain.models.logprobs import predictor_logits, token_logps
from posttrain.models.lora import transformers_model

IGNORE = -100


@dataclass
class RolloutBatch:
    """A micro-batch of sampled groups (see the module docstring), and what the loss needs per completion."""

    inputs: dict[str, Any]  # for model(**inputs)
    predictors: torch.Tensor  # (rows, N): the output position whose logits predict each scored token; (1, M) flat
    targets: torch.Tensor  # (rows, N): scored token ids, -100 where none; (1, M) with last_layer
    slots: torch.Tensor  # (rows, N): where each scored token goes in the flattened (C, L) grid, C·L for none; (1, M)
    mask: torch.Tensor  # (C, L) bool: real completion tokens
    old_logps: torch.Tensor  # (C, L): the sampling policy's log-probs (0 off the mask)
    advantages: torch.Tensor  # (C,)
    completions: list[int]  # the rollout index of each of the C completions
    count: int = 0  # units the loss is summed over (tokens or completions: set by the aggregation)
    n_input: int = 0  # tokens through the model
    ref_logps: torch.Tensor | None = None  # (C, L), when a KL term is used
    old_values: torch.Tensor | None = None  # (C, L): PPO's value model when the rollout was scored
    returns: torch.Tensor | None = None  # (C, L): PPO's GAE returns, the value model's targets
    sampler_logps: torch.Tensor | None = None  # (C, L): an engine's sampling log-probs, kept for TIS (rl/mismatch.py)
    positions: torch.Tensor | None = None  # (rows, N): where the last layer runs, when only there (last_layer)
    scored: torch.Tensor | None = None  # (rows, N) bool: which of `positions` are scored tokens (the rest padding)

    @property
    def tokens(self) -> int:
        return int(self.mask.sum())


def rollout_batch(prompts: list[list[int]], completions: list[list[list[int]]], old_logps: list[list[torch.Tensor]],
                  advantages: list[list[float]], indices: list[list[int]], pad_id: int, device: torch.device,
                  share_prompt: bool, mask_dtype: torch.dtype = torch.bool, trim_logits: bool = False,
                  last_layer: bool = False) -> RolloutBatch:
    """Groups as one micro-batch. `prompts[g]` the prompt ids of group g, `completions[g][k]`, `old_logps[g][k]`
    (one value per token), `advantages[g][k]` and `indices[g][k]` (the completion's index in the rollout) for its
    k-th completion. `mask_dtype`: bool for sdpa, the model's dtype for eager (an additive mask). `last_layer`: the
    last decoder layer at the scored positions only (the models must pass `supports_last_layer_at`); it
    supersedes `trim_logits`, the head then running at those positions alone."""
    flat = [(g, k) for g in range(len(prompts)) for k in range(len(completions[g]))]
    if not flat:
        raise ValueError("a micro-batch needs at least one completion")
    if any(not p for p in prompts):
        raise ValueError("every prompt needs at least one token: its last token predicts the completion")
    longest = max(1, max(len(completions[g][k]) for g, k in flat))  # L
    n_completions = len(flat)  # C
    slot_of = {gk: c for c, gk in enumerate(flat)}
    # a row is a list of (group, [its completions in the row]); its "documents" are the groups
    if share_prompt:  # whole groups, packed into rows no wider than the longest group: no row grows, fewer pads
        spans = [len(prompts[g]) + sum(len(c) for c in completions[g]) for g in range(len(prompts))]
        rows = [[(g, list(range(len(completions[g])))) for g in sorted(row)] for row in pack_lengths(spans, max(spans))]
    else:
        rows = [[(g, [k])] for g, k in flat]
    row_spans = [[len(prompts[g]) + sum(len(completions[g][k]) for k in ks) for g, ks in row] for row in rows]
    width = max(sum(spans_) for spans_ in row_spans)
    n_scored = max(1, max(sum(len(completions[g][k]) for g, ks in row for k in ks) for row in rows))
    n_rows = len(rows)
    input_ids = np.full((n_rows, width), pad_id, dtype=np.int64)  # (B, T)
    position_ids = np.zeros((n_rows, width), dtype=np.int64)  # (B, T)
    document = np.full((n_rows, width), -1, dtype=np.int64)  # (B, T): the group's place in its row, -1 padding
    segment = np.full((n_rows, width), -1, dtype=np.int64)  # (B, T): 0 prompt, k + 1 completion k, -1 padding
    targets = np.full((n_rows, n_scored), IGNORE, dtype=np.int64)  # (B, N)
    predictors = np.zeros((n_rows, n_scored), dtype=np.int64)  # (B, N)
    slots = np.full((n_rows, n_scored), n_completions * longest, dtype=np.int64)  # (B, N)
    first = width  # the first position whose logits are read, over all rows
    for r, row in enumerate(rows):
        at, scored = 0, 0
        for d, (g, ks) in enumerate(row):
            prompt = prompts[g]
            p = len(prompt)
            input_ids[r, at : at + p], document[r, at : at + p] = prompt, d
            segment[r, at : at + p], position_ids[r, at : at + p] = 0, np.arange(p)
            first = min(first, at + p - 1)
            start = at
            at += p
            for j, k in enumerate(ks):
                ids = completions[g][k]
                n = len(ids)
                input_ids[r, at : at + n], document[r, at : at + n] = ids, d
                segment[r, at : at + n] = j + 1
                position_ids[r, at : at + n] = np.arange(p, p + n)  # each completion continues its prompt
                targets[r, scored : scored + n] = ids
                # the first token is predicted by the prompt's last position, the others by the one before them
                predictors[r, scored : scored + n] = np.concatenate([[start + p - 1], np.arange(at, at + n - 1)])[:n]
                slots[r, scored : scored + n] = slot_of[(g, k)] * longest + np.arange(n)
                at, scored = at + n, scored + n
        position_ids[r, at:] = np.arange(width - at)  # padding counts its own positions from 0
    mask = torch.zeros(n_completions, longest, dtype=torch.bool)
    old = torch.zeros(n_completions, longest)
    for c, (g, k) in enumerate(flat):
        n = len(completions[g][k])
        mask[c, :n] = True
        old[c, :n] = old_logps[g][k]
    positions = scored = None
    if last_layer:  # the output has one position per scored token, in order: predictor m is output position m
        real = targets != IGNORE  # (B, N)
        positions, scored = torch.from_numpy(predictors).to(device), torch.from_numpy(real).to(device)
        targets, slots = targets[real][None], slots[real][None]  # (1, M) each, row-major
        predictors = np.arange(targets.shape[1])[None]  # (1, M)
        trim_logits = False
    first = first if trim_logits else 0  # logits are needed from the first row's prompt's last token on
    seg, doc = torch.from_numpy(segment), torch.from_numpy(document)
    if share_prompt:
        # query i may see key j: j <= i, both in one group (or both padding), and j in the prompt or in i's own
        # completion
        same_group = doc[:, None, :] == doc[:, :, None]  # (B, T, T): [query, key]
        visible = same_group & ((seg[:, None, :] == 0) | (seg[:, None, :] == seg[:, :, None]))  # (B, T, T)
        attention = (visible & torch.ones(width, width, dtype=torch.bool).tril())[:, None]  # (B, 1, T, T)
        if mask_dtype != torch.bool:  # eager attention adds the mask to its scores
            attention = torch.zeros(attention.shape, dtype=mask_dtype).masked_fill_(~attention,
                                                                                     torch.finfo(mask_dtype).min)
        inputs = {"input_ids": torch.from_numpy(input_ids), "position_ids": torch.from_numpy(position_ids),
                  "attention_mask": attention}
    else:
        inputs = {"input_ids": torch.from_numpy(input_ids), "attention_mask": (seg >= 0).long()}
    inputs = {k: v.to(device) for k, v in inputs.items()} | {"use_cache": False}
    if trim_logits:
        inputs["logits_to_keep"] = width - first
    adv = torch.tensor([advantages[g][k] for g, k in flat], dtype=torch.float32)
    return RolloutBatch(
        inputs=inputs, predictors=(torch.from_numpy(predictors) - first).clamp(min=0).to(device),
        targets=torch.from_numpy(targets).to(device), slots=torch.from_numpy(slots).to(device),
        mask=mask.to(device), old_logps=old.to(device), advantages=adv.to(device),
        completions=[indices[g][k] for g, k in flat],
        n_input=int((seg >= 0).sum()), positions=positions, scored=scored,
    )


def scored_only(model: torch.nn.Module, batch: RolloutBatch) -> AbstractContextManager:
    """The context a forward of `model` over `batch` runs in: its last layer at the scored positions when the
    batch was laid out so (`last_layer`), else nothing."""
    return nullcontext() if batch.positions is None else last_layer_at(model, batch.positions, batch.scored)


def to_grid(values: torch.Tensor, batch: RolloutBatch) -> torch.Tensor:
    """Per scored token values (rows, N) -> the (C, L) completion grid of `batch` (0 where no token)."""
    c, length = batch.mask.shape
    grid = values.new_zeros(c * length + 1)  # the last slot takes every padding target
    grid = grid.index_put((batch.slots.reshape(-1),), values.reshape(-1))  # each real slot written once
    return grid[:-1].view(c, length)


def at_predictors(per_position: torch.Tensor, batch: RolloutBatch) -> torch.Tensor:
    """Per position values (B, T') -> each completion token's, read at the position whose logits predict it, in
    the (C, L) grid (0 off the mask). T' counts from the first kept position when the layout trims logits."""
    return to_grid(per_position.gather(1, batch.predictors), batch)


def kept_positions(per_position: torch.Tensor, batch: RolloutBatch) -> torch.Tensor:
    """(B, T) -> (B, T'): the last `logits_to_keep` positions when the batch trims logits (the positions the
    predictors count from), else all of them."""
    keep = batch.inputs.get("logits_to_keep")
    return per_position[:, per_position.shape[1] - keep :] if keep else per_position


def logps_from_logits(logits: torch.Tensor, batch: RolloutBatch, with_entropy: bool
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits (B, T', V) -> (log-probs, entropy or None), each (C, L): see `completion_logps`."""
    rows = predictor_logits(logits, batch.predictors)  # (B, N, V): the logits that predict each scored token
    logps = token_logps(rows, batch.targets)  # (B, N)
    entropy = None
    if with_entropy:  # at the scored tokens' positions only, not at every kept one
        with torch.no_grad():
            entropy = to_grid(entropy_from_logits(rows.detach()), batch)  # (C, L)
    return to_grid(logps, batch), entropy


def completion_logps(model: torch.nn.Module, batch: RolloutBatch, with_entropy: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """log π(token) of every completion token, (C, L) (0 off the mask), from one forward over the batch; with
    `with_entropy`, also the entropy of the distribution each token was drawn from, (C, L), without gradient."""
    with scored_only(model, batch):
        logits = model(**batch.inputs).logits  # (B, T', V)
    return logps_from_logits(logits, batch, with_entropy)


def completion_values(value_model: Any, batch: RolloutBatch) -> torch.Tensor:
    """V(state before each completion token), (C, L) (0 off the mask): the value model's head at the position
    whose logits predict the token, the same positions `completion_logps` reads (`value_model`: a
    `models.heads.RewardModel`, or anything with its token_values)."""
    inputs = {k: v for k, v in batch.inputs.items() if k != "logits_to_keep"}
    with scored_only(value_model.backbone, batch):
        values = value_model.token_values(**inputs)  # (B, T)
    return at_predictors(kept_positions(values, batch), batch)


def completion_logps_and_values(model: torch.nn.Module, value_head: torch.nn.Linear, batch: RolloutBatch,
                                with_entropy: bool = False) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """`completion_logps` and the values of a value head on the same model, (C, L) each, from ONE forward:
    `value_head` (H -> 1) reads the final hidden states the LM head reads, at the positions the log-probs are
    read at. A forward pre-hook takes those hidden states from the LM head's input, so the logits are the model's own
    forward's (trimmed by logits_to_keep, any logit scaling applied) and the values see the same trimmed (B, T', H).
    Values are in float32, the head's input cast to its dtype (as TRL's ValueHead does)."""
    hidden: list[torch.Tensor] = []
    hook = transformers_model(model).get_output_embeddings().register_forward_pre_hook(
        lambda module, args: hidden.append(args[0]))
    try:
        with scored_only(model, batch):
            logits = model(**batch.inputs).logits  # (B, T', V)
    finally:
        hook.remove()
    if len(hidden) != 1:
        raise RuntimeError(f"expected the forward to call the LM head once, it called it {len(hidden)} times")
    values = value_head(hidden[0].to(value_head.weight.dtype)).squeeze(-1).float()  # (B, T', H) -> (B, T')
    logps, entropy = logps_from_logits(logits, batch, with_entropy)
    return logps, entropy, at_predictors(values, batch)
