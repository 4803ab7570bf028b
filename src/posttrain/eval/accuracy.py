"""Task accuracy: sample a completion per held-out prompt and score it with a reward function.

The scorer is a `RewardFn`, `reward(prompt_record, completion) -> float`, the same function RL uses
as a reward, so "accuracy" and "reward" can never drift apart. Built-in tasks bring their own reward
(`tasks.TASKS[name].reward`); for files, pick a built-in reward (`numeric`, `exact`) or pass `module:function`.
Accuracy is the mean score with a Wilson interval, so scores must lie in [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from posttrain.config import SamplingParams
from posttrain.data.load import BUILTIN_PREFIX, parse_builtin
from posttrain.data.records import Prompt
from posttrain.eval.winrate import wilson_interval
from posttrain.rewards.functions import RewardFn, resolve_reward
from posttrain.sampling.sampler import ModelSampler, sample_messages
from posttrain.tasks import TASKS


def task_reward(source: str, reward: str | None) -> RewardFn:
    """What eval scores `source`'s prompts with: with `reward` unset, the task's own reward for
    `builtin:NAME...` (`tasks.TASKS[NAME].reward`), else `numeric`; otherwise `resolve_reward(reward)`."""
    if reward is None and source.startswith(BUILTIN_PREFIX):
        task = TASKS.get(parse_builtin(source)[0])
        if task is not None and task.reward is not None:
            return resolve_reward(task.reward)
    return resolve_reward(reward or "numeric")


@dataclass
class AccuracyResult:
    accuracy: float
    n: int
    ci_low: float
    ci_high: float
    samples: list[dict[str, Any]] = field(repr=False, default_factory=list)


def evaluate_accuracy(
    model, tokenizer, prompts: list[Prompt], reward: RewardFn, params: SamplingParams | None = None,
    batch_size: int = 64, progress: bool = False,
) -> AccuracyResult:
    """Greedy (by default) completions for `prompts`, scored by `reward(prompt, text)`; mean score with a 95% CI."""
    params = params or SamplingParams(temperature=0.0, max_new_tokens=32)
    sampler = ModelSampler(model, tokenizer, batch_size=batch_size, progress=progress)
    rollout = sample_messages(sampler, prompts, tokenizer, 1, params)
    scores = [float(reward(p, text)) for p, text in zip(prompts, rollout.texts)]
    n = len(scores)
    low, high = wilson_interval(sum(scores), n) if n else (0.0, 1.0)
    samples = [
        {"prompt": p.text, "completion": text, "answer": p.reference.get("answer"), "score": s,
         "finish_reason": reason}
        for p, text, s, reason in zip(prompts, rollout.texts, scores, rollout.finish_reasons)
    ]
    return AccuracyResult(sum(scores) / max(n, 1), n, low, high, samples)
