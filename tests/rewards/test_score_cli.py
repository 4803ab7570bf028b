"""`posttrain score` end to end: rows written back with reward, reason and parts, atomically, a summary table,
and one-line errors (exit 2) for a bad spec, a bad line and a row without the field the reward reads."""

from __future__ import annotations

import json
import re

import pytest

from posttrain.cli import main

ROWS = [
    {"prompt": "What is 23 + 45?", "completion": "<think>20 + 40 = 60, 3 + 5 = 8</think><answer>68</answer>",
     "answer": "68"},
    {"prompt": "What is 7 * 6?", "completion": "7 * 6 = 42. The answer is 42.", "answer": 42, "id": "b"},
    {"prompt": [{"role": "user", "content": "Half of 1?"}],
     "completion": [{"role": "assistant", "content": "It is 0.50"}], "answer": "1/2"},
    {"prompt": "What is 10 - 3?", "completion": "<think>hmm</think><answer>8</answer>", "answer": "7"},
]


def write_rows(path, rows) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_rows_come_back_with_reward_reason_and_parts(tmp_path, capsys):
    data, out = write_rows(tmp_path / "rows.jsonl", ROWS), tmp_path / "scored.jsonl"
    assert main(["score", "--reward", "numeric+0.2*think_format", "--data", data, "--output", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [{k: v for k, v in r.items() if k not in ("reward", "reason", "reward_parts")} for r in scored] == ROWS
    assert [r["reward"] for r in scored] == pytest.approx([1.2, 1.0, 1.0, 0.2])
    assert scored[3]["reward_parts"] == {"numeric": 0.0, "think_format": 1.0}
    assert scored[3]["reason"] == ("numeric=0 (extracted 8, expected 7); "
                                   "think_format=1 (<think>...</think><answer>...</answer>)")
    assert scored[2]["reason"].startswith("numeric=1 (extracted 0.50, expected 1/2)")
    captured = capsys.readouterr()
    table = re.sub(r"[│┃]", "|", captured.out)
    assert re.search(r"\| numeric +\| +0\.7500 \| +0 \| +1 \| +4 \|", table), table  # (1 + 1 + 1 + 0) / 4
    assert re.search(r"\| think_format +\| +0\.5000 \|", table)
    assert re.search(r"\| total +\| +0\.8500 \| +0\.2 \| +1\.2 \| +4 \|", table)  # (1.2 + 1 + 1 + 0.2) / 4
    assert f"wrote 4 scored rows to {out}" in captured.err


def test_a_scored_file_can_be_rescored_and_a_single_reward_has_no_parts(tmp_path):
    data, out = write_rows(tmp_path / "rows.jsonl", ROWS), tmp_path / "scored.jsonl"
    assert main(["score", "--reward", "numeric+0.2*think_format", "--data", data, "--output", str(out)]) == 0
    assert main(["score", "--reward", "exact", "--data", str(out), "--output", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["reward"] for r in scored] == [0.0, 0.0, 0.0, 0.0]
    assert all("reward_parts" not in r for r in scored)
    assert scored[0]["reason"].endswith("differs from '68' (case and spaces folded)")


def test_an_empty_completion_is_scored_not_refused(tmp_path):
    """A model that stopped at once writes "": one such row refused the whole file ('field "completion" is
    empty'); it is scored as it is now (numeric finds no number)."""
    rows = [{**ROWS[1], "completion": ""}, ROWS[0]]
    data, out = write_rows(tmp_path / "rows.jsonl", rows), tmp_path / "scored.jsonl"
    assert main(["score", "--reward", "numeric", "--data", data, "--output", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["completion"], r["reward"]) for r in scored] == [("", 0.0), (ROWS[0]["completion"], 1.0)]
    assert scored[0]["reason"].startswith("no number found")


def bad(argv, capsys) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("posttrain score: error: ") and err.count("\n") == 1, err
    return err


def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys):
    data, out = write_rows(tmp_path / "rows.jsonl", ROWS), tmp_path / "out.jsonl"
    run = ["--data", data, "--output", str(out)]
    assert "reward='numerik': unknown reward 'numerik' (did you mean numeric?)" in bad(
        ["score", "--reward", "numerik", *run], capsys)
    assert "cannot import module 'no_such_module_here'" in bad(
        ["score", "--reward", "no_such_module_here:fn", *run], capsys)
    missing = write_rows(tmp_path / "missing.jsonl", [ROWS[0], {"prompt": "hi", "completion": "hello"}])
    assert f'{missing}:2: has no "answer" field, which the reward numeric reads' in bad(
        ["score", "--reward", "numeric", "--data", missing, "--output", str(out)], capsys)
    broken = tmp_path / "broken.jsonl"
    broken.write_text(json.dumps(ROWS[0]) + "\n\n{not json\n")
    assert f"{broken}:3: invalid JSON" in bad(
        ["score", "--reward", "numeric", "--data", str(broken), "--output", str(out)], capsys)
    no_completion = write_rows(tmp_path / "nocomp.jsonl", [{"prompt": "hi", "answer": 1}])
    assert f'{no_completion}:1: field "completion"' in bad(
        ["score", "--reward", "numeric", "--data", no_completion, "--output", str(out)], capsys)
    assert not out.exists()


def test_a_raising_user_reward_leaves_no_half_written_output(tmp_path, capsys):
    """The file is written only after every row is scored: the old output stays as it was."""
    data, out = write_rows(tmp_path / "rows.jsonl", ROWS), tmp_path / "out.jsonl"
    out.write_text("old\n")
    err = bad(["score", "--reward", f"{__name__}:fails_on_42", "--data", data, "--output", str(out)], capsys)
    assert "raised ValueError: no 42s for prompt 'What is 7 * 6?'" in err
    assert out.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left


def fails_on_42(prompt, completion: str) -> float:
    if "42" in completion:
        raise ValueError("no 42s")
    return 1.0


def test_overlong_counts_the_named_tokenizers_tokens(tmp_path, tiny_dir):
    data, out = write_rows(tmp_path / "rows.jsonl", ROWS), tmp_path / "out.jsonl"
    assert main(["score", "--reward", "overlong(max=20,cache=5)", "--tokenizer", str(tiny_dir), "--data", data,
                 "--output", str(out)]) == 0
    from posttrain.models.load import load_tokenizer
    from posttrain.rewards.verifiers import overlong_penalty

    tokenizer = load_tokenizer(str(tiny_dir))
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    for row, got in zip(ROWS, scored):
        text = row["completion"] if isinstance(row["completion"], str) else row["completion"][0]["content"]
        n = len(tokenizer.encode(text, add_special_tokens=False))
        assert got["reward"] == overlong_penalty(n, 20, 5) and got["reason"].startswith(f"{n} tokens")


def test_generate_output_is_scored_as_it_is(tmp_path, tiny_dir, capsys):
    """posttrain generate keeps a prompt's fields under "reference": score reads them there."""
    gen, out = tmp_path / "gen.jsonl", tmp_path / "scored.jsonl"
    assert main(["generate", "--model.name", str(tiny_dir), "--prompts", "reasoning_gym:basic_arithmetic?size=2",
                 "--sampling.max-new-tokens", "4", "--no-progress", "--output", str(gen)]) == 0
    assert main(["score", "--reward", "reasoning_gym+numeric", "--data", str(gen), "--output", str(out)]) == 0
    scored = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(scored) == 2 and all(set(r["reward_parts"]) == {"reasoning_gym", "numeric"} for r in scored)
    assert all(r["reason"].startswith("reasoning_gym=") for r in scored)


def test_without_output_each_row_is_printed_and_nothing_written(tmp_path, capsys, monkeypatch):
    data = write_rows(tmp_path / "rows.jsonl", ROWS)
    monkeypatch.chdir(tmp_path)
    assert main(["score", "--reward", "numeric", "--data", data]) == 0
    out = capsys.readouterr().out
    assert "row 4: reward 0 (extracted 8, expected 7)" in out and "row 1: reward 1 (extracted 68" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rows.jsonl"]


def test_a_missing_required_option_is_named_without_its_help_text(capsys):
    err = bad(["score", "--data", "rows.jsonl"], capsys)
    assert "error: missing required option --reward; see posttrain score --help" in err


def test_a_reward_module_in_the_current_directory_is_found(tmp_path):
    """`--rl.reward my_rewards:f` with my_rewards.py next to the command, from the console script (whose
    sys.path does not hold the current directory)."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "my_rewards_here.py").write_text("def brevity(prompt_record, completion):\n"
                                                 "    return -len(completion)\n")
    data = write_rows(tmp_path / "rows.jsonl", ROWS[:2])
    script = Path(sys.executable).parent / "posttrain"
    run = subprocess.run([str(script), "score", "--reward", "my_rewards_here:brevity", "--data", data], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "row 2: reward -29" in run.stdout
