"""`posttrain eval`: several models on several tasks in one run, each model loaded once.

For every (model, task): verifier accuracy (Wilson 95% interval), pass@k for k = 1, 2, 4, ... <= n_samples
(arXiv:2107.03374, bootstrap interval over prompts), the mean reward-model score, the response length in
tokens and the finish reasons. For every pair of models: win rates judged by the verifier's scores, the reward
model's scores or a simulated rater (ties half; a rater sees each pair in both orders and both are reported),
and, from all the pairwise outcomes, Bradley-Terry ratings with a bootstrap over prompts and Arena ranks
(`eval.stats`). Writes DIR/results.json and DIR/samples.jsonl (the format of docs/evaluation.md), which
`eval/tables.py` prints; `--compare-to OLD` (a results.json or its folder) prints what changed and whether it is outside noise
(which figures pair up, and their differences: `eval/compare.py`).

The steps, top to bottom: `load_tasks` -> `sample_model` (per model, all tasks, then the model is freed) ->
`score_with_reward_model` -> `summarize` (per model and task) -> `pairwise` -> `ratings` -> `write_results`.
"""

from __future__ import annotations

import gc
import hashlib
import itertools
import json
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from posttrain.config import SamplingCommandConfig, SamplingParams, check
from posttrain.data.load import BUILTIN_PREFIX, load_records, source_sha256
from posttrain.data.records import Prompt, to_dict
from posttrain.errors import ConfigError, ModelError
from posttrain.eval import stats
from posttrain.eval.accuracy import task_reward
from posttrain.eval.compare import FORMAT, compare_plan, compare_results, read_results
from posttrain.eval.winrate import wilson_interval
from posttrain.files import output_dir_problem
from posttrain.rewards.functions import RewardFn, check_reference_fields
from posttrain.rewards.score import explain_completions

POSITION_FREE_JUDGES = ("verifier", "reward-model")
"""Judges that compare two scores, each given alone: the order the responses are shown in cannot matter."""


@dataclass
class SuiteConfig(SamplingCommandConfig):
    """Evaluate one or more models on one or more tasks: accuracy, pass@k, reward-model score, length and
    finish reasons per model and task; pairwise win rates, Bradley-Terry ratings and ranks across models; every
    figure with a 95% interval. Writes results.json and samples.jsonl. Greedy decoding unless
    `--sampling.temperature` says otherwise."""

    models: tuple[str, ...] = ()
    """Models to evaluate (each as `--model.name` takes it); unset: `--model.name` alone. Each is loaded once."""
    labels: tuple[str, ...] = ()
    """A short name per model in the tables and files; unset: the run's name (`runs/sft/final` -> `sft`)."""
    tasks: tuple[str, ...] = ("builtin:arithmetic/heldout",)
    """Prompts with reference fields (e.g. `answer`): files or `builtin:NAME/heldout`, each scored by its reward."""
    reward: str | None = None
    """How a completion is scored: unset uses a built-in task's own reward (else `numeric`); `numeric`, `exact`,
    `contains` (the answer anywhere in the reply, as whole words), `math`, any reward spec of docs/rewards.md, or
    `module:function` taking (prompt, completion) -> float in [0, 1], where `prompt` is a
    `posttrain.data.records.Prompt` (its row's other fields, e.g. `answer`, in `prompt.reference`)."""
    sampling: SamplingParams = field(default_factory=lambda: SamplingParams(temperature=0.0, max_new_tokens=32))
    n_samples: int = 1
    """Completions per prompt; above 1 (with a temperature > 0) pass@k is reported for k = 1, 2, 4, ... <= n."""
    reward_model: str | None = None
    """A reward model directory (`posttrain rm`'s final/): reports each model's mean score and can judge pairs."""
    judge: str = "verifier"
    """Who judges pairs of responses: `verifier` (the higher reward-function score wins), `reward-model`
    (the higher reward-model score) or `rater:NAME`, a simulated rater (`rater:concise`, `rater:worked`,
    `rater:correctness`), which sees each pair in both orders."""
    compare_to: str | None = None
    """An earlier evaluation's folder (e.g. runs/sft/eval) or its results.json: print each figure old -> new and
    whether the change is outside noise."""
    output_dir: str | None = None
    """Where results.json and samples.jsonl go; unset: RUN/eval for one model RUN/final, else evals/TIMESTAMP."""
    seed: int = 0
    """Seed of the sampler (when --sampling.seed is unset) and of the bootstrap resampling."""
    bootstrap_resamples: int = 1000
    """Resamples of prompts behind the pass@k, score, length, win-rate and rating intervals."""

    def __post_init__(self) -> None:
        super().__post_init__()
        problem = output_dir_problem(self.output_dir) if self.output_dir else None
        check(problem is None, "output_dir", problem or "", self.output_dir)
        check(self.n_samples >= 1, "n_samples", "must be >= 1", self.n_samples)
        check(self.n_samples == 1 or self.sampling.temperature > 0, "n_samples",
              "above 1 needs --sampling.temperature > 0 (greedy samples are all the same)", self.n_samples)
        check(not self.labels or len(self.labels) == len(self.model_names), "labels",
              f"give one label per model ({len(self.model_names)} models)", self.labels)
        check(self.judge in POSITION_FREE_JUDGES or self.judge.startswith("rater:"), "judge",
              "must be verifier, reward-model or rater:NAME", self.judge)
        check(self.judge != "reward-model" or self.reward_model is not None, "judge",
              "'reward-model' needs --reward-model DIR", self.judge)
        check(self.bootstrap_resamples >= 100, "bootstrap_resamples", "must be >= 100", self.bootstrap_resamples)

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.models or (self.model.name,)


