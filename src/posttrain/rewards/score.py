"""Scoring many completions at once: what RL, `posttrain score` and evaluation call.

    scores = score_completions(reward, prompts, completions)
    scores.total          # one float per completion (a weighted sum's total)
    scores.parts          # {"numeric": [...], "format": [...]}: each named part's own, unweighted values

`reward` is any `RewardFn` (`rewards.functions`). One with a `score_batch(prompts, completions)` method (a
reward model, the sandbox) is called once for the whole batch, which is faster; one with `parts` (a weighted
sum, `rewards.functions`) is scored part by part so each part's values can be logged. A reward that raises or
returns NaN or an infinity stops the run with a `RewardError` naming the prompt and the completion: a broken
reward is never silently counted as zero.

`explain_completions` gives the same Scores plus one reason per completion ("extracted 41, expected 42"), from
a reward's `explain` / `explain_batch` where it has one: what `posttrain score` writes beside each reward.
"""

from __future__ import annotations

import inspect
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
                       f"{_shorten(completion)}; check it with: posttrain score --reward SPEC "
                       "--data ROWS.jsonl (rows of prompt, completion and the reference fields)")


def _checked(name: str, values: Sequence[Any], prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
    if len(values) != len(completions):
        raise RewardError(f"reward {name}: returned {len(values)} values for {len(completions)} completions")
    out = []
    for value, prompt, completion in zip(values, prompts, completions):
        if isinstance(value, (str, bytes)):  # float("1.0") would pass a text the reward meant to parse itself
            raise _failure(name, prompt, completion, f"returned {value!r}, a string, not a number")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise _failure(name, prompt, completion, f"returned {value!r}, not a number") from None
        if not math.isfinite(number):
            raise _failure(name, prompt, completion, f"returned {number}")
        out.append(number)
    return out


def reward_name(reward: Any) -> str:
    """The name a reward is logged under and errors give: its `name` attribute; a user's function as its spec
    names it (`my_rewards:shorter_is_better`); else its function or class name."""
    name = getattr(reward, "name", None)
    if name:
        return str(name)
    module = getattr(reward, "__module__", None) or ""
    if (inspect.isfunction(reward) and reward.__qualname__ == reward.__name__  # a module's own, as specs name them
            and module and not module.startswith("posttrain.")):
        return f"{module}:{reward.__name__}"
    return str(getattr(reward, "__name__", None) or type(reward).__name__)


def _call_batch(name: str, batch: Any, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Any]:
    try:
        return list(batch(list(prompts), list(completions)))
    except UserError:
        raise
    except Exception as e:  # a user's reward may fail in any way; say where
        raise RewardError(f"reward {name}: raised {type(e).__name__}: {e} while scoring a batch of "
                          f"{len(completions)} completions") from e


def _call_each(name: str, fn: Any, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[Any]:
    values = []
    for prompt, completion in zip(prompts, completions):
        try:
            values.append(fn(prompt, completion))
        except UserError:
            raise
        except Exception as e:
            raise _failure(name, prompt, completion, f"raised {type(e).__name__}: {e}") from e
    return values


def score_one_reward(reward: Any, prompts: Sequence[Prompt], completions: Sequence[str]) -> list[float]:
    """One finite float per completion from one reward (batched when it has `score_batch`), or a RewardError."""
    name = reward_name(reward)
    batch = getattr(reward, "score_batch", None)
    values = (_call_batch(name, batch, prompts, completions) if batch is not None
              else _call_each(name, reward, prompts, completions))
    return _checked(name, values, prompts, completions)


def _weighted_total(parts: Sequence[tuple[str, float, Any]], values: dict[str, list[float]], n: int) -> list[float]:
    """Each completion's weighted sum of its parts' values."""
    return [sum(weight * values[name][i] for name, weight, _ in parts) for i in range(n)]


def score_completions(reward: Any, prompts: Sequence[Prompt], completions: Sequence[str]) -> Scores:
    """Score `completions[i]` as an answer to `prompts[i]` (see the module docstring)."""
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    parts = getattr(reward, "parts", None)  # [(name, weight, reward), ...] of a weighted sum
    if not parts:
        return Scores(score_one_reward(reward, prompts, completions))
    values = {name: score_one_reward(part, prompts, completions) for name, _, part in parts}
    return Scores(_weighted_total(parts, values, len(completions)), values)


def explain_one_reward(reward: Any, prompts: Sequence[Prompt], completions: Sequence[str]
                       ) -> tuple[list[float], list[str]]:
    """Like `score_one_reward`, with a reason per completion: from the reward's `explain_batch(prompts,
    completions)` (the sandbox) or `explain(prompt, completion)` (the built-in verifiers), each giving
    `(score, reason)`; a reward with neither is scored as usual and its reason is "NAME = VALUE"."""
    name = reward_name(reward)
    batch, each = getattr(reward, "explain_batch", None), getattr(reward, "explain", None)
    if batch is None and each is None:
        values = score_one_reward(reward, prompts, completions)
        return values, [f"{name} = {value:.4g}" for value in values]
    pairs = (_call_batch(name, batch, prompts, completions) if batch is not None
             else _call_each(name, each, prompts, completions))
    if not all(isinstance(p, tuple) and len(p) == 2 for p in pairs):
        raise RewardError(f"reward {name}: its explain must give (score, reason) pairs")
    values = _checked(name, [score for score, _ in pairs], prompts, completions)
    return values, [str(reason) for _, reason in pairs]


def explain_completions(reward: Any, prompts: Sequence[Prompt], completions: Sequence[str]
                        ) -> tuple[Scores, list[str]]:
    """`score_completions` plus why: one reason per completion (`explain_one_reward`); a weighted sum's reason
    lists its parts, `NAME=VALUE (reason)` joined by "; ". What `posttrain score` writes."""
    if len(prompts) != len(completions):
        raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
    parts = getattr(reward, "parts", None)
    if not parts:
        values, reasons = explain_one_reward(reward, prompts, completions)
        return Scores(values), reasons
    explained = {name: explain_one_reward(part, prompts, completions) for name, _, part in parts}
    values = {name: part_values for name, (part_values, _) in explained.items()}
    reasons = ["; ".join(f"{name}={explained[name][0][i]:.4g} ({explained[name][1][i]})" for name, _, _ in parts)
               for i in range(len(completions))]
    return Scores(_weighted_total(parts, values, len(completions)), values), reasons
