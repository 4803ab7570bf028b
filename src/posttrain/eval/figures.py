"""Training curves for the report: metrics.jsonl rows grouped into figures, each drawn as inline SVG.

`metric_groups` decides which metrics share a figure (train and held-out loss together, every reward
statistic together, each throughput alone, ...); `curves_svg` draws one group for several runs on shared axes,
run names in the legend. Run and metric names come from files, so they are untrusted: matplotlib writes SVG
text with `<`, `>` and `&` escaped (`svg.fonttype: none` keeps text as text), a `$` is escaped so that it is
never read as mathtext, and `checked_svg` refuses any SVG with a script, a foreign object or an event handler.
"""

from __future__ import annotations

import io
import math
import re
import xml.etree.ElementTree as ET
from typing import Any, Iterable, Mapping, Sequence

# Logged but not worth a curve: a counter, a constant, a one-off total (shown in the report's tables instead).
SKIPPED = ("train/epoch", "time/", "train/pairs_per_group", "eval/pairs_per_group")

# (group title, test on the metric's name without its train/ or eval/ split), first match wins.
GROUPS: tuple[tuple[str, Any], ...] = (
    ("Loss", lambda b: b == "loss" or b.endswith("_loss") or b.endswith("/loss")),
    ("Accuracy", lambda b: "accurac" in b),
    ("KL", lambda b: bool(re.search(r"(^|[/_])kl($|[/_])", b))),
    ("Reward", lambda b: b.startswith("reward") or b.startswith("margin") or b.startswith("score")),
    ("Log-probabilities", lambda b: b.startswith("logps/")),
    ("Learning rate", lambda b: b == "lr"),
    ("Gradient norm", lambda b: b == "grad_norm"),
)
SPLITS = ("train/", "eval/")


def metric_base(name: str) -> str:
    """The metric without its split: `eval/rewards/margins` -> `rewards/margins`, `train/loss` -> `loss`."""
    for split in SPLITS:
        if name.startswith(split):
            return name[len(split):]
    return name


def group_of(name: str) -> str:
    """The figure a metric is drawn in. Throughput metrics (`perf/*`) each get their own, as tokens/s and
    pairs/s differ by orders of magnitude; a metric no rule knows gets a figure named after it."""
    if name.startswith("perf/"):
        return "Throughput: " + name[len("perf/"):].replace("_", " ")
    base = metric_base(name)
    return next((title for title, matches in GROUPS if matches(base)), base)


def metric_groups(names: Iterable[str]) -> dict[str, list[str]]:
    """Figure title -> its metrics (training ones, then eval/ ones, each sorted), figures in the order of GROUPS, then
    throughput, then the rest alphabetically. Names that SKIPPED lists are left out."""
    groups: dict[str, list[str]] = {}
    for name in sorted(set(names)):
        if name == "step" or name.startswith(SKIPPED):
            continue
        groups.setdefault(group_of(name), []).append(name)
    known = [title for title, _ in GROUPS]

    def order(title: str) -> tuple[int, int, str]:
        if title in known:
            return (0, known.index(title), title)
        return (1 if title.startswith("Throughput") else 2, 0, title)

    def split_rank(name: str) -> tuple[int, str]:  # a metric without a split (TRL's rewards/*) is a training one
        return (int(name.startswith("eval/")), metric_base(name))

    return {title: sorted(groups[title], key=split_rank) for title in sorted(groups, key=order)}


def series(rows: Sequence[Mapping[str, Any]], metric: str) -> tuple[list[float], list[float]]:
    """(steps, values) of `metric` in metrics.jsonl `rows`, finite numbers only, in step order."""
    points = sorted((float(r["step"]), float(r[metric])) for r in rows
                    if isinstance(r.get(metric), (int, float)) and not isinstance(r.get(metric), bool)
                    and math.isfinite(float(r[metric])) and isinstance(r.get("step"), (int, float)))
    return [s for s, _ in points], [v for _, v in points]


def thin(steps: list[float], values: list[float], limit: int = 2000) -> tuple[list[float], list[float]]:
    """At most about `limit` points of a series, evenly spaced, the last kept: a 100k-step run stays a small file
    (a figure ~600 px wide cannot show more points than that anyway)."""
    stride = -(-len(steps) // limit)
    if stride <= 1:
        return steps, values
    keep = list(range(0, len(steps), stride))
    if keep[-1] != len(steps) - 1:
        keep.append(len(steps) - 1)
    return [steps[i] for i in keep], [values[i] for i in keep]


def plain_label(text: str) -> str:
    """A file-supplied name as matplotlib should show it: `$` escaped (never mathtext), and a leading `_`
    kept visible (matplotlib leaves labels starting with `_` out of the legend)."""
    text = text.replace("$", r"\$")
    return "\u2009" + text if text.startswith("_") else text


def curves_svg(title: str, runs: Mapping[str, Sequence[Mapping[str, Any]]], metrics: Sequence[str]) -> str:
    """One figure: every run's `metrics` over steps, on shared axes (colour per run; solid for training, dashed
    for held-out; markers where a series has few points). Returns an `<svg>` element as text."""
    from matplotlib import rc_context
    from matplotlib.figure import Figure

    with rc_context({"svg.fonttype": "none", "svg.hashsalt": "posttrain", "font.size": 9}):
        fig = Figure(figsize=(6.4, 3.2), layout="constrained")
        ax = fig.add_subplot()
        colours = [f"C{i % 10}" for i in range(len(runs))]
        styles = ["-", "--", ":", "-."]
        for colour, (run, rows) in zip(colours, runs.items()):
            for k, metric in enumerate(metrics):
                steps, values = thin(*series(rows, metric))
                if not steps:
                    continue
                label = run if len(metrics) == 1 else f"{run} · {metric}"
                ax.plot(steps, values, color=colour, linestyle=styles[k % len(styles)], linewidth=1.4,
                        marker="o" if len(steps) < 30 else None, markersize=3, label=plain_label(label))
        ax.set_title(plain_label(title))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        if len(ax.lines) > 3:  # beside the axes: a long legend inside would hide the lines
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        elif ax.lines:
            ax.legend(fontsize=7, loc="best")
        buffer = io.StringIO()
        fig.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    return checked_svg(buffer.getvalue())


FORBIDDEN_TAGS = {"script", "foreignObject", "iframe", "object", "embed"}


def checked_svg(svg: str) -> str:
    """The `<svg>` element of a matplotlib SVG document (its XML declaration and doctype dropped), after
    checking that it parses and holds no script, foreign object, event handler or javascript: link."""
    start = svg.index("<svg")
    element = svg[start:]
    root = ET.fromstring(element)
    for node in root.iter():
        tag = node.tag.rsplit("}", 1)[-1]
        if tag in FORBIDDEN_TAGS:
            raise ValueError(f"SVG holds a <{tag}> element")
        for attr, value in node.attrib.items():
            name = attr.rsplit("}", 1)[-1].lower()
            if name.startswith("on") or (name == "href" and value.strip().lower().startswith("javascript:")):
                raise ValueError(f"SVG holds an unsafe attribute {name}")
    return element
