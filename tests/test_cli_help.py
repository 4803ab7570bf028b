"""What `posttrain COMMAND --help` shows and how config files are read: one column of option groups, docstrings
as flowing paragraphs, `--config` and `--version` listed, file keys spelt as options or as fields."""

from __future__ import annotations

import re

import pytest

from posttrain.cli import main
from posttrain.config_parse import parse_config
from posttrain.recipes.sft import SFTConfig


def help_text(command: str, capsys, monkeypatch, columns: int = 250) -> str:
    monkeypatch.setenv("COLUMNS", str(columns))
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    return re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)


def option_helps(text: str) -> dict[str, str]:
    """`--option` -> its help text joined over its lines (boxes drawn with `│`, or none when stdout is not UTF-8)."""
    return {name: " ".join(lines) for name, lines in help_blocks(text).items()}


def help_lines(text: str) -> list[str]:
    return [line.replace("│", " ").rstrip() for line in text.splitlines()]


def test_help_is_one_column_on_a_wide_terminal(capsys, monkeypatch):
    text = help_text("sft", capsys, monkeypatch)
    assert max(len(line) for line in text.splitlines()) <= 120
    assert all(line.count("╭") <= 1 for line in text.splitlines()), "option groups side by side"


def test_docstring_line_breaks_are_spaces(capsys, monkeypatch):
    """`posttrain eval --help` printed "`numeric`," alone on a line: tyro keeps a docstring's line break before a
    line that starts with a backtick. Now a help reads as its docstring with whitespace collapsed, and every line of
    it but its last is filled to within a word of the help column's width."""
    text = help_text("eval", capsys, monkeypatch)
    helps = option_helps(text)
    assert helps["--reward"].startswith("How a completion is scored: unset uses a built-in task's own reward (else "
                                        "`numeric`); `numeric`, `exact`, `contains`")
    blocks = help_blocks(text)
    width = max(len(line) for lines in blocks.values() for line in lines)
    ragged = {name: lines for name, lines in blocks.items() if any(len(line) < width - 25 for line in lines[:-1])}
    assert not ragged, ragged


def help_blocks(text: str) -> dict[str, list[str]]:
    """`--option` -> the lines of its help text, stripped."""
    blocks: dict[str, list[str]] = {}
    name = None
    for line in help_lines(text):
        if m := re.match(r" {1,3}(--[\w.-]+)(?:[ ,]\S*)*?(?:\s{2,}(\S.*))?$", line):
            name = m.group(1)
            blocks[name] = [m.group(2)] if m.group(2) else []
        elif name and line.startswith(" " * 5):
            blocks[name].append(line.strip())
        else:
            name = None
    return blocks


def test_config_and_version_are_listed(capsys, monkeypatch):
    helps = option_helps(help_text("dpo", capsys, monkeypatch))
    assert "YAML, TOML or JSON" in helps["--config"] and "--version" in helps


def test_sft_help_is_short_on_benchmarks(capsys, monkeypatch):
    helps = option_helps(help_text("sft", capsys, monkeypatch))
    assert "--data.eval-fraction" in helps
    bucket = helps["--data.bucket-by-length"]
    assert "bench" not in bucket and "docs/algorithms/sft.md" in bucket
    assert "models/attention.py" not in helps["--data.padding-free"]


@pytest.mark.parametrize("suffix,text", [
    (".yaml", "optim:\n  max-steps: 7\n  warmup_steps: 3\ndata:\n  max-length: 99\nrun:\n  no-progress: true\n"),
    (".toml", "[optim]\nmax-steps = 7\nwarmup_steps = 3\n[data]\nmax-length = 99\n"),
])
def test_config_file_keys_as_options_or_fields(tmp_path, suffix, text):
    """docs/config.md says a file mirrors the option names: `max-steps` and `max_steps` both work."""
    path = tmp_path / f"run{suffix}"
    path.write_text(text.replace("run:\n  no-progress: true\n", ""))
    cfg = parse_config(SFTConfig, ["--config", str(path), "--optim.lr", "0.5"])
    assert (cfg.optim.max_steps, cfg.optim.warmup_steps, cfg.data.max_length, cfg.optim.lr) == (7, 3, 99, 0.5)


