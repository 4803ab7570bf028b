"""posttrain SFT against TRL's SFTTrainer on the same model, data and settings; then MFU at ~10M and ~30M.

    python bench/sft.py                 # ~6 min on 2 quiet cores; writes two sections of bench/RESULTS.md
    python bench/sft.py --worked-share 1 --no-mfu    # near-uniform lengths: where padding costs TRL least
    python bench/sft.py --steps 20 --repeats 1 --no-mfu --no-write      # a quick look

Both sides train the built-in tiny Llama from the same initial weights on the same chat examples
(2-digit + and - problems, `builtin:arithmetic?steps=<share>&ops=+-`, loss on the assistant turn
only). By default half the answers show worked steps (57-76 tokens) and half are the bare number
(23-25 tokens), so a batch mixes short and long examples as chat SFT data does; `--worked-share 1`
makes every answer worked, lengths nearly uniform, the case where padding costs TRL least. Both
sides use the same batch size, learning rate, warmup + cosine schedule, steps,
max_length and gradient clipping; fp32, no gradient checkpointing, no torch.compile, no packing,
one process. Before timing, the bench checks that TRL tokenized every example to exactly the
token ids and trained positions posttrain uses.

Throughput (the same definition on both sides): real (non-pad) input tokens processed, divided by
the wall time of the training loop only (no model loading, tokenization or saving):
posttrain's `time/train_seconds` less `time/checkpoint_seconds` from metrics.jsonl (it always checkpoints after
the last step; TRL saves nothing here), TRL's `train_runtime`. Tokens are TRL's
logged `num_tokens` (the attention-mask sum) and, for posttrain, the lengths of the examples its
data order put in each step. Runs alternate (posttrain, TRL, posttrain, TRL, ...) so that load
from other processes hits both sides alike; the table gives medians and the ratio of medians.
Equal final loss is checked on held-out data: both final models are scored by the same function
(token-mean NLL on the task's 500 held-out problems).

Rows: posttrain and TRL with random batches, each with its defaults (the main pair: posttrain runs
padding-free, every example of a batch in one row with per-example attention, and the LM head only
where the loss reads logits; TRL pads each batch to its longest example); posttrain with padded rows
(--data.no-padding-free: the same layout as TRL); posttrain length-bucketed against TRL's
`train_sampling_strategy="group_by_length"`; posttrain packed. Both use fused AdamW. A known
difference that remains: TRL's linear warmup starts at lr 0 on the first step, posttrain's at
lr/warmup_steps.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import (  # noqa: E402
    StepTimes,
    flop_params,
    machine_line,
    matmul_peak_gflops,
    posttrain_loop_seconds,
    threads_note,
    train_flops_per_token,
    update_results,
)

from posttrain.config import DataConfig, ModelConfig, OptimConfig, RunConfig  # noqa: E402
from posttrain.data.load import load_records  # noqa: E402
from posttrain.data.tokenize import Example, tokenize_dataset  # noqa: E402
from posttrain.models.load import count_parameters, load_tokenizer, resolve_model_dir  # noqa: E402
from posttrain.recipes import sft  # noqa: E402
from posttrain.tasks import arithmetic  # noqa: E402
from posttrain.training.distributed import setup_distributed  # noqa: E402
from posttrain.training.loop import DataOrder  # noqa: E402
from posttrain.training.metrics import read_metrics  # noqa: E402


@dataclass
class BenchConfig:
    """posttrain SFT vs TRL SFTTrainer (tokens/s at equal settings), and posttrain MFU at ~10M/~30M parameters."""

    steps: int = 80
    """Optimizer steps per run, both sides."""
    repeats: int = 3
    """Runs per side, interleaved; the table reports medians."""
    batch_size: int = 64
    """Examples per optimizer step (one micro-batch), both sides."""
    lr: float = 3e-3
    """Peak learning rate (AdamW), both sides."""
    warmup_steps: int = 10
    """Linear warmup steps before the cosine decay, both sides."""
    n_examples: int = 3000
    """Training examples (2-digit + and - problems)."""
    worked_share: float = 0.5
    """Share of the answers (0 to 1) that show worked steps (57-76 tokens); the others are the bare number (23-25
    tokens). 0.5 mixes short and long examples in each batch; 1 makes lengths nearly uniform."""
    max_length: int = 256
    """Maximum tokens per example, both sides (no example is longer)."""
    variants: bool = True
    """Also time posttrain's own defaults: length-bucketed batches, and packing."""
    compare: bool = True
    """Run the posttrain vs TRL comparison."""
    mfu: bool = True
    """Also measure posttrain's MFU on tiny-10m and tiny-30m."""
    mfu_steps: int = 15
    """Optimizer steps per MFU run."""
    mfu_batch_size: int = 16
    """Examples per step in the MFU runs."""
    threads: int = 0
    """torch threads (0 leaves torch's default, one per core)."""
    write: bool = True
    """Write the results into bench/RESULTS.md."""


