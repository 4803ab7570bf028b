"""Simulated raters for the arithmetic task: seeded, noisy stand-ins for human preference labels.

A rater has a hidden utility, a pure function `utility(prompt, response) -> float`, and judges
by comparing utilities. Its `noise` is the chance that a judgment is flipped, the label noise of
AlpacaFarm's simulated annotators (arXiv:2305.14387 §3). Each flip is decided by a uniform number
hashed from (seed, prompt, the pair), not drawn from a running generator, so the same pair always
gets the same judgment, whatever the call order, and `compare(a, b)` is always `1 - compare(b, a)`.

Utilities are lexicographic: 10 points for a correct final answer (the task's own reward) outweigh
any format bonus (at most 1) or length penalty (under 5).

| rater         | utility                                                        |
|---------------|----------------------------------------------------------------|
| `correctness` | 10 * correct                                                   |
| `worked`      | 10 * correct + 1 if the response shows its working ("... #### N") |
| `concise`     | 10 * correct - a penalty that grows with padding and repeated words |

Equal utilities are a tie: `compare` returns None and callers drop and count the pair.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Callable

from posttrain.data.records import Prompt
from posttrain.errors import DataError
from posttrain.rewards.verifiers import extract_final_number
from posttrain.tasks import TASKS

CORRECT_POINTS = 10.0
WORKED_BONUS = 1.0
MAX_PADDING_PENALTY = 5.0  # < CORRECT_POINTS: padding never outweighs a correct answer
PADDING_HALF_POINT = 50.0  # padding "characters" at which the penalty reaches half its maximum
REPEAT_COST = 10.0  # a repeated word counts as this many padding characters

_HASHES_RE = re.compile(r"####\s*-?\d")
_NUMBER_RE = re.compile(r"\d+")


def is_correct(prompt: Prompt, response: str) -> bool:
    """The response's final number equals the prompt's reference answer."""
    return TASKS["arithmetic"](prompt, response) == 1.0


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


def _uniform(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by (seed, parts): the same pair always gets the same draw."""
    digest = hashlib.blake2b(json.dumps([seed, *parts]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _prompt_key(prompt: Prompt) -> list[list[str]]:
    return [[m.role, m.content] for m in prompt.prompt]


@dataclass(frozen=True)
class Rater:
    """A hidden utility plus label noise: the chance, in [0, 0.5), that a judgment is flipped."""

    name: str
    utility: Callable[[Prompt, str], float]
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise < 0.5:
            raise ValueError(f"noise must be in [0, 0.5) (0.5 is a coin flip), got {self.noise}")

    def compare(self, prompt: Prompt, a: str, b: str) -> int | None:
        """0 if `a` is preferred, 1 if `b`, None on a tie (equal utility, identical responses included)."""
        utility_a, utility_b = self.utility(prompt, a), self.utility(prompt, b)
        if utility_a == utility_b:
            return None
        better = 0 if utility_a > utility_b else 1
        flipped = _uniform(self.seed, "compare", _prompt_key(prompt), sorted((a, b))) < self.noise
        return 1 - better if flipped else better

    def rank(self, prompt: Prompt, responses: list[str]) -> list[int] | None:
        """Indices of `responses`, best first; None when all utilities are equal.

        Sorted by utility; equal utilities are ordered by a hash of (seed, prompt, response). Noise is
        then one left-to-right pass of adjacent swaps, each made with probability `noise`, so an item can
        sink several places but rarely does. The result does not depend on the order of `responses`.
        """
        utilities = [self.utility(prompt, r) for r in responses]
        if len(set(utilities)) == 1:
            return None
        key = _prompt_key(prompt)
        order = sorted(range(len(responses)), key=lambda i: (-utilities[i], _uniform(self.seed, "tie", key, responses[i])))
        pool = sorted(responses)
        for position in range(len(order) - 1):
            if _uniform(self.seed, "swap", key, pool, position) < self.noise:
                order[position], order[position + 1] = order[position + 1], order[position]
        return order


RATERS: dict[str, Callable[[Prompt, str], float]] = {
    "correctness": correctness_utility,
    "worked": worked_utility,
    "concise": concise_utility,
}
"""Each rater's utility, by the name the command line uses."""


def make_rater(name: str, noise: float = 0.0, seed: int = 0) -> Rater:
    """The rater called `name` (a key of RATERS) with label noise `noise`, its flips fixed by `seed`."""
    if name not in RATERS:
        raise ValueError(f"unknown rater {name!r} (known: {', '.join(RATERS)})")
    return Rater(name, RATERS[name], noise, seed)


def check_references(prompts: list[Prompt]) -> None:
    """Every prompt carries the reference answer the raters compare responses with."""
    for i, prompt in enumerate(prompts):
        if "answer" not in prompt.reference:
            raise DataError(
                f'prompt {i} ({prompt.text[:40]!r}): has no "answer" field; the arithmetic raters compare '
                "each response with the reference answer (rows like builtin:arithmetic carry one)"
            )
