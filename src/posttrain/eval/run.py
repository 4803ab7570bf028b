"""One model's task accuracy on held-out prompts, with a 95% interval and the samples: what the demo measures.
The `posttrain eval` command, over several models and tasks, is `eval/suite.py`."""

from __future__ import annotations

from dataclasses import dataclass, field

from posttrain.config import SamplingCommandConfig, SamplingParams
from posttrain.data.load import load_records
from posttrain.data.records import Prompt
from posttrain.eval.accuracy import AccuracyResult, evaluate_accuracy, task_reward


@dataclass
class EvalConfig(SamplingCommandConfig):
    """Accuracy of a model on prompts with reference answers, scored by the task's reward; greedy decoding
    unless `--sampling.temperature` says otherwise (`posttrain generate` samples at temperature 1)."""

    task: str = "builtin:arithmetic/heldout"
    """Prompts with reference fields (e.g. `answer`): a file or `builtin:NAME/heldout`."""
    reward: str | None = None
    """How a completion is scored: unset uses a built-in task's own reward (else `numeric`); `numeric`, `exact`,
    `contains` (the answer anywhere in the reply, as whole words), `math`, any reward spec of docs/rewards.md, or
    `module:function` taking (prompt, completion) -> float in [0, 1], where `prompt` is a
    `posttrain.data.records.Prompt` (its row's other fields, e.g. `answer`, in `prompt.reference`)."""
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0, max_new_tokens=32))
    output: str | None = None
    """Write every prompt, completion and score to this JSONL file."""


def run_eval(cfg: EvalConfig) -> AccuracyResult:
    from posttrain.files import write_jsonl
    from posttrain.models.load import load_model, resolve_device

    reward = task_reward(cfg.task, cfg.reward)
    prompts = load_records(cfg.task, accept=(Prompt,), limit=cfg.limit)
    model, tokenizer = load_model(cfg.model, resolve_device(cfg.device))
    result = evaluate_accuracy(model, tokenizer, prompts, reward, cfg.sampling, cfg.batch_size, cfg.progress)
    if cfg.output:
        write_jsonl(result.samples, cfg.output)
    return result