@dataclass
class Result:
    """One timed training run."""

    label: str
    tokens: int
    seconds: float  # the whole training loop
    steady_tokens_per_second: float  # the median over steps of a step's tokens / its seconds
    train_loss: float
    eval_loss: float

    @property
    def tokens_per_second(self) -> float:
        """Tokens / whole-loop wall time."""
        return self.tokens / self.seconds


# -- data ------------------------------------------------------------------------------------


def write_data(cfg: BenchConfig, folder: Path) -> tuple[Path, list[dict], list[dict]]:
    """The training rows as a chat JSONL file (prompt/completion messages) and as dicts, plus held-out rows."""
    opts = {"steps": f"{cfg.worked_share:g}", "ops": "+-"}
    train = _messages_only(arithmetic.rows("train", n=str(cfg.n_examples), **opts))
    heldout = _messages_only(arithmetic.rows("heldout", **opts))
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in train))
    return path, train, heldout


def _messages_only(rows: list[dict]) -> list[dict]:
    """Drop the task's `answer` field: both trainers see prompt and completion messages only."""
    return [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]


def tokenize(source: str, tokenizer, max_length: int) -> list[Example]:
    """posttrain's own tokenization of `source`, exactly as the SFT recipe does it."""
    records = load_records(source, accept=sft.SFT_KINDS)
    return tokenize_dataset(records, tokenizer, DataConfig(train=source, max_length=max_length), source=source)


def check_same_tokens(trl_dataset, examples: list[Example]) -> None:
    """Stop unless TRL's tokenized rows equal posttrain's: same ids, same trained positions (first token aside)."""
    if len(trl_dataset) != len(examples):
        raise SystemExit(f"TRL kept {len(trl_dataset)} examples, posttrain {len(examples)}")
    for i, (row, ex) in enumerate(zip(trl_dataset, examples)):
        trl_mask = [label != -100 for label in row["labels"]]
        if row["input_ids"] != ex.input_ids or trl_mask[1:] != list(ex.loss_mask[1:]):
            raise SystemExit(f"example {i}: TRL and posttrain tokenize differently; the comparison would be unfair")


# -- the two trainers --------------------------------------------------------------------------


