"""The one held-out policy every recipe uses: which examples train and which are held out for evaluation.

In this order:
1. `data.eval` when it is set: that source, tokenized like the training data;
2. else, for a built-in task, its own held-out split (`builtin:NAME/heldout`, never the training problems);
3. else a seeded `data.eval_fraction` of the training examples, picked by key (the prompt), so that one
   prompt's examples never straddle the split; 0 trains on everything and evaluates nothing.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, TypeVar

from posttrain.data.load import default_heldout, describe_source, load_records_with_report
from posttrain.data.records import to_dict

if TYPE_CHECKING:
    from posttrain.config import DataConfig

T = TypeVar("T")
log = logging.getLogger(__name__)
FEW_HELD_OUT = 20  # fewer held-out examples than this and the split warns: their figures are noise


def split_by_key(items: Sequence[T], keys: Sequence[Hashable], fraction: float, seed: int) -> tuple[list[T], list[T]]:
    """(train, held_out): about `fraction` of the distinct keys, with all their items, held out (a seeded
    shuffle of the keys in first-appearance order); at least one key on each side when fraction > 0 and there
    are two or more keys."""
    distinct = list(dict.fromkeys(keys))
    random.Random(seed).shuffle(distinct)
    n_held = min(len(distinct) - 1, max(1, round(fraction * len(distinct)))) if fraction > 0 else 0
    held = set(distinct[:n_held])
    return [x for x, k in zip(items, keys) if k not in held], [x for x, k in zip(items, keys) if k in held]


def warn_overlap(train: Sequence, held: Sequence, train_source: str, held_source: str) -> int:
    """Warn (once, from the main process) when held-out records are training records too, as when --data.eval
    names the training data itself: figures on them measure what was learned by heart. Returns how many are."""
    def key(record: object) -> str:  # a record's JSON form (a Prompt's reference is a dict: records need not hash)
        return json.dumps(to_dict(record), sort_keys=True)

    seen = {key(r) for r in train}
    shared = sum(key(r) in seen for r in held)
    if shared and os.environ.get("RANK", "0") == "0":
        same = " (the same data)" if shared == len(held) else ""
        log.warning(f"warning: {shared} of {len(held)} held-out records of {held_source} are training records of "
                    f"{train_source} too{same}: held-out figures on them measure what was learned, not how well it "
                    "generalises; hold out other rows")
    return shared


def _load(source: str, accept: tuple[type, ...], data: DataConfig, limit: int | None = None) -> list:
    """`source`'s records; with data.invalid=skip its invalid rows dropped, counted and the first named, else a
    DataError naming them that says how to drop them."""
    records, report = load_records_with_report(source, accept, limit=limit, skip_invalid=data.invalid == "skip",
                                               hint="--data.invalid skip drops invalid rows and says how many")
    if report.n_skipped and os.environ.get("RANK", "0") == "0":
        first = "; ".join(report.first_errors)
        log.warning(f"warning: {source}: dropped {report.n_skipped} of {report.n_rows} rows that are not valid records "
                    f"(data.invalid=skip); first: {first}")
    return records


def train_and_heldout(
    data: DataConfig, accept: tuple[type, ...], tokenize: Callable[[list, str], list[T]],
    key: Callable[[T], Hashable], seed: int,
) -> tuple[list[T], list[T], list[dict]]:
    """Load and tokenize the training data and the held-out data of the policy above.

    `tokenize(records, source)` makes a recipe's examples; `key(example)` is what must not straddle the split.
    Returns train, held-out, and the lineage entries of the sources read.
    """
    train_records = _load(data.train, accept, data, limit=data.limit)
    train = tokenize(train_records, data.train)
    lineage = [describe_source(data.train)]
    heldout_source = data.eval or default_heldout(data.train)
    if heldout_source:
        held_records = _load(heldout_source, accept, data)
        warn_overlap(train_records, held_records, data.train, heldout_source)
        held = tokenize(held_records, heldout_source)
        return train, held, lineage + [describe_source(heldout_source)]
    train, held = split_by_key(train, [key(x) for x in train], data.eval_fraction, seed)
    if 0 < len(held) < FEW_HELD_OUT and os.environ.get("RANK", "0") == "0":
        log.warning(f"warning: {data.train} gives only {len(held)} held-out example{'s' if len(held) > 1 else ''} "
                    f"(data.eval_fraction={data.eval_fraction}): held-out figures from so few are mostly noise (one "
                    "example moves an accuracy by 1/N); give --data.eval FILE, more data or a larger fraction")
    return train, held, lineage
