"""Preference pairs to token ids and to batches (`PairBatch`) in either of two layouts.

A `PreferenceExample` is one (prompt, chosen, rejected) triple as token ids. The prompt is
rendered with the chat template's generation prompt; chosen and rejected are the tokens the
model is scored on (`tokenize_completion`), so prompt_ids + chosen_ids is exactly the tokenized
conversation prompt + chosen (plain strings on a model without a chat template: prompt and response
tokenized apart and concatenated, eos after the response). A `Ranking` of K responses counts as its
C(K, 2) pairs (better, worse), all carrying the ranking's row number.

Two batch layouts, both one forward pass for both sides of every pair:
    `collate_pairs`          2B right-padded rows, the B chosen sequences first, then the B rejected
                             ones; every prompt is encoded twice. Works with any model.
    `collate_shared_prompt`  B rows [prompt, chosen, rejected] (prefix sharing, arXiv:2410.20305):
                             each prompt is encoded once; a block mask keeps chosen and rejected from
                             seeing each other and the rejected positions restart after the prompt, so
                             every log-prob equals the two-row layout's. Needs a 4D attention mask
                             (transformers' sdpa and eager attention).

Sequences longer than data.max_length (prompt + response; each side is checked):
    "error"    stop before training with a DataError naming the source and row.
    "skip"     drop the pair and report the count.
    "truncate" keep the first max_length tokens of each side; a pair with nothing left to
               compare (an empty side, or both sides cut to the same tokens) is dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from posttrain.data.collate import IGNORE_INDEX, pad_batch
from posttrain.data.records import PreferencePair, Ranking
from posttrain.data.tokenize import Example, TooLong, tokenize_all, tokenize_completion
from posttrain.errors import ModelError

if TYPE_CHECKING:
    from posttrain.config import DataConfig

PREFERENCE_KINDS = (PreferencePair, Ranking)


@dataclass(frozen=True)
class PreferenceExample:
    """One pair as token ids; `row` is the 1-based record it came from in its source."""

    prompt_ids: tuple[int, ...]
    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    row: int
    truncated: bool = field(default=False, compare=False)
    """A side was cut to data.max_length by data.truncation=truncate."""

    @property
    def chosen(self) -> Example:
        """prompt + chosen, only the chosen tokens scored."""
        return _scored(self.prompt_ids, self.chosen_ids)

    @property
    def rejected(self) -> Example:
        """prompt + rejected, only the rejected tokens scored."""
        return _scored(self.prompt_ids, self.rejected_ids)

    def __len__(self) -> int:
        """The longer side: the width this pair needs in a padded batch."""
        return len(self.prompt_ids) + max(len(self.chosen_ids), len(self.rejected_ids))


def _scored(prompt_ids: tuple[int, ...], response_ids: tuple[int, ...]) -> Example:
    return Example(list(prompt_ids + response_ids), [False] * len(prompt_ids) + [True] * len(response_ids))


def pairs_of(record: PreferencePair | Ranking) -> list[PreferencePair]:
    """A pair as itself; a ranking as its C(K, 2) (better, worse) pairs."""
    return record.pairs() if isinstance(record, Ranking) else [record]


def tokenize_pair(pair: PreferencePair, tokenizer, *, row: int, max_length: int, truncation: str = "error"
                  ) -> PreferenceExample | None:
    """Token ids of one pair under the truncation policy (see the module docstring); None when dropped."""
    prompt_ids, chosen_ids = tokenize_completion(pair.prompt, pair.chosen, tokenizer, plain=pair.plain)
    rejected_prompt_ids, rejected_ids = tokenize_completion(pair.prompt, pair.rejected, tokenizer, plain=pair.plain)
    if rejected_prompt_ids != prompt_ids:
        raise ModelError(
            f"{tokenizer.name_or_path}: the prompt tokenizes differently before the chosen and the rejected "
            "response (a token spans the end of the prompt), so the two cannot share one prompt"
        )
    longest = len(prompt_ids) + max(len(chosen_ids), len(rejected_ids))
    if longest > max_length:
        if truncation == "error":
            raise TooLong(longest, max_length)
        if truncation == "skip":
            return None
        room = max_length - len(prompt_ids)
        chosen_ids, rejected_ids = chosen_ids[: max(room, 0)], rejected_ids[: max(room, 0)]
        if not chosen_ids or not rejected_ids or chosen_ids == rejected_ids:
            return None
    return PreferenceExample(tuple(prompt_ids), tuple(chosen_ids), tuple(rejected_ids), row, longest > max_length)


def tokenize_preferences(records: list, tokenizer, data: DataConfig, *, source: str) -> list[PreferenceExample]:
    """Tokenize every pair (rankings expanded) under data.max_length / data.truncation (see `tokenize_all`)."""
    def make(record, row: int) -> list[PreferenceExample | None]:
        return [tokenize_pair(pair, tokenizer, row=row, max_length=data.max_length, truncation=data.truncation)
                for pair in pairs_of(record)]

    return tokenize_all(records, make, data, source=source, unit="pairs")


def collate_pairs(examples: list[PreferenceExample], pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs -> 2B right-padded sequences, chosen first: input_ids and attention_mask (2B, T), and
    completion_mask (2B, T-1), aligned with logits[:, :-1] (position t predicts token t+1): True where a response token is predicted."""
    batch = pad_batch([e.chosen for e in examples] + [e.rejected for e in examples], pad_id, "right")
    completion_mask = batch["labels"][:, 1:] != IGNORE_INDEX  # (2B, T-1): prompt, padding and BOS excluded
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
            "completion_mask": completion_mask}