@dataclass
class Task:
    name: str
    prompts: list[Prompt]
    reward: RewardFn
    reward_name: str
    sha256: str


def load_tasks(cfg: SuiteConfig) -> list[Task]:
    """Each task's prompts (checked before any model loads) with its reward and the digest of its rows."""
    tasks = []
    for name in cfg.tasks:
        prompts = load_records(name, accept=(Prompt,), limit=cfg.limit)
        if name.startswith(BUILTIN_PREFIX):  # built-in rows have no file: hash the rows themselves
            sha = hashlib.sha256("".join(json.dumps(to_dict(p), sort_keys=True) + "\n" for p in prompts).encode())
            digest = sha.hexdigest()
        else:
            digest = source_sha256(name)
        tasks.append(Task(name, prompts, task_reward(name, cfg.reward), reward_name(name, cfg.reward), digest))
        check_reference_fields(tasks[-1].reward, prompts, name)  # `file:LINE` lacking `answer`, before sampling
    if cfg.judge.startswith("rater:"):
        from posttrain.tasks.arithmetic_raters import check_references

        make_rater_or_error(cfg.judge)
        for task in tasks:
            check_references(task.prompts, task.name)
    return tasks


def reward_name(source: str, reward: str | None) -> str:
    """The name of what `task_reward(source, reward)` scores with, as results.json records it."""
    from posttrain.data.load import parse_builtin
    from posttrain.tasks import TASKS

    if reward is None and source.startswith(BUILTIN_PREFIX):
        task = TASKS.get(parse_builtin(source)[0])
        return task.reward if task is not None and task.reward is not None else "numeric"
    return reward or "numeric"


def make_rater_or_error(judge: str):
    from posttrain.tasks.arithmetic_raters import make_rater

    try:
        return make_rater(judge.removeprefix("rater:"))
    except ValueError as e:
        raise ConfigError(f"judge={judge!r}: {e}") from None


def model_label(name: str) -> str:
    """`runs/sft/final` -> `sft`; `runs/sft/checkpoints/step-100` -> `step-100`; `tiny` -> `tiny`."""
    path = Path(name)
    return path.parent.name if path.name == "final" and path.parent.name else path.name or name


def model_lineage(name: str) -> dict[str, Any] | None:
    """The lineage.json of the run whose final/ `name` is, else None."""
    path = Path(name)
    lineage = path.parent / "lineage.json"
    return json.loads(lineage.read_text()) if path.name == "final" and lineage.is_file() else None


