"""What `posttrain eval` prints and how `--compare-to` lines two evaluations up (unit tier, hand-made results, no
model): tables legible in logs and pipes, a folder given to --compare-to, ratings paired only when comparable,
fractions printed as percentages, a malformed results.json refused in one line before any model loads."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from posttrain.cli import main
from posttrain.errors import DataError, UserError
from posttrain.eval.compare import FORMAT, check_results, compare_plan, compare_results, read_results
from posttrain.eval.tables import new_table, print_changes, print_results

LONG = "builtin:arithmetic/heldout"
LONGER = "builtin:arithmetic/heldout?ops=+&digits=2"
MODELS = ("runs/very-long-experiment-name/sft", "runs/very-long-experiment-name/dpo")


def figure(model: str, task: str, value: float, **extra) -> dict:
    return {"model": model, "task": task, "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1, "n": 50,
            **extra}


def results(judge: str = "verifier", models=MODELS, tasks=(LONG, LONGER), rating_fields: bool = True) -> dict:
    """A results.json as `posttrain eval` writes it, two models on two tasks, every figure made up."""
    extra = {"judge": judge, "rated": sorted(models)} if rating_fields else {}
    return {
        "format": FORMAT, "output_dir": "evals/20261207-065649",
        "models": [{"label": m, "name": m, "lineage": None} for m in models],
        "tasks": [{"name": t, "sha256": "ab" * 32, "n": 50, "reward": "arithmetic"} for t in tasks],
        "settings": {"judge": judge},
        "accuracy": [figure(m, t, 0.369) for m in models for t in tasks],
        "pass_at_k": [], "rm_score": [],
        "length": [figure(m, t, 31.5) for m in models for t in tasks],
        "finish_reasons": [{"model": m, "task": t, "counts": {"eos": 50}} for m in models for t in tasks],
        "win_rates": [{"a": models[0], "b": models[1], "task": t, "judge": judge, "value": 0.5, "ci_low": 0.4,
                       "ci_high": 0.6, "n": 50, "wins": 20, "ties": 10, "losses": 20, "a_first_win_rate": None,
                       "b_first_win_rate": None} for t in tasks],
        "ratings": [{"model": m, "rating": 1000.0 + 10 * i, "ci_low": 950.0, "ci_high": 1050.0, "rank": 1, **extra}
                    for i, m in enumerate(models)]}


def test_tables_printed_to_a_pipe_cut_no_cell(capsys):
    """Captured stdout is not a terminal, where rich would fall back to 80 columns and print `builtin:arithmet…`:
    every task and model name, and every header, appears whole on one line."""
    print_results(results())
    out = capsys.readouterr().out
    assert "…" not in out
    lines = out.splitlines()
    for name in (LONG, LONGER, *MODELS, "length (tokens)", "accuracy", "W/T/L"):
        assert any(name in line for line in lines), name
    assert any(LONGER in line and "36.9% [26.9%, 46.9%]" in line for line in lines)


def test_position_columns_only_for_a_judge_that_sees_an_order(capsys):
    """A verifier has no figure by position (None): no empty columns for it; a rater's are printed."""
    print_results(results())
    assert "shown first" not in capsys.readouterr().out
    rated = results("rater:concise")
    for f in rated["win_rates"]:
        f.update(a_first_win_rate=0.48, b_first_win_rate=0.52)
    print_results(rated)
    out = capsys.readouterr().out
    assert "B shown first" in out and "48.0%" in out and "52.0%" in out


def test_a_narrow_terminal_folds_names_never_cuts_them():
    """On a terminal the tables keep its width; a name too long for its column continues on the next line."""
    buffer = io.StringIO()
    console = Console(file=buffer, width=40, force_terminal=True, color_system=None)
    table = new_table("t", ("model", "task", "accuracy"))
    table.add_row(MODELS[0], LONGER, "36.9% [26.9%, 46.9%]")
    console.print(table)
    out = buffer.getvalue()
    assert "…" not in out and max(len(line) for line in out.splitlines()) <= 40
    cells = "".join(line.split("│")[2].strip() for line in out.splitlines() if line.count("│") == 4)
    assert LONGER in cells


def test_compare_to_takes_an_evaluation_folder(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text(json.dumps(results()))
    assert read_results(str(tmp_path / "eval"))["format"] == FORMAT
    assert read_results(str(tmp_path / "eval" / "results.json"))["format"] == FORMAT
    with pytest.raises(UserError, match=r"^--compare-to \S+: a folder without results.json \(give an earlier") as e:
        read_results(str(tmp_path))
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="no such file or folder"):
        read_results(str(tmp_path / "typo"))


