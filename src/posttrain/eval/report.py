"""`posttrain report RUN_DIR [RUN_DIR ...] [-o report.html]`: one self-contained HTML file about runs and evaluations.

What it shows: each run's training curves (eval/figures.py: one figure per metric group, every run on shared
axes), the final held-out figures, the evaluation tables of any `results.json` (a run's `eval/results.json`, or
one passed directly; the format is docs/evaluation.md's), two models' responses side by side with their scores
(`samples.jsonl` rows of the same task and prompt), and each run's config and lineage.

The file needs nothing else: the plots are inline SVG, the styles inline, no script at all, and a
Content-Security-Policy meta tag forbids scripts and every network fetch, so it opens from disk anywhere.
Model outputs and every name read from a file are untrusted: Jinja2 escapes them (autoescape on), and the
SVGs are checked (`figures.checked_svg`). Every input is read and checked before anything is written, and the
file is written atomically.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import tyro

from posttrain.errors import UserError
from posttrain.eval.compare import check_results
from posttrain.files import jsonl_lines

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
EVAL_FORMAT = "posttrain-eval/"
# results.json keys whose rows are figures with an interval, with the columns that name a row before the value.
# results.json key, title, the columns naming a row, and whether its values are fractions (shown as percentages,
# as `posttrain eval` prints them; a score or a length as a number)
FIGURE_TABLES = (("accuracy", "Accuracy", ("model", "task"), True), ("pass_at_k", "pass@k", ("model", "task", "k"), True),
                 ("rm_score", "Reward-model score", ("model", "task"), False),
                 ("length", "Response length (tokens)", ("model", "task"), False))


@dataclass
class ReportConfig:
    """One self-contained HTML file (no network, no script) with the training curves of runs, their evaluations'
    tables with 95% intervals, and two models' responses side by side."""

    paths: Annotated[list[str], tyro.conf.Positional, tyro.conf.arg(metavar="PATH")] = field(default_factory=list)
    """Run directories (holding metrics.jsonl; their eval/results.json is read too) and evaluations (a
    results.json, or a folder holding one, with samples.jsonl beside it)."""
    output: Annotated[str, tyro.conf.arg(aliases=("-o",))] = "report.html"
    """The HTML file to write (`-o` for short)."""
    max_samples: int = 50
    """At most this many prompts in the side-by-side table."""
    compare: tuple[str, str] | None = None
    """The two models (labels in samples.jsonl, or an RL run's held-out answers as `RUN step N`) shown side by
    side; unset: the first found and up to three more that answered the same prompts (an RL run alone: its
    first and last evaluation); the page names the others."""


@dataclass
class RunData:
    name: str
    path: Path
    metrics: list[dict[str, Any]]
    config: dict[str, Any] | None
    lineage: dict[str, Any] | None


@dataclass
class Evaluation:
    name: str
    path: Path  # the results.json
    results: dict[str, Any]
    samples: list[dict[str, Any]]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The objects of a JSONL file; a bad line is a one-line error naming the file and line."""
    rows = []
    for i, line in enumerate(jsonl_lines(read_text(path)), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{i}: not JSON ({e.msg}: column {e.colno})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{i}: expected a JSON object, got {type(row).__name__}")
        rows.append(row)
    return rows


def read_text(path: Path) -> str:
    """A run's or an evaluation's file as text; a one-line error for one that is not UTF-8 (a binary or a
    hand-saved file), naming it."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); give the "
                        "file posttrain wrote") from None


def read_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not JSON ({e})") from None  # e: the message, line and column


def load_run(path: Path) -> RunData:
    """A run directory: metrics.jsonl is required (with one row at least), config.json and lineage.json are not."""
    rows = read_jsonl(path / "metrics.jsonl")
    if not rows:
        raise UserError(f"{path / 'metrics.jsonl'}: empty (the run logged no step); train it first")
    optional = {name: read_json(path / f"{name}.json") if (path / f"{name}.json").is_file() else None
                for name in ("config", "lineage")}
    return RunData(path.resolve().name, path, rows, optional["config"], optional["lineage"])


def heldout_answers(run: RunData) -> list[Evaluation]:
    """An RL run's held-out answers (`samples/eval-step-N.jsonl`, written by grpo, rloo and ppo) at its first and
    its last evaluation, as two models of the side-by-side table ("grpo step 0", "grpo step 30"): what training
    changed. Rows are matched by prompt; a file that is not there gives nothing."""
    files = {}
    for f in (run.path / "samples").glob("eval-step-*.jsonl"):
        step = f.stem.removeprefix("eval-step-")
        if step.isdigit():
            files[int(step)] = f
    if not files:
        return []
    index: dict[str, int] = {}  # prompt text -> its place, as in the first file
    out = []
    for step in sorted({min(files), max(files)}):
        samples = []
        for row in read_jsonl(files[step]):
            prompt = str(row.get("prompt", ""))
            samples.append({"model": f"{run.name} step {step}", "task": "held-out", "sample_index": 0,
                            "prompt_index": index.setdefault(prompt, len(index)), "prompt": prompt,
                            "answer": row.get("answer"), "completion": row.get("completion", ""),
                            "score": row.get("reward", row.get("proxy_score")),  # grpo/rloo, ppo
                            "reason": row.get("reason")})
        out.append(Evaluation(f"{run.name} step {step}", files[step], {}, samples))
    return out