# segment ids of collate_shared_prompt
PROMPT, CHOSEN, REJECTED, PADDING = 0, 1, 2, 3


def collate_shared_prompt(examples: list[PreferenceExample], pad_id: int) -> dict[str, torch.Tensor]:
    """B pairs -> B right-padded rows [prompt, chosen, rejected] (prefix sharing, arXiv:2410.20305).

    Returns input_ids and position_ids (B, T); attention (B, 1, T, T) bool, True where query
    i may attend to key j: j <= i and j is in the prompt or in i's own segment, so chosen and rejected
    never see each other. Rejected positions restart at len(prompt), as if it followed the prompt alone.
    For the scored tokens (B, N), N = the longest chosen + rejected: `targets` (token ids, -100 where
    none), `predictors` (the position whose logits predict each target: the previous position, and for
    the first rejected token the last prompt token) and `target_segment` (CHOSEN, REJECTED or PADDING).
    """
    if any(not e.prompt_ids for e in examples):
        raise ValueError("collate_shared_prompt needs a non-empty prompt: its last token predicts both responses")
    width = max(len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in examples)
    n_scored = max(len(e.chosen_ids) + len(e.rejected_ids) for e in examples)
    rows = len(examples)
    input_ids = np.full((rows, width), pad_id, dtype=np.int64)  # (B, T)
    position_ids = np.zeros((rows, width), dtype=np.int64)  # (B, T)
    segment = np.full((rows, width), PADDING, dtype=np.int64)  # (B, T)
    targets = np.full((rows, n_scored), IGNORE_INDEX, dtype=np.int64)  # (B, N)
    predictors = np.zeros((rows, n_scored), dtype=np.int64)  # (B, N)
    target_segment = np.full((rows, n_scored), PADDING, dtype=np.int64)  # (B, N)
    for b, e in enumerate(examples):
        p, c, r = len(e.prompt_ids), len(e.chosen_ids), len(e.rejected_ids)
        input_ids[b, : p + c + r] = e.prompt_ids + e.chosen_ids + e.rejected_ids
        # rejected restarts after the prompt; the padding just counts on
        position_ids[b] = np.concatenate([np.arange(p + c), np.arange(p, p + r + width - p - c - r)])
        segment[b, :p], segment[b, p : p + c], segment[b, p + c : p + c + r] = PROMPT, CHOSEN, REJECTED
        targets[b, : c + r] = e.chosen_ids + e.rejected_ids
        predictors[b, :c] = np.arange(p - 1, p + c - 1)
        predictors[b, c : c + r] = np.concatenate([[p - 1], np.arange(p + c, p + c + r - 1)])
        target_segment[b, :c], target_segment[b, c : c + r] = CHOSEN, REJECTED
    seg = torch.from_numpy(segment)
    visible = (seg[:, None, :] == PROMPT) | (seg[:, None, :] == seg[:, :, None])  # (B, T, T): [query, key]
    attention = (visible & torch.ones(width, width, dtype=torch.bool).tril())[:, None]  # (B, 1, T, T)
    return {"input_ids": torch.from_numpy(input_ids), "position_ids": torch.from_numpy(position_ids),
            "attention": attention, "targets": torch.from_numpy(targets),
            "predictors": torch.from_numpy(predictors), "target_segment": torch.from_numpy(target_segment)}