def run_posttrain(cfg: BenchConfig, model: str, data: Path, out: Path, name: str, examples: list[Example],
                  heldout: list[Example], *, steps: int, batch_size: int, lr: float, bucket: bool = False,
                  packing: bool = False, padding_free: bool = True) -> Result:
    """One posttrain SFT run; tokens counted from the recipe's own data order (DataOrder)."""
    sft_cfg = sft.SFTConfig(
        model=ModelConfig(name=model, dtype="float32"),
        data=sft.SFTDataConfig(train=str(data), max_length=cfg.max_length, packing=packing, bucket_by_length=bucket,
                               padding_free=padding_free),
        optim=OptimConfig(lr=lr, warmup_steps=cfg.warmup_steps, schedule="cosine", batch_size=batch_size,
                          max_steps=steps, max_grad_norm=1.0),
        run=RunConfig(name=name, output_dir=str(out), device="cpu", progress=False, log_every=min(10, steps), seed=0,
                      threads=torch.get_num_threads()),  # TRL's count: posttrain would pick fewer on a busy machine
    )
    with StepTimes() as step_times:
        run_dir = sft.train(sft_cfg)
    metrics = read_metrics(run_dir)
    seconds = posttrain_loop_seconds(metrics)
    train_loss = [m["train/loss"] for m in metrics if "train/loss" in m][-1]
    order = DataOrder([len(e) for e in examples], batch_size, 1, 0, bucket)
    step_tokens = [sum(len(examples[i]) for b in order.step_batches(s) for i in b) for s in range(steps)]
    label = "posttrain" + (", packed" if packing else ", length-bucketed" if bucket else "") + (
        "" if packing or padding_free else ", padded rows (--data.no-padding-free)")
    held = heldout_loss(run_dir / "final", heldout) if heldout else float("nan")
    return Result(label, sum(step_tokens), seconds, step_times.median_rate(step_tokens), train_loss, held)


def run_trl(cfg: BenchConfig, model_dir: Path, tokenizer, train_rows: list[dict], out: Path,
            examples: list[Example], heldout: list[Example], *, group_by_length: bool = False) -> Result:
    """One TRL SFTTrainer run at the same settings (TRL's own defaults for everything not named)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig as TRLConfig
    from trl import SFTTrainer

    args = TRLConfig(
        # activation_checkpointing is transformers 5's name for gradient_checkpointing (TRL defaults it to on)
        output_dir=str(out), use_cpu=True, bf16=False, fp16=False, activation_checkpointing=False, torch_compile=False,
        report_to="none", save_strategy="no", logging_steps=min(10, cfg.steps), disable_tqdm=True, seed=0,
        per_device_train_batch_size=cfg.batch_size, gradient_accumulation_steps=1, max_steps=cfg.steps,
        learning_rate=cfg.lr, lr_scheduler_type="cosine", warmup_steps=cfg.warmup_steps, weight_decay=0.0,
        max_grad_norm=1.0, max_length=cfg.max_length, packing=False, completion_only_loss=True,
        train_sampling_strategy="group_by_length" if group_by_length else "random",
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(train_rows),
                         processing_class=tokenizer)
    check_same_tokens(trainer.train_dataset, examples)
    if args.gradient_checkpointing or trainer.model.is_activation_checkpointing or trainer.model.dtype != torch.float32:
        raise SystemExit("TRL would train with gradient checkpointing or not in fp32; the comparison would be unfair")
    step_tokens: list[int] = []  # real tokens of each training forward (one per step: no gradient accumulation)

    def count(module, args, kwargs) -> None:
        if module.training:
            step_tokens.append(int(kwargs["attention_mask"].sum()))

    hook = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # its per-log-step dict printing
            with StepTimes() as step_times:
                output = trainer.train()
    finally:
        hook.remove()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    seen = sum(step_tokens[: logs[-1]["step"]])
    if len(step_tokens) != cfg.steps or seen != logs[-1]["num_tokens"]:
        raise SystemExit(f"TRL logged {logs[-1]['num_tokens']:.0f} tokens by step {logs[-1]['step']}, its "
                         f"{len(step_tokens)} training forward passes saw {seen}; the token count would be wrong")
    label = "TRL SFTTrainer" + (", group_by_length" if group_by_length else "")
    return Result(label, sum(step_tokens), output.metrics["train_runtime"], step_times.median_rate(step_tokens),
                  logs[-1]["loss"], heldout_loss(trainer.model, heldout))


def heldout_loss(model_or_dir, heldout: list[Example]) -> float:
    """Token-mean NLL on held-out examples, the same function for both sides."""
    from transformers import AutoModelForCausalLM

    model = model_or_dir
    if isinstance(model_or_dir, Path):
        model = AutoModelForCausalLM.from_pretrained(model_or_dir, dtype=torch.float32)
    pad_id = model.config.pad_token_id
    return sft.evaluate_loss(model, heldout, 64, pad_id, setup_distributed("cpu"))


# -- the comparison ----------------------------------------------------------------------------


def compare(cfg: BenchConfig, folder: Path) -> tuple[list[tuple[list[Result], int | None]], float, str]:
    """Interleaved runs of every row. Returns each row's results with the index of the TRL row it is
    compared with (the one with the same data order), the tiny model's FLOPs per token, and the workload."""
    data, train_rows, heldout_rows = write_data(cfg, folder)
    heldout_path = folder / "heldout.jsonl"
    heldout_path.write_text("".join(json.dumps(r) + "\n" for r in heldout_rows))
    tokenizer = load_tokenizer("tiny")
    examples = tokenize(str(data), tokenizer, cfg.max_length)
    heldout = tokenize(str(heldout_path), tokenizer, cfg.max_length)
    model_dir = resolve_model_dir("tiny")
    same = dict(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr)
    # (run, index of the TRL row to compare with): random order vs random order, bucketed vs bucketed
    rows: list[tuple[Callable[[int], Result], int | None]] = [
        (lambda r: run_posttrain(cfg, "tiny", data, folder, f"pt{r}", examples, heldout, **same), 1),
        (lambda r: run_trl(cfg, model_dir, tokenizer, train_rows, folder / f"trl{r}", examples, heldout), None),
    ]
    if cfg.variants:
        rows += [
            (lambda r: run_posttrain(cfg, "tiny", data, folder, f"ptr{r}", examples, heldout, padding_free=False,
                                     **same), 1),
            (lambda r: run_posttrain(cfg, "tiny", data, folder, f"ptb{r}", examples, heldout, bucket=True, **same), 4),
            (lambda r: run_trl(cfg, model_dir, tokenizer, train_rows, folder / f"trlg{r}", examples, heldout,
                               group_by_length=True), None),
            (lambda r: run_posttrain(cfg, "tiny", data, folder, f"ptp{r}", examples, heldout, packing=True, **same), 1),
        ]
    results: list[list[Result]] = [[] for _ in rows]
    for r in range(cfg.repeats):
        for side, (run, _) in zip(results, rows):
            res = run(r)
            side.append(res)
            print(f"  [{r + 1}/{cfg.repeats}] {res.label}: {res.tokens_per_second:,.0f} tok/s "
                  f"({res.tokens} tokens / {res.seconds:.2f} s), train loss {res.train_loss:.3f}, "
                  f"held-out loss {res.eval_loss:.3f}", flush=True)
    return ([(side, baseline) for side, (_, baseline) in zip(results, rows)], model_flops(model_dir, examples)[2],
            workload(cfg, examples))


