"""`posttrain generate`: sample completions for prompts with the built-in sampler.

Reads any prompt source `load_records` understands (a row with a `prompt` field is enough; a conversation
row, `messages`, is prompted with its turns before its last assistant turn, or all of them when the last
turn is the user's), or one prompt given inline with `--prompt`, samples
`n` completions per prompt with `ModelSampler` (or a vLLM engine: `--sampler vllm`), and prints a table or writes JSONL. Each JSONL line
is a prompt-completion record (TRL field names, so `posttrain sft` can train on it) plus
`finish_reason`, `num_tokens`, `sample` (0..n-1) and the prompt's other fields under `reference`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from posttrain.config import SamplingCommandConfig, check
from posttrain.data.records import Conversation, Prompt, parse_record
from posttrain.errors import DataError
from posttrain.files import is_same_file, output_file_problem, replacing, write_jsonl
from posttrain.sampling.sampler import Rollout


@dataclass
class GenerateConfig(SamplingCommandConfig):
    """Sample completions for prompts with the built-in batched sampler (or vLLM); print them or write JSONL. Sampling
    is at temperature 1 unless `--sampling.temperature` says otherwise (`posttrain eval` decodes greedily)."""

    prompts: str = "builtin:arithmetic/heldout"
    """Prompts: a JSONL/JSON/CSV/Parquet file, a `datasets.save_to_disk` directory or `builtin:NAME`. Any
    row with a `prompt` field works; its other fields are kept as the reference. A conversation row (`messages`)
    is prompted with every turn before its last assistant turn, or with all turns when the last is the user's."""
    prompt: str | None = None
    """One prompt, inline (`--prompt "What is 2+3?"`), sent as the user's turn; it replaces `prompts`."""
    n: int = 1
    """Completions per prompt."""
    limit: int | None = None
    """Use only the first N prompts. Unset: every prompt of a file, and the first 8 of a built-in task (a quick
    look; `--limit 200` for more)."""
    output: str | None = None
    """Write one JSON line per completion to this file; unset: print a table."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.n >= 1, "n", "must be >= 1 (completions per prompt)", self.n)
        check(self.n == 1 or self.sampling.temperature > 0, "n", "above 1 needs --sampling.temperature > 0 "
              "(greedy completions of one prompt are all the same)", self.n)
        check(self.output is None or self.prompt is not None or not is_same_file(self.output, self.prompts),
              "output", "is the prompts file itself: the completions would replace the prompts; name another file",
              self.output)
        problem = output_file_problem(self.output) if self.output else None
        check(problem is None, "output", problem or "", self.output)


BUILTIN_LOOK = 8  # prompts of a built-in task that `posttrain generate` samples without --limit


def generate(cfg: GenerateConfig) -> list[dict[str, Any]]:
    """Load prompts and model, sample, then print a table or write `cfg.output`. Returns the JSONL rows."""
    from posttrain.data.load import BUILTIN_PREFIX, load_records
    from posttrain.data.tokenize import check_prompt_template
    from posttrain.sampling.sampler import command_sampler, sample_messages

    if cfg.prompt is not None:
        records = [parse_record({"prompt": cfg.prompt}, accept=(Prompt,))]
    else:
        limit = cfg.limit if cfg.limit is not None or not cfg.prompts.startswith(BUILTIN_PREFIX) else BUILTIN_LOOK
        records = [as_prompt(r) for r in load_records(cfg.prompts, accept=(Prompt, Conversation), limit=limit)]
    sampler, tokenizer = command_sampler(cfg)
    check_prompt_template(records, tokenizer, "--prompt" if cfg.prompt is not None else cfg.prompts, cfg.model.name)
    rollout = sample_messages(sampler, records, tokenizer, cfg.n, cfg.sampling)
    rows = completion_rows(records, rollout)
    if cfg.output is None:
        print_table(records, rows)
    else:
        replaced = replacing(cfg.output)
        write_jsonl(rows, cfg.output)
        print(f"wrote {len(rows)} completions to {cfg.output}{replaced}", file=sys.stderr)
    return rows


def as_prompt(record: Prompt | Conversation) -> Prompt:
    """A conversation as the prompt a model answers: its turns before the last assistant turn (the model writes
    that turn again), or all of them when the last turn is the user's."""
    if isinstance(record, Prompt):
        return record
    turns = record.messages
    if turns[-1].role != "user":
        turns = turns[: max(i for i, m in enumerate(turns) if m.role == "assistant")]
    if not turns:
        raise DataError("a conversation that opens with the assistant's turn leaves no prompt to answer")
    return Prompt(turns)


def completion_rows(records: list[Prompt], rollout: Rollout) -> list[dict[str, Any]]:
    """One prompt-completion row per sample, in rollout order (a prompt's n samples are adjacent)."""
    n = len(rollout) // max(1, len(records))
    rows = []
    for i, (group, text) in enumerate(zip(rollout.group, rollout.texts)):
        record = records[group]
        row = {
            "prompt": [m.to_dict() for m in record.prompt],
            "completion": [{"role": "assistant", "content": text}],
            "finish_reason": rollout.finish_reasons[i],
            "num_tokens": len(rollout.completion_ids[i]),
            "sample": i % n,
        }
        if record.reference:
            row["reference"] = record.reference
        rows.append(row)
    return rows


def print_table(records: list[Prompt], rows: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    n = len(rows) // max(1, len(records))
    table = Table(show_lines=True)
    for name in ("#", "prompt", "completion", "end"):
        table.add_column(name, overflow="fold")
    for i, row in enumerate(rows):
        label = f"{i // n}" if n == 1 else f"{i // n}.{row['sample']}"
        table.add_row(label, records[i // n].text, row["completion"][0]["content"], row["finish_reason"])
    Console().print(table)
