"""posttrain and TRL on a busy CPU: SFT and DPO quiet, and with one core held by a background busy loop.

    python bench/busy.py                 # ~10 min on 2 cores; writes the "A busy CPU" section of bench/RESULTS.md
    python bench/busy.py --repeats 1 --no-write      # a quick look

Laptops do other work while they train. With torch's default of one thread per core, a run whose threads
share a core with a busy process waits on its slowest thread in every parallel region. posttrain measures
the other processes' load over its setup and trains with one thread per core they leave free
(`posttrain.cpu.choose_threads`; `--run.threads N` or OMP_NUM_THREADS override it).

Workloads: bench/sft.py's (tiny Llama, mixed-length arithmetic chats, random batches, padding-free posttrain
vs TRL SFTTrainer) and bench/dpo.py's (tiny Llama, arithmetic preference pairs; posttrain's defaults vs TRL
DPOTrainer's default, which runs a reference model forward each step), at fewer steps. Rows: posttrain as a
user runs it (threads chosen at start); posttrain with OMP_NUM_THREADS=2 (torch's default on 2 cores: what it
did before); posttrain with OMP_NUM_THREADS=1 (quiet, the most a run can get from the one core a busy loop
leaves free); TRL with its defaults. Conditions: quiet, and "one core busy": the bench starts
`python -c "while True: pass"` before the run's process and stops it after. Every run is a fresh process;
runs are interleaved (each repeat goes through every row quiet, then every row busy); medians.
Throughput: SFT real tokens / training-loop wall time; DPO pairs / (reference pass + loop), as in the two
benches.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import machine_line, update_results  # noqa: E402

ROWS = {  # label -> environment of the run's process
    "posttrain (threads chosen at start)": {},
    "posttrain, OMP_NUM_THREADS=2 (torch's default)": {"OMP_NUM_THREADS": "2"},
    "posttrain, OMP_NUM_THREADS=1": {"OMP_NUM_THREADS": "1"},  # the most one free core gives
    "TRL (its defaults)": {},
}
GOAL = 2 / 3  # issue 9: a run under a one-core background load keeps at least two thirds of its quiet speed


@dataclass
class BenchConfig:
    """SFT and DPO, posttrain and TRL, quiet and with one core busy."""

    sft_steps: int = 30
    """SFT optimizer steps per run (batch 64, as bench/sft.py)."""
    dpo_steps: int = 24
    """DPO optimizer steps per run (batch 32 pairs, as bench/dpo.py)."""
    repeats: int = 3
    """Runs per row and condition, interleaved; the table reports medians."""
    write: bool = True
    """Write the results into bench/RESULTS.md."""


# -- one run per fresh process -----------------------------------------------------------------


def sft_run(trainer: str, steps: int, folder: str) -> tuple[float, int]:
    """(tokens/s, torch threads) of one run of bench/sft.py's main comparison, posttrain or TRL."""
    import sft
    import torch

    cfg = sft.BenchConfig(steps=steps, write=False)
    data, train_rows, _ = sft.write_data(cfg, Path(folder))
    tokenizer = sft.load_tokenizer("tiny")
    examples = sft.tokenize(str(data), tokenizer, cfg.max_length)
    heldout = examples[:8]  # the held-out loss is not what this bench measures
    out = Path(folder) / f"run-{time.monotonic_ns()}"
    if trainer == "trl":
        res = sft.run_trl(cfg, sft.resolve_model_dir("tiny"), tokenizer, train_rows, out, examples, heldout)
    else:
        res = sft.run_posttrain(cfg, "tiny", data, out, "sft", examples, heldout, steps=steps,
                                batch_size=cfg.batch_size, lr=cfg.lr)
    return res.tokens_per_second, torch.get_num_threads()


def dpo_run(trainer: str, steps: int, folder: str) -> tuple[float, int]:
    """(pairs/s, torch threads) of one run of bench/dpo.py, posttrain's defaults or TRL's."""
    import dpo

    cfg = dpo.BenchConfig(steps=steps, write=False)
    data = dpo.prepare(cfg, Path(folder))
    res = dpo.Result(**dpo.run_side("posttrain" if trainer == "posttrain" else "trl", cfg, data,
                                    str(Path(folder) / f"run-{time.monotonic_ns()}")))
    return res.pairs_per_second, res.extra["threads"]


