"""Scoring many completions at once: what RL, `posttrain score` and evaluation call.

    scores = score_completions(reward, prompts, completions)
    scores.total          # one float per completion (a weighted sum's total)
    scores.parts          # {"numeric": [...], "format": [...]}: each named part's own, unweighted values

`reward` is any `RewardFn` (`rewards.functions`). One with a `score_batch(prompts, completions)` method (a
reward model, the sandbox) is called once for the whole batch, which is faster; one with `parts` (a weighted
sum, `rewards.functions`) is scored part by part so each part's values can be logged. A reward that raises or
returns NaN or an infinity stops the run with a `RewardError` naming the prompt and the completion: a broken
reward is never silently counted as zero.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from posttrain.data.records import Prompt
from posttrain.errors import UserError


class RewardError(UserError):
    """A reward function raised or returned a value that is not a finite number."""


@dataclass
class Scores:
    """The reward of each completion, in order, and (for a sum of rewards) each part's own values."""

    total: list[float]
    parts: dict[str, list[float]] = field(default_factory=dict)


def _shorten(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _failure(name: str, prompt: Prompt, completion: str, what: str) -> RewardError:
    return RewardError(f"reward {name}: {what} for prompt {_shorten(prompt.text)} and completion "
                       f"{_shorten(completion)}; check it with: posttrain score --reward SPEC --data FILE")


def _checked(name: str, values: Sequence[Any], prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
    if len(values) != len(completions):
        raise RewardError(f"reward {name}: returned {len(values)} values for {len(completions)} completions")
    out = []
    for value, prompt, completion in zip(values, prompts, completions):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _failure(name, prompt, completion, f"returned {value!r}, not a number") from None
        if not math.isfinite(number):
            raise _failure(name, prompt, completion, f"returned {number}")
        out.append(number)
    return out


def reward_name(reward: Any) -> str:
    """The name a reward is logged under: its `name` attribute, else its function name."""
    return str(getattr(reward, "name", None) or getattr(reward, "__name__", None) or type(reward).__name__)


def score_one_reward(reward: Any, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
    """One finite float per completion from one reward (batched when it has `score_batch`), or a RewardError."""
    name = reward_name(reward)
    batch = getattr(reward, "score_batch", None)
    if batch is not None:
        try:
            values = batch(list(prompts), list(completions))
        except UserError:
            raise
        except Exception as e:  # a user's reward may fail in any way; say where
            raise RewardError(f"reward {name}: raised {type(e).__name__}: {e} while scoring a batch of "
                              f"{len(completions)} completions") from e
        return _checked(name, values, prompts, completions)
    values = []
    for prompt, completion in zip(prompts, completions):
        try:
            values.append(reward(prompt, completion))
        except UserError:
            raise
        except Exception as e:
            raise _failure(name, prompt, completion, f"raised {type(e).__name__}: {e}") from e
    return _checked(name, values, prompts, completions)


def score_completions(reward: Any, prompts: Sequence[Prompt], completions: Sequence[str]) -> Scores:
    """Score `completions[i]` as an answer to `prompts[i]` (see the module docstring)."""
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    parts = getattr(reward, "parts", None)  # [(name, weight, reward), ...] of a weighted sum
    if not parts:
        return Scores(score_one_reward(reward, prompts, completions))
    values = {name: score_one_reward(part, prompts, completions) for name, _, part in parts}
    total = [sum(weight * values[name][i] for name, weight, _ in parts) for i in range(len(completions))]
    return Scores(total, values)
