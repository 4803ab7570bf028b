"""`posttrain score`: score the completions of a file with a reward spec, to debug a reward before an RL run.

    posttrain score --reward numeric+0.2*think_format --data rows.jsonl --output scored.jsonl

Each row has `prompt`, `completion` (a string or a list of messages, TRL's prompt-completion format) and the
reference fields the reward reads (`answer`, `tests`, ...), at the top level or in a `reference` object (so the
output of `posttrain generate --output` can be scored as it is). Each is written back unchanged plus `reward` (the
total; fields this command wrote before are replaced, so a scored file can be scored again), `reason` (why: the reward's own explanation, e.g. "extracted 41, expected 42") and, for a weighted
sum, `reward_parts` (each part's unweighted value). The output is written atomically (a temporary file renamed
into place), and a summary table (mean, min, max and count per part and for the total) is printed; without
`--output` nothing is written and the first rows' rewards and reasons are printed instead. Bad input
(an unknown spec, a row that cannot be read, a row without a field the reward reads) is one line naming the
spec or `file:line`, before anything is scored.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from posttrain.config import check
from posttrain.data.load import load_rows, row_error
from posttrain.data.records import Prompt, PromptCompletion, RecordError
from posttrain.errors import DataError
from posttrain.files import output_file_problem, write_jsonl
from posttrain.rewards.functions import check_reference_fields, resolve_reward
from posttrain.rewards.score import Scores, explain_completions

WRITTEN = ("reward", "reason", "reward_parts")  # the fields this command adds (a scored file can be rescored)
SHOWN_ROWS = 20  # rows printed when no --output is given (--output's help says 20)


@dataclass
class ScoreConfig:
    """Score the `completion` of each row of a file with a reward and write the rows back with `reward` and
    `reason` fields, plus a summary table. Use it to check a reward function before spending an RL run on it."""

    reward: str
    """The reward spec: a built-in reward (`numeric`, `math`, `overlong(max=256,cache=64)`, ...; docs/rewards.md
    lists them all, and a wrong name is answered with the list), `rm:PATH`, `module:function`, or a weighted sum
    such as `numeric+0.2*think_format`."""
    data: str
    """Rows with `prompt`, `completion` and the reference fields the reward reads (at the top level or in a
    `reference` object, as `posttrain generate` writes them): a JSONL, JSON, CSV or Parquet file."""
    output: str = ""
    """The JSONL file to write: each row as read plus `reward`, `reason` and (for a sum) `reward_parts`. Unset:
    nothing is written, and the first 20 rows' rewards and reasons are printed above the summary."""
    tokenizer: str | None = None
    """The model whose tokenizer counts tokens for token-length rewards (`overlong`): a name `--model.name` takes
    (`tiny`, a local directory, ...); use the policy's."""
    device: str = "auto"
    """Where an `rm:PATH` reward model runs: `auto` (CUDA when available, else CPU), `cpu`, `cuda` or `cuda:N`."""

    def __post_init__(self) -> None:
        check(bool(self.reward.strip()), "reward", "must name a reward (docs/rewards.md)", self.reward)
        problem = output_file_problem(self.output) if self.output else None
        check(problem is None, "output", problem or "", self.output)


def read_scoring_rows(source: str) -> tuple[list[dict[str, Any]], list[Prompt], list[str]]:
    """The rows of `source`, and each as a Prompt (its other fields the reference, and those of a `reference`
    object, as `posttrain generate` writes them) and a completion text (a message list's contents joined by
    newlines; an empty string is scored as it is, as the output of a model that stopped at once); a row without
    `prompt` or `completion` is a DataError naming `file:line`."""
    rows, prompts, completions = [], [], []
    for where, row in load_rows(source):
        fields = {k: v for k, v in row.items() if v is not None and k not in WRITTEN}
        completion = fields.get("completion")
        blank = isinstance(completion, str) and not completion.strip()  # a model that stopped at once: a real output
        try:
            record = PromptCompletion.from_dict({**fields, "completion": "-"} if blank else fields)
        except RecordError as e:
            raise DataError(row_error(where, e)) from None
        reference = {k: v for k, v in fields.items() if k not in ("prompt", "completion", "reference")}
        nested = fields.get("reference")
        if isinstance(nested, dict):  # posttrain generate writes the prompt's fields under "reference"
            reference = {**nested, **reference}
        rows.append(row)
        prompts.append(Prompt(record.prompt, reference, record.plain))
        completions.append(completion if blank else "\n".join(m.content for m in record.completion))
    return rows, prompts, completions


def score_file(cfg: ScoreConfig) -> dict[str, Any]:
    """Read, check, score, write `cfg.output`, print the summary; returns the summary (see `summarize`)."""
    rows, prompts, completions = read_scoring_rows(cfg.data)
    tokenizer = None
    if cfg.tokenizer is not None:
        from posttrain.models.load import load_tokenizer

        tokenizer = load_tokenizer(cfg.tokenizer)
    reward = resolve_reward(cfg.reward, tokenizer=tokenizer, device=cfg.device)
    check_reference_fields(reward, prompts, cfg.data)
    scores, reasons = explain_completions(reward, prompts, completions)
    scored = []
    for i, row in enumerate(rows):
        out = {**{k: v for k, v in row.items() if k not in WRITTEN}, "reward": scores.total[i], "reason": reasons[i]}
        if scores.parts:
            out["reward_parts"] = {name: values[i] for name, values in scores.parts.items()}
        scored.append(out)
    if cfg.output:
        write_jsonl(scored, cfg.output)
    else:
        for i, row in enumerate(scored[:SHOWN_ROWS]):
            reason = row["reason"].replace("\n", "\\n")  # one line per row, as the file has it
            print(f"row {i + 1}: reward {row['reward']:.4g} ({reason})")
        if len(scored) > SHOWN_ROWS:
            print(f"... {len(scored) - SHOWN_ROWS} more rows; --output FILE writes every row with its reward")
    summary = summarize(cfg.reward, scores)
    print_summary(summary, cfg.output)
    return summary


def _stats(values: list[float]) -> dict[str, float]:
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values), "count": len(values)}


def summarize(spec: str, scores: Scores) -> dict[str, Any]:
    """`{"reward": spec, "total": {mean, min, max, count}, "parts": {name: {...}}}`."""
    return {"reward": spec, "total": _stats(scores.total),
            "parts": {name: _stats(values) for name, values in scores.parts.items()}}


def print_summary(summary: dict[str, Any], output: str) -> None:
    from rich.console import Console
    from rich.table import Table

    print(f"reward {summary['reward']} on {summary['total']['count']} rows:")
    table = Table()
    for column in ("reward", "mean", "min", "max", "count"):
        table.add_column(column, justify="left" if column == "reward" else "right")
    named = [*summary["parts"].items(), ("total" if summary["parts"] else summary["reward"], summary["total"])]
    for name, s in named:
        table.add_row(name, f"{s['mean']:.4f}", f"{s['min']:.4g}", f"{s['max']:.4g}", str(s["count"]))
    Console().print(table)
    if output:
        print(f"wrote {summary['total']['count']} scored rows to {output}", file=sys.stderr)


def main(argv: list[str]) -> int:
    from posttrain.config_parse import parse_config

    score_file(parse_config(ScoreConfig, argv, prog="posttrain score"))
    return 0
