"""The one function that parses a recipe's config, and what it is built from.

Values may come from a YAML, TOML or JSON file (`--config run.yaml`) and be overridden on the command line:
file -> dataclass (`from_dict`, refusing unknown keys and wrong types), then tyro's command-line overrides
(`parse_config`); its errors become one line naming the option (`one_line_parse_error`, with did-you-mean and
TRL's familiar names). `reference_markdown` writes docs/config.md from the same docstrings `--help` shows.
The configs themselves are `config.py`'s.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import io
import json
import os
import re
import sys
import textwrap
import types
import typing
from dataclasses import field
from pathlib import Path
from typing import Any, Callable, Literal, TypeVar, Union

import tomllib

from posttrain.errors import ConfigError

T = TypeVar("T")


def from_dict(cls: type[T], d: dict[str, Any], where: str = "") -> T:
    """Build a (nested) config dataclass from a plain dict, refusing unknown keys and values of the wrong type.

    Keys may be written as the options are (`max-steps`) or as the fields are (`max_steps`)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{where or cls.__name__}: expected a table/mapping, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for written, value in d.items():
        key = str(written).replace("-", "_")
        name = f"{where}.{key}" if where else key
        if key not in known:
            raise ConfigError(f"unknown config key {f'{where}.{written}' if where else written!r} "
                              f"(known: {', '.join(known)})")
        if key in kwargs:
            raise ConfigError(f"config key {name!r} is given twice (once with dashes, once with underscores)")
        hint = hints[key]
        kwargs[key] = from_dict(hint, value, name) if dataclasses.is_dataclass(hint) else _typed(value, hint, name)
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where or cls.__name__}: {e}") from None