def test_a_list_option_takes_one_value_in_a_file_as_on_the_command_line(tmp_path):
    """`trackers: tensorboard` was refused ('expected a list, got str') where --run.trackers tensorboard works; a
    value of the wrong kind in the list is still named."""
    from posttrain.errors import ConfigError
    from posttrain.generate import GenerateConfig

    path = tmp_path / "run.yaml"
    path.write_text("run:\n  trackers: wandb\n")
    assert parse_config(SFTConfig, ["--config", str(path)]).run.trackers == ("wandb",)
    path.write_text("sampling:\n  stop: END\n")
    assert parse_config(GenerateConfig, ["--config", str(path)]).sampling.stop == ("END",)
    path.write_text("run:\n  trackers: [tensorboard, 3]\n")
    with pytest.raises(ConfigError, match=r"run.trackers\[1\]=3: expected one of"):
        parse_config(SFTConfig, ["--config", str(path)])


def test_config_key_given_twice_is_refused(tmp_path):
    from posttrain.errors import ConfigError

    path = tmp_path / "run.yaml"
    path.write_text("optim:\n  max-steps: 7\n  max_steps: 8\n")
    with pytest.raises(ConfigError, match="optim.max_steps' is given twice"):
        parse_config(SFTConfig, ["--config", str(path)])


def test_config_reference_shows_each_commands_own_defaults():
    """docs/config.md listed OptimConfig's lr 1e-3 and warmup 0 and RunConfig's name `run` for every command."""
    from posttrain.cli import config_reference

    sections = re.split(r"^## ", config_reference(), flags=re.M)
    by_command = {s.split("`")[1]: s for s in sections[1:]}

    def default(command: str, option: str) -> str:
        return re.search(rf"^\| `{re.escape(option)}` \| `[^|]*(?:\\\|[^|]*)*` \| (.*?) \|", by_command[command],
                         re.M).group(1)

    assert [default("posttrain sft", o) for o in ("--optim.lr", "--optim.warmup-steps", "--run.name")] == [
        "`0.001`", "`20`", "`'sft'`"]
    assert [default("posttrain rm", o) for o in ("--optim.lr", "--optim.warmup-steps", "--run.name")] == [
        "`0.0003`", "`10`", "`'rm'`"]
    assert [default("posttrain dpo", o) for o in ("--optim.lr", "--optim.warmup-steps", "--run.name")] == [
        "`0.0001`", "`10`", "`'dpo'`"]
    assert default("posttrain eval", "--sampling.temperature") == "`0.0`"
    assert default("posttrain generate", "--sampling.temperature") == "`1.0`"
    assert default("posttrain data pairs", "--output") == "required"


def test_help_into_a_closed_pipe_stops_quietly():
    """`posttrain sft --help | head` closes the pipe early: no BrokenPipeError traceback, the shell's status 141."""
    import subprocess
    import sys

    out = subprocess.run(f"{sys.executable} -m posttrain sft --help | head -1", shell=True, capture_output=True,
                         text=True, timeout=120, executable="/bin/bash")
    assert out.stdout.startswith("usage: posttrain sft") and "Traceback" not in out.stderr, out.stderr
    # `true` reads nothing and is gone long before Python has started: the write always meets a closed pipe
    out = subprocess.run(f"set -o pipefail; {sys.executable} -m posttrain sft --help | true", shell=True,
                         capture_output=True, text=True, timeout=120, executable="/bin/bash")
    assert (out.returncode, out.stderr) == (141, ""), out.stderr


def test_ctrl_c_under_torchrun_says_interrupted_once(capsys, monkeypatch):
    """Ctrl-C reaches every torchrun process: 'posttrain sft: interrupted' came once per rank."""
    from posttrain import cli

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setitem(cli.COMMANDS, "sft", interrupted)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank, said in (("1", ""), ("0", "posttrain sft: interrupted\n")):
        monkeypatch.setenv("RANK", rank)
        assert cli.main(["sft"]) == 130
        assert capsys.readouterr().err == said