def test_ratings_pair_only_under_the_same_judge_and_models():
    """Win rates pair by judge in their key; ratings have none, so a judge change would read as a rating change."""
    same = compare_results(results(), results())
    assert sorted(c["what"] for c in same if c["figure"] == "rating") == sorted(MODELS)
    assert compare_plan(results(), results()).notes == []

    cases = {"judged by rater:concise then, by verifier now": results(judge="rater:concise"),
             "other models rated together": results(models=(*MODELS, "runs/ppo")),
             "does not record their judge and models": results(rating_fields=False),  # before these fields
             "rated over other tasks": results(tasks=(LONG,))}
    for why, old in cases.items():
        new = results()
        assert not [c for c in compare_results(old, new) if c["figure"] == "rating"], why
        (note,) = [n for n in compare_plan(old, new).notes if n.startswith("ratings:")]
        assert "ratings: not compared (" in note and why in note
    # the win rates of the judge change are not paired either (their key has the judge); accuracy still is
    figures = {c["figure"] for c in compare_results(results(judge="rater:concise"), results())}
    assert figures == {"accuracy", "length"}


def judged_by_reward_model(sha: str | None) -> dict:
    r = results(judge="reward-model")
    r["settings"]["reward_model_sha256"] = sha
    r["rm_score"] = [figure(m, t, 1.5) for m in MODELS for t in (LONG, LONGER)]
    return r


def test_reward_model_figures_pair_only_under_the_same_reward_model():
    """Two reward models' scores have no common scale: its scores, the win rates it judged and the ratings from
    them pair only when the weights are the same (their sha256, recorded in settings); accuracy still pairs."""
    same = {c["figure"] for c in compare_results(judged_by_reward_model("aa" * 32), judged_by_reward_model("aa" * 32))}
    assert same == {"accuracy", "length", "rm_score", "win_rate", "rating"}
    cases = {"another reward model: weights sha256 aaaaaaaaaaaa then, bbbbbbbbbbbb now": "aa" * 32,
             "the earlier results.json does not identify its reward model": None}
    for why, old_sha in cases.items():
        old, new = judged_by_reward_model(old_sha), judged_by_reward_model("bb" * 32)
        assert {c["figure"] for c in compare_results(old, new)} == {"accuracy", "length"}, why
        notes = compare_plan(old, new).notes
        assert f"reward-model figures: not compared ({why})" in notes
        assert "ratings: not compared (judged by another reward model)" in notes


def test_changes_print_fractions_in_percentage_points(capsys):
    changes = [{"figure": "accuracy", "what": f"{MODELS[1]} {LONGER}", "old": 0.369, "new": 0.4, "diff": 0.031,
                "ci_low": -0.082, "ci_high": 0.144, "outside_noise": False},
               {"figure": "win_rate", "what": "a vs b t verifier", "old": 0.5, "new": 0.5, "diff": 0.0,
                "ci_low": -0.1135, "ci_high": 0.1135, "outside_noise": False},
               {"figure": "rating", "what": "a", "old": 1000.0, "new": 1012.0, "diff": 12.0, "ci_low": -40.0,
                "ci_high": 64.0, "outside_noise": False}]
    print_changes(Console(width=100_000), changes, [])
    out = capsys.readouterr().out
    assert "36.9% -> 40.0%" in out and "+3.1 pts [-8.2, +14.4]" in out
    assert "50.0% -> 50.0%" in out and "+0.0 pts [-11.3, +11.3]" in out
    assert "1000 -> 1012" in out and "+12 [-40, +64]" in out
    assert f"{MODELS[1]} {LONGER}" in out


def test_print_results_with_changes_end_to_end(capsys):
    """The pieces together, as `posttrain eval --compare-to` prints them: a judge change is noted, not compared."""
    old, new = results(judge="rater:concise"), results()
    new["changes"], new["change_notes"] = compare_results(old, new), compare_plan(old, new).notes
    print_results(new)
    out = capsys.readouterr().out
    assert "--compare-to: ratings: not compared (judged by rater:concise then, by verifier now)" in out
    assert "36.9% -> 36.9%" in out and "+0.0 pts" in out


def test_a_file_task_evaluated_with_another_limit_is_named_not_compared():
    """A file task's sha256 is the whole file's whatever --limit took of it, so the number of prompts tells
    10 prompts of it from 30: not compared, and the ratings over it neither."""
    old, new = results(tasks=("mytask.jsonl", LONG)), results(tasks=("mytask.jsonl", LONG))
    old["tasks"][0]["n"], new["tasks"][0]["n"] = 30, 10  # the same sha256 (the file's) in both
    plan = compare_plan(old, new)
    assert plan.tasks == {LONG} and not plan.ratings
    assert "task mytask.jsonl: not compared (30 prompts then, 10 now: another --limit)" in plan.notes
    assert {c["what"].split()[-1] for c in compare_results(old, new) if c["figure"] == "accuracy"} == {LONG}