def workload(cfg: BenchConfig, examples: list[Example]) -> str:
    """The training examples in words: lengths, and what padding each random batch to its longest example costs."""
    lengths = [len(e) for e in examples]
    order = DataOrder(lengths, cfg.batch_size, 1, 0, False)
    batches = [b for s in range(cfg.steps) for b in order.step_batches(s)]
    padded = sum(len(b) * max(lengths[i] for i in b) for b in batches) / sum(lengths[i] for b in batches for i in b)
    return (f"2-digit + and - arithmetic, {cfg.worked_share:.0%} of the answers with worked steps; "
            f"{min(lengths)}-{max(lengths)} tokens, mean {statistics.mean(lengths):.0f}; padded to its longest "
            f"example, a random batch of {cfg.batch_size} holds {padded:.2f}x its real tokens")


def model_flops(model_dir: Path, examples: list[Example]) -> tuple[int, int, float]:
    """(all parameters, matmul parameters N, training FLOPs per token on `examples`) of the model in model_dir."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_config(config)
    n = flop_params(model)
    per_token = train_flops_per_token(n, config.num_hidden_layers, weighted_length(examples), config.hidden_size)
    # posttrain runs the LM head only where the loss reads logits (logits_to_keep): count its FLOPs there only,
    # so that skipped work does not inflate MFU
    head = model.get_output_embeddings().weight.numel()
    per_token -= 6 * head * (1 - logit_share(examples))
    return count_parameters(model)[1], n, per_token


def logit_share(examples: list[Example]) -> float:
    """Share of positions whose logits the SFT loss reads: a trained token, or the one just before it."""
    kept = sum(sum(1 for t in range(len(e)) if e.loss_mask[t] or (t + 1 < len(e) and e.loss_mask[t + 1]))
               for e in examples)
    return kept / sum(len(e) for e in examples)


def weighted_length(examples: list[Example]) -> float:
    """Token-weighted mean length sum(l^2)/sum(l): the attention length an average token sees."""
    return sum(len(e) ** 2 for e in examples) / sum(len(e) for e in examples)


def comparison_markdown(cfg: BenchConfig, rows: list[tuple[list[Result], int | None]], flops_per_token: float,
                        workload_text: str, peak: float, load_before: str, load_after: str) -> str:
    lines = [
        f"`{command_line()}` ({time.strftime('%Y-%m-%d %H:%M')}): tiny model (built-in Llama), {cfg.n_examples} "
        f"chat examples ({workload_text}), batch {cfg.batch_size}, lr {cfg.lr:g}, "
        f"{cfg.warmup_steps} warmup steps + cosine, {cfg.steps} steps, max_length {cfg.max_length}, fp32, no gradient "
        f"checkpointing, loss on assistant tokens only; {cfg.repeats} interleaved runs per row, medians.",
        "",
        "tokens/s counts real (non-pad) input tokens. *Whole loop*: tokens / training-loop wall time (posttrain "
        "`time/train_seconds` less its checkpoint writes, TRL `train_runtime`, which saves nothing here). *Median step*: the median over optimizer steps of a step's "
        "tokens / its time (first step left out), which bursts of load from other processes barely move. \"vs TRL\" "
        "divides medians by those of the TRL row with the same data order (random, or grouped by length). "
        "MFU = median-step tokens/s x FLOPs per token / fp32 matmul peak.",
        "",
        f"- machine before: {load_before}",
        f"- machine after: {load_after}",
        f"- fp32 matmul peak (2048^3, the higher of the medians of 7 before and after): {peak:.1f} GFLOP/s; "
        f"tiny model FLOPs/token: {flops_per_token / 1e6:.2f} M",
        "",
        "| trainer | whole loop tokens/s | runs | vs TRL | median-step tokens/s | runs | vs TRL | MFU "
        "| train loss (last logged) | held-out loss |",
        "|---|---:|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    loop = [statistics.median(r.tokens_per_second for r in side) for side, _ in rows]
    steady = [statistics.median(r.steady_tokens_per_second for r in side) for side, _ in rows]
    for i, (side, baseline) in enumerate(rows):
        vs = lambda rates: "1.00x" if baseline is None else f"**{rates[i] / rates[baseline]:.2f}x**"  # noqa: E731
        mfu = 100 * steady[i] * flops_per_token / (peak * 1e9)
        train = statistics.median(r.train_loss for r in side)
        held = statistics.median(r.eval_loss for r in side)
        lines.append(
            f"| {side[0].label} | {loop[i]:,.0f} | {', '.join(f'{r.tokens_per_second:,.0f}' for r in side)} | {vs(loop)} "
            f"| {steady[i]:,.0f} | {', '.join(f'{r.steady_tokens_per_second:,.0f}' for r in side)} | {vs(steady)} "
            f"| {mfu:.1f}% | {train:.3f} | {held:.3f} |"
        )
    lines += ["", "Train loss: posttrain logs the loss of the step itself, TRL the mean over the last 10 steps; "
              "the held-out loss (token-mean NLL on 500 held-out problems) is computed by one function for both."]
    return "\n".join(lines)


# -- MFU ---------------------------------------------------------------------------------------


def mfu_rows(cfg: BenchConfig, folder: Path) -> list[str]:
    """posttrain SFT on tiny-10m and tiny-30m (padding-free, length-bucketed batches), one run each."""
    data, _, _ = write_data(cfg, folder)
    rows = []
    for name in ("tiny-10m", "tiny-30m"):
        examples = tokenize(str(data), load_tokenizer(name), cfg.max_length)
        total, n, per_token = model_flops(resolve_model_dir(name), examples)
        peak_before = matmul_peak_gflops()
        res = run_posttrain(cfg, name, data, folder, f"mfu-{name}", examples, [], steps=cfg.mfu_steps,
                            batch_size=cfg.mfu_batch_size, lr=1e-3, bucket=True)
        peak = max(peak_before, matmul_peak_gflops())
        achieved = res.steady_tokens_per_second * per_token / 1e9
        print(f"  {name}: {res.steady_tokens_per_second:,.0f} tok/s at the median step, {achieved:.1f} GFLOP/s of "
              f"{peak:.1f} ({100 * achieved / peak:.1f}% MFU)", flush=True)
        rows.append(f"| {name} | {total / 1e6:.1f} M | {n / 1e6:.1f} M | {per_token / 1e6:.1f} M | "
                    f"{res.tokens_per_second:,.0f} | {res.steady_tokens_per_second:,.0f} | "
                    f"{achieved:.1f} | {peak:.1f} | {100 * achieved / peak:.1f}% |")
    return rows


def mfu_markdown(cfg: BenchConfig, rows: list[str], load_before: str, load_after: str) -> str:
    return "\n".join([
        f"`{command_line()}` ({time.strftime('%Y-%m-%d %H:%M')}): posttrain SFT, padding-free, on "
        f"length-bucketed batches (`--data.bucket-by-length`), batch {cfg.mfu_batch_size}, {cfg.mfu_steps} steps, "
        "fp32, one run per model. FLOPs per token = 6N + 12·L·T·d (PaLM arXiv:2204.02311 app. B), N = matmul "
        "parameters (every nn.Linear, LM head included; embedding lookup excluded), T = token-weighted mean example "
        "length, less the LM head's 6·V·d on the positions whose logits posttrain does not compute (before each "
        "answer). Achieved FLOP/s uses the median-step tokens/s (the median over optimizer steps of a step's tokens / "
        "its time, first step left out). Peak = "
        "fp32 2048^3 matmul, the higher of the medians of 7 measured just before and just after each run.",
        "",
        f"- machine before: {load_before}",
        f"- machine after: {load_after}",
        "",
        "| model | parameters | N (matmul params) | FLOPs/token | whole-loop tokens/s | median-step tokens/s "
        "| achieved GFLOP/s | peak GFLOP/s | MFU |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
    ])


def command_line() -> str:
    return " ".join(["python bench/sft.py", *sys.argv[1:]])


def main(cfg: BenchConfig) -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    transformers.logging.set_verbosity_error()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-") as tmp:
        folder = Path(tmp)
        before = machine_line()
        peak = matmul_peak_gflops()
        print(f"fp32 matmul peak {peak:.1f} GFLOP/s; {before}", flush=True)
        if cfg.compare:
            results, flops_per_token, workload_text = compare(cfg, folder)
            peak = max(peak, matmul_peak_gflops())  # load that came and went during the first measurement
            text = comparison_markdown(cfg, results, flops_per_token, workload_text, peak, before, machine_line())
            print(text)
            if cfg.write:
                lengths = "mixed lengths" if 0 < cfg.worked_share < 1 else "near-uniform lengths"
                title = f"SFT: posttrain vs TRL SFTTrainer, {lengths} ({cfg.worked_share:.0%} of answers worked)"
                update_results(title + threads_note(cfg.threads), text)
        if cfg.mfu:
            before = machine_line()
            text = mfu_markdown(cfg, mfu_rows(cfg, folder), before, machine_line())
            print(text)
            if cfg.write:
                update_results("SFT: MFU at ~10M and ~30M parameters" + threads_note(cfg.threads), text)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(BenchConfig))
