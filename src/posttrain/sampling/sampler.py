"""The one sampler that evaluation, preference-pair generation and RL all use.

`ModelSampler.sample(prompts, n, params)` draws `n` completions for each tokenized prompt
from any Hugging Face causal LM and returns a `Rollout`: token ids, texts, per-token
log-probs and why each completion ended. Its loop, in order:

1. Prompts are sorted by length and cut into chunks of about `batch_size` rows (prompts x n),
   so that prompts of similar length share a chunk and little compute goes to padding.
2. One prefill forward over the chunk's prompts, left-padded, with position ids counted from
   each prompt's first real token. Each prompt's KV cache is then repeated `n` times along the
   batch: the prompt is encoded once, not once per sample. A prefix that every prompt of the chunk
   starts with (a chat template's system prompt and header: 27 of SmolLM2's 40 tokens on the
   arithmetic task) is encoded once, in a one-row forward, and the chunk's prefill runs on the
   rest of each prompt over that shared cache (`shared_prefix_length`; the automatic prefix caching
   of vLLM and SGLang's RadixAttention, arXiv:2312.07104, do this across requests).
3. Decoding, one token per step, with the cache: transformers' DynamicCache, or (`params.kv_cache`)
   buffers preallocated for the whole chunk and written in place (kv_cache.py). A row leaves the batch
   (its cache rows are dropped; with the preallocated cache the last rows move into the places of the
   finished ones) as soon as it ends: on an end-of-sequence token ("eos", the token is kept), on a
   stop string in its decoded text ("stop") or at `max_new_tokens` ("length"). Which rows are
   finished is a boolean tensor, never a comparison with the pad id, so models whose pad token
   is their eos token (SmolLM2) work. Stop strings are looked for in the decoded last few tokens
   of each row only (enough to hold the longest stop string), so a step costs the same however long
   the text so far.

Randomness: by default one generator, seeded by `params.seed`, draws every token of the call. With
`seeds` (one per prompt), sample j of prompt i draws from its own stream, seeded by (seeds[i], j), by
inverse-CDF: its tokens do not depend on which other prompts share the call, their order or the batch
size. RL uses this so that a torchrun process sampling its share of the prompts draws what one process
drawing all of them would.

Log-probs are those of the raw model, `log_softmax(logits)` at temperature 1 with no top-k or
top-p, whatever the sampling settings: these are the old-policy log-probs RL ratios need
(arXiv:1707.06347 eq. 6), not the log-probs of the filtered distribution tokens were drawn from.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import torch

from posttrain.config import SamplingCommandConfig, SamplingParams, check
from posttrain.cpu import keep_freed_memory
from posttrain.data.records import Messages, Prompt
from posttrain.data.tokenize import tokenize_prompt
from posttrain.errors import DataError
from posttrain.models.sharding import gathered
from posttrain.sampling.kv_cache import PreallocatedCache, use_preallocated_cache

FinishReason = Literal["eos", "stop", "length"]


@dataclass
class Rollout:
    """`n` samples per prompt, flattened: sample i answers prompt `group[i]`; a group's samples are adjacent.

    `logps[i]` (float32, CPU, one value per completion token) holds log p(token) under the model's raw
    softmax at temperature 1, not under the temperature/top-k/top-p distribution it was drawn from: the
    old-policy log-probs of PPO/GRPO. The eos token, when generated, is the last completion token.
    """

    prompt_ids: list[list[int]]
    completion_ids: list[list[int]]
    texts: list[str]
    logps: list[torch.Tensor]
    group: list[int]
    finish_reasons: list[FinishReason]

    def __len__(self) -> int:
        return len(self.completion_ids)


class Sampler(Protocol):
    """What RL, evaluation and pair generation sample through: `ModelSampler` here, `VLLMSampler` (vllm_sampler.py)."""

    def sample(self, prompts: list[list[int]], n: int, params: SamplingParams,
               seeds: Sequence[int] | None = None) -> Rollout: ...


def filter_logits(logits: torch.Tensor, top_k: int = 0, top_p: float = 1.0, min_p: float = 0.0) -> torch.Tensor:
    """Set to -inf every logit outside the top_k, outside the top_p nucleus, and (min_p) whose probability is
    below min_p times the largest: (B, V) -> (B, V).

    The most likely token always survives. Ties at the k-th value are all kept.
    """
    if min_p > 0:
        # p_i < min_p * p_max  <=>  z_i < z_max + log(min_p) (arXiv:2407.01082 §3)
        threshold = logits.amax(-1, keepdim=True) + math.log(min_p)  # (B, 1)
        logits = logits.masked_fill(logits < threshold, float("-inf"))
    if 0 < top_k < logits.shape[-1]:
        kth_largest = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth_largest, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        sorted_probs = sorted_logits.softmax(dim=-1)
        mass_before = sorted_probs.cumsum(dim=-1) - sorted_probs  # (B, V): mass of the more likely tokens
        # Keep the smallest set of most likely tokens whose mass reaches top_p (arXiv:1904.09751 eq. 2).
        remove_sorted_mask = mass_before >= top_p
        remove_mask = remove_sorted_mask.scatter(-1, order, remove_sorted_mask)
        logits = logits.masked_fill(remove_mask, float("-inf"))
    return logits


def choose_tokens(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | list[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one token per row from float32 logits (B, V); return tokens (B,) and their raw logps (B,).

    `generator`: one for the whole batch (torch.multinomial), or one per row (a list of B): each row then
    draws one uniform from its own generator and takes the token where the cumulative probability reaches it
    (inverse CDF), so a row's draw never depends on the other rows."""
    raw_logps = torch.log_softmax(logits, dim=-1)  # (B, V), temperature 1: the policy's own log-probs
    if params.temperature == 0:
        tokens = logits.argmax(dim=-1)
    else:
        probs = filter_logits(logits / params.temperature, params.top_k, params.top_p, params.min_p).softmax(-1)
        if isinstance(generator, torch.Generator):
            tokens = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
        else:
            u = torch.cat([torch.rand(1, generator=g) for g in generator]).to(probs.device)  # (B,)
            cdf = probs.cumsum(-1)  # (B, V)
            cdf = cdf / cdf[:, -1:]  # exactly 1 at the end, whatever the rounding
            # the first token whose cdf reaches u; u > 0 so a token of probability 0 is never the first
            u = u.clamp(min=torch.finfo(cdf.dtype).tiny)[:, None]  # (B, 1)
            tokens = torch.searchsorted(cdf, u).squeeze(-1).clamp(max=probs.shape[-1] - 1)
    return tokens, raw_logps.gather(-1, tokens[:, None]).squeeze(-1)