def load_evaluation(path: Path, name: str) -> Evaluation:
    """A results.json of `posttrain eval` (format posttrain-eval/1) and the samples.jsonl beside it, if any."""
    results = read_json(path)
    if not isinstance(results, dict) or not str(results.get("format", "")).startswith(EVAL_FORMAT):
        raise UserError(f"{path}: not a posttrain evaluation (expected \"format\": \"posttrain-eval/1\"); "
                        "pass the results.json that posttrain eval wrote")
    check_results(results, str(path))  # the rows and fields the tables read, before anything is rendered
    samples_file = path.parent / "samples.jsonl"
    samples = read_jsonl(samples_file) if samples_file.is_file() else []
    return Evaluation(name, path, results, samples)


def load_inputs(paths: list[str]) -> tuple[list[RunData], list[Evaluation]]:
    """Sort the paths into runs and evaluations; any path that is neither is a one-line error."""
    if not paths:
        raise UserError("no run directory given; e.g. posttrain report runs/sft runs/dpo -o report.html")
    runs, evals = [], []
    seen: set[Path] = set()  # a run or results.json given twice (or a run and its own eval/) is shown once

    def add_evaluation(path: Path, name: str) -> None:
        if path.resolve() not in seen:
            seen.add(path.resolve())
            evals.append(load_evaluation(path, name))

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise UserError(f"{p}: no such file or directory; pass a run directory (e.g. runs/sft) or a results.json")
        if p.is_file():
            if p.suffix != ".json":
                raise UserError(f"{p}: expected a run directory or a results.json")
            add_evaluation(p, str(p))
        elif (p / "metrics.jsonl").is_file():
            if p.resolve() in seen:
                continue
            seen.add(p.resolve())
            run = load_run(p)
            runs.append(run)
            if (p / "eval" / "results.json").is_file():
                add_evaluation(p / "eval" / "results.json", f"{run.name}/eval")
        elif (p / "results.json").is_file():
            add_evaluation(p / "results.json", str(p))
        else:
            raise UserError(f"{p}: no metrics.jsonl (not a run directory) and no results.json (not an evaluation); "
                            "pass a run directory such as runs/sft")
    _distinct_names(runs)
    return runs, evals


def _distinct_names(runs: list[RunData]) -> None:
    """Runs with the same folder name (a/sft, b/sft) are named by their parent too."""
    names = [r.name for r in runs]
    for r in runs:
        if names.count(r.name) > 1:
            r.name = f"{r.path.resolve().parent.name}/{r.name}"


# -- what the page shows, as plain data ------------------------------------------------------------


def figures(runs: list[RunData]) -> list[tuple[str, str]]:
    """(title, inline SVG) for every metric group that some run logged."""
    from posttrain.eval.figures import curves_svg, metric_groups

    names = {k for r in runs for row in r.metrics for k in row if isinstance(row[k], (int, float))}
    by_run = {r.name: r.metrics for r in runs}
    return [(title, curves_svg(title, by_run, metrics)) for title, metrics in metric_groups(names).items()]


def last_values(rows: list[dict[str, Any]], prefix: str, skip: tuple[str, ...] = ()) -> dict[str, float]:
    """The last logged value of each metric starting with `prefix` (e.g. the held-out `eval/` figures), but for
    those starting with one of `skip`."""
    out: dict[str, float] = {}
    for row in rows:
        out.update({k: v for k, v in row.items() if k.startswith(prefix) and isinstance(v, (int, float))
                    and not (skip and k.startswith(skip))})
    return dict(sorted(out.items()))


def run_summary(run: RunData) -> dict[str, Any]:
    from posttrain.eval.figures import SKIPPED

    lineage = run.lineage or {}
    base = lineage.get("base_model") or {}
    return {
        "name": run.name, "path": str(run.path), "steps": max(int(r.get("step", 0)) for r in run.metrics),
        "base_model": base.get("name", ""), "parameters": base.get("parameters"),
        "seconds": last_values(run.metrics, "time/").get("time/train_seconds"),
        "train_loss": last_values(run.metrics, "train/").get("train/loss"),
        "heldout": last_values(run.metrics, "eval/", SKIPPED),  # the counters the curves leave out too
    }


