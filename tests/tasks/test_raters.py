"""Raters: the generic `SimulatedRater` (`tasks.raters`) through the arithmetic raters (`tasks.arithmetic_raters`):
hand-written responses, determinism, the noise rate, tie handling, and the import boundary between the two."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.data.records import Message, Prompt
from posttrain.errors import DataError
from posttrain.tasks.arithmetic_raters import check_references, concise_utility, is_worked, make_rater, padding_penalty
from posttrain.tasks.raters import Judgment, Rater, SimulatedRater

A, B, TIE = Judgment.A, Judgment.B, Judgment.TIE
MIRROR = {A: B, B: A, TIE: TIE}

PROMPT = Prompt((Message("user", "What is 23 + 45?"),), {"answer": "68"})
WORKED = "23 + 45: ones 3 + 5 = 8, tens 2 + 4 = 6. #### 68"
BARE = "68"
WRONG = "67"
RAMBLING = "Well, let me think about it, let me think about it. The answer is 68"


def test_correctness_prefers_correct_and_ties_equally_correct():
    rater = make_rater("correctness")
    assert rater.compare(PROMPT, BARE, WRONG) is A
    assert rater.compare(PROMPT, WRONG, BARE) is B
    assert rater.compare(PROMPT, WORKED, BARE) is TIE  # both correct
    assert rater.compare(PROMPT, WRONG, "12") is TIE  # both wrong
    assert rater.compare(PROMPT, BARE, BARE) is TIE  # identical


def test_worked_prefers_correct_then_working():
    rater = make_rater("worked")
    assert is_worked(WORKED) and not is_worked(BARE) and not is_worked("#### 68") and not is_worked("2 3 68")
    assert rater.compare(PROMPT, BARE, WORKED) is B
    wrong_worked = "23 + 45: ones 3 + 5 = 8, tens 2 + 4 = 5. #### 58"
    assert rater.compare(PROMPT, wrong_worked, BARE) is B  # correctness (10) outweighs working (1)
    assert rater.utility(PROMPT, WORKED) == 11.0 and rater.utility(PROMPT, wrong_worked) == 1.0


def test_concise_prefers_correct_then_less_padding():
    """"The answer is 68." has 15 characters beyond "68": penalty 5 * 15 / (15 + 50) = 1.1538."""
    assert padding_penalty("68") == 0.0
    assert padding_penalty("The answer is 68.") == pytest.approx(5 * 15 / 65)
    assert padding_penalty("a a a 68") > padding_penalty("a b c 68")  # repeated words cost more
    rater = make_rater("concise")
    assert rater.compare(PROMPT, RAMBLING, BARE) is B
    assert rater.compare(PROMPT, "The answer is 68.", RAMBLING) is A
    assert rater.compare(PROMPT, RAMBLING * 5, WRONG) is A  # padding never outweighs correctness
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
    assert TIE not in judgments  # every pair has a correct and a wrong answer
    assert abs(judgments.count(B) / len(judgments) - 0.2) < 0.05
    assert [rater.compare(p, bad, good) for p, good, bad in triples] == [MIRROR[j] for j in judgments]
    shuffled = list(range(len(triples)))
    random.Random(0).shuffle(shuffled)
    again = {i: rater.compare(*triples[i]) for i in shuffled}
    assert [again[i] for i in range(len(triples))] == judgments
    other_seed = make_rater("correctness", noise=0.2, seed=4)
    assert [other_seed.compare(*t) for t in triples] != judgments
    assert all(make_rater("correctness").compare(*t) is A for t in triples)  # noise 0: never flipped


def test_judgments_are_the_ones_the_hash_always_gave():
    """Pinned judgments (from the code before Judgment replaced 0/1/None): the noise hash and the flip rule
    are unchanged, so every pair file and win rate made before comes out the same again."""
    rater = make_rater("correctness", noise=0.2, seed=3)
    assert "".join(rater.compare(*t).value for t in _pairs(40)) == "bbaaaaaababaabaaaaaaababaaaabababaaaaaaa"
    noisy = make_rater("concise", noise=0.3, seed=0)
    assert [noisy.rank(p, [good, f"so {good}", bad, f"so, so {bad}"]) for p, good, bad in _pairs(6)] == [
        [0, 1, 2, 3], [0, 2, 1, 3], [0, 2, 1, 3], [0, 2, 1, 3], [0, 1, 2, 3], [0, 1, 2, 3]]


def test_noise_never_flips_a_tie():
    """Equal utilities are a tie at any noise: a tie is a judgment, not a coin to flip."""
    rater = make_rater("correctness", noise=0.45, seed=1)
    assert all(rater.compare(p, bad, f"{bad}0") is TIE for p, _, bad in _pairs(200))  # both wrong
    assert all(rater.compare(p, good, f"so {good}") is TIE for p, good, _ in _pairs(200))  # both right


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
        SimulatedRater("x", concise_utility, noise=0.5)
    with pytest.raises(ValueError, match="unknown rater"):
        make_rater("kindness")
    with pytest.raises(DataError, match='no "answer" field'):
        check_references([PROMPT, Prompt((Message("user", "hi"),))])


class FirstIsBetter:
    """A rater written against the protocol alone, as the feedback app's human judgments will be."""

    name = "first"

    def compare(self, prompt: Prompt, a: str, b: str) -> Judgment:
        return TIE if a == b else A

    def rank(self, prompt: Prompt, responses: list[str]) -> list[int] | None:
        return list(range(len(responses))) if len(set(responses)) > 1 else None


def test_simulated_and_hand_written_raters_fit_the_protocol():
    assert isinstance(make_rater("worked", noise=0.1, seed=2), Rater)
    assert isinstance(FirstIsBetter(), Rater)
    assert not isinstance(object(), Rater)
    assert {j.value for j in Judgment} == {"a", "b", "tie"} and all(j is not None and j for j in Judgment)


def test_the_rater_protocol_does_not_import_the_arithmetic_task():
    """`tasks/raters.py` is the generic layer: run on its own, it loads nothing of `posttrain.tasks`. It is run
    from its file because importing it by name runs `posttrain/tasks/__init__.py` first, whose TASKS table
    imports the arithmetic task whoever asks."""
    src = Path(__file__).resolve().parents[2] / "src"
    code = f"""
import importlib.util, sys
spec = importlib.util.spec_from_file_location("raters_alone", {str(src / "posttrain" / "tasks" / "raters.py")!r})
sys.modules["raters_alone"] = module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
assert isinstance(module.SimulatedRater("r", lambda prompt, response: 0.0), module.Rater)
print(sorted(m for m in sys.modules if m.startswith("posttrain.tasks")))
"""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