def _typed(value: Any, hint: Any, name: str) -> Any:
    """A config-file value checked against its field's type hint (a list becomes a tuple where one is wanted, and
    one value a one-item tuple where a list of any length is).

    A number written as a string is read as one: PyYAML reads `1e-3` as a string (YAML 1.1 wants `1.0e-3`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        if value in args:
            return value
        expected = "one of " + ", ".join(map(repr, args))
    elif origin in (Union, types.UnionType):
        for option in args:
            try:
                return _typed(value, option, name)
            except ConfigError:
                pass
        expected = " or ".join("null" if a is type(None) else getattr(a, "__name__", str(a)) for a in args)
    elif origin is tuple:
        variadic = len(args) == 2 and args[1] is Ellipsis  # tuple[X, ...]
        if variadic and isinstance(value, (str, int, float)):  # `trackers: wandb`, as --run.trackers wandb says it
            value = [value]
        if isinstance(value, (list, tuple)) and (variadic or len(value) == len(args)):
            kinds = [args[0]] * len(value) if variadic else args
            return tuple(_typed(v, a, f"{name}[{i}]") for i, (v, a) in enumerate(zip(value, kinds)))
        expected = "a list" if variadic else f"a list of {len(args)} values"
    elif hint is type(None):
        if value is None:
            return None
        expected = "null"
    elif hint in (int, float) and isinstance(value, str):
        with contextlib.suppress(ValueError):
            return hint(value)
        expected = hint.__name__
    elif hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    elif hint in (bool, int, float, str):
        if isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
            return value
        expected = hint.__name__
    else:
        return value  # other types (lists, dicts, paths) are left to the dataclass
    raise ConfigError(f"{name}={value!r}: expected {expected}, got {type(value).__name__}")


def load_config_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    text = p.read_text(encoding="utf-8")
    try:
        if p.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        elif p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"{p}: config files must end in .yaml, .yml, .toml or .json")
    except ConfigError:
        raise
    except Exception as e:  # the parsers' own messages carry line and column
        raise ConfigError(f"{p}: cannot parse: {_parser_message(e)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of config keys at the top level")
    return data


def _parser_message(e: Exception) -> str:
    """One line from a YAML/TOML/JSON parser's error; PyYAML's spans several lines with a code excerpt."""
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        return f"{e.problem} (line {mark.line + 1}, column {mark.column + 1})"
    return " ".join(str(e).split())


CONFIG_HELP = ("A YAML, TOML or JSON file of option values, read before the command line, which overrides it. Its "
               "keys are the option names, nested by section (`optim: {max-steps: 5}`; `max_steps` works too); a "
               "list option takes a list or one value (`run: {trackers: wandb}`).")
HELP_WIDTH = 120  # tyro puts option groups side by side from 130 columns; one column reads top to bottom


def parse_config(cls: type[T], argv: list[str] | None = None, prog: str | None = None) -> T:
    """`--config FILE` (optional) then `--section.field value` overrides -> a validated config.

    `--help` lists the fields of `cls` from their docstrings, plus `--config` and `--version` (handled by
    `posttrain.cli.main`); a parse error becomes one line (`one_line_parse_error`)."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    default = None
    if "--config" in argv:
        i = argv.index("--config")
        if i + 1 >= len(argv):
            raise ConfigError("--config needs a file path")
        path = argv[i + 1]
        del argv[i : i + 2]
        raw = load_config_file(path)  # its errors name the file already
        try:
            default = from_dict(cls, raw)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
    if default is None:
        with contextlib.suppress(TypeError):  # a config with a required field (data pairs' output) has no default
            default = cls()
    # The command's own fields at the top level (no prefix), with --config and --version beside them in --help.
    given = {} if default is None else {"default_factory": lambda: default}
    command = dataclasses.make_dataclass(cls.__name__, [
        ("options", typing.Annotated[cls, tyro.conf.arg(name="")], field(**given)),
        ("config", typing.Annotated[str | None, tyro.conf.arg(metavar="FILE", help=CONFIG_HELP)], None),
        ("version", typing.Annotated[bool, tyro.conf.FlagCreatePairsOff,
                                     tyro.conf.arg(help="Print posttrain's version and exit.")], False),
    ])
    paragraphs = _paragraphs(cls.__doc__ or "").split("\n\n")
    description = "\n\n".join(textwrap.fill(p, HELP_WIDTH) for p in paragraphs)
    printed = io.StringIO()  # tyro draws its parse errors as a multi-line box; we report one line
    failed = False
    try:
        with contextlib.redirect_stderr(printed), _help_layout():
            return tyro.cli(command, args=argv, prog=prog, description=description).options
    except SystemExit as e:
        failed = e.code not in (0, None)
        if failed:
            raise ConfigError(one_line_parse_error(printed.getvalue(), prog or cls.__name__,
                                                   lambda option: familiar_option(option, cls))) from None
        raise
    finally:
        if not failed:  # anything else tyro printed (warnings) still reaches the user
            sys.stderr.write(printed.getvalue())


def _paragraphs(doc: str) -> str:
    """A docstring with its single line breaks made spaces; blank lines still separate paragraphs."""
    return "\n\n".join(" ".join(p.split()) for p in re.split(r"\n\s*\n", doc.strip()))


@contextlib.contextmanager
def _help_layout():
    """While tyro builds the parser: field docstrings read as `_paragraphs` (tyro keeps a line break before
    every docstring line that starts with a non-letter, such as a backtick), and a terminal at most HELP_WIDTH
    wide (one column of option groups; tyro asks `shutil.get_terminal_size`, which reads $COLUMNS first)."""
    import shutil

    from tyro import _docstrings

    original = _docstrings.get_field_docstring

    def field_docstring(*args: Any) -> str | None:
        doc = original(*args)
        return _paragraphs(doc) if doc else doc

    columns = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(min(shutil.get_terminal_size().columns, HELP_WIDTH))
    _docstrings.get_field_docstring = field_docstring
    try:
        yield
    finally:
        _docstrings.get_field_docstring = original
        if columns is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = columns