def weights_sha256(name: str) -> str:
    """One digest of a model's weight files: what names a reward model across evaluations (`--compare-to` pairs
    its figures only under the same weights), whatever folder it is in. Not any one file's `sha256sum`: the
    sha256 of the weight files' (*.safetensors, *.bin, *.gguf, sorted by name) lowercase hex sha256 digests
    joined with nothing between them, e.g. for one file `sha256sum model.safetensors | cut -c1-64 | tr -d '\\n' |
    sha256sum`."""
    from posttrain.data.load import file_sha256
    from posttrain.models.load import resolve_model_dir

    path = resolve_model_dir(name)
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.suffix in WEIGHT_SUFFIXES)
    return hashlib.sha256("".join(file_sha256(f) for f in files).encode()).hexdigest()


WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf")


def check_models(cfg: SuiteConfig) -> list[str]:
    """Labels, one per model; refuses duplicates, non-models and tokenizers a reward model cannot compare."""
    from posttrain.models.load import load_tokenizer, resolve_model_dir

    names = cfg.model_names
    labels = list(cfg.labels) or [model_label(n) for n in names]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise ConfigError(f"models {', '.join(duplicates)}: two models have the same label; name them with --labels")
    for name in names:
        resolve_model_dir(name)  # a missing or non-model directory fails here, before any weights load
    if cfg.reward_model is not None:
        vocabs = {label: load_tokenizer(n).get_vocab() for label, n in zip(labels, names)}
        vocabs["the reward model"] = load_tokenizer(cfg.reward_model).get_vocab()
        first = labels[0]
        for other, vocab in vocabs.items():
            if vocab != vocabs[first]:
                raise ModelError(
                    f"--reward-model {cfg.reward_model}: {first} and {other} have different tokenizers "
                    f"({len(vocabs[first])} and {len(vocab)} tokens); a reward model judges responses of models "
                    "that share its tokenizer (a policy and the runs trained from it)")
    return labels


def sampling_params(cfg: SuiteConfig) -> SamplingParams:
    """--sampling with its seed set (to --seed when unset): every model draws with the same seed."""
    return replace(cfg.sampling, seed=cfg.seed if cfg.sampling.seed is None else cfg.sampling.seed)


def sample_model(cfg: SuiteConfig, label: str, name: str, tasks: list[Task]) -> list[dict[str, Any]]:
    """Load `name` once, sample every task, free it; one samples.jsonl row per (task, prompt, sample)."""
    import torch

    from posttrain.data.tokenize import check_prompt_template
    from posttrain.sampling.sampler import command_sampler, sample_messages

    sampler, tokenizer = command_sampler(cfg, name)
    params = sampling_params(cfg)
    rows = []
    for task in tasks:
        check_prompt_template(task.prompts, tokenizer, task.name, name)
        rollout = sample_messages(sampler, task.prompts, tokenizer, cfg.n_samples, params)
        prompts = [task.prompts[g] for g in rollout.group]
        scores, why = explain_completions(task.reward, prompts, rollout.texts)  # ("extracted 41, expected 42")
        for i, (text, ids, reason) in enumerate(zip(rollout.texts, rollout.completion_ids, rollout.finish_reasons)):
            rows.append({"model": label, "task": task.name, "prompt_index": rollout.group[i],
                         "sample_index": i % cfg.n_samples, "prompt": prompts[i].text, "completion": text,
                         "answer": prompts[i].reference.get("answer"), "score": scores.total[i], "reason": why[i],
                         "rm_score": None, "finish_reason": reason, "length": len(ids)})
    del sampler
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rows


def score_with_reward_model(cfg: SuiteConfig, rows: list[dict[str, Any]], tasks: list[Task]) -> None:
    """Fill each row's rm_score (the reward model loads after the policies are freed)."""
    from posttrain.models.load import resolve_device
    from posttrain.rewards.model import RewardFunction

    reward = RewardFunction.load(cfg.reward_model, resolve_device(cfg.device), batch_size=cfg.batch_size)
    prompts = {t.name: t.prompts for t in tasks}
    scores = reward.score_batch([prompts[r["task"]][r["prompt_index"]] for r in rows], [r["completion"] for r in rows])
    for row, score in zip(rows, scores):
        row["rm_score"] = score


