"""The sampler's KV cache: transformers' DynamicCache against the preallocated one (sampling/kv_cache.py).

    python bench/sampler_cache.py --model tiny --threads 1                   # ~2 min
    python bench/sampler_cache.py --model smollm2 --prompts 16 --threads 2   # ~3 min
    python bench/sampler_cache.py --model tiny --steps-only --step-contexts 32 96 224   # one decode step, 3 caches

**Sampler table.** One `ModelSampler.sample` call per timing, with `kv_cache="dynamic"` and
`kv_cache="preallocated"` alternating: `prompts` held-out arithmetic questions through the model's chat template
(`--prompt-tokens N` puts a filler passage before each question, adding 3N/4 to 5N/4 tokens),
`samples` samples each in one chunk, temperature 1 with per-prompt seeds, so that both sides draw the same tokens
and do the same work (checked: the completions must be identical). Workloads:

- `end`: no end-of-sequence token, every row runs to `max_new_tokens`;
- `early`: rows finish at different steps. SmolLM2 ends on its own eos; the tiny model at random init draws
  tokens almost uniformly, so a set of ids chosen to end half the rows by `max_new_tokens/2` stands for its eos.

decode tokens/s = completion tokens / (call time - the prefill forward's time, from forward hooks): the copy
of the prefill into the preallocated buffers counts as decode time. Medians of `repeats` calls per side.

**Step table** (`--step-contexts`): the time of one decode forward at a given context length, rows =
prompts x samples, random tokens, for DynamicCache, PreallocatedCache and transformers' StaticCache (which
attends over all its `max_cache_len` columns, the unfilled ones masked). Medians over `steps` steps x `repeats`.
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
from posttrain.data.records import Message, Prompt  # noqa: E402
from posttrain.data.tokenize import tokenize_prompt  # noqa: E402
from posttrain.models.load import load_model  # noqa: E402
from posttrain.sampling.kv_cache import PreallocatedCache  # noqa: E402
from posttrain.sampling.sampler import ModelSampler  # noqa: E402

FILLER = "the answer is a number and we add the digits one step at a time so that the sum is right".split()


@dataclass
class BenchConfig:
    """Decode tokens/s of ModelSampler with the dynamic and the preallocated KV cache."""

    model: str = "tiny"
    """Model to sample from (built-in name or directory)."""
    threads: int = 1
    """torch threads."""
    prompts: int = 64
    """Distinct prompts per call."""
    samples: int = 4
    """Samples per prompt; the batch is prompts x samples rows (one chunk)."""
    prompt_tokens: tuple[int, ...] = (0, 160)
    """Prompt lengths: 0 is the question alone (20 tokens for tiny, 40 for SmolLM2), N adds about N tokens."""
    max_new_tokens: tuple[int, ...] = (64, 16)
    """Completion lengths."""
    finish: tuple[str, ...] = ("end", "early")
    """Workloads: `end` (rows run to max_new_tokens), `early` (rows finish at different steps)."""
    repeats: int = 3
    """Timed calls per side and workload (after an untimed short call per side)."""
    step_contexts: tuple[int, ...] = ()
    """Also time single decode steps at these context lengths (the step table); empty: no step table."""
    steps: int = 8
    """Decode steps per repeat in the step table."""
    step_capacity: int = 256
    """Positions the preallocated and static caches hold beyond the context in the step table (the
    max_new_tokens they would be sized for): StaticCache attends over all of them."""
    steps_only: bool = False
    """Only the step table."""
    write: bool = False
    """Write the tables into bench/RESULTS.md (a section per model and thread count)."""


def early_eos_ids(vocab_size: int, max_new_tokens: int, reserved: int = 3) -> list[int]:
    """For a model drawing near-uniformly: k ids so that a row has finished with probability 1/2 after
    max_new_tokens/2 steps: 1 - (1 - k/V)^(m/2) = 1/2, k = V (1 - 2^(-2/m)). The first `reserved` ids
    (the special tokens) are left out."""
    k = max(1, round(vocab_size * (1 - 2 ** (-2 / max_new_tokens))))
    return list(range(reserved, reserved + k))


def build_prompts(tokenizer, n: int, extra_tokens: int) -> list[list[int]]:
    """n held-out arithmetic questions through the chat template, each after a filler passage of about
    extra_tokens * (3/4, 1, 5/4) tokens (none for 0): prompts of different lengths."""
    records = load_records("builtin:arithmetic/heldout", accept=(Prompt,), limit=n)
    tokens_per_word = len(tokenizer(" ".join(FILLER * 10), add_special_tokens=False)["input_ids"]) / (10 * len(FILLER))
    prompts = []
    for i, record in enumerate(records):
        question = record.prompt[-1].content
        words = round(extra_tokens * (3 + i % 3) / 4 / tokens_per_word)
        filler = " ".join(FILLER[j % len(FILLER)] for j in range(words))
        prompts.append(tokenize_prompt((Message("user", f"{filler}. {question}" if words else question),), tokenizer))
    return prompts


class PrefillTimer:
    """Wall time of the model's prefill forwards (more than one token per row), from forward hooks."""

    def __init__(self, model):
        self.seconds = 0.0
        self._start: float | None = None
        model.register_forward_pre_hook(self._before, with_kwargs=True)
        model.register_forward_hook(self._after, with_kwargs=True)

    def _before(self, module, args, kwargs):
        self._start = time.perf_counter() if kwargs["input_ids"].shape[1] > 1 else None

    def _after(self, module, args, kwargs, output):
        if self._start is not None:
            self.seconds += time.perf_counter() - self._start


