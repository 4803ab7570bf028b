"""Win rates: the Wilson interval by hand, paired comparisons by a rater, and sampling two tiny models."""

from __future__ import annotations

import pytest

from posttrain.data.records import Message, Prompt
from posttrain.eval.winrate import compare_policies, sample_and_compare, wilson_interval, win_rate
from posttrain.tasks.arithmetic_raters import make_rater
from posttrain.tasks.raters import Judgment


def test_win_rate_eight_of_ten():
    """p̂ = 0.8, n = 10, z = 1.959964, z² = 3.841459, 1 + z²/n = 1.384146.
    center = (0.8 + 3.841459/20) / 1.384146 = 0.992073 / 1.384146 = 0.716740
    half = 1.959964 / 1.384146 * sqrt(0.8 * 0.2 / 10 + 3.841459 / 400) = 1.416003 * 0.160012 = 0.226577
    -> (0.490163, 0.943317)."""
    rate, low, high = win_rate([1.0] * 8 + [0.0] * 2)
    assert rate == 0.8
    assert low == pytest.approx(0.490163, abs=1e-5) and high == pytest.approx(0.943317, abs=1e-5)


def test_ties_count_half_and_the_interval_stays_in_bounds():
    """6 wins, 4 ties, 0 losses -> 8 of 10, the same rate and interval as 8 wins of 10."""
    assert win_rate([1.0] * 6 + [0.5] * 4) == win_rate([1.0] * 8 + [0.0] * 2)
    rate, low, high = win_rate([1.0] * 5)
    assert rate == 1.0 and high == 1.0 and 0.5 < low < 1.0
    rate, low, high = win_rate([0.0])
    assert rate == 0.0 and low == 0.0 and 0.5 < high < 1.0
    low, high = wilson_interval(50, 100)
    assert low == pytest.approx(1 - high)  # symmetric around one half
    for n in (3, 10, 500):  # no success (or no failure): the bound is exactly 0 (or 1), not a rounding residue
        assert wilson_interval(0, n)[0] == 0.0 and wilson_interval(n, n)[1] == 1.0
        assert wilson_interval(0, n)[1] == pytest.approx(1 - wilson_interval(n, n)[0])


def test_win_rate_rejects_bad_outcomes():
    with pytest.raises(ValueError, match="at least one"):
        win_rate([])
    with pytest.raises(ValueError, match="got \\[0.7\\]"):
        win_rate([1.0, 0.7])


def _prompt(a: int, b: int) -> Prompt:
    return Prompt((Message("user", f"What is {a} + {b}?"),), {"answer": str(a + b)})


def test_compare_policies_counts_wins_losses_ties():
    prompts = [_prompt(1, 1), _prompt(2, 2), _prompt(3, 3), _prompt(4, 4)]
    a = ["2", "5", "6", "8"]  # right, wrong, right, right
    b = ["3", "4", "6", "9"]  # wrong, right, right (identical), wrong
    result = compare_policies(prompts, a, b, make_rater("correctness"))
    assert {k: result[k] for k in ("n", "wins", "losses", "ties")} == {"n": 4, "wins": 2, "losses": 1, "ties": 1}
    assert result["win_rate"] == 0.625 and result["ci_low"] < 0.625 < result["ci_high"]
    flipped = compare_policies(prompts, b, a, make_rater("correctness"))
    assert (flipped["wins"], flipped["losses"], flipped["win_rate"]) == (1, 2, 0.375)
    with pytest.raises(ValueError, match="one response of each policy"):
        compare_policies(prompts, a, b[:3], make_rater("correctness"))


class ShorterIsBetter:
    """A rater written against the `Rater` protocol alone: the shorter response wins, equal lengths tie."""

    name = "shorter"

    def compare(self, prompt: Prompt, a: str, b: str) -> Judgment:
        if len(a) == len(b):
            return Judgment.TIE
        return Judgment.A if len(a) < len(b) else Judgment.B

    def rank(self, prompt: Prompt, responses: list[str]) -> list[int] | None:
        return sorted(range(len(responses)), key=lambda i: len(responses[i]))


def test_a_tie_judgment_is_half_a_win_and_is_reported():
    """Judgments A, TIE, TIE, B, TIE: 1 win, 1 loss, 3 ties -> (1 + 3 * 0.5) / 5 = 0.5, the interval of
    2.5 wins of 5 (symmetric around one half)."""
    prompts = [_prompt(i, i) for i in range(5)]
    a = ["1", "22", "3", "4444", "55"]
    b = ["11", "33", "4", "5", "66"]
    result = compare_policies(prompts, a, b, ShorterIsBetter())
    assert {k: result[k] for k in ("n", "wins", "losses", "ties", "rater")} == {
        "n": 5, "wins": 1, "losses": 1, "ties": 3, "rater": "shorter"}
    assert result["win_rate"] == 0.5 == win_rate([1.0, 0.5, 0.5, 0.0, 0.5])[0]
    assert (result["ci_low"], result["ci_high"]) == wilson_interval(2.5, 5)
    assert result["ci_low"] == pytest.approx(1 - result["ci_high"])


def test_sample_and_compare_puts_each_model_in_its_slot(tiny_dir):
    """A model against itself (greedy) ties everywhere. Against a copy with re-drawn weights, whose
    answers differ, swapping the two models swaps wins and losses."""
    import copy

    import torch

    from posttrain.config import ModelConfig, SamplingParams
    from posttrain.models.load import load_model

    model, tokenizer = load_model(ModelConfig(name=str(tiny_dir)))
    other = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in other.parameters():
            parameter.normal_(0.0, 0.1, generator=generator)
    prompts = [_prompt(i, 2 * i) for i in range(6)]
    rater, params = make_rater("concise"), SamplingParams(max_new_tokens=6, temperature=0.0)
    itself = sample_and_compare(model, model, tokenizer, prompts, rater, params)
    assert (itself["n"], itself["ties"], itself["win_rate"]) == (6, 6, 0.5)
    forward = sample_and_compare(model, other, tokenizer, prompts, rater, params)
    backward = sample_and_compare(other, model, tokenizer, prompts, rater, params)
    assert forward["wins"] + forward["losses"] > 0
    assert (forward["wins"], forward["losses"], forward["ties"]) == (backward["losses"], backward["wins"], backward["ties"])
