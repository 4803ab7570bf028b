"""Every kind of bad input a user can give `posttrain sft` ends in one line and exit code 2.

Each case writes a bad file (or passes a bad option), runs the CLI in-process and checks: exit code 2;
stderr is exactly one line, `posttrain sft: error: ...`, naming what to fix (the file, the line, the
field); no traceback; and no run directory left behind. These are the checks of the data loader,
the configs, the model loader and the run directory seen from where the user stands.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.data.load import load_records
from posttrain.data.records import PreferencePair
from posttrain.errors import DataError

GOOD_CHAT = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}


def jsonl(*rows) -> bytes:
    """Rows given as dicts become JSON lines; bytes are written as they are (for broken lines)."""
    return b"".join(r if isinstance(r, bytes) else json.dumps(r).encode() + b"\n" for r in rows)


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


@dataclass(frozen=True)
class Case:
    """`files` are written into the working directory; `args` follow `posttrain sft`."""

    files: dict[str, bytes | str]
    args: list[str]
    expect: list[str]  # words the one-line message must contain
    env: dict[str, str] = field(default_factory=dict)


def data(content: bytes | str, *more: str, name: str = "bad.jsonl", expect: list[str]) -> Case:
    return Case({name: content}, ["--data.train", name, *more], expect)


CASES = {
    "missing field": data(jsonl({"messages": [{"role": "user"}]}), expect=["bad.jsonl:1", "messages[0].content", "missing"]),
    "wrong type": data(jsonl({"text": 5}), expect=["bad.jsonl:1", '"text"', "expected a string, got a number"]),
    "empty file": data(b"", expect=["bad.jsonl", "empty"]),
    "only blank lines": data(b"\n  \n\n", expect=["bad.jsonl", "only blank lines"]),
    "bad JSON on line 3": data(jsonl(GOOD_CHAT, GOOD_CHAT, b'{"messages": [\n', GOOD_CHAT),
                               expect=["bad.jsonl:3", "invalid JSON"]),
    "non-UTF-8 on line 2": data(jsonl(GOOD_CHAT, b'{"text": "caf\xe9"}\n'), expect=["bad.jsonl:2", "UTF-8", "0xe9"]),
    "empty messages": data(jsonl({"messages": []}), expect=["bad.jsonl:1", '"messages"', "empty list"]),
    "unknown role": data(jsonl(chat(("user", "Hi"), ("bot", "Hello"))),
                         expect=["bad.jsonl:1", "messages[1].role", "unknown role 'bot'"]),
    "no assistant turn": data(jsonl(chat(("system", "Be brief."), ("user", "Hi"))),
                              expect=["bad.jsonl:1", '"messages"', "no assistant turn"]),
    "preference file given to sft": data(jsonl({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}),
                                         expect=["bad.jsonl:1", "preference record", "conversation"]),
    "JSON file that is not an array": data(json.dumps(GOOD_CHAT), name="bad.json",
                                           expect=["bad.json", "top level is an object", "array"]),
    "CSV row with too many cells": data("text\nhello\n\"a\",\"b\"\n", name="bad.csv",
                                        expect=["bad.csv:3", "2 cells", "1 columns"]),
    "nonexistent path": Case({}, ["--data.train", "missing.jsonl"], ["missing.jsonl", "no such file"]),
    "nonexistent eval path": Case({"ok.jsonl": jsonl(GOOD_CHAT)}, ["--data.train", "ok.jsonl", "--data.eval", "gone.jsonl"],
                                  ["gone.jsonl", "no such file"]),
    "unknown builtin": Case({}, ["--data.train", "builtin:arithmatic"],
                            ["builtin:arithmatic", "unknown built-in task", "did you mean 'arithmetic'"]),
    "bad builtin option": Case({}, ["--data.train", "builtin:arithmetic?digits=many"],
                               ["builtin:arithmetic?digits=many", "digits"]),
    "unsupported extension": data("Hi there", name="notes.txt", expect=["notes.txt", "unsupported file type '.txt'"]),
    "bad config value": Case({}, ["--optim.lr", "-1"], ["optim.lr=-1.0", "must be > 0"]),
    "bad max_length": Case({}, ["--data.max-length", "4"], ["data.max_length=4", ">= 8"]),
    "bad type for a CLI option": Case({}, ["--optim.lr", "fast"], ["--optim.lr", "'fast'", "posttrain sft --help"]),
    "misspelt CLI option": Case({}, ["--optim.lrr", "0.1"], ["--optim.lrr", "did you mean --optim.lr?"]),
    "misspelt CLI option with a value": Case({}, ["--optim.max-step", "5"], [
        "error: unrecognized option --optim.max-step (did you mean --optim.max-steps?); see posttrain sft --help"]),
    "misspelt CLI option=value": Case({}, ["--optim.max-step=5"], [
        "error: unrecognized option --optim.max-step (did you mean --optim.max-steps?); see posttrain sft --help"]),
    "a flag without its section": Case({}, ["--no-progress"], [  # the flag's form typed, not its first form
        "error: unrecognized option --no-progress (did you mean --run.no-progress?); see posttrain sft --help"]),
    "invalid choice": Case({}, ["--data.truncation", "cut"], ["--data.truncation", "'cut'", "truncate"]),
    "unknown key in a YAML config": Case({"run.yaml": "optim:\n  lrate: 0.1\n"}, ["--config", "run.yaml"],
                                         ["run.yaml", "unknown config key 'optim.lrate'"]),
    "unparsable YAML config": Case({"run.yaml": "optim: [1, 2\n"}, ["--config", "run.yaml"],
                                   ["run.yaml", "cannot parse", "line 2"]),
    "wrong type in a YAML config": Case({"run.yaml": "model:\n  lora_r: 2.5\n"}, ["--config", "run.yaml"],
                                        ["run.yaml", "model.lora_r=2.5", "expected int"]),
    "config file not found": Case({}, ["--config", "nowhere.yaml"], ["nowhere.yaml", "config file not found"]),
    "example longer than max_length": data(jsonl(chat(("user", "count " * 40), ("assistant", "1 2 3 4 5 6 7 8"))),
                                           "--data.max-length", "16",
                                           expect=["bad.jsonl:1:", "--data.max-length", "--data.truncation"]),
    "unknown model offline": Case({"ok.jsonl": jsonl(GOOD_CHAT)}, ["--data.train", "ok.jsonl", "--model.name", "nobody/nothing"],
                                  ["'nobody/nothing'", "offline"], env={"HF_HUB_OFFLINE": "1"}),
    "model dir without config.json": Case({"ok.jsonl": jsonl(GOOD_CHAT), "mymodel/weights.bin": b"\0"},
                                          ["--data.train", "ok.jsonl", "--model.name", "mymodel"],
                                          ["mymodel", "no config.json"]),
    "nothing to resume": Case({"ok.jsonl": jsonl(GOOD_CHAT)}, ["--data.train", "ok.jsonl", "--run.resume"],
                              ["x", "nothing to resume", "--run.resume"]),
}


def run_sft(tmp_path: Path, case: Case, capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.chdir(tmp_path)
    for key, value in case.env.items():
        monkeypatch.setenv(key, value)
    for name, content in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content.encode() if isinstance(content, str) else content)
    code = main(["sft", *case.args, "--run.output-dir", "tmp", "--run.name", "x", "--run.no-progress"])
    return code, capsys.readouterr().err


def one_line_error(err: str, command: str = "sft") -> str:
    """The single `posttrain COMMAND: error: ...` line of `err`; fails on anything more."""
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"posttrain {command}: error: "), err
    return lines[0]


def test_there_are_many_kinds_of_bad_input():
    assert len(CASES) >= 18


@pytest.mark.parametrize("kind", CASES)
def test_bad_input_gives_one_line_and_exit_2(kind, tmp_path, capsys, monkeypatch, tiny_dir):
    case = CASES[kind]
    code, err = run_sft(tmp_path, case, capsys, monkeypatch)
    line = one_line_error(err)
    assert code == 2
    for word in case.expect:
        assert word in line, f"{word!r} not in {line!r}"
    assert not (tmp_path / "tmp" / "x").exists(), "a user mistake left a run directory behind"


def test_existing_run_is_refused_and_left_untouched(tmp_path, capsys, monkeypatch, tiny_dir):
    run = tmp_path / "tmp" / "x"
    run.mkdir(parents=True)
    (run / "config.json").write_text('{"mine": true}')
    case = Case({"ok.jsonl": jsonl(GOOD_CHAT)}, ["--data.train", "ok.jsonl"], [])
    code, err = run_sft(tmp_path, case, capsys, monkeypatch)
    line = one_line_error(err)
    assert code == 2
    assert "already exists" in line and "--run.overwrite" in line and "--run.resume" in line
    assert [p.name for p in run.iterdir()] == ["config.json"]
    assert (run / "config.json").read_text() == '{"mine": true}'


def test_several_bad_rows_give_a_summary_first(tmp_path, capsys, monkeypatch, tiny_dir):
    """3 bad rows out of 4: the first line counts them, the next lines quote each (a multi-line error is
    allowed here, and only here, because one line cannot name three places)."""
    rows = jsonl(GOOD_CHAT, {"text": 1}, {"messages": []}, chat(("user", "Hi"), ("robot", "Hello")))
    code, err = run_sft(tmp_path, data(rows, expect=[]), capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    first, *rest = err.splitlines()
    assert first == ("posttrain sft: error: bad.jsonl: 3 of 4 rows are invalid (--data.invalid skip drops invalid rows "
                     "and says how many); first 3:")
    assert [line.split(":")[1] for line in rest] == ["2", "3", "4"]
    assert not (tmp_path / "tmp" / "x").exists()


def test_identical_chosen_and_rejected_is_refused(tmp_path):
    """No command trains on preferences yet, so the loader is asked directly, as `dpo`/`rm` will ask it."""
    path = tmp_path / "prefs.jsonl"
    path.write_bytes(jsonl({"prompt": "Hi", "chosen": "Hello!", "rejected": "Bye."},
                           {"prompt": "Hi", "chosen": "Hello!", "rejected": "Hello!"}))
    with pytest.raises(DataError) as info:
        load_records(str(path), accept=(PreferencePair,))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:2: ") and '"rejected"' in message and "identical to chosen" in message


def test_command_line_error_in_a_real_process(tmp_path):
    """The installed entry point, not just `main()`: exit code 2, one line on stderr, nothing written."""
    proc = subprocess.run(
        [sys.executable, "-m", "posttrain", "sft", "--data.train", "missing.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines() == ["posttrain sft: error: missing.jsonl: no such file or folder"]
    assert list(tmp_path.iterdir()) == []


UTF8_BOX = """\
╭─ Unrecognized options ────────────────────────────────╮
│ Unrecognized options: --optim.lrr, 3                  │
│ ───────────────────────────────────────────────────── │
│ Perhaps you meant:                                    │
│     --optim.lr FLOAT                                  │
│         Peak learning rate of AdamW. (default: 0.001) │
│ ───────────────────────────────────────────────────── │
│ For full helptext, run posttrain sft --help           │
╰───────────────────────────────────────────────────────╯
"""
ASCII_BOX = """\
 Unrecognized options
 -------------------------------------------------------
  Unrecognized options: --optim.lrr, 3
  -------------------------------------------------------
  Perhaps you meant:
      --optim.lr FLOAT
          Peak learning rate of AdamW. (default: 0.001)
  -------------------------------------------------------
  For full helptext, run posttrain sft --help