def bench_workload(cfg: BenchConfig, model, tokenizer, timer: PrefillTimer, prompts, max_new_tokens: int,
                   finish: str) -> list[str]:
    """The sampler table's rows for one workload: dynamic, then preallocated."""
    sampler = ModelSampler(model, tokenizer, batch_size=len(prompts) * cfg.samples)
    if finish == "end":
        sampler.eos_token_ids = []
    elif cfg.model.startswith("tiny"):  # a built-in tiny model at random init: no eos of its own
        sampler.eos_token_ids = early_eos_ids(model.config.vocab_size, max_new_tokens)
    seeds = list(range(len(prompts)))
    sides = ("dynamic", "preallocated")
    for kind in sides:  # untimed: one-off allocations and lazy imports
        sampler.sample(prompts[:2], 2, SamplingParams(max_new_tokens=2, kv_cache=kind, seed=0))
    times: dict[str, list[float]] = {kind: [] for kind in sides}
    completions = {}
    for _ in range(cfg.repeats):
        for kind in sides:
            params = SamplingParams(max_new_tokens=max_new_tokens, temperature=1.0, kv_cache=kind, seed=0)
            timer.seconds = 0.0
            t0 = time.perf_counter()
            completions[kind] = sampler.sample(prompts, cfg.samples, params, seeds=seeds).completion_ids
            times[kind].append(time.perf_counter() - t0 - timer.seconds)
    if completions["preallocated"] != completions["dynamic"]:
        raise AssertionError(f"{max_new_tokens} new tokens, {finish}: the two caches drew different completions")
    tokens = sum(len(ids) for ids in completions["dynamic"])
    median_completion = statistics.median(len(ids) for ids in completions["dynamic"])
    lengths = sorted(len(p) for p in prompts)
    dynamic, preallocated = (statistics.median(times[kind]) for kind in sides)
    return [f"| {lengths[0]}-{lengths[-1]} | {max_new_tokens} | {finish} | {median_completion:.0f} | "
            f"{tokens / dynamic:,.0f} | {tokens / preallocated:,.0f} | {dynamic / preallocated:.2f}x |"]


