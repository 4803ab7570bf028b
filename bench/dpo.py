"""posttrain DPO against TRL's DPOTrainer on the same model, pairs, batches and settings.

    python bench/dpo.py                  # writes the "DPO" section of bench/RESULTS.md
    python bench/dpo.py --threads 1      # on a busy machine: 10.5 min at load average 5-6 on 2 cores
    python bench/dpo.py --steps 8 --repeats 1 --no-write        # a quick look (~1 min)
    python bench/dpo.py --model tiny-30m --steps 12 --batch-size 16 --repeats 2   # ~30M parameters, with MFU

Pairs: built-in arithmetic prompts ("What is 23 + 45?"); chosen = the bare correct answer; rejected =
a wrong number (even rows) or the right answer followed by chatty filler (odd rows). Written once in
TRL's conversational preference format (message lists) and read by both trainers.

Both sides train the built-in tiny Llama from the same initial weights with sigmoid DPO at the same
beta, lr, batch size, steps, cosine schedule without warmup (TRL's warmup starts at lr 0, posttrain's
at lr/warmup_steps, so none is used), gradient clipping at 1 and max_length; fp32, no gradient
checkpointing, no torch.compile, one process, each run in a fresh process. Before timing, the bench
checks that TRL tokenized every pair to exactly posttrain's prompt, chosen and rejected token ids.

Rows: posttrain with its defaults (reference log-probs precomputed once; each prompt encoded once
for both responses, prefix sharing arXiv:2410.20305); posttrain with two rows per pair, as TRL does
(--data.no-share-prompt); TRL's default (a second copy of the model, loaded by TRL, runs a no-grad
forward every step); TRL's default again with the allocator policy posttrain's runs set for their
process (`posttrain.cpu.keep_freed_memory`: glibc's malloc keeps freed blocks for reuse instead of
faulting fresh pages in for every large tensor), so the gain that policy gives is seen on both sides;
TRL with precompute_ref_log_probs; and TRL with its default random batches.
The first five train on the SAME batches, step by step:
TRL reads the rows in posttrain's (length-bucketed) batch order with a sequential sampler, so their
loss curves must agree at every step. The last row shows what TRL does on its own: its DPOTrainer
cannot group by length out of the box (`train_sampling_strategy="group_by_length"` stops with "Can
only automatically infer lengths for datasets whose items are dictionaries with an 'input_ids' key").

pairs/s (the same definition on every row) = pairs trained / (time of the reference log-prob work
done before training + wall time of the training loop). posttrain: the recipe's own timing of its
reference pass (its log record) plus `time/train_seconds` less `time/checkpoint_seconds` (TRL saves nothing in
these runs; posttrain always checkpoints after the last step); TRL: the time of `_precompute_ref_logps`
(it runs in the trainer's constructor, outside `train_runtime`) plus `train_runtime`. "End-to-end"
also counts tokenization and model loading (and posttrain's save of final/). Memory: peak RSS of the
run's own process (`ru_maxrss`), next to its RSS once the libraries were imported. Runs alternate
(A B C ... A B C ...) so that load from other processes hits every row alike; the table gives
medians and ratios of medians.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    flop_params,
    machine_line,
    matmul_peak_gflops,
    peak_rss_mb,
    posttrain_loop_seconds,
    rss_mb,
    threads_note,
    train_flops_per_token,
    update_results,
)

LOG2 = math.log(2)
SIDES = ("posttrain", "posttrain-two-rows", "trl", "trl-kept-memory", "trl-precompute", "trl-random-order")
LABELS = {
    "posttrain": "posttrain (reference precomputed once, prompt shared)",
    "posttrain-two-rows": "posttrain, two rows per pair (--data.no-share-prompt)",
    "trl": "TRL DPOTrainer (reference model forward each step)",
    "trl-kept-memory": "TRL DPOTrainer, with posttrain's allocator policy (cpu.keep_freed_memory)",
    "trl-precompute": "TRL DPOTrainer, precompute_ref_log_probs=True",
    "trl-random-order": "TRL DPOTrainer, its own random batches",
}
SAME_BATCHES = ("posttrain", "posttrain-two-rows", "trl", "trl-kept-memory", "trl-precompute")  # rows that train on identical batches, step by step


@dataclass
class BenchConfig:
    """posttrain DPO vs TRL DPOTrainer: pairs/s, loss curve and peak memory at equal settings."""

    model: str = "tiny"
    """Built-in model both sides train: `tiny` (~0.5M parameters), `tiny-10m` or `tiny-30m` (same tokenizer)."""
    steps: int = 64
    """Optimizer steps per run, every row. The pairs file holds steps x batch_size pairs (one epoch)."""
    repeats: int = 3
    """Runs per row, interleaved; the table reports medians."""
    batch_size: int = 32
    """Pairs per optimizer step (one micro-batch of 2 x batch_size sequences)."""
    lr: float = 1e-4
    """Peak learning rate (AdamW; posttrain's DPO default), cosine decay to 0, no warmup."""
    beta: float = 0.1
    """DPO beta."""
    max_length: int = 128
    """Maximum tokens per sequence (prompt + response), both sides; no pair is longer."""
    threads: int = 0
    """torch threads in each run (0 leaves torch's default, one per core). On a machine busy with other jobs use 1:
    at load average 6 on 2 cores a forward + backward of the tiny model took 8x longer with 2 threads than with 1."""
    write: bool = True
    """Write the results into bench/RESULTS.md."""


@dataclass
class Result:
    """One timed run, measured inside its own process."""

    side: str
    pairs: int
    ref_seconds: float  # reference log-probs computed before the loop (0 when done inside the loop)
    loop_seconds: float
    end_to_end_seconds: float  # tokenization, model loading, training (and posttrain's save of final/)
    losses: list[float]  # per optimizer step
    rss_after_imports_mb: float
    peak_rss_mb: float
    extra: dict = field(default_factory=dict)

    @property
    def seconds(self) -> float:
        return self.ref_seconds + self.loop_seconds

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds


# -- data ------------------------------------------------------------------------------------


def make_pairs(n: int) -> list[dict]:
    """n preference pairs in TRL's conversational format: the first n of `builtin:arithmetic-pairs?ops=+-`
    (chosen the bare answer; rejected a wrong number or the answer with chatty filler), prompt, chosen and
    rejected only."""
    from posttrain.tasks import TASKS

    rows = TASKS["arithmetic-pairs"].rows("train", n=str(n), ops="+-")
    return [{key: row[key] for key in ("prompt", "chosen", "rejected")} for row in rows]


def posttrain_examples(path: Path, max_length: int, model: str = "tiny") -> list:
    """posttrain's tokenization of the pairs file, exactly as its DPO recipe does it."""
    from posttrain.data.load import load_records
    from posttrain.data.preference import PREFERENCE_KINDS, tokenize_preferences
    from posttrain.models.load import load_tokenizer
    from posttrain.recipes.dpo import PreferenceDataConfig

    data = PreferenceDataConfig(train=str(path), eval_fraction=0.0, max_length=max_length)
    return tokenize_preferences(load_records(str(path), accept=PREFERENCE_KINDS), load_tokenizer(model), data,
                                source=str(path))


def posttrain_order(examples: list, cfg: BenchConfig) -> list[int]:
    """The pair indices posttrain trains on, step after step (its own DataOrder, default bucketing, seed 0)."""
    from posttrain.training.loop import DataOrder

    order = DataOrder([len(e) for e in examples], cfg.batch_size, 1, 0, True)
    return [i for step in range(cfg.steps) for batch in order.step_batches(step) for i in batch]


def prepare(cfg: BenchConfig, folder: Path) -> dict:
    """Write the pairs file and TRL's copy of it in posttrain's batch order, with the token ids TRL must produce."""
    pairs = make_pairs(cfg.steps * cfg.batch_size)
    path = folder / "pairs.jsonl"
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    examples = posttrain_examples(path, cfg.max_length, cfg.model)
    if [e.row for e in examples] != list(range(1, len(pairs) + 1)):
        raise SystemExit("posttrain dropped or reordered pairs; the two sides would not train on the same data")
    order = posttrain_order(examples, cfg)
    trl_rows = folder / "pairs_in_posttrain_order.jsonl"
    trl_rows.write_text("".join(json.dumps(pairs[i]) + "\n" for i in order))
    expected = folder / "expected_ids.json"
    expected.write_text(json.dumps([[list(examples[i].prompt_ids), list(examples[i].chosen_ids),
                                     list(examples[i].rejected_ids)] for i in order]))
    batches = [[examples[i] for i in order[s : s + cfg.batch_size]] for s in range(0, len(order), cfg.batch_size)]
    from posttrain.config import ModelConfig
    from posttrain.models.load import count_parameters, load_model
    params = count_parameters(load_model(ModelConfig(name=cfg.model))[0])[1]
    return {"pairs": str(path), "trl_rows": str(trl_rows), "expected": str(expected), "n_pairs": len(pairs),
            "params": params,
            "longest": max(len(e) for e in examples),
            "slots": sum(2 * len(b) * max(len(e) for e in b) for b in batches),  # 2B sequences padded to the longest
            "real": sum(2 * len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids) for b in batches for e in b),
            # sum of squared two-row sequence lengths: the token-weighted mean attention length is this / real
            "real_sq": sum((len(e.prompt_ids) + len(r)) ** 2 for b in batches for e in b
                           for r in (e.chosen_ids, e.rejected_ids)),
            # prefix sharing: B rows [prompt, chosen, rejected] padded to the longest
            "shared_slots": sum(len(b) * max(_shared_length(e) for e in b) for b in batches),
            "shared_real": sum(_shared_length(e) for b in batches for e in b)}


