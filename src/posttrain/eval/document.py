"""What every recipe writes when it has finished: the run's `report.html` and a model card, `final/README.md`.

The model card follows the Hugging Face format (YAML front matter, then Markdown), so a saved model explains
itself wherever it is copied: what it was trained from and on (the lineage: base model, data files with
sha256, code version), how (the algorithm and its key settings, from config.json) and how well (the last
held-out figures, and `eval/results.json` when an evaluation was run into the run directory).
Recipes call `document_run` on the main process after `training.loop.finish_run`; training/ itself never
imports this layer.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from posttrain import __version__
from posttrain.eval.figures import SKIPPED
from posttrain.eval.report import flatten, last_values, write_report
from posttrain.files import write_text_atomic
from posttrain.losses.preference import ONE_OBJECTIVE_PARAMETERS
from posttrain.training.metrics import read_metrics

# algorithm -> (tag, what it is, how the saved model loads, pipeline tag, docs page)
ALGORITHMS = {
    "sft": ("sft", "supervised fine-tuning: next-token loss on the assistant turns of demonstrations",
            "AutoModelForCausalLM", "text-generation", "docs/algorithms/sft.md"),
    "dpo": ("dpo", "preference optimization on (prompt, chosen, rejected) pairs", "AutoModelForCausalLM",
            "text-generation", "docs/algorithms/dpo.md"),
    "grpo": ("grpo", "online RL with group-normalised advantages (GRPO) on a checkable reward",
             "AutoModelForCausalLM", "text-generation", "docs/algorithms/grpo.md"),
    "rloo": ("rloo", "online RL with the leave-one-out baseline (RLOO) on a checkable reward",
             "AutoModelForCausalLM", "text-generation", "docs/algorithms/rloo.md"),
    "ppo": ("ppo", "PPO: a reward (a reward model's score or a checkable one), a value model and GAE, clipped "
            "updates, a KL leash",
            "AutoModelForCausalLM", "text-generation", "docs/algorithms/ppo.md"),
    "rm": ("reward-model", "a Bradley-Terry reward model: a scalar head on the language model, trained on "
           "preference pairs and rankings", "AutoModelForSequenceClassification", "text-classification",
           "docs/algorithms/reward_model.md"),
}
SECTIONS = ("model", "data", "optim", "run")
# Settings that say how a model was trained (the rest of config.json is where files went and how it was shown).
KEY_SETTINGS = ("model.name", "model.lora_r", "model.lora_alpha", "data.max_length", "data.packing",
                "data.padding_free", "data.eval_fraction", "optim.lr", "optim.schedule", "optim.warmup_steps",
                "optim.min_lr_ratio", "optim.weight_decay", "optim.betas", "optim.max_grad_norm", "optim.batch_size",
                "optim.grad_accum", "optim.max_steps", "optim.epochs", "run.seed")


def _read(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def key_settings(config: dict[str, Any]) -> dict[str, Any]:
    """The settings a model card lists: KEY_SETTINGS that config.json has (LoRA's only with LoRA on), and every
    setting of the algorithm's own sections (`dpo.*` but another objective's parameters, a reward model's
    `margin`, ...)."""
    flat = dict(flatten(config))
    keys = [k for k in KEY_SETTINGS if k in flat and not (k.startswith("model.lora_a") and not flat.get("model.lora_r"))]
    # a DPO-family run reads only its own objective's parameters: an IPO card shows no label_smoothing
    unread = {f"dpo.{name}" for name, loss in ONE_OBJECTIVE_PARAMETERS.items() if loss != flat.get("dpo.loss")}
    own = {k: v for k, v in flat.items() if k.split(".")[0] not in SECTIONS and k not in unread}
    return {**{k: flat[k] for k in keys}, **own}


def _cell(value: Any) -> str:
    text = json.dumps(value) if isinstance(value, (list, tuple, dict, bool)) or value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else _cell(value)


def card_metadata(card: Path) -> dict[str, Any]:
    """A model card's YAML front matter (huggingface_hub's reader); {} when there is no card or it cannot be read."""
    from huggingface_hub import metadata_load

    try:
        return (metadata_load(card) or {}) if card.is_file() else {}
    except (OSError, UnicodeDecodeError, ValueError, yaml.YAMLError):
        return {}


def hub_base_model(name: str | None) -> str | None:
    """The Hugging Face Hub id a card's `base_model` should hold for a run started from `name` (the Hub wants a
    repository id, which a local path or a built-in short name is not): a built-in's source repository (`smollm2`;
    the random-init `tiny` models have none), the `base_model` of a posttrain run's own card (runs/sft/final ->
    what SFT started from), a Hub cache folder's repository (`.../models--ORG--NAME/snapshots/...`), or the name
    itself when it is not a local path. None when none is known (then the card names `name` as it is)."""
    from posttrain.models.load import SMOLLM2_HUB_ID, is_random_init

    if not name or is_random_init(name):
        return None
    if name == "smollm2":
        return SMOLLM2_HUB_ID
    path = Path(name)
    base = card_metadata(path / "README.md").get("base_model")
    if isinstance(base, str):
        return base
    for part in path.parts:
        if part.startswith("models--") and part.count("--") >= 2:
            return "/".join(part.split("--")[1:])
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") != 1:
        return None
    return name  # ORG/NAME as the Hub spells it


def model_card(run_dir: Path, algorithm: str) -> str:
    """final/README.md of a finished run: YAML front matter (base_model, tags, library_name,
    pipeline_tag), then the algorithm and its settings, the evaluation results and the lineage."""
    # a recipe not in ALGORITHMS yet (tests/test_docs.py asks for its row) still gets a card, not a KeyError
    # after its whole run
    tag, what, auto_class, pipeline, doc = ALGORITHMS.get(algorithm) or (
        algorithm, f"posttrain {algorithm}", "AutoModelForCausalLM", "text-generation",
        f"docs/algorithms/{algorithm}.md")
    run_dir = Path(run_dir)
    config = _read(run_dir / "config.json") or {}
    lineage = _read(run_dir / "lineage.json") or {}
    results = _read(run_dir / "eval" / "results.json")
    base = lineage.get("base_model") or {}
    data = lineage.get("data") or []
    objective = (config.get("dpo") or {}).get("loss") if algorithm == "dpo" else None
    tags = ["posttrain", tag] + ([objective] if objective and objective != tag else [])
    started_from = base.get("name") or (config.get("model") or {}).get("name")
    # the Hub id where there is one; else (a random-init built-in, a local folder) the name the run started from
    # no `datasets`: the Hub reads it as dataset repository ids, and a run's sources are local files, built-in
    # tasks or feedback campaigns (named, with their sha256 or export id, in the card's lineage table)
    meta = {"base_model": hub_base_model(started_from) or started_from, "tags": tags,
            "library_name": "transformers", "pipeline_tag": pipeline}
    code = lineage.get("code") or {}
    version = code.get("posttrain", __version__) + (f", commit {code['git_commit']}" if code.get("git_commit") else "")
    lines = ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# {run_dir.resolve().name}", "",
             f"`{started_from}` after {what}{f' ({objective})' if objective else ''}, trained with posttrain "
             f"{version}. Algorithm and metrics: {doc} in the posttrain repository.", "",
             "```python", f"from transformers import {auto_class}, AutoTokenizer", "",
             f'model = {auto_class}.from_pretrained("path/to/this/folder"' +
             (", num_labels=1)" if algorithm == "rm" else ")"),
             'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", "",
             "## Training", "", "| setting | value |", "|---|---|"]
    lines += [f"| `{k}` | {_cell(v)} |" for k, v in key_settings(config).items()]
    model_cfg = config.get("model") or {}
    if model_cfg.get("lora_r"):
        lines += ["", (f"LoRA adapters (r={model_cfg['lora_r']}) were trained and merged into these weights: a plain "
                       "model, no peft needed." if model_cfg.get("lora_save", "merged") == "merged" else
                       f"This folder holds LoRA adapters (r={model_cfg['lora_r']}) only: load them with peft "
                       "on the base model.")]
    lines += ["", "## Evaluation", ""]
    lines += evaluation_lines(last_values(read_metrics(run_dir), "eval/", SKIPPED), results)
    lines += ["", "## Lineage", "", f"- base model: `{base.get('name', '?')}` ({base.get('parameters', '?')} "
              f"parameters, {base.get('trainable', '?')} trained)",
              f"- code: posttrain {version}", f"- trained: {lineage.get('created', '?')}"]
    lines += [f"- resumed {r.get('at', '?')} from step {r.get('from_step', '?')}" for r in lineage.get("resumes", [])]
    if data:
        lines += ["", "| data | rows | identity |", "|---|---|---|"]
        lines += [f"| `{_cell(d.get('source'))}` | {d.get('rows', '?')} | {_identity(d)} |" for d in data]
    return "\n".join(lines) + "\n"


def _identity(entry: dict[str, Any]) -> str:
    """What pins a lineage data entry: a file's sha256 (and the feedback exports its rows came from), a campaign's
    export id, or the built-in task's name and options (generated by the code version above)."""
    exports = [entry["export_id"]] if entry.get("export_id") else entry.get("export_ids") or []
    parts = [f"sha256 `{entry['sha256']}`"] if entry.get("sha256") else []
    parts += [f"feedback export `{e}`" for e in exports]
    if not parts and str(entry.get("source", "")).startswith("builtin:"):
        parts = ["built in (generated by this code version)"]
    return "; ".join(parts) or "?"