def row_generators(seeds: Sequence[int], n: int) -> list[torch.Generator]:
    """One CPU generator per sample, n per prompt in prompt order: sample j of prompt i is seeded by (seeds[i], j)."""
    return [torch.Generator().manual_seed((int(seed) * 1_000_003 + j) % 2**63) for seed in seeds for j in range(n)]


def left_pad(prompts: list[list[int]], pad_token_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad token lists into input_ids (B, T) and attention_mask (B, T) (1 on real tokens)."""
    width = max(len(p) for p in prompts)
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(prompt, dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids.to(device), attention_mask.to(device)


# A shared prefix shorter than this is encoded with the rest of the prompts: the one-row forward that encodes it
# costs a call through every layer. Measured on a 2-core EPYC (64 arithmetic chat prompts of ~20 tokens, the tiny
# model): at 7 shared tokens the chunk's prefill takes as long either way (20 ms), from 8 on sharing is faster; on
# SmolLM2-135M 27 shared tokens of 40 (its default system prompt) cut the prefill from 3.3 to 1.3 s.
MIN_SHARED_PREFIX = 8


def shared_prefix_length(prompts: list[list[int]]) -> int:
    """How many leading tokens every prompt of `prompts` has in common and `ModelSampler` encodes once: their
    longest common prefix, less one token where a prompt is all prefix (each row's prefill must read its own
    last token), and 0 for a single prompt or a prefix under MIN_SHARED_PREFIX tokens."""
    if len(prompts) < 2:
        return 0
    length = min(len(os.path.commonprefix(prompts)), min(len(p) for p in prompts) - 1)  # element-wise, any lists
    return length if length >= MIN_SHARED_PREFIX else 0


def eos_token_ids(generation_config, tokenizer) -> list[int]:
    """The ids that end a completion: the model's generation config (what `generate` uses), else the tokenizer's."""
    ids = getattr(generation_config, "eos_token_id", None)
    if ids is None:
        ids = tokenizer.eos_token_id
    if ids is None:
        return []
    return [ids] if isinstance(ids, int) else list(ids)


def stop_window(stop: tuple[str, ...]) -> int:
    """Trailing tokens to decode to find any stop string that the newest token completes: the longest stop
    string's length in characters (every token decodes to at least one), plus a few tokens that may decode to
    no character on their own (pieces of one UTF-8 character)."""
    return max((len(s) for s in stop), default=0) + 4


def batch_after_finishing(live_rows: torch.Tensor, batch: int, refill: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """When only the batch rows `live_rows` (B',) of `batch` go on: the old row of each row of the new batch (B',)
    and the new row of each live row (B',).

    Without `refill` the live rows keep their order: `(live_rows, arange(B'))` (a dynamic cache copies every row
    anyway). With it, the live rows beyond the first B' move into the places of the finished rows among them,
    so that a preallocated cache copies only as many rows as finished there."""
    kept = len(live_rows)
    if not refill:
        return live_rows, torch.arange(kept, device=live_rows.device)
    is_live = torch.zeros(batch, dtype=torch.bool, device=live_rows.device)
    is_live[live_rows] = True
    rows = torch.arange(kept, device=live_rows.device)
    rows[~is_live[:kept]] = live_rows[live_rows >= kept]  # as many finished rows below kept as live ones above
    new_rows = torch.empty(batch, dtype=torch.long, device=live_rows.device)
    new_rows[rows] = torch.arange(kept, device=live_rows.device)
    return rows, new_rows[live_rows]


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text before the earliest stop string."""
    cuts = [text.find(s) for s in stop if s in text]
    return text[: min(cuts)] if cuts else text


def check_sample_args(prompts: list[list[int]], n: int, seeds: Sequence[int] | None) -> None:
    """What every `Sampler.sample` refuses: n < 1, an empty prompt, a seed count other than one per prompt."""
    check(n >= 1, "n", "must be >= 1 (samples per prompt)", n)
    for i, prompt in enumerate(prompts):
        if len(prompt) == 0:
            raise DataError(f"prompt {i}: has no tokens (a prompt needs at least one token to condition on)")
    if seeds is not None and len(seeds) != len(prompts):
        raise ValueError(f"got {len(seeds)} seeds for {len(prompts)} prompts (one per prompt)")


def make_rollout(tokenizer, prompts: list[list[int]], n: int, completion_ids: list[list[int]], logps: list[list[float]],
                 finish_reasons: list[FinishReason], stop: tuple[str, ...]) -> Rollout:
    """A `Rollout` of n samples per prompt (sample i answers prompt i // n), its texts decoded by `tokenizer`
    without special tokens and cut before the stop string of a completion that ended on one."""
    texts = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(
        prompt_ids=[list(prompts[i // n]) for i in range(len(completion_ids))],
        completion_ids=completion_ids,
        texts=[_cut_at_stop(t, stop) if r == "stop" else t for t, r in zip(texts, finish_reasons)],
        logps=[torch.tensor(lp, dtype=torch.float32) for lp in logps],
        group=[i // n for i in range(len(completion_ids))],
        finish_reasons=list(finish_reasons),
    )


@dataclass
class _Sample:
    completion_ids: list[int]
    logps: list[float]
    finish_reason: FinishReason = "length"


LOG_EVERY_SECONDS = 30.0  # off a terminal, how often a long sampling says how far it is


def _logged_progress(items: list, what: str, every: float):
    """`items`, with a line on stderr at most every `every` seconds saying how many are done (for a log file,
    where a progress bar draws nothing): a short run prints none."""
    start = last = time.perf_counter()
    for done, item in enumerate(items):
        now = time.perf_counter()
        if now - last >= every:
            print(f"{what}: {done}/{len(items)} batches, {now - start:.0f} s", file=sys.stderr, flush=True)
            last = now
        yield item


class ModelSampler:
    """`Sampler` for any Hugging Face causal LM and its tokenizer (see the module docstring for the loop).

    `batch_size` bounds the rows (prompts x n) decoded together; a chunk always holds whole groups,
    so with n > batch_size one prompt's n samples still run together. `progress` shows a bar over chunks.
    """

    def __init__(self, model, tokenizer, batch_size: int = 64, progress: bool = False):
        check(batch_size >= 1, "batch_size", "must be >= 1", batch_size)
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.progress = progress
        self.eos_token_ids = eos_token_ids(getattr(model, "generation_config", None), tokenizer)
        pad = tokenizer.pad_token_id
        # Padding is masked out, so any id works; prefer the tokenizer's pad, then eos.
        self.pad_token_id = pad if pad is not None else (self.eos_token_ids or [0])[0]
        # whether the model's cache lets chunks share a prefix's encoding (see _prefill); None until first seen
        self.shares_prefix: bool | None = None

    def sample(self, prompts: list[list[int]], n: int, params: SamplingParams,
               seeds: Sequence[int] | None = None) -> Rollout:
        """`n` samples of each prompt; `seeds` (one per prompt) gives each sample its own random stream (see the
        module docstring), else `params.seed` seeds one generator for the call."""
        check_sample_args(prompts, n, seeds)
        device = self.model.device
        seed = params.seed if params.seed is not None else int(torch.randint(0, 2**62, ()).item())
        generator = torch.Generator(device=device).manual_seed(seed)
        streams = row_generators(seeds, n) if seeds is not None else None  # (prompts x n), prompt order
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # longest first: OOM shows early
        per_chunk = max(1, self.batch_size // n)
        chunks = [order[i : i + per_chunk] for i in range(0, len(order), per_chunk)]
        samples: list[_Sample | None] = [None] * (len(prompts) * n)
        was_training = self.model.training
        self.model.eval()
        try:
            # a sharded (FSDP2) model is gathered whole: processes decode different numbers of steps
            with gathered(self.model), torch.inference_mode():
                for chunk in self._maybe_progress(chunks):
                    chunk_generator = generator if streams is None else [
                        streams[i * n + j] for i in chunk for j in range(n)]
                    chunk_samples = self._sample_chunk([prompts[i] for i in chunk], n, params, chunk_generator)
                    for k, prompt_index in enumerate(chunk):
                        samples[prompt_index * n : (prompt_index + 1) * n] = chunk_samples[k * n : (k + 1) * n]
        finally:
            self.model.train(was_training)
        return self._rollout(prompts, n, samples, params.stop)

    def _maybe_progress(self, chunks: list[list[int]]):
        if not self.progress:
            return chunks
        from rich.console import Console
        from rich.progress import track

        if not Console().is_terminal:  # the bar's own stream is a pipe or a log file: a line now and then instead
            return _logged_progress(chunks, "sampling", LOG_EVERY_SECONDS)
        return track(chunks, description="sampling", transient=True)

    def _prefill(self, prompts: list[list[int]], n: int, capacity: int, preallocate: bool):
        """Encode each prompt once and repeat its cache n times: -> logits (R, V), cache, attention_mask (R, T).
        `preallocate`: move the cache into a `PreallocatedCache` of `capacity` positions where the model allows.

        The prompts' shared prefix (P tokens, `shared_prefix_length`) is encoded once and its cache copied to
        every row; the rest of each prompt (left-padded to S) then attends to it: row i of the cache holds
        [prefix, padding, the rest of prompt i] (P + S columns), the padding masked, the positions counted on
        from P. Only caches whose layers all attend to every earlier column take this path (a sliding window
        counts cache columns, padding included, so padding inside the window would change what it sees); the
        first chunk's cache tells, and later chunks of a model that cannot share skip the prefix's forward."""
        device = self.model.device
        shared = shared_prefix_length(prompts) if self.shares_prefix is not False else 0
        cache = None
        if shared:
            prefix = torch.tensor(prompts[0][:shared], dtype=torch.long, device=device)[None]  # (1, P)
            out = self.model(input_ids=prefix, position_ids=torch.arange(shared, device=device)[None], use_cache=True,
                             logits_to_keep=1)
            self.shares_prefix = PreallocatedCache.supports(out.cache)  # the model's cache kind: looked at once
            if self.shares_prefix:
                cache = out.cache
                cache.reorder_cache(torch.zeros(len(prompts), dtype=torch.long, device=device))  # (U, H, P, D)
            else:
                shared = 0
        input_ids, attention_mask = left_pad([p[shared:] for p in prompts], self.pad_token_id, device)  # (U, S)
        position_ids = shared + (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (U, S): P at each rest's first token
        if shared:
            attention_mask = torch.cat([attention_mask.new_ones(len(prompts), shared), attention_mask], 1)  # (U, P+S)
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, cache=cache,
                         use_cache=True, logits_to_keep=1)
        expand = torch.arange(len(prompts), device=input_ids.device).repeat_interleave(n)  # (R,) = (U*n,)
        cache = out.cache
        if preallocate and PreallocatedCache.supports(cache):
            cache = PreallocatedCache.from_prefill(cache, n, capacity)
        else:
            # reorder_cache is an index_select on every layer kind (full, sliding, linear attention).
            cache.reorder_cache(expand)
        return out.logits[:, -1].float()[expand], cache, attention_mask[expand]

    def _sample_chunk(
        self, prompts: list[list[int]], n: int, params: SamplingParams,
        generator: torch.Generator | list[torch.Generator],
    ) -> list[_Sample]:
        capacity = max(len(p) for p in prompts) + params.max_new_tokens
        preallocate = use_preallocated_cache(params.kv_cache, self.model, len(prompts) * n, capacity)
        logits, cache, attention_mask = self._prefill(prompts, n, capacity, preallocate)  # (R, V), R rows, (R, T)
        refill = isinstance(cache, PreallocatedCache)  # finished rows' places are refilled: see batch_after_finishing
        next_positions = attention_mask.sum(-1)  # (R,): a prompt of L tokens continues at position L
        samples = [_Sample([], []) for _ in range(logits.shape[0])]
        active = list(samples)  # the samples still going, in sample order; they leave as they finish
        active_rows = torch.arange(len(samples), device=logits.device)  # (B',): the batch row of each active sample
        eos_ids = torch.tensor(self.eos_token_ids, dtype=torch.long)
        window = stop_window(params.stop)
        for step in range(params.max_new_tokens):
            # Tokens are chosen in sample order whatever the batch order, so a shared generator draws the same.
            tokens, logps = choose_tokens(logits[active_rows] if refill else logits, params, generator)  # (B',)
            # Bookkeeping on the CPU: one device sync per step.
            cpu_tokens, cpu_logps = tokens.cpu(), logps.cpu()
            for sample, token, logp in zip(active, cpu_tokens.tolist(), cpu_logps.tolist()):
                sample.completion_ids.append(token)
                sample.logps.append(logp)
            eos_mask = torch.isin(cpu_tokens, eos_ids)  # (B',)
            stop_mask = self._stop_mask(active, params.stop, window)  # (B',)
            finished_mask = eos_mask | stop_mask | (step + 1 == params.max_new_tokens)
            for sample, is_eos, is_stop in zip(active, eos_mask.tolist(), stop_mask.tolist()):
                sample.finish_reason = "eos" if is_eos else "stop" if is_stop else "length"
            keep = (~finished_mask).nonzero().squeeze(-1).to(tokens.device)  # (B'',)
            if keep.numel() == 0:
                break
            if keep.numel() < len(active):  # drop finished rows so no compute goes to them
                kept = keep.tolist()
                active = [active[i] for i in kept]
                if isinstance(generator, list):
                    generator = [generator[i] for i in kept]
                rows, active_rows = batch_after_finishing(active_rows[keep], len(attention_mask), refill)
                cache.reorder_cache(rows)
                attention_mask, next_positions, tokens = attention_mask[rows], next_positions[rows], tokens[keep]
            batch_tokens = torch.empty_like(tokens).index_copy_(0, active_rows, tokens) if refill else tokens
            attention_mask = torch.nn.functional.pad(attention_mask, (0, 1), value=1)  # (B'', T + step + 1)
            out = self.model(
                input_ids=batch_tokens[:, None], attention_mask=attention_mask, position_ids=next_positions[:, None],
                cache=cache, use_cache=True,
            )
            logits = out.logits[:, -1].float()  # (B'', V)
            next_positions = next_positions + 1
        return samples

    def _stop_mask(self, active: list[_Sample], stop: tuple[str, ...], window: int) -> torch.Tensor:
        """(B,) True where the decoded last `window` tokens of a completion contain a stop string. A row that
        had one earlier has already left, so a stop string in the window is one the newest token completed."""
        if not stop:
            return torch.zeros(len(active), dtype=torch.bool)
        texts = self.tokenizer.batch_decode([s.completion_ids[-window:] for s in active], skip_special_tokens=True)
        return torch.tensor([any(s in text for s in stop) for text in texts], dtype=torch.bool)

    def _rollout(self, prompts: list[list[int]], n: int, samples: list[_Sample], stop: tuple[str, ...]) -> Rollout:
        return make_rollout(self.tokenizer, prompts, n, [s.completion_ids for s in samples],
                            [s.logps for s in samples], [s.finish_reason for s in samples], stop)


def sample_messages(
    sampler: Sampler, prompts: Sequence[Prompt | Messages], tokenizer, n: int, params: SamplingParams,
    seeds: Sequence[int] | None = None,
) -> Rollout:
    """Apply the chat template (with the assistant turn opened) to each prompt, then sample. A prompt record
    given as a plain string (`Prompt.plain`) on a model without a chat template is its text's tokens."""
    ids = [tokenize_prompt(p.prompt, tokenizer, plain=p.plain) if isinstance(p, Prompt)
           else tokenize_prompt(p, tokenizer) for p in prompts]
    return sampler.sample(ids, n, params, seeds)


def command_sampler(cfg: SamplingCommandConfig, name: str | None = None) -> tuple[Sampler, object]:
    """(sampler, tokenizer) of a sampling command (`generate`, `eval`, `data pairs`) for model `name` (unset:
    cfg.model.name): the built-in sampler on the model loaded by transformers, or with `--sampler vllm` a vLLM
    engine on the model's directory (transformers then loads the tokenizer only). Sets the allocator policy
    (`cpu.keep_freed_memory`) for the process first."""
    from dataclasses import replace

    from posttrain.models.load import load_model, load_tokenizer, resolve_device, resolve_dtype, resolve_model_dir

    keep_freed_memory()
    model_cfg = replace(cfg.model, name=name) if name else cfg.model
    device = resolve_device(cfg.device)
    if cfg.sampler == "vllm":
        from posttrain.sampling.vllm_sampler import VLLMSampler, check_vllm_installed

        check_vllm_installed()
        tokenizer = load_tokenizer(model_cfg.name)
        return VLLMSampler(resolve_model_dir(model_cfg.name), tokenizer, resolve_dtype(model_cfg.dtype, device),
                           max_model_len=cfg.vllm.max_model_len or None,
                           gpu_memory_utilization=cfg.vllm.gpu_memory_utilization), tokenizer
    model, tokenizer = load_model(model_cfg, device)
    return ModelSampler(model, tokenizer, batch_size=cfg.batch_size, progress=cfg.progress), tokenizer