def in_fresh_process(fn, env: dict[str, str], *args) -> tuple[float, int]:
    """fn(*args) in a new interpreter started with `env` added to this one's environment."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
            return pool.submit(fn, *args).result()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def busy_loop() -> subprocess.Popen:
    loop = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)  # running before the run's process starts, as a user's other work would be
    return loop


# -- the comparison ----------------------------------------------------------------------------


def measure(cfg: BenchConfig, folder: Path) -> dict[tuple[str, str, str], list[tuple[float, int]]]:
    """(workload, row, condition) -> [(rate, threads), ...]."""
    results: dict[tuple[str, str, str], list[tuple[float, int]]] = {}
    workloads = {"SFT": (sft_run, cfg.sft_steps), "DPO": (dpo_run, cfg.dpo_steps)}
    for r in range(cfg.repeats):
        for workload, (fn, steps) in workloads.items():
            for condition in ("quiet", "one core busy"):
                for row, env in ROWS.items():
                    trainer = "trl" if row.startswith("TRL") else "posttrain"
                    run_dir = folder / f"run-{sum(map(len, results.values()))}"
                    run_dir.mkdir()
                    loop = busy_loop() if condition != "quiet" else None
                    try:
                        rate, threads = in_fresh_process(fn, env, trainer, steps, str(run_dir))
                    finally:
                        if loop:
                            loop.kill()
                            loop.wait()
                    results.setdefault((workload, row, condition), []).append((rate, threads))
                    unit = "tok/s" if workload == "SFT" else "pairs/s"
                    print(f"  [{r + 1}/{cfg.repeats}] {workload}, {condition}, {row}: {rate:,.1f} {unit} "
                          f"({threads} thread(s))", flush=True)
    return results


def markdown(cfg: BenchConfig, results: dict, before: str, after: str) -> str:
    def med(key) -> float:
        return statistics.median(rate for rate, _ in results[key])

    lines = [
        f"`{' '.join(['.venv/bin/python bench/busy.py', *sys.argv[1:]])}` ({time.strftime('%Y-%m-%d %H:%M')}): "
        f"SFT = bench/sft.py's main comparison at {cfg.sft_steps} steps (tiny Llama, batch 64 mixed-length "
        f"arithmetic chats, random batches), tokens/s of the training loop; DPO = bench/dpo.py at {cfg.dpo_steps} "
        "steps (batch 32 pairs; posttrain's defaults vs TRL DPOTrainer's default), pairs/s including the reference "
        "pass. \"One core busy\": the bench runs `python -c \"while True: pass\"` from before the run's process "
        f"starts until it ends. Each run a fresh process; {cfg.repeats} interleaved runs per cell; medians. "
        f"Goal (issue 9): busy ÷ quiet ≥ {GOAL:.2f} for posttrain as a user runs it.",
        "",
        f"- machine before: {before}",
        f"- machine after: {after}",
        "",
        "| workload | trainer | quiet | one core busy | busy ÷ quiet | threads (quiet / busy) | runs, busy |",
        "|---|---|---:|---:|---:|---|---|",
    ]
    for workload in ("SFT", "DPO"):
        for row in ROWS:
            q, b = med((workload, row, "quiet")), med((workload, row, "one core busy"))
            threads = "/".join(",".join(sorted({str(t) for _, t in results[(workload, row, c)]}))
                               for c in ("quiet", "one core busy"))
            runs = ", ".join(f"{rate:,.0f}" for rate, _ in results[(workload, row, "one core busy")])
            ratio = f"**{b / q:.2f}**" if row.startswith("posttrain (") else f"{b / q:.2f}"
            lines.append(f"| {workload} | {row} | {q:,.1f} | {b:,.1f} | {ratio} | {threads} | {runs} |")
    lines.append("")
    pt, trl = "posttrain (threads chosen at start)", "TRL (its defaults)"
    lines.append("posttrain ÷ TRL: " + "; ".join(
        f"{w} {med((w, pt, 'quiet')) / med((w, trl, 'quiet')):.2f}x quiet, "
        f"{med((w, pt, 'one core busy')) / med((w, trl, 'one core busy')):.2f}x with one core busy"
        for w in ("SFT", "DPO")) + ".")
    return "\n".join(lines)


def main(cfg: BenchConfig) -> None:
    with tempfile.TemporaryDirectory(prefix="posttrain-bench-busy-") as tmp:
        before = machine_line()
        print(before, flush=True)
        results = measure(cfg, Path(tmp))
        text = markdown(cfg, results, before, machine_line())
    print(text)
    if cfg.write:
        update_results("A busy CPU: SFT and DPO quiet and with one core busy", text)


if __name__ == "__main__":
    import tyro

    main(tyro.cli(BenchConfig))
