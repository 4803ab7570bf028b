"""Raters: who judges responses to a prompt, pairwise (`compare`) or by ranking (`rank`).

- `Judgment`        the outcome of a comparison: `Judgment.A`, `Judgment.B` or `Judgment.TIE`
- `Rater`           the protocol `data pairs`, win rates and (later) the feedback app's human judgments speak
- `SimulatedRater`  a seeded, noisy stand-in for human preference labels, judging by a hidden utility

A simulated rater has a hidden utility, a pure function `utility(prompt, response) -> float`, and
judges by comparing utilities. Its `noise` is the chance that a judgment is flipped, the label noise
of AlpacaFarm's simulated annotators (arXiv:2305.14387 §3). Each flip is decided by a uniform number
hashed from (seed, prompt, the pair), not drawn from a running generator, so the same pair always
gets the same judgment, whatever the call order, and `compare(a, b)` always mirrors `compare(b, a)`.
Equal utilities are a tie, `Judgment.TIE`, which noise never flips.

The arithmetic task's utilities and raters by name are in `tasks.arithmetic_raters`.
"""

from __future__ import annotations

import enum
import hashlib
import json
from dataclasses import dataclass
from typing import Callable, Protocol, runtime_checkable

from posttrain.data.records import Prompt


class Judgment(enum.Enum):
    """Which of two responses a rater prefers. A tie is a judgment in its own right, not a missing one."""

    A = "a"
    B = "b"
    TIE = "tie"


@runtime_checkable
class Rater(Protocol):
    """Judges responses to a prompt; simulated raters and human judgments both fit.

    `isinstance(x, Rater)` checks that the members exist, not their signatures."""

    name: str
    """Who judges, as reports and exported records name them."""

    def compare(self, prompt: Prompt, a: str, b: str) -> Judgment:
        """Which of `a` and `b` is the better response to `prompt`, or a tie."""
        ...

    def rank(self, prompt: Prompt, responses: list[str]) -> list[int] | None:
        """Indices of `responses`, best first; None when the rater cannot tell any of them apart."""
        ...


def _uniform(seed: int, *parts: object) -> float:
    """A number in [0, 1) fixed by (seed, parts): the same pair always gets the same draw."""
    digest = hashlib.blake2b(json.dumps([seed, *parts]).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _prompt_key(prompt: Prompt) -> list[list[str]]:
    return [[m.role, m.content] for m in prompt.prompt]


@dataclass(frozen=True)
class SimulatedRater:
    """A hidden utility plus label noise: the chance, in [0, 0.5), that a judgment is flipped."""

    name: str
    utility: Callable[[Prompt, str], float]
    noise: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0.0 <= self.noise < 0.5:
            raise ValueError(f"noise must be in [0, 0.5) (0.5 is a coin flip), got {self.noise}")

    def compare(self, prompt: Prompt, a: str, b: str) -> Judgment:
        """A if `a` is preferred, B if `b`, TIE on equal utility (identical responses included)."""
        utility_a, utility_b = self.utility(prompt, a), self.utility(prompt, b)
        if utility_a == utility_b:
            return Judgment.TIE
        a_better = utility_a > utility_b
        flipped = _uniform(self.seed, "compare", _prompt_key(prompt), sorted((a, b))) < self.noise
        return Judgment.A if a_better != flipped else Judgment.B

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
        order = sorted(range(len(responses)),
                       key=lambda i: (-utilities[i], _uniform(self.seed, "tie", key, responses[i])))
        pool = sorted(responses)
        for position in range(len(order) - 1):
            if _uniform(self.seed, "swap", key, pool, position) < self.noise:
                order[position], order[position + 1] = order[position + 1], order[position]
        return order