def test_win_rates_of_models_listed_in_the_other_order_pair_as_their_mirror():
    """B over A now pairs with A over B then: 1 - 0.7 = 0.3, interval [1 - 0.8, 1 - 0.55] = [0.2, 0.45]. A new
    win rate equal to that mirror differs by 0, MOVER: ±sqrt(0.1² + 0.15²) = ±0.1803."""
    old, new = results(), results(models=MODELS[::-1])
    for w in old["win_rates"]:
        w.update(value=0.7, ci_low=0.55, ci_high=0.8)
    for w in new["win_rates"]:
        w.update(value=0.3, ci_low=0.2, ci_high=0.45)
    wins = [c for c in compare_results(old, new) if c["figure"] == "win_rate"]
    assert len(wins) == 2 and all(c["what"].startswith(f"{MODELS[1]} vs {MODELS[0]} ") for c in wins)
    for c in wins:
        assert c["old"] == pytest.approx(0.3) and c["diff"] == pytest.approx(0.0) and not c["outside_noise"]
        assert c["ci_low"] == pytest.approx(-0.1803, abs=1e-4) and c["ci_high"] == pytest.approx(0.1803, abs=1e-4)


def test_win_rates_under_another_judge_are_named_not_dropped_silently():
    notes = compare_plan(results(judge="rater:concise"), results()).notes
    assert "win rates: not compared (judged by rater:concise then, by verifier now)" in notes
    assert not [n for n in compare_plan(results(), results()).notes if n.startswith("win rates:")]


def malformed(**change) -> dict:
    r = results()
    r.update(change)
    return r


def without(key: str, field: str) -> dict:
    r = results()
    del r[key][0][field]
    return r


MALFORMED = {  # what the file holds -> the words the one-line message must have
    "a list that is a string": (malformed(accuracy="x"),
                                'field "accuracy" expected a list of rows, got a string; is it a results.json'),
    "no models": ({"format": FORMAT, "accuracy": []}, 'field "models" is missing'),
    "a row without ci_low": (without("accuracy", "ci_low"), 'accuracy[0]: field "ci_low" is missing'),
    "a value that is not a number": (malformed(win_rates=[{**results()["win_rates"][0], "value": "oops"}]),
                                     'win_rates[0]: field "value" expected a number, got a string'),
    "a row that is not an object": (malformed(ratings=[3]), "ratings[0] expected an object, got a number"),
    "a task without its n": (without("tasks", "n"), 'tasks[0]: field "n" is missing'),
}


@pytest.mark.parametrize("kind", MALFORMED)
def test_a_malformed_compare_to_is_one_line_exit_2_before_any_model_loads(kind, tmp_path, capsys, monkeypatch):
    """The right "format" but a field missing or of another type: one line naming the file and the field, exit
    2, nothing written. The model named does not exist, so an error about it would mean the check came later."""
    content, words = MALFORMED[kind]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "weird.json").write_text(json.dumps(content))
    code = main(["eval", "--models", "no/such/model", "--compare-to", "weird.json", "--output-dir", "out",
                 "--limit", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err and err.count("\n") == 1, err
    assert err.startswith("posttrain eval: error: --compare-to weird.json: ") and words in err, err
    assert not (tmp_path / "out").exists()


def test_results_as_written_pass_the_check_unchanged():
    assert check_results(results(), "r.json") == results()
    with pytest.raises(DataError, match=r'^r.json: field "settings" expected an object, got a list;'):
        check_results(malformed(settings=[]), "r.json")


def test_a_corrupt_results_json_in_a_folder_is_named_with_the_whole_json_error(tmp_path):
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "results.json").write_text('{"format": "posttrain-eval/1", "accur')
    with pytest.raises(UserError, match=r"--compare-to \S+/eval/results.json: not JSON \(.*: line 1 column \d+"):
        read_results(str(tmp_path / "eval"))


def test_a_win_rate_of_mostly_ties_that_holds_half_says_its_interval_is_wide():
    """8 wins, 72 ties, 0 losses: the Wilson interval (ties as coin flips) holds 50% while the version never lost;
    the trial read it as 'not distinguishable'. The note points to the ratings; a balanced or tie-free row has none."""
    from posttrain.eval.tables import tie_notes
    from posttrain.eval.winrate import win_rate

    rate, low, high = win_rate([1.0] * 8 + [0.5] * 72)
    assert low < 0.5 < high  # the case itself: [39.8%, 69.3%] in the trial
    row = {"a": "sft300", "b": "sft20", "task": "t", "wins": 8, "ties": 72, "losses": 0, "ci_low": low,
           "ci_high": high}
    (note,) = tie_notes([row])
    assert note.startswith("note: sft300 vs sft20 on t: 72 of 80 judgments are ties and the others went 8-0")
    assert tie_notes([{**row, "wins": 4, "losses": 4}]) == []  # decisive judgments balanced: nothing to add
    assert tie_notes([{**row, "ties": 30, "losses": 42}]) == []  # ties not the majority
    assert tie_notes([{**row, "ci_low": 0.51}]) == []  # the interval already excludes 50%