def step_seconds(model, kind: str, prompts: int, samples: int, context: int, steps: int, capacity: int,
                 repeats: int) -> float:
    """Median seconds of one decode forward with each cache, after a prefill of `prompts` rows of `context` random
    tokens (a quarter of them left-padded by a quarter) repeated `samples` times, as the sampler does. The
    prefill runs once per repeat, untimed."""
    from transformers import DynamicCache, StaticCache

    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, model.config.vocab_size, (prompts, context), generator=generator)  # (U, T)
    attention_mask = torch.ones(prompts, context, dtype=torch.long)
    attention_mask[: prompts // 4, : context // 4] = 0
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
    expand = torch.arange(prompts).repeat_interleave(samples)  # (R,)
    times = []
    for _ in range(repeats):
        with torch.inference_mode():
            cache = StaticCache(config=model.config, max_cache_len=context + capacity) if kind == "static" else DynamicCache()
            out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                        use_cache=True, logits_to_keep=1)
            if kind == "preallocated":
                cache = PreallocatedCache.from_prefill(cache, samples, context + capacity)
            else:
                cache.reorder_cache(expand)
            mask, positions = attention_mask[expand], attention_mask.sum(-1)[expand]  # (R, T), (R,)
            tokens = out.logits[:, -1].argmax(-1)[expand]
            for _ in range(steps):
                mask = torch.nn.functional.pad(mask, (0, 1), value=1)  # (R, T + step + 1)
                t0 = time.perf_counter()
                out = model(input_ids=tokens[:, None], attention_mask=mask, position_ids=positions[:, None],
                            cache=cache, use_cache=True)
                times.append(time.perf_counter() - t0)
                tokens, positions = out.logits[:, -1].argmax(-1), positions + 1
    return statistics.median(times)


def step_rows(cfg: BenchConfig, model) -> list[str]:
    rows = cfg.prompts * cfg.samples
    config = model.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    out = []
    for context in cfg.step_contexts:
        dynamic, preallocated, static = (
            step_seconds(model, kind, cfg.prompts, cfg.samples, context, cfg.steps, cfg.step_capacity, cfg.repeats)
            for kind in ("dynamic", "preallocated", "static"))
        layer_mib = 2 * rows * config.num_key_value_heads * (context + cfg.steps) * head_dim * 4 / 2**20
        out.append(f"| {rows} | {context} | {layer_mib:.1f} | {dynamic * 1e3:.1f} | {preallocated * 1e3:.1f} | "
                   f"{static * 1e3:.1f} | {dynamic / preallocated:.2f}x | {dynamic / static:.2f}x |")
        print(out[-1], flush=True)  # progress
    return out


def main(cfg: BenchConfig) -> int:
    import transformers

    transformers.logging.set_verbosity_error()
    torch.set_num_threads(cfg.threads)
    model, tokenizer = load_model(ModelConfig(name=cfg.model, dtype="float32"), "cpu")
    model.eval()
    command = f"`python bench/sampler_cache.py --model {cfg.model} --threads {cfg.threads} --prompts {cfg.prompts}`"
    lines = [f"Before: {machine_line()}  "]
    if not cfg.steps_only:
        timer = PrefillTimer(model)
        table = []
        for extra in cfg.prompt_tokens:
            prompts = build_prompts(tokenizer, cfg.prompts, extra)
            for m in cfg.max_new_tokens:
                for finish in cfg.finish:
                    table += bench_workload(cfg, model, tokenizer, timer, prompts, m, finish)
                    print(table[-1], flush=True)  # progress: the whole table comes at the end
        lines += ["", f"{command}: {cfg.prompts} prompts x {cfg.samples} samples in one chunk, temperature 1, "
                  f"per-prompt seeds; decode tokens/s, median of {cfg.repeats} calls per side.", "",
                  "| prompt tokens | max new tokens | rows end | median completion | dynamic | preallocated | "
                  "speed-up |", "|---|---|---|---|---|---|---|", *table]
    if cfg.step_contexts:
        lines += ["", f"One decode step (ms, median of {cfg.steps} steps x {cfg.repeats}) after a prefill of `context` "
                  f"tokens, the preallocated and static caches sized for {cfg.step_capacity} more; per-layer K+V = "
                  "one layer's keys and values in the dynamic cache at the last step:", "",
                  "| rows | context | per-layer K+V (MiB) | DynamicCache | PreallocatedCache | transformers StaticCache"
                  " | preallocated speed-up | StaticCache speed-up |", "|---|---|---|---|---|---|---|---|",
                  *step_rows(cfg, model)]
    lines.append(f"\nAfter: {machine_line()}")
    text = "\n".join(lines)
    print(text)
    if cfg.write:
        threads = f"{cfg.threads} torch thread{'s' if cfg.threads > 1 else ''}"
        update_results(f"Sampler KV cache: dynamic vs preallocated, {cfg.model} ({threads})", text)
    return 0


if __name__ == "__main__":
    import tyro

    sys.exit(main(tyro.cli(BenchConfig)))