# The names other trainers (transformers' TrainingArguments, TRL) give to options posttrain names otherwise,
# by their last part: `--optim.learning-rate` and `--learning_rate` both point to `--optim.lr`.
FAMILIAR = {
    "model": "model.name", "model_name": "model.name", "model_name_or_path": "model.name",
    "learning_rate": "optim.lr", "lr_scheduler_type": "optim.schedule", "num_train_epochs": "optim.epochs",
    "per_device_train_batch_size": "optim.batch_size", "train_batch_size": "optim.batch_size",
    "gradient_accumulation_steps": "optim.grad_accum",
    "max_seq_length": "data.max_length", "dataset_name": "data.train", "train_file": "data.train",
    "logging_steps": "run.log_every", "save_steps": "run.save_every", "eval_steps": "run.eval_every",
    "report_to": "run.trackers", "resume_from_checkpoint": "run.resume_from",
    "num_generations": "rl.group_size", "beta": "dpo.beta", "steps": "optim.max_steps",
}


def familiar_option(option: str, cls: type) -> str | None:
    """`--optim.learning-rate` -> `--optim.lr`: the posttrain option of `cls` that FAMILIAR names for the last
    part of an unknown option, when `cls` has it; else the one option of `cls` with that last part under
    another section (`--run.max-steps` -> `--optim.max-steps`)."""
    last = option.lstrip("-").rsplit(".", 1)[-1].replace("-", "_")
    paths = option_paths(cls)
    path = FAMILIAR.get(last)
    if path not in paths:
        same = [p for p in paths if p.rsplit(".", 1)[-1] == last]
        path = same[0] if len(same) == 1 else None
    return "--" + path.replace("_", "-") if path else None


def option_paths(cls: Any, prefix: str = "") -> set[str]:
    """Every option of a config class as a dotted path (`optim.max_steps`), sections included."""
    if not dataclasses.is_dataclass(cls):
        return set()
    out: set[str] = set()
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        out |= {prefix + f.name} | option_paths(hints.get(f.name), f"{prefix}{f.name}.")
    return out


def one_line_parse_error(box: str, prog: str, familiar: Callable[[str], str | None] | None = None) -> str:
    """tyro's error box -> one line: `Error parsing --optim.lr: ...; see PROG --help`, for options tyro does
    not know `unrecognized option --optim.max-step (did you mean --optim.max-steps?); see PROG --help`, and for
    required options not given `missing required options --reward, --data; see PROG --help`.

    The box is a title line, then sections between horizontal rules (drawn with `─`, or `-` when stdout
    is not UTF-8); the first section is the error. For unknown options it lists them with their values
    (`--optim.max-step, 5`), and a "Perhaps you meant:" (one unknown option) or "Arguments similar to
    --X:" section names the closest known option of each."""
    plain = re.sub(r"\x1b\[[0-9;]*m", "", box)  # colour codes, when stdout is a terminal
    lines = [line.strip(" │|╭╮╰╯+").strip() for line in plain.splitlines()]
    lines = [line for line in lines if line][1:]  # [0] is the title
    sections: list[list[str]] = [[]]
    for line in lines:
        if set(line) <= set("─-"):
            sections.append([])
        else:
            sections[-1].append(line)
    sections = [section for section in sections if section]
    message = (" ".join(sections[0]) if sections else " ".join(plain.split())).rstrip(".")
    suggestions: dict[str | None, str] = {}  # unknown option (None: the only one) -> closest known option
    for section in sections[1:]:
        similar = re.fullmatch(r"Arguments similar to (\S+):", section[0])
        if len(section) > 1 and (section[0] == "Perhaps you meant:" or similar):
            # "--run.progress, --run.no-progress  Show ...": a flag's forms, then its help; the form closest to
            # what was typed (--no-progress -> --run.no-progress)
            forms = re.match(r"(--[\w.-]+(?:, --[\w.-]+)*)", section[1])
            names = forms.group(1).split(", ") if forms else [section[1].split()[0]]
            typed = similar.group(1) if similar else (re.findall(r"--[\w.-]+", message) or [""])[0]
            suggestions[similar.group(1) if similar else None] = (
                difflib.get_close_matches(typed, names, n=1, cutoff=0) or names)[0]
    unknown = re.fullmatch(r"Unrecognized options?: (.*)", message)
    if sections and sections[0][0].startswith("Missing from"):  # each option's line, then its help text
        names = [line.split()[0] for line in sections[0][1:] if re.fullmatch(r"--[\w.-]+( \S+| \[.*\])?", line)]
        message = f"missing required option{'s' if len(names) > 1 else ''} {', '.join(names)}" if names else message
    elif unknown:
        names = [a.split("=", 1)[0] for a in unknown.group(1).split(", ") if a.startswith("-")]  # values dropped
        if len(names) == 1 and None in suggestions:
            suggestions[names[0]] = suggestions[None]
        for n in names:  # another trainer's name for an option tyro finds nothing close to
            known = familiar(n) if familiar else None
            if known:
                suggestions[n] = known
        named = [f"{n} (did you mean {suggestions[n]}?)" if n in suggestions else n for n in names]
        message = f"unrecognized option{'s' if len(names) > 1 else ''} {', '.join(named)}" if names else message
    elif None in suggestions:
        message += f" (did you mean {suggestions[None]}?)"
    return f"{message or 'cannot parse the command line'}; see {prog} --help"


