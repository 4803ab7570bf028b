"""`judge_samples` on hand-written samples, and `posttrain data pairs` end to end on the tiny model."""

from __future__ import annotations

import json

import pytest

from posttrain.cli import main
from posttrain.data.load import load_records
from posttrain.data.records import Message, PreferencePair, Prompt, Ranking, parse_record, to_dict
from posttrain.errors import DataError
from posttrain.pairs import judge_samples
from posttrain.tasks.arithmetic_raters import make_rater
from posttrain.tasks.raters import Judgment, SimulatedRater


def _prompt(a: int, b: int) -> Prompt:
    return Prompt((Message("user", f"What is {a} + {b}?"),), {"answer": str(a + b)})


PROMPTS = [_prompt(2, 3), _prompt(4, 4), _prompt(1, 1), _prompt(7, 2)]
SAMPLES = [
    ["6", "5", "The answer is 5"],  # wrong, correct (short), correct (padded)
    ["8", "8", "8"],                # identical
    ["3", "4", "0"],                # all wrong: a tie for `correctness`
    ["9", "10", "11"],              # one correct
]


def test_pairs_are_best_against_worst_with_counts():
    records, stats = judge_samples(PROMPTS, SAMPLES, make_rater("correctness"), "pairs")
    assert [(r.chosen[0].content, r.rejected[0].content) for r in records] == [("5", "6"), ("9", "10")]
    assert (stats.prompts, stats.written, stats.identical, stats.ties) == (4, 2, 1, 1)
    assert (stats.chosen_correct, stats.rejected_correct) == (2, 0)
    for record in records:
        assert parse_record(json.loads(json.dumps(to_dict(record)))) == record


@pytest.mark.parametrize("format", ["pairs", "rankings"])
def test_a_tie_makes_no_record_and_is_counted(format):
    """A rater to whom every response is as good as any other (at noise 0.4, which never flips a tie):
    its judgment of each prompt's best and worst is TIE, so the 3 prompts with distinct samples are
    3 counted ties, the identical one is counted as identical, and nothing is written."""
    indifferent = SimulatedRater("indifferent", lambda prompt, response: 1.0, noise=0.4, seed=1)
    assert all(indifferent.compare(p, t[0], t[-1]) is Judgment.TIE for p, t in zip(PROMPTS, SAMPLES))
    records, stats = judge_samples(PROMPTS, SAMPLES, indifferent, format)
    assert records == []
    assert (stats.prompts, stats.written, stats.identical, stats.ties) == (4, 0, 1, 3)
    assert "(dropped: 1 identical, 3 tied); rater indifferent, noise 0.4, seed 1" in stats.summary(indifferent, format)


def test_concise_pairs_and_rankings_parse_back():
    """Under `concise` "5" beats "The answer is 5" (padding) beats "6" (wrong); "3", "4", "0" still tie."""
    records, stats = judge_samples(PROMPTS, SAMPLES, make_rater("concise"), "rankings")
    assert stats.identical == 1 and stats.ties == 1 and stats.written == 2
    first = records[0]
    assert isinstance(first, Ranking)
    assert [first.responses[i][0].content for i in first.order] == ["5", "The answer is 5", "6"]
    for record in records:
        assert parse_record(json.loads(json.dumps(to_dict(record))), accept=(Ranking,)) == record
    assert stats.chosen_correct == 2 and stats.rejected_correct == 0


def test_judge_samples_checks_its_inputs():
    with pytest.raises(ValueError, match="4 prompts but 1"):
        judge_samples(PROMPTS, SAMPLES[:1], make_rater("correctness"))
    with pytest.raises(DataError, match='no "answer"'):
        judge_samples([Prompt((Message("user", "hi"),))], [["a", "b"]], make_rater("correctness"))


def test_cli_writes_pairs_that_load_back(tmp_path, capsys, tiny_dir):
    out = tmp_path / "pairs.jsonl"
    argv = ["data", "pairs", "--model.name", "tiny", "--limit", "8", "--k", "2", "--rater", "concise",
            "--sampling.max-new-tokens", "8", "--no-progress", "--output", str(out)]
    assert main(argv) == 0
    pairs = load_records(str(out), accept=(PreferencePair,))
    summary = capsys.readouterr().out
    assert f"wrote {out}: 8 prompts -> {len(pairs)} pairs" in summary and "rater concise" in summary
    assert 1 <= len(pairs) <= 8 and list(tmp_path.iterdir()) == [out]  # no temporary file left behind
    first = out.read_text()
    assert main(argv) == 2 and "exists; pass --overwrite" in capsys.readouterr().err
    assert main(argv + ["--overwrite"]) == 0 and out.read_text() == first  # seeded: the same pairs again


@pytest.mark.parametrize("args, message", [
    (["--k", "1"], "k=1: must be >= 2"),
    (["--noise", "0.5"], "noise=0.5: must be in [0, 0.5)"),
    (["--output", "pairs.txt"], "output='pairs.txt': must be a .jsonl file"),
])
def test_cli_bad_config_is_one_line(tmp_path, capsys, args, message):
    assert main(["data", "pairs", "--output", str(tmp_path / "p.jsonl"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("posttrain data: error:") and message in err and "\n" not in err


def test_cli_needs_an_action(capsys):
    assert main(["data"]) == 2 and "one of: pairs" in capsys.readouterr().err
    assert main(["data", "pears"]) == 2