def evaluation_lines(heldout: dict[str, float], results: dict[str, Any] | None) -> list[str]:
    """Markdown for the card's evaluation section: held-out training figures, then results.json's accuracy and
    win rates with their 95% intervals."""
    lines: list[str] = []
    if heldout:
        lines += ["Held-out figures, last logged during training:", "", "| metric | value |", "|---|---|"]
        lines += [f"| `{k}` | {_number(v)} |" for k, v in heldout.items()] + [""]
    if results:
        rows = [(f"accuracy of {r.get('model')}", r) for r in results.get("accuracy") or []]
        rows += [(f"win rate of {r.get('a')} over {r.get('b')} ({r.get('judge', '')})", r)
                 for r in results.get("win_rates") or []]
        if rows:
            lines += ["From `eval/results.json` (95% intervals):", "", "| figure | task | value | 95% interval | n |",
                      "|---|---|---|---|---|"]
            lines += [f"| {_cell(name)} | `{_cell(r.get('task', ''))}` | {_number(r.get('value'))} | "
                      f"[{_number(r.get('ci_low'))}, {_number(r.get('ci_high'))}] | {r.get('n', '')} |"
                      for name, r in rows] + [""]
    while lines and not lines[-1]:
        lines.pop()
    return lines or ["No held-out data and no evaluation yet: `posttrain eval --models RUN/final`, of this model "
                     "alone, writes RUN/eval and adds its figures here."]


def documented_algorithm(run_dir: Path) -> str | None:
    """The algorithm a run's final/README.md (written by `document_run`) names in its tags, or None."""
    tags = card_metadata(Path(run_dir) / "final" / "README.md").get("tags") or []
    by_tag = {tag: name for name, (tag, *_) in ALGORITHMS.items()}
    return by_tag.get(tags[1]) if len(tags) > 1 and tags[0] == "posttrain" else None


def document_run(run_dir: Path, algorithm: str) -> Path:
    """After finish_run, on the main process: final/README.md (the model card) and report.html (the run's own
    report, with its eval/ if there is one). Returns the report's path."""
    run_dir = Path(run_dir)
    write_text_atomic(run_dir / "final" / "README.md", model_card(run_dir, algorithm))
    return write_report([str(run_dir)], run_dir / "report.html", title=f"posttrain report: {run_dir.name}")
