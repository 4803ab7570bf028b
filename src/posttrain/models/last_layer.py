"""The last decoder layer at the positions a loss reads, not at every position.

A causal LM's last decoder layer feeds nothing but the final norm and the head. Where a loss reads the model at a
few positions only (an RL completion's tokens, not its prompt; a preference pair's responses), that layer's
query projection, attention output, output projection and MLP are needed at those positions alone; its keys and
values are still needed at every position, since the read positions attend to all of them. `last_layer_at(model,
positions)` runs a forward that way: every other layer as usual, the last one at `positions` (B, S) only, so the
model's output (logits, or a head's values) is (B, S, ·), row s being position `positions[b, s]`'s.

The same numbers as the full forward (up to float rounding: a matmul over fewer rows may sum in another order),
for less work: at each position not read, the last layer's q and o projections and MLP (for Llama shapes about
7/8 of the layer) are skipped, forward and backward. The saving is that share of one layer out of L at the
positions not read: large for the 2-layer demo model and RL prompts ~2x longer than their completions, ~1/L of the
body for deep models. `tests/models/test_last_layer.py` checks it against the full forward.

Supported: the Llama-shaped decoder layers of transformers (Llama, Qwen2: the two tested) with sdpa or eager attention,
without a sliding window, a KV cache or gradient checkpointing (whose recompute would run outside the block);
`supports_last_layer_at(model)` says whether a model qualifies, and callers use the full forward when it does
not.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from posttrain.models.lora import transformers_model

# decoder layers whose forward is exactly: x + attn(input_norm(x)), then h + mlp(post_norm(h)), with q/k/v/o
# projections, rotary embeddings applied by their module's apply_rotary_pos_emb, and no q/k norms; tested in
# tests/models/test_last_layer.py (Mistral has the shape too, but reads its sliding window from the config at
# every call, which the check below would not see: left out until tested)
SUPPORTED_LAYERS = ("LlamaDecoderLayer", "Qwen2DecoderLayer")


def decoder_layers(model: torch.nn.Module) -> torch.nn.ModuleList | None:
    """The decoder layers of a causal LM or sequence classifier (through DDP and peft), or None."""
    base = transformers_model(model)
    body = getattr(base, getattr(base, "base_model_prefix", ""), None)
    layers = getattr(body, "layers", None)
    return layers if isinstance(layers, torch.nn.ModuleList) and len(layers) > 0 else None


def supports_last_layer_at(model: torch.nn.Module) -> bool:
    """Whether `last_layer_at` can run `model` (see the module docstring)."""
    base = transformers_model(model)
    layers = decoder_layers(model)
    if layers is None or _family(layers[-1]) is None:
        return False
    attention = layers[-1].self_attn
    return (getattr(base.config, "_attn_implementation", None) in ("sdpa", "eager")
            and getattr(attention, "sliding_window", None) is None
            and not _checkpointing(base)
            and all(hasattr(attention, p) for p in ("q_proj", "k_proj", "v_proj", "o_proj", "head_dim", "scaling")))


def _family(layer: torch.nn.Module) -> type | None:
    """The supported transformers class `layer` is (FSDP2 subclasses it as FSDP<name>), or None."""
    return next((c for c in type(layer).__mro__ if c.__name__ in SUPPORTED_LAYERS), None)


def _checkpointing(base: torch.nn.Module) -> bool:
    """Whether transformers' activation (gradient) checkpointing is on, by the new name where there is one."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(base), name):  # the class, not the instance: reading the old name warns
            return bool(getattr(base, name))
    return False


@contextmanager
def last_layer_at(model: torch.nn.Module, positions: torch.Tensor, valid: torch.Tensor | None = None
                  ) -> Iterator[None]:
    """Within the block, a forward of `model` runs its last decoder layer at `positions` (B, S) only (int64,
    indices into each row's T positions; repeats allowed): its final hidden states, and so its logits or head
    outputs, are (B, S, ·). With `valid` (B, S) bool, only the positions where it is True are computed, and the
    output is (1, M, ·), M = valid.sum(), in row-major order of `valid` (the rows' padding costs nothing). The model
    must pass `supports_last_layer_at`."""
    if not supports_last_layer_at(model):
        raise ValueError(f"{type(transformers_model(model)).__name__}: last_layer_at needs a Llama-shaped last "
                         "layer with sdpa or eager attention and no gradient checkpointing")
    layer = decoder_layers(model)[-1]
    where = None if valid is None else valid.nonzero(as_tuple=True)  # (M,) row and slot of each computed position
    layer.forward = lambda *args, **kwargs: _layer_at(layer, positions, where, *args, **kwargs)  # this instance only
    try:
        yield
    finally:
        del layer.forward  # the class's forward again