"""


@pytest.mark.parametrize("box", [UTF8_BOX, ASCII_BOX, "\x1b[1m" + UTF8_BOX.replace("Unrecognized", "\x1b[31mUnrecognized")])
def test_tyro_error_box_becomes_one_line(box):
    """tyro draws `─` boxes when stdout is UTF-8, `-` rules otherwise, and adds colour on a terminal."""
    from posttrain.config_parse import one_line_parse_error

    assert one_line_parse_error(box, "posttrain sft") == (
        "unrecognized option --optim.lrr (did you mean --optim.lr?); see posttrain sft --help"
    )


SEVERAL_UNKNOWN = """\
╭─ Unrecognized options ────────────────────────────────╮
│ Unrecognized options: --optim.lrr, 3, --foo           │
│ ───────────────────────────────────────────────────── │
│ Arguments similar to --optim.lrr:                     │
│     --optim.lr FLOAT                                  │
│         Peak learning rate of AdamW. (default: 0.001) │
│ ───────────────────────────────────────────────────── │
│ For full helptext, run posttrain sft --help           │
╰───────────────────────────────────────────────────────╯
"""


def test_several_unknown_options_each_get_their_suggestion_and_no_values():
    from posttrain.config_parse import one_line_parse_error

    assert one_line_parse_error(SEVERAL_UNKNOWN, "posttrain sft") == (
        "unrecognized options --optim.lrr (did you mean --optim.lr?), --foo; see posttrain sft --help"
    )


@pytest.mark.parametrize("command, option, suggested", [
    ("sft", "--optim.learning-rate", "--optim.lr"),  # transformers' TrainingArguments names, under a section or not
    ("sft", "--learning_rate", "--optim.lr"),
    ("dpo", "--beta", "--dpo.beta"),
    ("grpo", "--num-generations", "--rl.group-size"),  # TRL's GRPOConfig
    ("grpo", "--run.steps", "--optim.max-steps"),
    ("sft", "--run.max-steps", "--optim.max-steps"),  # the right name under the wrong section
    ("eval", "--learning-rate", None),  # a command without that option suggests nothing
])
def test_other_trainers_option_names_point_to_posttrains(command, option, suggested, capsys):
    from posttrain.cli import main

    assert main([command, option, "1"]) == 2
    err = capsys.readouterr().err
    assert f"unrecognized option {option}" in err and err.count("\n") == 1
    assert (f"(did you mean {suggested}?)" in err) if suggested else "did you mean" not in err


@pytest.mark.parametrize("argv, field", [
    (["data", "pairs", "--output", "p.jsonl", "--model.lora-r", "8"], "model.lora_r=8"),
    (["generate", "--output", "g.jsonl", "--model.gradient-checkpointing"], "model.gradient_checkpointing=True"),
    (["eval", "--model.lora-r", "4"], "model.lora_r=4"),
])
def test_sampling_commands_refuse_training_only_model_options(argv, field, tmp_path, monkeypatch, capsys):
    from posttrain.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert field in err and "only samples" in err and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


EVAL_CASES = {
    "unknown task": Case({}, ["--tasks", "builtin:arithmatic/heldout"],
                         ["builtin:arithmatic", "unknown built-in task", "did you mean 'arithmetic'"]),
    "task file not found": Case({}, ["--tasks", "builtin:arithmetic/heldout", "mine.jsonl"], ["mine.jsonl", "no such file"]),
    "model dir that is not a model": Case({"mymodel/weights.bin": b"\0"}, ["--models", "tiny", "mymodel"],
                                          ["mymodel", "no config.json"]),
    "a run dir given as a model": Case({"runs/sft/lineage.json": "{}", "runs/sft/checkpoints/x": ""},
                                       ["--models", "runs/sft"], ["runs/sft", "run directory, not a model", "final"]),
    "compare-to a file that is not results.json": Case({"old.json": '{"accuracy": []}'}, ["--compare-to", "old.json"],
                                                       ["--compare-to old.json", "not a posttrain results.json"]),
    "compare-to a file that is not JSON": Case({"old.json": "accuracy 0.5"}, ["--compare-to", "old.json"],
                                               ["--compare-to old.json", "not JSON"]),
    "compare-to a missing file": Case({}, ["--compare-to", "gone/results.json"], ["gone/results.json", "no such file"]),
    "two models with one label": Case({}, ["--models", "tiny", "tiny"], ["tiny", "same label", "--labels"]),
    "labels of the wrong count": Case({}, ["--models", "tiny", "tiny-small", "--labels", "a"], ["labels", "one label"]),
    "unknown rater": Case({}, ["--judge", "rater:kind"], ["rater:kind", "unknown rater", "concise"]),
    "reward-model judge without a reward model": Case({}, ["--judge", "reward-model"], ["judge", "--reward-model"]),
    "several greedy samples": Case({}, ["--n-samples", "4"], ["n_samples=4", "temperature"]),
    "a task file without answers": Case({"mine.jsonl": '{"prompt": "What is 2 + 2?"}\n'},
                                        ["--tasks", "mine.jsonl"], ["mine.jsonl:1", 'no "answer" field']),
}


@pytest.mark.parametrize("kind", EVAL_CASES)
def test_bad_eval_input_gives_one_line_and_exit_2(kind, tmp_path, capsys, monkeypatch, tiny_dir):
    case = EVAL_CASES[kind]
    monkeypatch.chdir(tmp_path)
    for name, content in case.files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(content.encode() if isinstance(content, str) else content)
    code = main(["eval", *case.args, "--output-dir", "out", "--limit", "2", "--no-progress"])
    line = one_line_error(capsys.readouterr().err, "eval")
    assert code == 2
    for word in case.expect:
        assert word in line, f"{word!r} not in {line!r}"
    assert not (tmp_path / "out").exists(), "a user mistake left an evaluation behind"


def test_models_with_different_tokenizers_judged_by_a_reward_model(tmp_path, capsys, tiny_dir):
    """A copy of the tiny model with one token added to its tokenizer, beside the tiny model and a reward model
    made from it: the error names the two models whose tokenizers differ, before any weights load."""
    import shutil

    from transformers import AutoTokenizer

    from posttrain.config import ModelConfig
    from posttrain.models.heads import load_reward_model, save_reward_model

    other = tmp_path / "other"
    shutil.copytree(tiny_dir, other)
    tokenizer = AutoTokenizer.from_pretrained(other)
    tokenizer.add_tokens(["<new-token>"])
    tokenizer.save_pretrained(other)
    model, rm_tokenizer = load_reward_model(ModelConfig(name=str(tiny_dir)), seed=0)
    rm = save_reward_model(model, rm_tokenizer, tmp_path / "rm" / "final", {"kind": "bradley_terry",
                                                                              "pooling": "last_token"})
    capsys.readouterr()  # the loaders' progress bars, when another test turned them on
    code = main(["eval", "--models", "tiny", str(other), "--reward-model", str(rm), "--output-dir",
                 str(tmp_path / "out"), "--no-progress"])
    line = one_line_error(capsys.readouterr().err, "eval")
    assert code == 2
    assert f"--reward-model {rm}" in line and "tiny and other have different tokenizers" in line, line
    assert not (tmp_path / "out").exists()


def test_under_torchrun_an_option_error_is_said_once_and_other_errors_name_their_rank(tmp_path, monkeypatch,
                                                                                        capsys):
    """Every process checks the same options, so only rank 0 prints their error; any other error may be one
    process's own (its share of the completions), so the others print it too, with their rank."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, expected in (("0", "posttrain sft: error: optim.lr=-1.0: must be > 0\n"), ("1", "")):
        monkeypatch.setenv("RANK", rank)
        assert main(["sft", "--optim.lr", "-1"]) == 2
        assert capsys.readouterr().err == expected
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    assert main(["score", "--data", "bad.jsonl", "--reward", "numeric"]) == 2  # RANK=1
    assert capsys.readouterr().err.startswith("posttrain score (rank 1): error: bad.jsonl:1")