def per_prompt(rows: list[dict[str, Any]], key: str, n_prompts: int) -> np.ndarray:
    """(P, S) array of `key` for one model and task: prompt i's S samples in row i."""
    values = np.full((n_prompts, max(r["sample_index"] for r in rows) + 1), np.nan)
    for r in rows:
        values[r["prompt_index"], r["sample_index"]] = r[key]
    return values


def figure(model: str, task: str, value: float, interval: tuple[float, float], n: int, **extra) -> dict[str, Any]:
    return {"model": model, "task": task, **extra, "value": float(value), "ci_low": float(interval[0]),
            "ci_high": float(interval[1]), "n": int(n)}


def summarize(cfg: SuiteConfig, rows: list[dict[str, Any]], task: Task, label: str) -> dict[str, list]:
    """Accuracy, pass@k, reward-model score, length and finish reasons of one model on one task."""
    scores = per_prompt(rows, "score", len(task.prompts))  # (P, S)
    n = len(task.prompts)
    boot = {"n_resamples": cfg.bootstrap_resamples, "seed": cfg.seed}
    means = scores.mean(axis=1)  # (P,): a prompt's samples count once, as in `win_rate_figure`
    interval = wilson_interval(float(means.sum()), n)
    out: dict[str, list] = {"accuracy": [figure(label, task.name, means.mean(), interval, n)], "pass_at_k": []}
    if cfg.n_samples > 1:
        correct = (scores >= 1.0).sum(axis=1)  # (P,)
        for k in stats.pass_at_k_values(cfg.n_samples):
            values = stats.pass_at_k(np.full(n, cfg.n_samples), correct, k)  # (P,)
            # every prompt 0 (or every one 1): each resample is the same and the bootstrap has no width, yet n
            # prompts do not make a 0% certain; Wilson over prompts says what they rule out, as for accuracy
            degenerate = bool(np.all(values == values[0])) and values[0] in (0.0, 1.0)
            pass_interval = wilson_interval(float(values.sum()), n) if degenerate else stats.bootstrap_ci(values, **boot)
            out["pass_at_k"].append(figure(label, task.name, values.mean(), pass_interval, n, k=k))
    out["rm_score"] = []
    if cfg.reward_model is not None:
        rm = per_prompt(rows, "rm_score", n).mean(axis=1)
        out["rm_score"].append(figure(label, task.name, rm.mean(), stats.bootstrap_ci(rm, **boot), n))
    lengths = per_prompt(rows, "length", n).mean(axis=1)
    out["length"] = [figure(label, task.name, lengths.mean(), stats.bootstrap_ci(lengths, **boot), n)]
    reasons: dict[str, int] = {}
    for r in rows:
        reasons[r["finish_reason"]] = reasons.get(r["finish_reason"], 0) + 1
    out["finish_reasons"] = [{"model": label, "task": task.name, "counts": reasons}]
    return out


@dataclass
class Comparisons:
    """Every judgment of one pair of models on one task: A's outcome (1, 0.5, 0), the prompt, and whether A
    was shown first (judges that see no order count as A first)."""

    outcome: list[float] = field(default_factory=list)
    prompt: list[int] = field(default_factory=list)
    a_first: list[bool] = field(default_factory=list)


def judge_pair(cfg: SuiteConfig, task: Task, rows_a: list[dict], rows_b: list[dict]) -> Comparisons:
    """Sample s of A against sample s of B on each prompt; a rater judges both presentation orders."""
    from posttrain.eval.winrate import A_OUTCOME

    out = Comparisons()
    rater = make_rater_or_error(cfg.judge) if cfg.judge.startswith("rater:") else None
    key = "rm_score" if cfg.judge == "reward-model" else "score"
    for ra, rb in zip(rows_a, rows_b):
        if rater is None:
            results = [(0.5 + 0.5 * float(np.sign(ra[key] - rb[key])), True)]
        else:
            prompt = task.prompts[ra["prompt_index"]]
            a_shown_first = A_OUTCOME[rater.compare(prompt, ra["completion"], rb["completion"])]
            b_shown_first = 1.0 - A_OUTCOME[rater.compare(prompt, rb["completion"], ra["completion"])]
            results = [(a_shown_first, True), (b_shown_first, False)]
        for outcome, a_first in results:
            out.outcome.append(outcome)
            out.prompt.append(ra["prompt_index"])
            out.a_first.append(a_first)
    return out