def _shared_length(e) -> int:
    return len(e.prompt_ids) + len(e.chosen_ids) + len(e.rejected_ids)


# -- one run per process -----------------------------------------------------------------------


def run_posttrain(cfg: BenchConfig, data: dict, out: Path, share_prompt: bool = True) -> Result:
    """One posttrain DPO run; its reference pass is timed by the recipe itself (log record args)."""
    import torch

    from posttrain.config import ModelConfig, OptimConfig, RunConfig
    from posttrain.models.load import resolve_model_dir
    from posttrain.recipes import dpo
    from posttrain.training.metrics import read_metrics

    after_imports = rss_mb()
    ref_records = _capture_log_records("posttrain.recipes.dpo")
    dpo_cfg = dpo.DPOConfig(
        model=ModelConfig(name=str(resolve_model_dir(cfg.model)), dtype="float32"),
        data=dpo.PreferenceDataConfig(train=data["pairs"], eval_fraction=0.0, max_length=cfg.max_length,
                                      share_prompt=share_prompt),
        optim=OptimConfig(lr=cfg.lr, warmup_steps=0, schedule="cosine", batch_size=cfg.batch_size,
                          max_steps=cfg.steps, max_grad_norm=1.0),
        run=RunConfig(name="dpo", output_dir=str(out), device="cpu", progress=False, log_every=1, seed=0,
                      threads=torch.get_num_threads()),  # TRL's count: posttrain would pick fewer on a busy machine
        dpo=dpo.PreferenceConfig(loss="dpo", beta=cfg.beta),
    )
    t0 = time.perf_counter()
    run_dir = dpo.train(dpo_cfg)
    end_to_end = time.perf_counter() - t0
    metrics = read_metrics(run_dir)
    computed = [r.args[1] for r in ref_records if r.msg.startswith("reference log-probs: computed")]
    if len(computed) != 1:
        raise SystemExit("posttrain did not report one reference pass; the timing would leave it out")
    return Result("posttrain", cfg.steps * cfg.batch_size, computed[0],
                  posttrain_loop_seconds(metrics), end_to_end,
                  [m["train/loss"] for m in metrics if "train/loss" in m], after_imports, peak_rss_mb(),
                  {"threads": torch.get_num_threads(), "slots": data["shared_slots" if share_prompt else "slots"],
                   "real": data["shared_real" if share_prompt else "real"]})


