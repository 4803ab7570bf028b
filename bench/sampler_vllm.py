"""The built-in sampler against vLLM on CPU: completions/s at ~1M, ~30M and SmolLM2-135M, so users know when each pays.

    scripts/test-vllm.sh tests/vllm_tier/test_vllm_sampler.py    # once: builds .venv-vllm (vLLM's CPU build)
    .venv-vllm/bin/python bench/sampler_vllm.py --write          # all three models; a quiet machine, ~10 min
    .venv-vllm/bin/python bench/sampler_vllm.py --models tiny --prompts 4 --repeats 1   # a quick look, ~1 min

Both sides sample the same prompts in one call each: `prompts` held-out arithmetic questions through the model's
chat template, `samples` per prompt, temperature 1, per-prompt seeds, float32, `max_new_tokens` per completion,
RL's settings. The built-in side is `ModelSampler` (one chunk, `--sampling.kv-cache auto`); the vLLM side is
`VLLMSampler`, an in-process engine (enforce_eager, VLLM_CPU_KVCACHE_SPACE=1 GiB) on the same model directory,
started once before timing (its start-up is reported apart: an RL run pays it once). The two draw different tokens
(each its own random streams), so completion lengths differ a little: completions/s and completion tokens/s are
both given. Medians of `repeats` calls per side, alternating sides, after one untimed call each. torch threads
(`threads`) are set for the process, so both sides get the same cores.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from common import machine_line, update_results  # noqa: E402

from posttrain.config import ModelConfig, SamplingParams  # noqa: E402
from posttrain.data.load import load_records  # noqa: E402
from posttrain.data.records import Prompt  # noqa: E402
from posttrain.data.tokenize import tokenize_prompt  # noqa: E402
from posttrain.models.load import count_parameters, load_model, resolve_model_dir  # noqa: E402
from posttrain.sampling.sampler import ModelSampler  # noqa: E402
from posttrain.sampling.vllm_sampler import VLLMSampler  # noqa: E402


@dataclass
class BenchConfig:
    """Completions/s of the built-in sampler and of vLLM's CPU build on the same prompts."""

    models: tuple[str, ...] = ("tiny", "tiny-30m", "smollm2")
    """Models (built-in names or directories)."""
    threads: int = 2
    """torch threads for both sides (OMP_NUM_THREADS is set to it before vLLM starts)."""
    prompts: int = 32
    """Distinct prompts per call (RL's prompts per step)."""
    samples: int = 8
    """Samples per prompt (RL's group size)."""
    max_new_tokens: int = 64
    """Tokens per completion at most."""
    repeats: int = 3
    """Timed calls per side (after one untimed call each)."""
    write: bool = False
    """Write the table into bench/RESULTS.md."""


def timed(sampler, prompts: list[list[int]], cfg: BenchConfig, seed: int) -> tuple[float, int]:
    """(seconds, completion tokens) of one sample call."""
    params = SamplingParams(max_new_tokens=cfg.max_new_tokens, temperature=1.0)
    seeds = [seed * 1000 + i for i in range(len(prompts))]
    t0 = time.perf_counter()
    rollout = sampler.sample(prompts, cfg.samples, params, seeds=seeds)
    return time.perf_counter() - t0, sum(len(c) for c in rollout.completion_ids)


def bench_model(cfg: BenchConfig, name: str) -> str:
    model, tokenizer = load_model(ModelConfig(name=name, dtype="float32"), "cpu")
    model.eval()
    records = load_records("builtin:arithmetic/heldout", accept=(Prompt,), limit=cfg.prompts)
    prompts = [tokenize_prompt(r.prompt, tokenizer) for r in records]
    builtin = ModelSampler(model, tokenizer, batch_size=cfg.prompts * cfg.samples)
    t0 = time.perf_counter()
    longest = max(len(p) for p in prompts) + cfg.max_new_tokens
    engine = VLLMSampler(resolve_model_dir(name), tokenizer, "float32",
                         max_model_len=min(longest, model.config.max_position_embeddings))
    startup = time.perf_counter() - t0
    sides = {"builtin": builtin, "vllm": engine}
    for sampler in sides.values():  # untimed: first-call allocations, oneDNN kernel choice
        timed(sampler, prompts[:2], cfg, seed=0)
    runs: dict[str, list[tuple[float, int]]] = {side: [] for side in sides}
    for r in range(cfg.repeats):
        for side, sampler in sides.items():
            runs[side].append(timed(sampler, prompts, cfg, seed=r + 1))
            print(f"{name} {side} repeat {r}: {runs[side][-1][0]:.2f} s, {runs[side][-1][1]} tokens", flush=True)
    n = cfg.prompts * cfg.samples
    cells = []
    for side in sides:
        seconds = statistics.median(s for s, _ in runs[side])
        tokens = statistics.median(t for _, t in runs[side])
        cells.append((n / seconds, tokens / seconds))
    params = count_parameters(model)[1]
    del engine, model
    return (f"| {name} | {params / 1e6:.1f}M | {cells[0][0]:.1f} | {cells[1][0]:.1f} | {cells[1][0] / cells[0][0]:.2f}x "
            f"| {cells[0][1]:.0f} | {cells[1][1]:.0f} | {startup:.0f} |")


def main(cfg: BenchConfig) -> int:
    import transformers

    transformers.logging.set_verbosity_error()
    os.environ["OMP_NUM_THREADS"] = str(cfg.threads)
    torch.set_num_threads(cfg.threads)
    lines = [f"Before: {machine_line()}  ", "",
             f"`.venv-vllm/bin/python bench/sampler_vllm.py --threads {cfg.threads}`: {cfg.prompts} prompts x "
             f"{cfg.samples} samples per call, up to {cfg.max_new_tokens} tokens, temperature 1, per-prompt seeds, "
             f"float32; median of {cfg.repeats} calls per side.", "",
             "| model | parameters | built-in completions/s | vLLM completions/s | vLLM speed-up | built-in tokens/s "
             "| vLLM tokens/s | vLLM start-up (s) |", "|---|---|---|---|---|---|---|---|"]
    for name in cfg.models:
        lines.append(bench_model(cfg, name))
        print(lines[-1], flush=True)
    lines.append(f"\nAfter: {machine_line()}")
    text = "\n".join(lines)
    print(text)
    if cfg.write:
        update_results(f"Sampler: built-in vs vLLM on CPU ({cfg.threads} torch threads)", text)
    return 0


if __name__ == "__main__":
    import tyro

    sys.exit(main(tyro.cli(BenchConfig)))
