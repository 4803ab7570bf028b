"""Task accuracy: sample a completion per held-out prompt and score it with the task's verifier.

The verifier is the same function RL uses as a reward (`reward(prompt_record, completion)`
shape, here `verify(completion, reference) -> float`), so "accuracy" and "reward" can never
drift apart. Built-in tasks bring their own verifier; for files, pick one of the string
verifiers or pass `module:function`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from posttrain.config import SamplingParams
from posttrain.data.records import Prompt
from posttrain.errors import ConfigError
from posttrain.eval.winrate import wilson_interval
from posttrain.rewards.verifiers import exact_match, numeric_match
from posttrain.sampling.sampler import ModelSampler, sample_messages

Verify = Callable[[str, dict], float]


def _numeric(completion: str, reference: dict) -> float:
    return numeric_match(completion, reference["answer"])


def _exact(completion: str, reference: dict) -> float:
    return exact_match(completion, reference["answer"])


STRING_VERIFIERS: dict[str, Verify] = {"numeric": _numeric, "exact": _exact}


def resolve_verifier(source: str, verifier: str | None) -> Verify:
    """The task's own verifier for `builtin:NAME...`; else `numeric`, `exact` or `module:function`."""
    from posttrain.tasks import TASKS

    if verifier is None and source.startswith("builtin:"):
        name = source[len("builtin:") :].split("/")[0].split("?")[0]
        if name in TASKS:
            return TASKS[name].verify
    verifier = verifier or "numeric"
    if verifier in STRING_VERIFIERS:
        return STRING_VERIFIERS[verifier]
    module, _, attr = verifier.partition(":")
    if not attr:
        raise ConfigError(f"verifier={verifier!r}: use numeric, exact, or module:function")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ConfigError(f"verifier={verifier!r}: cannot import it ({e})") from None


@dataclass
class AccuracyResult:
    accuracy: float
    n: int
    ci_low: float
    ci_high: float
    samples: list[dict[str, Any]] = field(repr=False, default_factory=list)


def evaluate_accuracy(
    model, tokenizer, prompts: list[Prompt], verify: Verify, params: SamplingParams | None = None, batch_size: int = 64,
    progress: bool = False,
) -> AccuracyResult:
    """Greedy (by default) completions for `prompts`, scored by `verify`; mean score with a 95% CI."""
    params = params or SamplingParams(temperature=0.0, max_new_tokens=32)
    sampler = ModelSampler(model, tokenizer, batch_size=batch_size, progress=progress)
    rollout = sample_messages(sampler, [p.prompt for p in prompts],
                              tokenizer, 1, params)
    scores = [float(verify(text, p.reference)) for p, text in zip(prompts, rollout.texts)]
    n = len(scores)
    low, high = wilson_interval(sum(scores), n) if n else (0.0, 1.0)
    samples = [
        {"prompt": p.text, "completion": text, "answer": p.reference.get("answer"), "score": s,
         "finish_reason": reason}
        for p, text, s, reason in zip(prompts, rollout.texts, scores, rollout.finish_reasons)
    ]
    return AccuracyResult(sum(scores) / max(n, 1), n, low, high, samples)