def _capture_log_records(logger_name: str) -> list[logging.LogRecord]:
    """Every record the named logger emits from now on (INFO and up)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger(logger_name)
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    return records


def run_trl(cfg: BenchConfig, data: dict, out: Path, side: str) -> Result:
    """One TRL DPOTrainer run at the same settings (TRL's defaults for everything not named)."""
    import torch
    from datasets import Dataset, disable_progress_bars
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from posttrain.models.load import resolve_model_dir

    disable_progress_bars()
    os.environ["TQDM_DISABLE"] = "1"  # TRL's reference precompute bar
    after_imports = rss_mb()
    precompute = side == "trl-precompute"
    ref_seconds = []

    class TimedDPOTrainer(DPOTrainer):
        """DPOTrainer that times its reference precompute (it runs in __init__, outside train_runtime)."""

        def _precompute_ref_logps(self, *args, **kwargs):
            t0 = time.perf_counter()
            result = super()._precompute_ref_logps(*args, **kwargs)
            ref_seconds.append(time.perf_counter() - t0)
            return result

    args = DPOConfig(
        output_dir=str(out), use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False,
        torch_compile=False, report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, seed=0,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=1, max_steps=cfg.steps,
        learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=0, weight_decay=0.0, max_grad_norm=1.0,
        max_length=cfg.max_length, beta=cfg.beta, loss_type=["sigmoid"], precompute_ref_log_probs=precompute,
        # the rows are in posttrain's batch order: read them in that order, or shuffle them as TRL does by default
        train_sampling_strategy="random" if side == "trl-random-order" else "sequential",
    )
    rows = [json.loads(line) for line in Path(data["trl_rows"]).read_text().splitlines()]
    model_dir = resolve_model_dir(cfg.model)
    t0 = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = TimedDPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(model_dir))
    check_trl_setup(trainer, json.loads(Path(data["expected"]).read_text()), precompute)
    tokens = count_batch_tokens(trainer)
    with contextlib.redirect_stdout(io.StringIO()):  # its per-log-step dict printing
        output = trainer.train()
    end_to_end = time.perf_counter() - t0
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return Result(side, cfg.steps * cfg.batch_size, sum(ref_seconds),
                  output.metrics["train_runtime"], end_to_end, losses, after_imports, peak_rss_mb(),
                  {"threads": torch.get_num_threads(), "optim": str(trainer.args.optim), **tokens})


