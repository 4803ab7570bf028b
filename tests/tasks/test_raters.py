"""Simulated raters: hand-written responses, determinism, the noise rate and tie handling."""

from __future__ import annotations

import random

import pytest

from posttrain.data.records import Message, Prompt
from posttrain.errors import DataError
from posttrain.tasks.raters import Rater, check_references, concise_utility, is_worked, make_rater, padding_penalty

PROMPT = Prompt((Message("user", "What is 23 + 45?"),), {"answer": "68"})
WORKED = "23 + 45: ones 3 + 5 = 8, tens 2 + 4 = 6. #### 68"
BARE = "68"
WRONG = "67"
RAMBLING = "Well, let me think about it, let me think about it. The answer is 68"


def test_correctness_prefers_correct_and_ties_equally_correct():
    rater = make_rater("correctness")
    assert rater.compare(PROMPT, BARE, WRONG) == 0
    assert rater.compare(PROMPT, WRONG, BARE) == 1
    assert rater.compare(PROMPT, WORKED, BARE) is None  # both correct
    assert rater.compare(PROMPT, WRONG, "12") is None  # both wrong
    assert rater.compare(PROMPT, BARE, BARE) is None  # identical


def test_worked_prefers_correct_then_working():
    rater = make_rater("worked")
    assert is_worked(WORKED) and not is_worked(BARE) and not is_worked("#### 68") and not is_worked("2 3 68")
    assert rater.compare(PROMPT, BARE, WORKED) == 1
    wrong_worked = "23 + 45: ones 3 + 5 = 8, tens 2 + 4 = 5. #### 58"
    assert rater.compare(PROMPT, wrong_worked, BARE) == 1  # correctness (10) outweighs working (1)
    assert rater.utility(PROMPT, WORKED) == 11.0 and rater.utility(PROMPT, wrong_worked) == 1.0


def test_concise_prefers_correct_then_less_padding():
    """"The answer is 68." has 15 characters beyond "68": penalty 5 * 15 / (15 + 50) = 1.1538."""
    assert padding_penalty("68") == 0.0
    assert padding_penalty("The answer is 68.") == pytest.approx(5 * 15 / 65)
    assert padding_penalty("a a a 68") > padding_penalty("a b c 68")  # repeated words cost more
    rater = make_rater("concise")
    assert rater.compare(PROMPT, RAMBLING, BARE) == 1
    assert rater.compare(PROMPT, "The answer is 68.", RAMBLING) == 0
    assert rater.compare(PROMPT, RAMBLING * 5, WRONG) == 0  # padding never outweighs correctness
    assert concise_utility(PROMPT, RAMBLING * 20) > 5.0


def _pairs(n: int) -> list[tuple[Prompt, str, str]]:
    """n (prompt, correct, wrong) triples with distinct texts."""
    return [
        (Prompt((Message("user", f"What is {i} + 1?"),), {"answer": str(i + 1)}), str(i + 1), str(i + 2))
        for i in range(n)
    ]


def test_noise_flips_about_the_right_fraction_and_is_order_free():
    """2000 pairs at noise 0.2: the wrong answer is chosen 0.2 of the time (binomial sd 0.009)."""
    rater = make_rater("correctness", noise=0.2, seed=3)
    triples = _pairs(2000)
    judgments = [rater.compare(p, good, bad) for p, good, bad in triples]
    assert abs(sum(judgments) / len(judgments) - 0.2) < 0.05
    assert [rater.compare(p, bad, good) for p, good, bad in triples] == [1 - j for j in judgments]
    shuffled = list(range(len(triples)))
    random.Random(0).shuffle(shuffled)
    again = {i: rater.compare(*triples[i]) for i in shuffled}
    assert [again[i] for i in range(len(triples))] == judgments
    other_seed = make_rater("correctness", noise=0.2, seed=4)
    assert [other_seed.compare(*t) for t in triples] != judgments
    assert all(make_rater("correctness").compare(*t) == 0 for t in triples)  # noise 0: never flipped


def test_rank_is_a_sorted_permutation_at_noise_zero():
    rater = make_rater("concise")
    responses = [RAMBLING, WRONG, BARE, "The answer is 68."]
    order = rater.rank(PROMPT, responses)
    assert order == [2, 3, 0, 1]
    assert rater.rank(PROMPT, ["1", "2"]) is None  # all wrong and equally short: all tied
    reordered = [responses[i] for i in (3, 1, 0, 2)]
    assert [reordered[i] for i in rater.rank(PROMPT, reordered)] == [responses[i] for i in order]


def test_noisy_rank_is_a_permutation_swapping_adjacent_items():
    """Noise 0.3 over 300 rankings of 4: each of the 3 adjacent positions swaps about 0.3 of the time."""
    rater = make_rater("concise", noise=0.3, seed=0)
    swapped = 0
    for prompt, good, bad in _pairs(300):
        responses = [good, f"so {good}", bad, f"so, so {bad}"]  # utility order 0, 1, 2, 3
        order = rater.rank(prompt, responses)
        assert sorted(order) == [0, 1, 2, 3]
        assert order == rater.rank(prompt, responses)
        swapped += order != [0, 1, 2, 3]
    assert 1 - 0.7**3 - 0.1 < swapped / 300 < 1 - 0.7**3 + 0.1  # some swap happened: 1 - 0.7^3 = 0.657


def test_noise_and_references_are_checked():
    with pytest.raises(ValueError, match="noise"):
        Rater("x", concise_utility, noise=0.5)
    with pytest.raises(ValueError, match="unknown rater"):
        make_rater("kindness")
    with pytest.raises(DataError, match='no "answer" field'):
        check_references([PROMPT, Prompt((Message("user", "hi"),))])
