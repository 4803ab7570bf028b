"""Attention over packed rows without an (N, N) mask: each document attends only to itself.

A packed row holds several documents back to back, its position_ids restarting at 0 at each one
(data/collate.py). Given such a row, transformers' sdpa attention builds a block-diagonal (N, N)
mask and does N² work per head, however short the documents are. flash-attention's varlen kernel
avoids that, but needs a GPU and the flash-attn package. `varlen_sdpa` does the same job with
PyTorch alone: it cuts the row into its documents, lays them out as a (docs, heads, L, head_dim)
batch, L the longest document, runs causal SDPA and puts the outputs back in row order. A
document's padding comes after its tokens, so causal attention never lets a real token see it.

This is what makes padding-free batches pay off (`data.batches.sft_batch(..., padding_free=True)`):
every example of a micro-batch goes into ONE row with no pad tokens, so the linear layers and the
LM head, most of the model's work, run on real tokens only.

Any other call (more than one row, a mask, no position_ids, a KV cache during generation) goes to
transformers' own sdpa attention unchanged, so a model can keep this implementation for evaluation.
`use_varlen_attention(model)` switches a model to it; tests/models/test_attention.py checks a packed
row against each document run alone. `pair_layout(model)` says how preference pairs can go through a
model's attention (one row per pair with a block mask, or two rows).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from posttrain.data.preference import PairLayout

log = logging.getLogger(__name__)

NAME = "posttrain_varlen_sdpa"


def document_slots(position_ids: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """(slots (N,), docs, L) for a row whose position_ids (N,) restart at 0 at each document: token i goes to
    slot d·L + j of a (docs, L) grid when it is document d's j-th token, L the longest document."""
    starts = (position_ids == 0).nonzero().squeeze(1)  # (docs,)
    if len(starts) == 0 or starts[0] != 0:
        starts = torch.cat([starts.new_zeros(1), starts])
    n = len(position_ids)
    lengths = torch.diff(starts, append=starts.new_tensor([n]))  # (docs,)
    doc = torch.repeat_interleave(torch.arange(len(starts), device=position_ids.device), lengths, output_size=n)
    offset = torch.arange(n, device=position_ids.device) - starts[doc]  # (N,): j within its document
    longest = int(lengths.max())
    return doc * longest + offset, len(starts), longest


def varlen_sdpa(
    module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
    attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
    position_ids: torch.Tensor | None = None, **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers attention-interface function. query (1, H, N, D), key/value (1, Hkv, N, D) ->
    (1, N, H, D): causal attention inside each document of the packed row."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    packed = (query.shape[0] == 1 and attention_mask is None and position_ids is not None
              and query.shape[2] == key.shape[2] == position_ids.shape[-1] > 1)
    if not packed:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      position_ids=position_ids, **kwargs)
    slots, docs, longest = document_slots(position_ids.reshape(-1))

    def by_document(x: torch.Tensor) -> torch.Tensor:  # (1, H, N, D) -> (docs, H, L, D)
        tokens = x[0].transpose(0, 1)  # (N, H, D)
        # written into a zero grid rather than gathered: each slot has at most one token, so the backward pass
        # is a plain gather (a gather's backward would have to accumulate); the empty slots trail each document
        grid = tokens.new_zeros(docs * longest, *tokens.shape[1:]).index_put((slots,), tokens)
        return grid.view(docs, longest, *tokens.shape[1:]).transpose(1, 2)

    out = F.scaled_dot_product_attention(
        by_document(query), by_document(key), by_document(value), dropout_p=dropout, is_causal=True, scale=scaling,
        enable_gqa=query.shape[1] != key.shape[1],
    )  # (docs, H, L, D)
    out = out.transpose(1, 2).reshape(docs * longest, query.shape[1], query.shape[3])  # (docs·L, H, D)
    return out.index_select(0, slots)[None], None  # (1, N, H, D), in row order


def varlen_mask(batch_size: int, q_length: int, kv_length: int, attention_mask: torch.Tensor | None = None,
                **kwargs) -> torch.Tensor | None:
    """transformers mask-interface function: no mask for one row without padding and without a cache (where
    `varlen_sdpa` finds the documents from position_ids, instead of an (N, N) block mask being built);
    sdpa's mask otherwise (padded batches, generation), so those calls stay exactly as with sdpa."""
    from transformers.masking_utils import sdpa_mask

    if batch_size == 1 and attention_mask is None and q_length == kv_length and not kwargs.get("q_offset"):
        return None
    return sdpa_mask(batch_size=batch_size, q_length=q_length, kv_length=kv_length, attention_mask=attention_mask,
                     **kwargs)


def use_varlen_attention(model: torch.nn.Module) -> bool:
    """Switch `model` (a transformers model, or DDP / peft around one) to `varlen_sdpa` when it runs sdpa
    attention now; returns whether it did. Other implementations (eager, flash-attention) are left alone."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface

    from posttrain.models.lora import transformers_model

    base = transformers_model(model)
    if getattr(base.config, "_attn_implementation", None) not in ("sdpa", NAME):
        return False
    AttentionInterface.register(NAME, varlen_sdpa)
    AttentionMaskInterface.register(NAME, varlen_mask)
    base.set_attn_implementation(NAME)
    return True


def pair_layout(model: torch.nn.Module, share_prompt: bool) -> PairLayout:
    """The fastest preference-pair layout `model` supports exactly; `share_prompt=False` forces two rows. One row
    per pair needs a 4D attention mask (sdpa, eager; not flash-attention); the last layer at the scored positions
    only, a Llama-shaped last layer (models/last_layer.py)."""
    from posttrain.models.last_layer import supports_last_layer_at
    from posttrain.models.logprobs import accepts_logits_to_keep
    from posttrain.models.lora import transformers_model

    base = transformers_model(model)
    attention = getattr(base.config, "_attn_implementation", None)
    share = share_prompt and attention in ("sdpa", "eager")
    if share_prompt and not share:
        log.info("data.share_prompt: %s attention takes no 4D mask; each pair is two rows", attention)
    return PairLayout(share, torch.bool if attention == "sdpa" else base.dtype, accepts_logits_to_keep(model),
                      supports_last_layer_at(model))