@dataclass(frozen=True)
class PairLayout:
    """How pairs go through a given model (`models.attention.pair_layout` picks the fastest it supports)."""

    share_prompt: bool = False
    """One row [prompt, chosen, rejected] per pair (else two rows)."""
    mask_dtype: torch.dtype = torch.bool
    """The 4D mask's form: bool for sdpa, an additive float mask for eager attention."""
    trim_logits: bool = False
    """Pass `logits_to_keep` so the LM head runs only from the last prompt token on."""
    last_layer: bool = False
    """With `share_prompt`: the last decoder layer (and the LM head) runs at the positions that predict response
    tokens only (models/last_layer.py); supersedes `trim_logits`."""


@dataclass
class PairBatch:
    """B preference pairs as model inputs, and where their response tokens are.

    Shared prompt (`share_prompt`): one row per pair; `targets`, `predictors`, `target_segment` are (B, N)
    (see `collate_shared_prompt`). Two rows: 2B rows, chosen first; `targets` and `completion_mask` are
    (2B, T - first - 1), aligned with the logits of positions first .. T - 2. `models.logprobs.pair_logps`
    reads either. The reference log-probs (B,) are filled in by the recipe when it has them.
    """

    inputs: dict[str, Any]
    targets: torch.Tensor
    predictors: torch.Tensor | None  # (B, N), shared prompt only
    target_segment: torch.Tensor | None  # (B, N), shared prompt only
    completion_mask: torch.Tensor | None  # (2B, T'), two rows only
    count: int  # pairs: what the loss is summed over
    n_input: int  # input tokens, as if every prompt were encoded twice (the two-row count, for tokens/s)
    ref_chosen_logps: torch.Tensor | None = None  # (B,)
    ref_rejected_logps: torch.Tensor | None = None  # (B,)
    positions: torch.Tensor | None = None  # (B, N): where the last layer runs, when only there (layout.last_layer)

    @property
    def shared_prompt(self) -> bool:
        return self.predictors is not None


def pair_batch(examples: list[PreferenceExample], indices: list[int], pad_id: int, device: torch.device,
               layout: PairLayout = PairLayout()) -> PairBatch:
    """The pairs at `indices` as one `PairBatch` in `layout`."""
    if not indices:
        raise ValueError("a micro-batch needs at least one pair (batch size x processes > dataset?)")
    pairs = [examples[i] for i in indices]
    n_input = sum(2 * len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for e in pairs)
    shortest_prompt = min(len(e.prompt_ids) for e in pairs)
    # logits are needed from the shortest prompt's last token on; earlier ones only when the model cannot skip them
    shared = layout.share_prompt and shortest_prompt > 0
    last_layer = shared and layout.last_layer  # the output is then one position per response token: no trimming
    first = max(shortest_prompt - 1, 0) if layout.trim_logits and not last_layer else 0
    if shared:
        b = collate_shared_prompt(pairs, pad_id)
        mask = b["attention"]  # (B, 1, T, T)
        if layout.mask_dtype != torch.bool:  # eager attention adds the mask to its scores
            lowest = torch.finfo(layout.mask_dtype).min
            mask = torch.zeros(mask.shape, dtype=layout.mask_dtype).masked_fill_(~mask, lowest)
        inputs = {"input_ids": b["input_ids"], "position_ids": b["position_ids"], "attention_mask": mask}
        predictors = (b["predictors"] - first).clamp(min=0).to(device)  # padding targets read position 0
        targets, segment, completion_mask = b["targets"].to(device), b["target_segment"].to(device), None
    else:
        b = collate_pairs(pairs, pad_id)
        inputs = {"input_ids": b["input_ids"], "attention_mask": b["attention_mask"]}
        predictors = segment = None
        completion_mask = b["completion_mask"][:, first:].to(device)
        targets = b["input_ids"][:, first + 1 :].to(device)
    width = inputs["input_ids"].shape[1]
    inputs = {k: v.to(device) for k, v in inputs.items()} | {"use_cache": False}
    if layout.trim_logits and not last_layer:
        inputs["logits_to_keep"] = width - first  # logits for positions first .. T-1 only
    return PairBatch(inputs, targets, predictors, segment, completion_mask, len(indices), n_input,
                     positions=predictors if last_layer else None)