def to_jsonable(cfg: Any) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def reference_markdown(commands: dict[str, type]) -> str:
    """The config reference page: for each command, every option with THAT command's default (a recipe's
    OptimConfig has its own lr and warmup), from the same docstrings `--help` shows."""
    from tyro._docstrings import get_field_docstring  # tyro's own reader of attribute docstrings

    lines = ["# Configuration reference", "",
             "Generated by `make docs` (`posttrain.cli.config_reference`); do not edit by hand. Each command lists "
             "its own defaults: the same sub-config (`--optim.*`, `--run.*`) has different ones in different "
             "commands. A file given with `--config` uses the same names, nested by section (`optim: {max-steps: 5}`"
             "; `max_steps` works too); a list option takes a list or one value (`run: {trackers: wandb}`).", ""]

    def default(f: dataclasses.Field) -> Any:
        if f.default is not dataclasses.MISSING:
            return f.default
        return f.default_factory() if f.default_factory is not dataclasses.MISSING else dataclasses.MISSING

    def table(cls: type, obj: Any, prefix: str, title: str) -> list[str]:
        """`obj`: the command's default sub-config (None at the top, where each field's own default is read)."""
        rows = ["| option | type | default | meaning |", "|---|---|---|---|"]
        nested = []
        for f in dataclasses.fields(cls):
            value = default(f) if obj is None else getattr(obj, f.name)
            if dataclasses.is_dataclass(value):
                nested.append((f.name, value))
                continue
            option = f"--{prefix}{f.name}".replace("_", "-")
            doc = " ".join((get_field_docstring(cls, f.name, ()) or "").split())
            ftype = re.sub(r"^Annotated\[(.+?), tyro\.conf\..*\]$", r"\1", str(f.type))  # tyro's markers: not types
            if "tyro.conf.Positional" in str(f.type):
                option = f"{f.name.upper()} ... (positional)"
            ftype = ftype.replace("|", "\\|")
            shown = "required" if value is dataclasses.MISSING else f"`{value!r}`"
            rows.append(f"| `{option}` | `{ftype}` | {shown} | {doc} |")
        out = [title, "", _paragraphs(cls.__doc__ or ""), ""] + (rows + [""] if len(rows) > 2 else [])
        for name, value in nested:
            sub_title = f"### `--{prefix}{name}.*` ({type(value).__name__})".replace("_", "-")
            out += table(type(value), value, f"{prefix}{name}.", sub_title)
        return out

    for command, cls in commands.items():
        lines += table(cls, None, "", f"## `{command}` ({cls.__name__})")
    return "\n".join(lines)
