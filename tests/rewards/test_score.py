"""The batched scorer: per-part values of a weighted sum, batched rewards called once, reasons from a reward's
explain or explain_batch, and broken rewards (raising, NaN, wrong count) reported with prompt and completion."""

from __future__ import annotations

import math

import pytest

from posttrain.data.records import Message, Prompt
from posttrain.rewards.functions import WeightedSum, numeric_reward
from posttrain.rewards.score import RewardError, explain_completions, reward_name, score_completions

PROMPTS = [Prompt((Message("user", f"What is {i} + {i}?"),), {"answer": 2 * i}) for i in range(3)]


class Batched:
    """A reward with score_batch and explain_batch, like the sandbox: counts its calls."""

    name = "batched"

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, prompt: Prompt, completion: str) -> float:
        raise AssertionError("the scorer must use score_batch")

    def score_batch(self, prompts: list[Prompt], completions: list[str]) -> list[float]:
        self.calls += 1
        return [float(len(c)) for c in completions]

    def explain_batch(self, prompts: list[Prompt], completions: list[str]) -> list[tuple[float, str]]:
        self.calls += 1
        return [(float(len(c)), f"{len(c)} characters") for c in completions]


def test_a_batched_reward_is_called_once_for_the_batch():
    reward = Batched()
    assert score_completions(reward, PROMPTS, ["a", "bb", "ccc"]).total == [1.0, 2.0, 3.0]
    assert reward.calls == 1


def test_explain_batch_gives_the_reasons():
    reward = Batched()
    scores, reasons = explain_completions(reward, PROMPTS, ["a", "bb", "ccc"])
    assert scores.total == [1.0, 2.0, 3.0] and reasons == ["1 characters", "2 characters", "3 characters"]
    assert reward.calls == 1  # explained, not scored twice


def test_a_reward_without_explain_gets_its_value_as_the_reason():
    def half(prompt: Prompt, completion: str) -> float:
        return 0.5

    assert explain_completions(half, PROMPTS[:1], ["x"]) == (score_completions(half, PROMPTS[:1], ["x"]),
                                                             ["half = 0.5"])


def test_a_weighted_sum_is_scored_part_by_part():
    """total = 1 * numeric + 0.5 * batched: row 0 "0" -> 1 + 0.5 * 1 = 1.5; row 1 "3" -> 0 + 0.5 * 1 = 0.5;
    row 2 "4!" -> 1 + 0.5 * 2 = 2.0."""
    reward = WeightedSum("numeric+0.5*batched", [("numeric", 1.0, numeric_reward), ("batched", 0.5, Batched())])
    scores = score_completions(reward, PROMPTS, ["0", "3", "4!"])
    assert scores.total == pytest.approx([1.5, 0.5, 2.0])
    assert scores.parts == {"numeric": [1.0, 0.0, 1.0], "batched": [1.0, 1.0, 2.0]}


@pytest.mark.parametrize("value, what", [(math.nan, "returned nan"), (math.inf, "returned inf"),
                                         ("high", "returned 'high', a string, not a number"),
                                         ("1.0", "returned '1.0', a string, not a number"),  # not float()-ed
                                         (None, "returned None, not a number")])
def test_a_reward_returning_no_finite_number_names_the_prompt_and_completion(value, what):
    def broken(prompt: Prompt, completion: str):
        return value

    with pytest.raises(RewardError) as info:
        score_completions(broken, PROMPTS[:1], ["my answer"])
    message = str(info.value)
    assert message.startswith(f"reward broken: {what} for prompt 'What is 0 + 0?' and completion 'my answer'")
    assert "posttrain score" in message and "\n" not in message


def test_a_raising_reward_is_reported_never_zeroed():
    def raises(prompt: Prompt, completion: str) -> float:
        raise KeyError("tests")

    with pytest.raises(RewardError, match="reward raises: raised KeyError: 'tests' for prompt 'What is 0"):
        score_completions(raises, PROMPTS[:1], ["x"])
    with pytest.raises(RewardError, match="reward raises: raised KeyError"):
        explain_completions(raises, PROMPTS[:1], ["x"])


def test_a_batch_of_the_wrong_length_is_refused():
    class Short(Batched):
        def score_batch(self, prompts, completions):
            return [1.0]

    with pytest.raises(RewardError, match="returned 1 values for 3 completions"):
        score_completions(Short(), PROMPTS, ["a", "b", "c"])


def test_a_users_module_function_is_named_as_its_spec_names_it():
    import os.path

    assert reward_name(os.path.basename) == "posixpath:basename"  # e.g. my_rewards:shorter_is_better
    assert reward_name(numeric_reward) == "numeric"
