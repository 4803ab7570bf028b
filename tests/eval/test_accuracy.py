"""Accuracy scores with a RewardFn: which reward `posttrain eval` picks, and that each sample's score is
`reward(prompt, completion)` on the tiny model's own completions."""

from __future__ import annotations

import pytest

from posttrain.cli import main
from posttrain.data.records import Message, Prompt
from posttrain.eval.accuracy import evaluate_accuracy, task_reward
from posttrain.rewards.functions import exact_reward, numeric_reward, resolve_reward
from posttrain.tasks import TASKS


def answer_is_even(prompt: Prompt, completion: str) -> float:
    """Reads the prompt record, not just the completion: 1.0 when the reference answer is even."""
    return float(int(prompt.reference["answer"]) % 2 == 0)


def test_unset_reward_is_the_tasks_own_else_numeric():
    own = resolve_reward(TASKS["arithmetic"].reward)
    assert task_reward("builtin:arithmetic/heldout?ops=+&digits=2", None) is own is numeric_reward
    assert task_reward("builtin:smollm2-chat", None) is numeric_reward  # a built-in without a reward
    assert task_reward("prompts.jsonl", None) is numeric_reward
    assert task_reward("builtin:arithmetic", "exact") is exact_reward  # a set reward wins
    assert task_reward("prompts.jsonl", f"{__name__}:answer_is_even") is answer_is_even


def test_each_score_is_the_reward_of_prompt_and_completion(tiny_dir):
    """Answers 2, 3, 4, 5: answer_is_even scores 1, 0, 1, 0 whatever the model says -> accuracy 0.5."""
    from posttrain.config import ModelConfig, SamplingParams
    from posttrain.models.load import load_model

    model, tokenizer = load_model(ModelConfig(name=str(tiny_dir)))
    prompts = [Prompt((Message("user", f"What is 1 + {n - 1}?"),), {"answer": str(n)}) for n in (2, 3, 4, 5)]
    params = SamplingParams(temperature=0.0, max_new_tokens=4)
    result = evaluate_accuracy(model, tokenizer, prompts, answer_is_even, params)
    assert [s["score"] for s in result.samples] == [1.0, 0.0, 1.0, 0.0]
    assert (result.accuracy, result.n) == (0.5, 4) and result.ci_low < 0.5 < result.ci_high
    numeric = evaluate_accuracy(model, tokenizer, prompts, numeric_reward, params)
    assert [s["completion"] for s in numeric.samples] == [s["completion"] for s in result.samples]  # greedy
    assert [s["score"] for s in numeric.samples] == [numeric_reward(p, s["completion"])
                                                      for p, s in zip(prompts, numeric.samples)]


@pytest.mark.parametrize("spec, words", [
    ("math:pi", ["reward='math:pi'", "not a function"]),
    ("nonsense", ["reward='nonsense'", "unknown reward", "rm:PATH, module:function, or a weighted sum"]),
])
def test_a_bad_reward_is_one_line_before_any_model_loads(capsys, spec, words):
    assert main(["eval", "--reward", spec, "--model.name", "no/such-model"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("posttrain eval: error: ") and err.count("\n") == 1
    for word in words:
        assert word in err, err
