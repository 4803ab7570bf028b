"""Built-in tasks: the one registry of built-in data (`TASKS`), which `builtin:NAME` sources name.

A `Task` has
- `rows(split="train", **options: str) -> list[dict]`: its rows (TRL's formats, plus reference fields such as
  "answer"); `split` is "train" or "heldout" (never the same problems) and the options come as strings from
  a source's query string (`builtin:arithmetic?ops=+-&digits=2`). A bad option raises ValueError or TypeError.
- `reward`: the reward its prompts are scored with, as a config names one (`numeric`, `exact` or
  `module:function`; `rewards.functions.resolve_reward` makes it a `RewardFn`), or None for data without a
  checkable answer. A name, not the function: tasks sit below rewards in the layers.

Simulated raters: the generic `Rater` protocol and `SimulatedRater` in `raters`, the arithmetic task's raters in
`arithmetic_raters`. This package imports nothing of posttrain above it (data.load imports it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

from posttrain.files import jsonl_lines
from posttrain.tasks import arithmetic


@dataclass(frozen=True)
class Task:
    rows: Callable[..., list[dict]]
    reward: str | None
    description: str


def _shipped_rows(filename: str, split: str, options: dict[str, str]) -> list[dict]:
    """Rows of a JSONL file shipped in `posttrain/tasks/data/`; every 5th row is the held-out split."""
    if options:
        raise ValueError(f"takes no options (got {', '.join(sorted(options))})")
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r} (expected one of: train, heldout)")
    text = resources.files("posttrain.tasks").joinpath("data", filename).read_text(encoding="utf-8")
    rows = [json.loads(line) for line in jsonl_lines(text) if line.strip()]
    return [row for i, row in enumerate(rows) if (i % 5 == 4) == (split == "heldout")]


def _smollm2_chat(split: str = "train", **options: str) -> list[dict]:
    return _shipped_rows("smollm2_chat.jsonl", split, options)


def _smollm2_prefs(split: str = "train", **options: str) -> list[dict]:
    return _shipped_rows("smollm2_prefs.jsonl", split, options)


def _python(split: str = "train", **options: str) -> list[dict]:
    return _shipped_rows("python.jsonl", split, options)


TASKS: dict[str, Task] = {
    "arithmetic": Task(arithmetic.rows, arithmetic.REWARD,
                       "a op b with exact answers, made on the fly (tasks/arithmetic.py)"),
    "arithmetic-pairs": Task(arithmetic.preference_rows, arithmetic.REWARD,
                             "preference pairs over the arithmetic problems: chosen the answer, rejected a wrong "
                             "number or the answer with chatty filler (the default data of dpo and rm)"),
    "smollm2-chat": Task(_smollm2_chat, None, 'the shipped demo chats, replies signed "— posttrain"'),
    "smollm2-prefs": Task(_smollm2_prefs, None,
                          "the shipped instruction-following pairs (made by python -m posttrain.tasks.smollm2_prefs): "
                          "chosen follows the prompt's instruction, rejected ignores it"),
    "python": Task(_python, "code", "21 small Python functions to write, each with assert tests and a reference "
                                    "solution (rewards/sandbox.py runs them; docs/sandbox.md)"),
}
"""Built-in tasks by the name `builtin:NAME` sources use."""
