"""Simulated raters for the arithmetic task: utilities over its reference answer, and raters by name.

Each rater is a `tasks.raters.SimulatedRater` (a hidden utility, seeded label noise) built by
`make_rater(name, noise, seed)`. Utilities are lexicographic: 10 points for a correct final answer
(the task's own reward, `arithmetic.REWARD`) outweigh any format bonus (at most 1) or
length penalty (under 5).

| rater         | utility                                                        |
|---------------|----------------------------------------------------------------|
| `correctness` | 10 * correct                                                   |
| `worked`      | 10 * correct + 1 if the response shows its working ("... #### N") |
| `concise`     | 10 * correct - a penalty that grows with padding and repeated words |

Equal utilities are a tie (`Judgment.TIE`): `data pairs` drops and counts the prompt, a win rate
counts it as half a win.
"""

from __future__ import annotations

import re
from typing import Callable

from posttrain.data.records import Prompt
from posttrain.errors import DataError
from posttrain.rewards.functions import resolve_reward
from posttrain.rewards.verifiers import extract_final_number
from posttrain.tasks import arithmetic
from posttrain.tasks.raters import SimulatedRater

CORRECT_POINTS = 10.0
WORKED_BONUS = 1.0
MAX_PADDING_PENALTY = 5.0  # < CORRECT_POINTS: padding never outweighs a correct answer
PADDING_HALF_POINT = 50.0  # padding "characters" at which the penalty reaches half its maximum
REPEAT_COST = 10.0  # a repeated word counts as this many padding characters

_HASHES_RE = re.compile(r"####\s*-?\d")
_NUMBER_RE = re.compile(r"\d+")
_TASK_REWARD = resolve_reward(arithmetic.REWARD)


def is_correct(prompt: Prompt, response: str) -> bool:
    """The response's final number equals the prompt's reference answer (the task's reward is 1)."""
    return _TASK_REWARD(prompt, response) == 1.0


def is_worked(response: str) -> bool:
    """The response ends on "#### N" after working that holds at least two numbers (GSM8K form)."""
    match = _HASHES_RE.search(response)
    return match is not None and len(_NUMBER_RE.findall(response[: match.start()])) >= 2


def padding_penalty(response: str) -> float:
    """In [0, 5): grows with the characters beyond the final number and with repeated words.

    x = extra characters (whitespace collapsed) + 10 * repeated words; penalty = 5 * x / (x + 50).
    E.g. "42" -> 0; "The answer is 42." (15 extra) -> 5 * 15/65 = 1.15; it never reaches 5, so two
    long responses of different padding still differ.
    """
    words = response.split()
    final = extract_final_number(response) or ""
    extra = max(0, len(" ".join(words)) - len(final))
    x = extra + REPEAT_COST * (len(words) - len(set(words)))
    return MAX_PADDING_PENALTY * x / (x + PADDING_HALF_POINT)


def correctness_utility(prompt: Prompt, response: str) -> float:
    return CORRECT_POINTS * is_correct(prompt, response)


def worked_utility(prompt: Prompt, response: str) -> float:
    """Correct first, then shown working; the bonus counts for wrong answers too, as a format reward does."""
    return CORRECT_POINTS * is_correct(prompt, response) + WORKED_BONUS * is_worked(response)


def concise_utility(prompt: Prompt, response: str) -> float:
    return CORRECT_POINTS * is_correct(prompt, response) - padding_penalty(response)


RATERS: dict[str, Callable[[Prompt, str], float]] = {
    "correctness": correctness_utility,
    "worked": worked_utility,
    "concise": concise_utility,
}
"""Each rater's utility, by the name the command line uses."""


def make_rater(name: str, noise: float = 0.0, seed: int = 0) -> SimulatedRater:
    """The rater called `name` (a key of RATERS) with label noise `noise`, its flips fixed by `seed`."""
    if name not in RATERS:
        raise ValueError(f"unknown rater {name!r} (known: {', '.join(RATERS)})")
    return SimulatedRater(name, RATERS[name], noise, seed)


def check_references(prompts: list[Prompt], source: str | None = None) -> None:
    """Every prompt carries the reference answer the raters compare responses with; a DataError naming the first
    that does not by its place in `source` (`file.jsonl:LINE`), or by its text when no source is given."""
    for i, prompt in enumerate(prompts):
        if "answer" not in prompt.reference:
            if source is not None:
                from posttrain.data.load import row_location

                where = row_location(source, i + 1)
            else:
                where = f"prompt {i + 1} ({prompt.text[:40]!r})"
            raise DataError(f'{where}: has no "answer" field; the arithmetic raters compare each response with '
                            "the reference answer (rows like builtin:arithmetic carry one)")