def count_batch_tokens(trainer) -> dict[str, int]:
    """Counts of sequence slots and real tokens in the batches TRL's collator makes from now on (training only:
    its reference precompute, if any, already ran in the constructor)."""
    counts = {"slots": 0, "real": 0}
    collate = trainer.data_collator

    def counting_collate(examples):
        batch = collate(examples)
        counts["slots"] += batch["input_ids"].numel()
        counts["real"] += int(batch["attention_mask"].sum())
        return batch

    trainer.data_collator = counting_collate
    return counts


def check_trl_setup(trainer, expected: list[list[list[int]]], precompute: bool) -> None:
    """Stop unless TRL will train what posttrain trains: same token ids in the same order, fp32, no checkpointing."""
    import torch

    dataset = trainer.train_dataset
    if len(dataset) != len(expected):
        raise SystemExit(f"TRL kept {len(dataset)} pairs, posttrain {len(expected)}")
    for i, (row, (prompt, chosen, rejected)) in enumerate(zip(dataset, expected)):
        if (row["prompt_ids"], row["chosen_ids"], row["rejected_ids"]) != (prompt, chosen, rejected):
            raise SystemExit(f"pair {i}: TRL and posttrain tokenize differently; the comparison would be unfair")
    if trainer.args.gradient_checkpointing or trainer.model.is_activation_checkpointing:
        raise SystemExit("TRL would train with gradient checkpointing; the comparison would be unfair")
    if trainer.model.dtype != torch.float32 or (trainer.ref_model is None) != precompute:
        raise SystemExit("TRL would train in another dtype or without the reference set-up asked for")


def run_side(side: str, cfg: BenchConfig, data: dict, out: str) -> dict:
    """Entry point of a fresh process: one run, returned as a plain dict."""
    import peft  # noqa: F401  both sides use them; posttrain would import them inside its timed window, TRL at import
    import torch
    import transformers
    import transformers.models.llama.modeling_llama  # noqa: F401

    transformers.logging.set_verbosity_error()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    if side.startswith("posttrain"):  # posttrain's runs set its allocator policy themselves (training.distributed)
        return asdict(run_posttrain(cfg, data, Path(out), share_prompt=side == "posttrain"))
    if side == "trl-kept-memory":  # TRL's default row with glibc's malloc keeping freed memory, as posttrain's runs do
        from posttrain.cpu import keep_freed_memory

        keep_freed_memory()
        side = "trl"
    return asdict(run_trl(cfg, data, Path(out), side))