def flatten(d: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Nested dicts as (dotted key, value) rows, for the config table."""
    if not isinstance(d, dict):
        return [(prefix.rstrip("."), d)]
    return [row for k, v in d.items() for row in flatten(v, f"{prefix}{k}.")]


SIDE_BY_SIDE_MODELS = 4  # columns of answers a page can show side by side and still be read


def side_by_side(evals: list[Evaluation], compare: tuple[str, str] | None, cap: int) -> dict[str, Any]:
    """Rows of the models' first samples on the same (task, prompt_index), at most `cap` of them: the two of
    `compare`, else the first model and every other that answered its prompts, up to SIDE_BY_SIDE_MODELS (a third
    model, a DPO run after SFT, was left out of the page when only the first two were shown). `left_out`: the
    models with samples not shown."""
    by_key: dict[tuple[str, int], dict[str, dict]] = {}
    models: list[str] = []
    for ev in evals:
        for row in ev.samples:
            if row.get("sample_index", 0) != 0 or "model" not in row:
                continue
            label, index = str(row["model"]), row.get("prompt_index", 0)
            if not isinstance(index, int):
                raise UserError(f"{ev.path.parent / 'samples.jsonl'}: prompt_index {index!r} of model {label} is not "
                                "an integer (the prompt's position in its task)")
            if label not in models:
                models.append(label)
            by_key.setdefault((str(row.get("task", "")), index), {}).setdefault(label, row)
    if compare is not None:
        missing = [m for m in compare if m not in models]
        if missing:
            raise UserError(f"--compare {' '.join(compare)}: no samples of {', '.join(missing)} (models with samples: "
                            f"{', '.join(models) or 'none'})")
        chosen = list(compare)
    else:  # the first model, and those that answered its prompts (an RL run's held-out answers are other prompts)
        shared = [m for m in models if any(models[0] in cells and m in cells for cells in by_key.values())]
        chosen = shared[:SIDE_BY_SIDE_MODELS]
    rows = [{"task": task, "prompt_index": i, "prompt": next(iter(cells.values())).get("prompt", ""),
             "answer": next(iter(cells.values())).get("answer"), "cells": [cells.get(m) for m in chosen]}
            for (task, i), cells in by_key.items() if all(m in cells for m in chosen)]
    return {"models": chosen, "rows": rows[:cap], "total": len(rows), "left_out": [m for m in models if m not in chosen]}


def evaluation_tables(ev: Evaluation) -> dict[str, Any]:
    r = ev.results
    return {
        "name": ev.name, "path": str(ev.path), "created": r.get("created", ""), "models": r.get("models") or [],
        "tasks": r.get("tasks") or [], "settings": r.get("settings") or {},
        "figures": [(title, keys, r.get(key) or [], fraction) for key, title, keys, fraction in FIGURE_TABLES
                    if r.get(key)],
        "win_rates": r.get("win_rates") or [], "ratings": r.get("ratings") or [],
        "finish_reasons": r.get("finish_reasons") or [],
    }


# -- the page ----------------------------------------------------------------------------------------


def number(value: Any, digits: int = 4) -> str:
    """A figure for a table cell: 4 significant digits; integers as they are; missing as an en dash."""
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return str(value) if isinstance(value, int) else f"{value:.{digits}g}"


def percent(value: Any) -> str:
    """A fraction (accuracy, pass@k, a win rate) as `posttrain eval` prints it: 62.5%; missing as an en dash."""
    return "–" if not isinstance(value, (int, float)) or isinstance(value, bool) else f"{value:.1%}"


def render_report(runs: list[RunData], evals: list[Evaluation], max_samples: int = 50,
                  compare: tuple[str, str] | None = None, title: str = "posttrain report") -> str:
    from jinja2 import Environment, FileSystemLoader, StrictUndefined
    from markupsafe import Markup

    from posttrain import __version__

    env = Environment(loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["num"] = number
    env.filters["pct"] = percent
    env.globals.update(number=number, percent=percent)  # a figure table picks one (FIGURE_TABLES' fraction)
    return env.get_template("report.html").render(
        title=title, csp=Markup(CSP), version=__version__, created=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        runs=[{**run_summary(r), "config": flatten(r.config or {}), "lineage": r.lineage or {}} for r in runs],
        figures=[(t, Markup(svg)) for t, svg in figures(runs)],  # checked by figures.checked_svg
        evaluations=[evaluation_tables(e) for e in evals],
        pairs=side_by_side([*evals, *(a for r in runs for a in heldout_answers(r))], compare, max_samples),
    )


def write_report(paths: list[str], output: str | Path, max_samples: int = 50,
                 compare: tuple[str, str] | None = None, title: str = "posttrain report") -> Path:
    """Read every input (one-line errors), render, then write `output` atomically. Returns its path."""
    from posttrain.files import write_text_atomic

    out = Path(output)
    if out.is_dir():
        raise UserError(f"-o {out}: is a directory; name the HTML file to write, e.g. {out / 'report.html'}")
    if out.exists() and out.suffix.lower() not in (".html", ".htm"):  # a run's weights or metrics, by a typo
        raise UserError(f"-o {out}: exists and is not an HTML file, which a report would replace; name a .html file")
    runs, evals = load_inputs(paths)
    return write_text_atomic(out, render_report(runs, evals, max_samples, compare, title))


def report_command(cfg: ReportConfig) -> Path:
    out = write_report(cfg.paths, cfg.output, cfg.max_samples, cfg.compare)
    print(f"posttrain report: wrote {out} ({len(cfg.paths)} input(s)); open it in a browser", flush=True)
    return out
