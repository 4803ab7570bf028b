"""`posttrain data pairs`: preference data from a policy's own samples, judged by a simulated rater.

For each prompt the policy samples `k` responses (`ModelSampler`, or vLLM with `--sampler vllm`), a simulated rater from
`tasks.arithmetic_raters` judges them, and the result is written as JSONL in TRL's preference
format, ready for reward-model and DPO training:

- `--format pairs` writes one `PreferencePair` per prompt: the response of highest utility against
  the one of lowest (the clearest signal K samples hold), which of the two is chosen decided by the
  rater's noisy `compare`. With k=2 this is simply the rater's judgment of the two samples. For every
  one of the C(K,2) pairs, write rankings and use `Ranking.pairs()`.
- `--format rankings` writes one `Ranking` per prompt: the distinct responses, best first
  (`Rater.rank`), for K-wise reward-model losses (arXiv:2203.02155 §3.5).

A prompt whose samples are all identical, or whose distinct samples the rater cannot tell apart
(equal utility: `Judgment.TIE`, or no ranking), gives no record; both are counted and reported.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from posttrain.config import SamplingCommandConfig, SamplingParams, check
from posttrain.data.records import Message, PreferencePair, Prompt, Ranking, to_dict
from posttrain.errors import ConfigError, DataError
from posttrain.files import is_same_file
from posttrain.tasks.arithmetic_raters import check_references, is_correct, make_rater
from posttrain.tasks.raters import Judgment, SimulatedRater


@dataclass(kw_only=True)
class PairsConfig(SamplingCommandConfig):
    """Sample k responses per prompt from a policy, judge them with a simulated rater, write preference JSONL."""

    output: str
    """The JSONL file to write (PreferencePair or Ranking records in TRL field names)."""
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(max_new_tokens=32))
    prompts: str = "builtin:arithmetic"
    """Prompts: a JSONL/JSON/CSV/Parquet file, a `datasets.save_to_disk` directory or `builtin:NAME`. Each row
    needs a `prompt` and an `answer` (the reference the arithmetic raters check)."""
    k: int = 2
    """Responses sampled per prompt."""
    rater: Literal["correctness", "worked", "concise"] = "correctness"
    """Who judges (see `posttrain.tasks.arithmetic_raters`): `correctness` prefers the right answer; `worked` also
    prefers shown working ("... #### N"); `concise` also prefers less padding."""
    noise: float = 0.0
    """Chance that the rater's judgment is flipped (simulated label noise, arXiv:2305.14387), in [0, 0.5)."""
    format: Literal["pairs", "rankings"] = "pairs"
    """`pairs`: one (chosen, rejected) pair per prompt, best vs worst of the k samples. `rankings`: the
    distinct samples of each prompt, best first."""
    limit: int | None = 2000
    seed: int = 0
    """Seed of the rater's noise, and of sampling when `sampling.seed` is unset."""
    overwrite: bool = False
    """Replace `output` if it exists instead of refusing."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check(self.k >= 2, "k", "must be >= 2 (a preference needs two responses)", self.k)
        check(0.0 <= self.noise < 0.5, "noise", "must be in [0, 0.5) (0.5 makes every judgment a coin flip)",
              self.noise)
        check(Path(self.output).suffix == ".jsonl", "output", "must be a .jsonl file (one record a line)", self.output)
        check(not is_same_file(self.output, self.prompts), "output", "is the prompts file itself: the pairs would "
              "replace the prompts, --overwrite or not; name another file", self.output)


@dataclass
class PairStats:
    """What judging made: prompts seen, records written, prompts dropped and why, correct chosen responses."""

    prompts: int = 0
    written: int = 0
    identical: int = 0
    """Prompts whose k samples were all the same text."""
    ties: int = 0
    """Prompts whose distinct samples all had equal utility."""
    chosen_correct: int = 0
    """Records whose chosen (pairs) or top-ranked (rankings) response is correct."""
    rejected_correct: int = 0
    """Pairs whose rejected response is correct (rankings: the bottom-ranked one)."""

    def summary(self, rater: SimulatedRater, kind: str) -> str:
        def share(n: int) -> str:
            return f"{n}/{self.written} ({n / max(1, self.written):.1%})"

        return (
            f"{self.prompts} prompts -> {self.written} {kind} (dropped: {self.identical} identical, "
            f"{self.ties} tied); rater {rater.name}, noise {rater.noise}, seed {rater.seed}; "
            f"chosen correct {share(self.chosen_correct)}, rejected correct {share(self.rejected_correct)}"
        )


def _response(text: str) -> tuple[Message, ...]:
    return (Message("assistant", text),)


def _best_vs_worst(prompt: Prompt, texts: list[str], rater: SimulatedRater) -> PreferencePair | None:
    """Highest- against lowest-utility response, the noisy judgment deciding which is chosen; None on a tie
    (which happens only when all utilities are equal)."""
    utilities = [rater.utility(prompt, t) for t in texts]
    best = texts[utilities.index(max(utilities))]
    worst = texts[utilities.index(min(utilities))]
    judgment = rater.compare(prompt, best, worst)
    if judgment is Judgment.TIE:
        return None
    chosen, rejected = (best, worst) if judgment is Judgment.A else (worst, best)
    return PreferencePair(prompt.prompt, _response(chosen), _response(rejected))


def _ranking(prompt: Prompt, texts: list[str], rater: SimulatedRater) -> Ranking | None:
    order = rater.rank(prompt, texts)
    if order is None:
        return None
    return Ranking(prompt.prompt, tuple(_response(t) for t in texts), tuple(order))


def judge_samples(
    prompts: list[Prompt], texts_per_prompt: list[list[str]], rater: SimulatedRater, format: str = "pairs"
) -> tuple[list[PreferencePair | Ranking], PairStats]:
    """Judge each prompt's sampled texts: one PreferencePair (`pairs`) or Ranking (`rankings`) per prompt.

    A simulated rater, because `pairs` picks the best and worst sample by its hidden utility."""
    if len(prompts) != len(texts_per_prompt):
        raise ValueError(f"{len(prompts)} prompts but {len(texts_per_prompt)} lists of responses")
    if format not in ("pairs", "rankings"):
        raise ValueError(f"format must be 'pairs' or 'rankings', got {format!r}")
    check_references(prompts)
    judge = _best_vs_worst if format == "pairs" else _ranking
    records: list[PreferencePair | Ranking] = []
    stats = PairStats(prompts=len(prompts))
    for prompt, texts in zip(prompts, texts_per_prompt):
        distinct = list(dict.fromkeys(texts))  # Ranking records refuse duplicate responses
        if len(distinct) < 2:
            stats.identical += 1
            continue
        record = judge(prompt, distinct, rater)
        if record is None:
            stats.ties += 1
            continue
        records.append(record)
        best, worst = _ends(record)
        stats.chosen_correct += is_correct(prompt, best)
        stats.rejected_correct += is_correct(prompt, worst)
    stats.written = len(records)
    return records, stats


def _ends(record: PreferencePair | Ranking) -> tuple[str, str]:
    """(chosen, rejected) texts; for a ranking, its first and last."""
    if isinstance(record, PreferencePair):
        return record.chosen[0].content, record.rejected[0].content
    return record.responses[record.order[0]][0].content, record.responses[record.order[-1]][0].content


def check_output(output: str, overwrite: bool) -> None:
    """Refuse to replace an existing file (unless asked) or to write over a folder."""
    path = Path(output)
    if path.is_dir():
        raise ConfigError(f"output={output!r}: is a folder; name a .jsonl file")
    if path.exists() and not overwrite:
        raise ConfigError(f"output={output!r}: exists; pass --overwrite to replace it, or name another file")


def make_pairs(cfg: PairsConfig) -> PairStats:
    """Load prompts and policy, sample k responses each, judge, write `cfg.output`; return the counts."""
    from posttrain.data.load import load_records
    from posttrain.data.tokenize import check_prompt_template
    from posttrain.files import write_jsonl
    from posttrain.sampling.sampler import command_sampler, sample_messages

    check_output(cfg.output, cfg.overwrite)
    prompts = load_records(cfg.prompts, accept=(Prompt,), limit=cfg.limit)
    check_references(prompts, cfg.prompts)
    rater = make_rater(cfg.rater, cfg.noise, cfg.seed)
    sampler, tokenizer = command_sampler(cfg)
    check_prompt_template(prompts, tokenizer, cfg.prompts, cfg.model.name)
    params = cfg.sampling if cfg.sampling.seed is not None else dataclasses.replace(cfg.sampling, seed=cfg.seed)
    rollout = sample_messages(sampler, prompts, tokenizer, cfg.k, params)
    texts = [rollout.texts[i * cfg.k : (i + 1) * cfg.k] for i in range(len(prompts))]  # a group's samples are adjacent
    records, stats = judge_samples(prompts, texts, rater, cfg.format)
    if not records:
        raise DataError(
            f"{cfg.prompts}: no {cfg.format} were made: of {stats.prompts} prompts, {stats.identical} gave identical "
            f"samples and {stats.ties} tied under rater {cfg.rater!r} (raise sampling.temperature or k, or use "
            "another rater)"
        )
    write_jsonl([to_dict(r) for r in records], cfg.output)
    print(f"wrote {cfg.output}: " + stats.summary(rater, cfg.format))
    return stats


def main(argv: list[str]) -> int:
    """`posttrain data pairs [OPTIONS]`."""
    from posttrain.config_parse import parse_config

    make_pairs(parse_config(PairsConfig, argv, prog="posttrain data pairs"))
    return 0