def run_in_fresh_process(side: str, cfg: BenchConfig, data: dict, out: Path) -> Result:
    """Run one side in a new interpreter, so its peak RSS is its own and nothing is cached between runs."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return Result(**pool.submit(run_side, side, cfg, data, str(out)).result())


# -- the comparison ----------------------------------------------------------------------------


def compare(cfg: BenchConfig, folder: Path) -> tuple[dict[str, list[Result]], dict]:
    """Every row `repeats` times, interleaved (A B C ... A B C ...), each run in a fresh process."""
    data = prepare(cfg, folder)
    results: dict[str, list[Result]] = {side: [] for side in SIDES}
    for r in range(cfg.repeats):
        for side in SIDES:
            res = run_in_fresh_process(side, cfg, data, folder / f"{side}-{r}")
            results[side].append(res)
            print(f"  [{r + 1}/{cfg.repeats}] {side}: {res.pairs_per_second:.1f} pairs/s ({res.pairs} pairs / "
                  f"{res.ref_seconds:.2f} s reference + {res.loop_seconds:.2f} s loop), loss step 1 "
                  f"{res.losses[0]:.4f}, last {res.losses[-1]:.4f}, peak RSS {res.peak_rss_mb:.0f} MB", flush=True)
    check_losses(results)
    return results, data


def check_losses(results: dict[str, list[Result]]) -> None:
    """Stop unless every run starts at log 2 (policy = reference) and logged one loss per step."""
    for side, runs in results.items():
        for res in runs:
            if abs(res.losses[0] - LOG2) > 1e-3 or len(res.losses) != len(results["posttrain"][0].losses):
                raise SystemExit(f"{side}: step-1 loss {res.losses[0]:.4f} (expected log 2 = {LOG2:.4f}) or "
                                 f"{len(res.losses)} losses logged; the runs did not do the same thing")


def max_loss_gap(results: dict[str, list[Result]]) -> float:
    """Largest |loss difference| at any step between any two runs that trained on the same batches."""
    curves = [res.losses for side in SAME_BATCHES for res in results[side]]
    return max(abs(a - b) for curve in curves[1:] for a, b in zip(curves[0], curve))


def curve_steps(steps: int) -> list[int]:
    """1-based steps at which the loss curves are shown: the first few, then doublings, then the last."""
    shown = [s for s in (1, 2, 4, 8, 16, 32, 64, 128, 256) if s < steps]
    return shown + [steps]


def dpo_flops_per_token(model: str, data: dict) -> float:
    """Model FLOPs of DPO per real token of the two-row layout ([prompt, chosen] and [prompt, rejected]): the
    policy's forward and backward, 6N + 12·L·T·d, plus the reference's forward, 2N + 4·L·T·d (PaLM
    arXiv:2204.02311 app. B; N = matmul parameters, LM head included; T = token-weighted mean length)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from posttrain.models.load import resolve_model_dir

    config = AutoConfig.from_pretrained(resolve_model_dir(model))
    n = flop_params(AutoModelForCausalLM.from_config(config))
    t = data["real_sq"] / data["real"]
    return train_flops_per_token(n, config.num_hidden_layers, t, config.hidden_size) * 4 / 3


def mfu(res: Result, data: dict, per_token: float, peak_gflops: float) -> float:
    """Share of the measured matmul peak that the run's pairs/s is worth in two-row DPO FLOPs."""
    return data["real"] * per_token / res.seconds / 1e9 / peak_gflops


def _median(runs: list[Result], key) -> float:
    return statistics.median(key(r) for r in runs)