def prompt_means(values: np.ndarray, prompt: np.ndarray) -> np.ndarray:
    """(P,) the mean of each prompt's values: one figure per prompt, whatever its number of samples or orders."""
    _, index = np.unique(prompt, return_inverse=True)
    return np.bincount(index, weights=values) / np.bincount(index)


def win_rate_figure(cfg: SuiteConfig, a: str, b: str, task: str, c: Comparisons) -> dict[str, Any]:
    """A's win rate over B with a Wilson interval over prompts: each prompt's judgments (samples, both orders)
    are averaged into one outcome in [0, 1] first, so correlated judgments of one prompt are not counted as
    independent (as ties, fractional outcomes make the Wilson interval err on the wide side)."""
    outcome, first = np.array(c.outcome), np.array(c.a_first)
    means = prompt_means(outcome, np.array(c.prompt))
    interval = wilson_interval(float(means.sum()), means.size)
    position_free = cfg.judge in POSITION_FREE_JUDGES
    return {"a": a, "b": b, "task": task, "judge": cfg.judge, "value": float(outcome.mean()),
            "ci_low": float(interval[0]), "ci_high": float(interval[1]), "n": int(outcome.size),  # judgments
            "prompts": int(means.size),  # what the interval is over
            "wins": int((outcome == 1).sum()), "ties": int((outcome == 0.5).sum()), "losses": int((outcome == 0).sum()),
            "a_first_win_rate": None if position_free else float(outcome[first].mean()),
            "b_first_win_rate": None if position_free else float(outcome[~first].mean())}


def pairwise(cfg: SuiteConfig, rows: list[dict], tasks: list[Task], labels: list[str]) -> tuple[list, list]:
    """Win rates of every pair (A listed before B) on every task, and the ratings of all models from them."""
    by = {(label, t.name): [r for r in rows if r["model"] == label and r["task"] == t.name] for label in labels
          for t in tasks}
    win_rates, a_idx, b_idx, outcomes, clusters = [], [], [], [], []
    for t_index, task in enumerate(tasks):
        for (i, a), (j, b) in itertools.combinations(enumerate(labels), 2):
            c = judge_pair(cfg, task, by[(a, task.name)], by[(b, task.name)])
            win_rates.append(win_rate_figure(cfg, a, b, task.name, c))
            a_idx += [i] * len(c.outcome)
            b_idx += [j] * len(c.outcome)
            outcomes += c.outcome
            clusters += [t_index * 10**9 + p for p in c.prompt]  # a prompt is a cluster within its task
    if len(labels) < 2:
        return win_rates, []
    fit = stats.bradley_terry_bootstrap(np.array(a_idx), np.array(b_idx), np.array(outcomes), np.array(clusters),
                                        len(labels), cfg.bootstrap_resamples, seed=cfg.seed)
    # A rating is relative to its judge and to the models rated together: both are kept with it for --compare-to.
    ratings = [{"model": label, "rating": float(fit.rating[i]), "ci_low": float(fit.ci_low[i]),
                "ci_high": float(fit.ci_high[i]), "rank": int(fit.rank[i]), "judge": cfg.judge,
                "rated": sorted(labels)} for i, label in enumerate(labels)]
    return win_rates, sorted(ratings, key=lambda r: -r["rating"])


def default_output_dir(names: tuple[str, ...]) -> Path:
    """RUN/eval for a single model RUN/final; else evals/YYYYmmdd-HHMMSS."""
    if len(names) == 1 and model_lineage(names[0]) is not None:
        return Path(names[0]).parent / "eval"
    return Path("evals") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())


