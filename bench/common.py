"""Helpers shared by the benchmarks in bench/: the CPU's matmul peak, model FLOPs per token,
medians, a description of the machine, and writing one section of bench/RESULTS.md.

FLOPs per trained token follow PaLM (arXiv:2204.02311, appendix B), which extends Kaplan et al.
(arXiv:2001.08361, section 2.1): 6N for the weight matmuls (2N forward, 4N backward) plus
12·L·T·d for attention (QK^T and attention-times-V, 2·L·T·d each forward, times 3 with the
backward), with T the sequence length. N counts the parameters that take part in a matmul on
every token: every `nn.Linear`, the LM head included (tied to the embeddings in the tiny
models). The input embedding lookup is a gather and costs no FLOPs, so an untied input
embedding is not counted; norm weights (elementwise) are not counted either.
"""

from __future__ import annotations

import os
import platform
import re
import resource
import statistics
import time
from pathlib import Path
from typing import Callable

import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_TITLE = "# Benchmark results"


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall time of `fn()` over `repeats` calls, after `warmup` untimed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class StepTimes:
    """Wall-clock seconds between consecutive optimizer steps of any torch optimizer in this process.

    A global step hook (torch.optim.optimizer.register_optimizer_step_post_hook) sees every trainer's
    optimizer, ours or a library's, without touching its code. Each interval covers one whole loop
    iteration (batch, forward, backward, clip, step, logging); the median per-step rate shrugs off bursts
    of load from other processes that a whole-run wall time absorbs.

        with StepTimes() as steps:
            trainer.train()
        steps.median_rate(tokens_of_each_step)
    """

    def __enter__(self) -> "StepTimes":
        self.stamps: list[float] = []
        hook = lambda optimizer, args, kwargs: self.stamps.append(time.perf_counter())  # noqa: E731
        self._handle = register_optimizer_step_post_hook(hook)
        return self

    def __exit__(self, *exc: object) -> None:
        self._handle.remove()

    def median_rate(self, step_tokens: list[int]) -> float:
        """Median over optimizer steps (the first, warm-up and allocations, left out) of the step's tokens / its
        seconds. step_tokens[i] counts step i; the interval after step i's optimizer step covers step i + 1.
        A per-step rate, not mean tokens / median seconds: steps of very different sizes (length-bucketed
        batches) would skew that."""
        intervals = [b - a for a, b in zip(self.stamps, self.stamps[1:])]
        if not intervals:
            raise ValueError("fewer than two optimizer steps were timed")
        if len(step_tokens) != len(self.stamps):
            raise ValueError(f"{len(step_tokens)} token counts for {len(self.stamps)} optimizer steps")
        return statistics.median(n / t for n, t in zip(step_tokens[1:], intervals))


def posttrain_loop_seconds(metrics: list[dict]) -> float:
    """A posttrain run's training-loop wall time without its checkpoint writes, from metrics.jsonl rows:
    `time/train_seconds` - `time/checkpoint_seconds`. The TRL runs the benches compare with save nothing
    (`save_strategy="no"`), while posttrain always writes a checkpoint after the last step (~1.5 s for a 42M model
    and its AdamW state); both sides' loops are timed on the same work, and end-to-end figures keep the saves."""
    last = next(m for m in reversed(metrics) if "time/train_seconds" in m)
    return last["time/train_seconds"] - last.get("time/checkpoint_seconds", 0.0)


def matmul_peak_gflops(n: int = 2048, dtype: torch.dtype = torch.float32, repeats: int = 7) -> float:
    """Measured GFLOP/s of one n x n x n matmul (2n^3 FLOPs), the median of `repeats` runs.

    This is the practical ceiling for MFU on this CPU: the vendor BLAS on a large square
    product, with the threads torch uses now.
    """
    a, b, out = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype), torch.empty(n, n, dtype=dtype)
    seconds = median_seconds(lambda: torch.mm(a, b, out=out), repeats)
    return 2 * n**3 / seconds / 1e9


def flop_params(model: torch.nn.Module) -> int:
    """Parameters used in a matmul on every token: all nn.Linear weights and biases (LM head included)."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear):
            for p in module.parameters(recurse=False):
                if id(p) not in seen:  # a tied LM head shares its weight with the embedding: count it once
                    seen.add(id(p))
                    total += p.numel()
    return total


def train_flops_per_token(n_params_non_embedding: int, n_layers: int, seq_len: float, d_model: int) -> float:
    """Forward + backward FLOPs per token: 6N + 12·L·T·d (PaLM arXiv:2204.02311 appendix B).

    `n_params_non_embedding` is N as `flop_params` counts it (matmul weights, LM head included);
    `seq_len` is the attention length T (for unequal lengths, the token-weighted mean length).
    """
    return 6 * n_params_non_embedding + 12 * n_layers * seq_len * d_model


def machine_line() -> str:
    """CPU model, cores, torch threads, library versions and the load average right now (`uptime`)."""
    cpu = platform.processor() or "cpu"
    try:
        text = Path("/proc/cpuinfo").read_text()
        cpu = re.search(r"model name\s*:\s*(.+)", text).group(1).strip()
    except (OSError, AttributeError):
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    versions = [f"torch {torch.__version__}"]
    for name in ("transformers", "trl"):
        try:
            versions.append(f"{name} {__import__(name).__version__}")
        except ImportError:
            pass
    return (f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
            f"{', '.join(versions)}; load average (1, 5, 15 min): {load}")


def update_results(section_title: str, markdown: str, path: Path = RESULTS) -> Path:
    """Replace the `## section_title` section of RESULTS.md with `markdown`, keeping every other section."""
    text = path.read_text() if path.exists() else RESULTS_TITLE + "\n"
    head, sections = _split_sections(text)
    sections[section_title] = markdown.strip() + "\n"
    body = "".join(f"\n## {title}\n\n{content}" for title, content in sections.items())
    path.write_text(head.rstrip() + "\n" + body)
    return path


def _split_sections(text: str) -> tuple[str, dict[str, str]]:
    """Text before the first `## ` heading, and each `## ` section's title -> content (in order)."""
    parts = re.split(r"^## (.+)$", text, flags=re.MULTILINE)
    sections = {title.strip(): content.strip("\n") + "\n" for title, content in zip(parts[1::2], parts[2::2])}
    return parts[0], sections


def threads_note(threads: int) -> str:
    """Section-title suffix: runs pinned to a thread count get their own sections of RESULTS.md."""
    return f" ({threads} torch thread{'s' if threads > 1 else ''})" if threads else ""


def rss_mb() -> float:
    """This process's resident memory now, MB."""
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """This process's peak resident memory so far, MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB
