"""A key/value cache preallocated once per sampling chunk and written in place, for `ModelSampler`.

transformers' `DynamicCache` grows each layer's keys and values with `torch.cat`, so every decode step copies
the whole cache (O(T) per step, O(T²) per completion). `PreallocatedCache` allocates, per layer, buffers of shape
(rows, kv_heads, prompt_len + max_new_tokens, head_dim) once, copies the prompt's keys/values in after the
prefill, and writes each step's new key/value into the next column. Attention reads only the filled prefix (a
view of the buffer), so it computes exactly what the dynamic cache computes, over the same keys in the same order.

Rows that finish leave the batch by `reorder_cache(rows)`, which moves the kept rows' filled prefixes to the
front of the buffers (one copy of the filled part, as `DynamicCache.reorder_cache` makes) and narrows the view;
nothing is allocated after the first step.

transformers' own `StaticCache` is not used: its `update` returns the whole buffer, so every step attends over
`max_cache_len` columns (the unfilled ones masked) instead of the filled ones, and its `reorder_cache` copies the
whole buffer. Only plain full-attention layers are supported (`supports`): sliding-window, linear-attention and
KV-sharing layers keep their dynamic cache.
"""

from __future__ import annotations

import torch
from transformers.cache_utils import Cache, CacheLayerMixin, DynamicCache, DynamicLayer


class PreallocatedLayer(CacheLayerMixin):
    """One layer's keys and values in fixed buffers (R, kv_heads, capacity, head_dim); `keys`/`values` are the
    views of the rows still in the batch, and `length` columns of them are filled."""

    is_sliding = False
    is_compileable = False  # the filled length is a Python int: shapes change every step
    is_croppable = False

    def __init__(self, key_buffer: torch.Tensor, value_buffer: torch.Tensor, length: int):
        super().__init__()
        self.key_buffer, self.value_buffer = key_buffer, value_buffer  # (R, H, C, D)
        self.keys, self.values = key_buffer, value_buffer  # (B, H, C, D): the first B rows, those in the batch
        self.length = length
        self.device = key_buffer.device
        self.is_initialized = True

    def lazy_initialization(self, key_states: torch.Tensor, value_states: torch.Tensor) -> None:
        raise AssertionError("a PreallocatedLayer is built from a prefilled cache (PreallocatedCache.from_prefill)")

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
        """Write the new keys/values (B, H, q, D) after the filled columns; return the filled views (B, H, L + q, D)."""
        end = self.length + key_states.shape[-2]
        if end > self.keys.shape[-2]:
            raise ValueError(f"the preallocated cache holds {self.keys.shape[-2]} positions; {end} were asked for")
        self.keys[:, :, self.length : end] = key_states
        self.values[:, :, self.length : end] = value_states
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]

    def get_mask_sizes(self, query_length: int) -> tuple[int, int]:
        """(kv_length, kv_offset) for the causal mask: attention covers the filled columns and the new ones."""
        return self.length + query_length, 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_length(self) -> int:
        return self.keys.shape[-2]

    def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
        """Keep the batch rows `beam_idx` (B',), in that order, as rows 0..B'-1 of the buffers. Only the rows that
        take another row's place are copied (their filled prefix): the sampler moves the last live rows into the
        places of finished ones, so a step copies as many rows as finished, not the whole cache."""
        rows = beam_idx.to(self.device)
        moved = (rows != torch.arange(len(rows), device=rows.device)).nonzero().squeeze(-1)  # (m,)
        if len(moved):
            sources, length = rows[moved], self.length
            for buffer in (self.key_buffer, self.value_buffer):
                # the right side gathers a copy first, so a row that is both read and written is read first
                buffer[moved, :, :length] = buffer[sources, :, :length]
        self.keys, self.values = self.key_buffer[: len(rows)], self.value_buffer[: len(rows)]


class PreallocatedCache(Cache):
    """A `Cache` of `PreallocatedLayer`s (see the module docstring); build it with `from_prefill`."""

    def __init__(self, layers: list[PreallocatedLayer]):
        super().__init__(layers=layers)

    @staticmethod
    def supports(cache: Cache) -> bool:
        """Whether every layer of a prefilled cache is a plain full-attention `DynamicLayer` holding keys."""
        return len(cache.layers) > 0 and all(
            type(layer) is DynamicLayer and layer.is_initialized and layer.keys.dim() == 4 for layer in cache.layers)

    @classmethod
    def from_prefill(cls, cache: DynamicCache, repeats: int, capacity: int) -> PreallocatedCache:
        """Copy a prefilled cache of U prompts (U, H, T, D per layer) into buffers (U * repeats, H, capacity, D),
        each prompt's rows repeated `repeats` times in a row (as `repeat_interleave`), the first T columns filled."""
        layers = []
        for layer in cache.layers:
            prompts, heads, length, _ = layer.keys.shape  # (U, H, T, D)
            if capacity < length:
                raise ValueError(f"capacity {capacity} is below the prompt length {length}")
            buffers = []
            for states in (layer.keys, layer.values):
                buffer = states.new_empty((prompts * repeats, heads, capacity, states.shape[-1]))  # (R, H, C, D)
                # one copy, no temporary: the (U, n) view of the rows takes each prompt's states broadcast n times
                buffer.view(prompts, repeats, heads, capacity, -1)[:, :, :, :length] = states[:, None]
                buffers.append(buffer)
            layers.append(PreallocatedLayer(*buffers, length))
        return cls(layers)


# `auto` preallocates on the CPU from this size of one layer's keys + values for the chunk at full length (rows x
# kv_heads x (longest prompt + max_new_tokens) x head_dim, twice, in the model's dtype). Measured with
# bench/sampler_cache.py on a 2-core EPYC (1 MiB L2 per core, 32 MiB L3), 1 torch thread, decode tokens/s of
# preallocated over dynamic: 1.12x-2.7x from 20 MiB up on the tiny model and 1.16x-1.41x from 12 MiB up on
# SmolLM2-135M (the dynamic cache's per-step copy of the whole cache no longer fits in the CPU caches); 0.95x-1.12x
# at 11-13 MiB (tiny); below 10 MiB anywhere from 0.89x to 1.28x, noise around 1.0: the in-place buffer's filled
# prefix is strided, and attention over it is slower than over the freshly copied tensor the dynamic cache hands it.
PREALLOCATE_FROM_BYTES = 10 * 2**20


def use_preallocated_cache(kind: str, model, rows: int, capacity: int) -> bool:
    """Whether a chunk of `rows` rows and `capacity` positions (longest prompt + max_new_tokens) decodes with a
    `PreallocatedCache`; `kind` is SamplingParams.kv_cache. `auto`: on the CPU, when one layer's keys and values
    reach PREALLOCATE_FROM_BYTES; on other devices (not measured) never."""
    if kind != "auto":
        return kind == "preallocated"
    if model.device.type != "cpu":
        return False
    config = model.config.get_text_config(decoder=True)
    heads = getattr(config, "num_attention_heads", None)
    head_dim = getattr(config, "head_dim", None) or (heads and config.hidden_size // heads)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    if not head_dim or not kv_heads:  # not a model whose attention we can size: keep the dynamic cache
        return False
    itemsize = next(model.parameters()).dtype.itemsize
    return 2 * rows * kv_heads * capacity * head_dim * itemsize >= PREALLOCATE_FROM_BYTES