def _layer_at(layer: torch.nn.Module, positions: torch.Tensor, where: tuple[torch.Tensor, torch.Tensor] | None,
              hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, position_embeddings=None,
              **kwargs) -> torch.Tensor:
    """The decoder layer's forward (transformers' LlamaDecoderLayer.forward, step for step) with its queries, and
    everything after the attention, at `positions` (B, S) only: (B, T, H) in, (B, S, H) out; or, with `where`
    (the valid slots' rows and columns), the projections and MLP at those M slots alone, (1, M, H) out."""
    if kwargs.get("cache") is not None or kwargs.get("past_key_values") is not None:
        raise ValueError("last_layer_at: a forward with a KV cache is not supported")
    module = sys.modules[_family(layer).__module__]  # the family's own rotary and attention functions
    attn = layer.self_attn
    b, t, h = hidden_states.shape
    s = positions.shape[1]
    flat = where is not None
    if where is None:
        where = (torch.arange(b, device=positions.device).repeat_interleave(s),
                 torch.arange(s, device=positions.device).repeat(b))  # every slot, row-major
    row, slot = where  # (M,) each
    at = positions[row, slot]  # (M,): the position each computed slot reads
    normed = layer.input_layernorm(hidden_states)  # (B, T, H)
    query_flat = attn.q_proj(normed[row, at])  # (M, heads·D)
    query = query_flat.new_zeros(b, s, query_flat.shape[-1]).index_put((row, slot), query_flat)  # (B, S, heads·D)
    query = query.view(b, s, -1, attn.head_dim).transpose(1, 2)  # (B, heads, S, D)
    key = attn.k_proj(normed).view(b, t, -1, attn.head_dim).transpose(1, 2)  # (B, kv heads, T, D)
    value = attn.v_proj(normed).view(b, t, -1, attn.head_dim).transpose(1, 2)  # (B, kv heads, T, D)
    cos, sin = position_embeddings  # (B or 1, T, D) each
    rows = positions[..., None].expand(-1, -1, cos.shape[-1])  # (B, S, D)
    query, _ = module.apply_rotary_pos_emb(query, query, cos.expand(b, -1, -1).gather(1, rows),
                                           sin.expand(b, -1, -1).gather(1, rows))
    _, key = module.apply_rotary_pos_emb(key, key, cos, sin)
    mask = _query_rows(attention_mask, positions, t, hidden_states.dtype,
                       additive=attn.config._attn_implementation == "eager")  # (B, 1, S, T)
    attend = module.ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation,
                                                          module.eager_attention_forward)
    out, _ = attend(attn, query, key, value, mask, dropout=attn.attention_dropout if attn.training else 0.0,
                    scaling=attn.scaling)  # (B, S, heads, D)
    out = out.reshape(b, s, -1)[row, slot]  # (M, heads·D)
    hidden = hidden_states[row, at] + attn.o_proj(out)  # (M, H)
    mlp = layer.mlp(layer.post_attention_layernorm(hidden))  # (M, H)
    shape = (1, -1, h) if flat else (b, s, h)  # (1, M, H) or (B, S, H)
    return hidden.view(shape) + mlp.view(shape)  # the sum is a new tensor: an FSDP2 block must not return a view


def _query_rows(mask: torch.Tensor | None, positions: torch.Tensor, t: int, dtype: torch.dtype,
                additive: bool) -> torch.Tensor:
    """The rows of the layer's (B, 1, T, T) attention mask for the queries at `positions`, (B, 1, S, T); a causal
    mask when the model passed none (sdpa's is_causal case), additive (0 / dtype's min) for eager attention."""
    if mask is not None:
        mask = mask.expand(positions.shape[0], -1, -1, -1)  # (B, 1 or heads, T, T)
        return mask.gather(2, positions[:, None, :, None].expand(-1, mask.shape[1], -1, mask.shape[3]))
    keys = torch.arange(t, device=positions.device)  # (T,)
    visible = keys[None, None, None, :] <= positions[:, None, :, None]  # (B, 1, S, T): causal
    if not additive:
        return visible
    return torch.zeros(visible.shape, dtype=dtype, device=positions.device).masked_fill_(~visible,
                                                                                        torch.finfo(dtype).min)
