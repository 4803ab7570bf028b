"""Reward functions: the one signature that RL, evaluation and a user's own scorer share.

    RewardFn = Callable[[Prompt, str], float]
    reward(prompt_record, completion) -> float     # higher is better

The prompt record carries the reference fields a reward reads (e.g. `answer`, in `prompt.reference`);
the completion is the response text. Verifiers (`rewards.verifiers`), a trained reward model
(`rewards.model.RewardFunction`) and `module:function` given on the command line all fit it.

- `numeric_reward`  1.0 when the completion's final number equals `reference["answer"]`
- `exact_reward`    1.0 when the completion equals `reference["answer"]` (normalized)
- `resolve_reward`  `numeric`, `exact` or `module:function` -> a RewardFn
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from posttrain.data.records import Prompt
from posttrain.errors import ConfigError, DataError
from posttrain.rewards.verifiers import exact_match, numeric_match

RewardFn = Callable[[Prompt, str], float]
"""`reward(prompt_record, completion) -> float`: the Prompt record (with its `reference` dict) and the
completion text; higher is better."""


def reference_field(prompt: Prompt, name: str, reward: str) -> Any:
    """`prompt.reference[name]`, or a DataError naming the missing field and the reward that needs it."""
    if name not in prompt.reference:
        raise DataError(
            f'prompt {prompt.text[:40]!r}: has no "{name}" field, which the {reward} reward compares the completion '
            f'with (rows like builtin:arithmetic carry one; else pick another reward)'
        )
    return prompt.reference[name]


def numeric_reward(prompt: Prompt, completion: str) -> float:
    """1.0 when the completion's final number equals the prompt's `answer` (`verifiers.numeric_match`), else 0.0."""
    return numeric_match(completion, reference_field(prompt, "answer", "numeric"))


def exact_reward(prompt: Prompt, completion: str) -> float:
    """1.0 when the completion equals the prompt's `answer` up to case and whitespace (`verifiers.exact_match`)."""
    return exact_match(completion, str(reference_field(prompt, "answer", "exact")))


REWARDS: dict[str, RewardFn] = {"numeric": numeric_reward, "exact": exact_reward}
"""The built-in rewards, by the name a config uses."""

_FORMS = "write numeric, exact, or module:function (a function taking (prompt_record, completion) -> float)"


def resolve_reward(spec: str) -> RewardFn:
    """The reward called `spec`: a key of REWARDS, or `module:function`, imported (the module on sys.path)."""
    if spec in REWARDS:
        return REWARDS[spec]
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"reward={spec!r}: unknown; {_FORMS}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(f"reward={spec!r}: cannot import module {module_name!r} ({e}); {_FORMS}") from None
    if not hasattr(module, attr):
        raise ConfigError(f"reward={spec!r}: module {module_name!r} has no attribute {attr!r}; {_FORMS}")
    function = getattr(module, attr)
    if not callable(function):
        raise ConfigError(f"reward={spec!r}: {attr!r} is a {type(function).__name__}, not a function; {_FORMS}")
    return function