def results_markdown(cfg: BenchConfig, results: dict[str, list[Result]], data: dict, before: str, after: str,
                     per_token: float, peak: float) -> str:
    threads = results["posttrain"][0].extra["threads"]
    tail = max(1, cfg.steps // 4)
    return "\n".join([
        f"`{' '.join(['.venv/bin/python bench/dpo.py', *sys.argv[1:]])}` ({time.strftime('%Y-%m-%d %H:%M')}): "
        f"model `{cfg.model}` (built-in random-init Llama, {data['params'] / 1e6:.1f}M parameters), "
        f"{data['n_pairs']} arithmetic preference pairs (chosen: the bare right answer; rejected: a wrong number, or "
        f"the right answer followed by chatty filler; longest pair {data['longest']} tokens), sigmoid DPO beta "
        f"{cfg.beta:g}, batch {cfg.batch_size} pairs, lr {cfg.lr:g} cosine to 0 without warmup, {cfg.steps} steps "
        f"(one epoch), max_length {cfg.max_length}, grad clip 1, fp32, no gradient checkpointing, {threads} torch "
        f"thread(s) per run; {cfg.repeats} interleaved runs per row, each in a fresh process; medians.",
        "",
        "pairs/s = pairs trained / (reference log-prob work before the loop + training-loop wall time): posttrain's "
        "timed reference pass + `time/train_seconds` less its checkpoint writes (`time/checkpoint_seconds`: TRL "
        "saves nothing here, posttrain always checkpoints after the last step); TRL's `_precompute_ref_logps` (it runs in the trainer's "
        "constructor) + `train_runtime`. The first three rows train on identical batches (TRL reads the rows in "
        "posttrain's length-bucketed batch order with a sequential sampler); the last lets TRL shuffle as it does by "
        "default. Tokens = sequence slots in the training batches (2B x padded length, or with the prompt shared "
        "B x padded [prompt, chosen, rejected], summed over steps) and the "
        "share of them that are real tokens. End-to-end adds tokenization, model loading and (posttrain) saving "
        "final/. Peak RSS = `ru_maxrss` of the run's own process; \"after imports\" is its RSS once the run's "
        "libraries were imported.",
        "",
        f"MFU = pairs/s x model FLOPs per pair / the measured fp32 peak ({peak:.1f} GFLOP/s: a 2048^3 matmul, the "
        f"higher of the medians measured before and after the runs). FLOPs per pair count the two-row DPO work "
        f"every row must stand for: policy forward + backward and reference forward over [prompt, chosen] and "
        f"[prompt, rejected], 8N + 16·L·T·d per real token ({per_token / 1e6:.1f} MFLOP; PaLM arXiv:2204.02311 "
        "app. B). posttrain's default row does less work for the same pairs (each prompt encoded once; the last decoder "
        "layer and the LM head only at response tokens), so its figure is the effective rate, not the share of the peak its kernels ran at.",
        "",
        f"- machine before: {before}",
        f"- machine after: {after}",
        "- the machine is shared with other jobs: absolute numbers move with their load; the ratios were measured "
        "side by side, interleaved.",
        "",
        "| trainer | pairs/s (median) | runs (pairs/s) | posttrain ÷ this | MFU | reference s | loop s | tokens (real) | "
        f"end-to-end s | peak RSS MB | RSS after imports MB | loss step 1 | loss last step | mean loss, last {tail} |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *table_rows(results, tail, data, per_token, peak),
        "",
        where_time_goes(results),
        "",
        loss_curve_markdown(cfg, results),
    ])


def table_rows(results: dict[str, list[Result]], tail: int, data: dict, per_token: float, peak: float) -> list[str]:
    """One markdown row per trainer: medians over its runs."""
    pps = {side: _median(runs, lambda r: r.pairs_per_second) for side, runs in results.items()}
    rows = []
    for side, runs in results.items():
        ratio = "1.00x" if side == "posttrain" else f"**{pps['posttrain'] / pps[side]:.2f}x**"
        slots, real = runs[0].extra["slots"], runs[0].extra["real"]
        cells = [
            LABELS[side], f"{pps[side]:.1f}", ", ".join(f"{r.pairs_per_second:.1f}" for r in runs), ratio,
            f"{100 * _median(runs, lambda r: mfu(r, data, per_token, peak)):.1f}%",
            f"{_median(runs, lambda r: r.ref_seconds):.2f}", f"{_median(runs, lambda r: r.loop_seconds):.2f}",
            f"{slots:,} ({100 * real / slots:.0f}%)", f"{_median(runs, lambda r: r.end_to_end_seconds):.2f}",
            f"{_median(runs, lambda r: r.peak_rss_mb):.0f}", f"{_median(runs, lambda r: r.rss_after_imports_mb):.0f}",
            f"{runs[0].losses[0]:.4f}", f"{_median(runs, lambda r: r.losses[-1]):.4f}",
            f"{_median(runs, lambda r: statistics.mean(r.losses[-tail:])):.4f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def where_time_goes(results: dict[str, list[Result]]) -> str:
    """The ratios that explain the table, from its own medians."""
    def med(side: str, key) -> float:
        return _median(results[side], key)

    pps = {side: med(side, lambda r: r.pairs_per_second) for side in results}
    pt_ref, pt_loop = med("posttrain", lambda r: r.ref_seconds), med("posttrain", lambda r: r.loop_seconds)
    two_ref, two_loop = (med("posttrain-two-rows", lambda r: r.ref_seconds),
                         med("posttrain-two-rows", lambda r: r.loop_seconds))
    slots = {side: runs[0].extra["slots"] for side, runs in results.items()}
    return (
        f"Where the time goes: posttrain spends {100 * pt_ref / (pt_ref + pt_loop):.0f}% of its time on the "
        f"reference pass. Prefix sharing (arXiv:2410.20305) puts {slots['posttrain']:,} sequence slots through the "
        f"model instead of {slots['posttrain-two-rows']:,} ({slots['posttrain'] / slots['posttrain-two-rows']:.2f}x; "
        f"each prompt is encoded once, and the last decoder layer and the LM head run only at the response tokens; "
        f"with two rows the LM head runs from the last prompt token on): it makes posttrain {pps['posttrain'] / pps['posttrain-two-rows']:.2f}x faster than with two rows per "
        f"pair. With two rows, posttrain does the same model matmuls per pair as TRL (one policy forward and "
        f"backward, one reference forward) and is {pps['posttrain-two-rows'] / pps['trl']:.2f}x TRL's default and "
        f"{pps['posttrain-two-rows'] / pps['trl-precompute']:.2f}x TRL with precomputed reference log-probs: "
        f"TRL's precompute-row loop takes {med('trl-precompute', lambda r: r.loop_seconds) / two_loop:.2f}x the "
        f"two-row loop and its reference pass {med('trl-precompute', lambda r: r.ref_seconds) / two_ref:.2f}x. With "
        f"its own random batches TRL pushes {slots['trl-random-order'] / slots['trl']:.2f}x the sequence slots of "
        "the bucketed two-row batches through the model (more padding), which is most of that row's gap."
    )


def loss_curve_markdown(cfg: BenchConfig, results: dict[str, list[Result]]) -> str:
    steps = curve_steps(cfg.steps)
    header = "| step | " + " | ".join(LABELS[side] for side in SIDES) + " |"
    rows = [f"| {s} | " + " | ".join(f"{results[side][0].losses[s - 1]:.4f}" for side in SIDES) + " |" for s in steps]
    return "\n".join([
        f"Loss curves (first run of each row). The largest gap between any two same-batch runs at any of the "
        f"{cfg.steps} steps is {max_loss_gap(results):.1e}; step 1 is log 2 = {LOG2:.4f} on every run (policy = "
        "reference). Batches are length-bucketed, so a batch of \"wrong number\" pairs (indistinguishable to a model "
        "that cannot add) stays near log 2 while a batch of chatty rejected answers falls fast: the curve jumps from "
        "step to step, the same way on every same-batch row. The random-order row mixes both kinds in each batch.",
        "",
        header,
        "|---:|" + "---:|" * len(SIDES),
        *rows,
    ])


def main(cfg: BenchConfig) -> None:
    if cfg.threads:  # the runs pin themselves; pinned here too so that machine_line reports the runs' setting
        import torch

        torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-dpo-") as tmp:
        before = machine_line()
        print(before, flush=True)
        peak_before = matmul_peak_gflops()
        results, data = compare(cfg, Path(tmp))
        peak = max(peak_before, matmul_peak_gflops())
        text = results_markdown(cfg, results, data, before, machine_line(), dpo_flops_per_token(cfg.model, data), peak)
    print(text)
    if cfg.write:
        model = "" if cfg.model == "tiny" else f", {cfg.model}"
        update_results("DPO: posttrain vs TRL DPOTrainer" + model + threads_note(cfg.threads), text)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(BenchConfig))
