"""Preference pairs and rankings as prompt groups for reward modelling: tokens, and batches (`GroupBatch`).

A `RankedGroup` is one prompt's K responses, each tokenized as prompt + response exactly as a reward model
reads it when scoring (`data.tokenize.reward_input_ids`), ranked best first by `order`. A preference pair is
a group with K = 2. All of a prompt's responses go into the same batch, so its C(K, 2) pairs share one
forward (InstructGPT, arXiv:2203.02155 §3.5: shuffling them into separate examples overfits).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from posttrain.data.collate import pad_batch
from posttrain.data.records import Messages, PreferencePair, Ranking
from posttrain.data.tokenize import Example, reward_input_ids, tokenize_all
from posttrain.errors import DataError

if TYPE_CHECKING:
    from posttrain.config import DataConfig

RANKING_KINDS = (PreferencePair, Ranking)


@dataclass(frozen=True)
class RankedGroup:
    """One prompt's K tokenized responses (prompt + response tokens each), ranked best first by `order`."""

    prompt: Messages
    sequences: tuple[tuple[int, ...], ...]
    order: tuple[int, ...]
    margin: float | None = None  # pairs only: how clearly the chosen response won

    def __len__(self) -> int:
        return sum(len(s) for s in self.sequences)


def tokenize_group(record: PreferencePair | Ranking, tokenizer, max_length: int, truncation: str) -> RankedGroup | None:
    """A record as a RankedGroup; None when a response is too long and truncation is "skip"."""
    if isinstance(record, PreferencePair):
        responses, order, margin = (record.chosen, record.rejected), (0, 1), record.margin
    else:
        responses, order, margin = record.responses, record.order, None
    sequences = tuple(tuple(reward_input_ids(record.prompt, r, tokenizer, plain=record.plain)) for r in responses)
    longest = max(len(s) for s in sequences)
    if longest > max_length:
        if truncation == "skip":
            return None
        raise DataError(f"a response with its prompt is {longest} tokens, more than data.max_length={max_length} "
                        "(raise --data.max-length, or pass --data.truncation skip to drop such rows)")
    if len(set(sequences)) < len(sequences):
        raise DataError("two responses give the same tokens; a preference needs different responses")
    return RankedGroup(record.prompt, sequences, tuple(order), margin)


def tokenize_groups(records: list, tokenizer, data: DataConfig, *, source: str) -> list[RankedGroup]:
    """Tokenize every record under data.max_length / data.truncation (see `data.tokenize.tokenize_all`)."""
    def make(record, row: int) -> list[RankedGroup | None]:
        return [tokenize_group(record, tokenizer, data.max_length, data.truncation)]

    return tokenize_all(records, make, data, source=source, unit="groups")


@dataclass
class GroupBatch:
    """The responses of several prompt groups as one right-padded batch, and what the loss needs per group."""

    input_ids: torch.Tensor  # (N, T), N = the responses of all the batch's groups, group after group
    attention_mask: torch.Tensor  # (N, T)
    sizes: list[int]  # responses per group
    orders: list[tuple[int, ...]]  # each group's ranking, best first
    margins: list[float | None]  # each pair's margin (None: no margin, or not asked for)
    count: int  # prompt groups: what the loss is summed over
    n_input: int  # input tokens


def group_batch(groups: list[RankedGroup], indices: list[int], pad_id: int, device: torch.device,
                use_margin: bool) -> GroupBatch:
    """The groups at `indices` as one `GroupBatch`; margins only with `use_margin`."""
    selected = [groups[i] for i in indices]
    if not selected:
        raise ValueError("a micro-batch needs at least one group (batch size x processes > dataset?)")
    padded = pad_batch([Example(list(s), [False] * len(s)) for g in selected for s in g.sequences], pad_id, "right")
    return GroupBatch(
        input_ids=padded["input_ids"].to(device),
        attention_mask=padded["attention_mask"].to(device),
        sizes=[len(g.sequences) for g in selected],
        orders=[g.order for g in selected],
        margins=[g.margin if use_margin else None for g in selected],
        count=len(selected),
        n_input=sum(len(g) for g in selected),
    )