def refresh_run_documents(out_dir: Path) -> None:
    """An evaluation written into a run's eval/ (RUN/final evaluated alone) goes into the run's model card and
    report.html too, as the docs' Model cards section says; runs without a posttrain card are left alone."""
    from posttrain.eval.document import document_run, documented_algorithm

    run_dir = out_dir.parent
    if out_dir.name != "eval" or not (run_dir / "metrics.jsonl").is_file():
        return
    algorithm = documented_algorithm(run_dir)
    if algorithm is not None:
        document_run(run_dir, algorithm)
        print(f"posttrain eval: {run_dir / 'final' / 'README.md'} and {run_dir / 'report.html'} now show it",
              file=sys.stderr)


CUT_SHARE = 0.2
"""The share of a model's answers on a task that end at max_new_tokens from which `warn_cut_answers` speaks."""


def warn_cut_answers(cfg: SuiteConfig, finish_reasons: list[dict[str, Any]], names: dict[str, str]) -> None:
    """One line per model and task where many answers stopped at --sampling.max-new-tokens (finish reason
    `length`): an answer cut before its number scores 0, which reads as a wrong answer. Not for the random-init
    built-in models, whose answers never end."""
    from posttrain.models.load import is_random_init

    for f in finish_reasons:
        n, cut = sum(f["counts"].values()), f["counts"].get("length", 0)
        if n and cut / n >= CUT_SHARE and not is_random_init(names.get(f["model"], "")):
            print(f"warning: {cut} of {n} answers of {f['model']} on {f['task']} stopped at --sampling.max-new-tokens "
                  f"{cfg.sampling.max_new_tokens} (finish reason length); an answer cut short scores 0: raise it if "
                  "they were still going", file=sys.stderr)


def run_suite(cfg: SuiteConfig) -> dict[str, Any]:
    """Evaluate, write DIR/results.json and DIR/samples.jsonl, and return the results (with "output_dir")."""
    from posttrain.config_parse import to_jsonable
    from posttrain.files import write_json_atomic, write_jsonl

    old = read_results(cfg.compare_to) if cfg.compare_to else None
    tasks = load_tasks(cfg)
    labels = check_models(cfg)
    rows = [row for label, name in zip(labels, cfg.model_names) for row in sample_model(cfg, label, name, tasks)]
    if cfg.reward_model is not None:
        score_with_reward_model(cfg, rows, tasks)
    results: dict[str, Any] = {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "models": [{"label": label, "name": name, "lineage": model_lineage(name)}
                   for label, name in zip(labels, cfg.model_names)],
        "tasks": [{"name": t.name, "sha256": t.sha256, "n": len(t.prompts), "reward": t.reward_name} for t in tasks],
        "settings": {**to_jsonable(sampling_params(cfg)), "n_samples": cfg.n_samples, "judge": cfg.judge,
                     "reward_model": cfg.reward_model,
                     "reward_model_sha256": weights_sha256(cfg.reward_model) if cfg.reward_model else None,
                     "bootstrap_resamples": cfg.bootstrap_resamples,
                     "bootstrap_seed": cfg.seed},
        "accuracy": [], "pass_at_k": [], "rm_score": [], "length": [], "finish_reasons": []}
    for label in labels:
        for task in tasks:
            mine = [r for r in rows if r["model"] == label and r["task"] == task.name]
            for key, values in summarize(cfg, mine, task, label).items():
                results[key] += values
    results["win_rates"], results["ratings"] = pairwise(cfg, rows, tasks, labels)
    warn_cut_answers(cfg, results["finish_reasons"], dict(zip(labels, cfg.model_names)))
    out_dir = Path(cfg.output_dir) if cfg.output_dir else default_output_dir(cfg.model_names)
    previous = out_dir / "results.json"
    if previous.is_file():  # RUN/eval is the baseline a later --compare-to reads: say that it is replaced
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(previous.stat().st_mtime))
        print(f"posttrain eval: replacing {previous} (of {when}); --output-dir DIR keeps the earlier one",
              file=sys.stderr)
    write_jsonl(rows, out_dir / "samples.jsonl")
    write_json_atomic(out_dir / "results.json", results)
    refresh_run_documents(out_dir)
    if old is not None:
        results["changes"] = compare_results(old, results)
        results["change_notes"] = compare_plan(old, results).notes
    return {**results, "output_dir": str(out_dir)}
