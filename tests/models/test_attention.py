"""Varlen attention (models/attention.py): a packed row computes each document as if it ran alone, and
every other call (padded batches, generation) is exactly transformers' sdpa."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from posttrain.models.attention import NAME, document_slots, use_varlen_attention


def test_document_slots_lay_out_each_document_from_its_first_position():
    slots, docs, longest = document_slots(torch.tensor([0, 1, 2, 0, 0, 1]))
    assert (docs, longest) == (3, 3) and slots.tolist() == [0, 1, 2, 3, 6, 7]
    slots, docs, longest = document_slots(torch.tensor([3, 4, 0, 1]))  # a row may start mid-document
    assert (docs, longest) == (2, 2) and slots.tolist() == [0, 1, 2, 3]


def packed(docs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat(docs)[None], torch.cat([torch.arange(len(d)) for d in docs])[None]  # (1, N) each


@pytest.mark.parametrize("kv_heads", [4, 2])  # multi-head and grouped-query attention
def test_a_packed_row_equals_each_document_alone_in_logits_and_gradients(kv_heads):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                         attn_implementation="sdpa")
    model = LlamaForCausalLM(config)
    docs = [torch.randint(0, 64, (n,)) for n in (5, 1, 9, 3)]
    alone = torch.cat([model(d[None]).logits[0] for d in docs])  # (N, V)
    alone.square().sum().backward()
    grads_alone = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()

    assert use_varlen_attention(model) and model.config._attn_implementation == NAME
    ids, positions = packed(docs)
    together = model(input_ids=ids, position_ids=positions, use_cache=False).logits[0]
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-5)
    together.square().sum().backward()
    for got, want in zip((p.grad for p in model.parameters()), grads_alone):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_padded_batches_and_generation_are_those_of_sdpa(tiny_dir):
    """The switch must not change anything else the model is used for: a left-padded batch (the
    sampler's) gives sdpa's logits at real tokens, and greedy generation the same tokens."""
    sdpa = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="sdpa").eval()
    varlen = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="sdpa").eval()
    assert use_varlen_attention(varlen)
    ids = torch.tensor([[0, 0, 0, 21, 40, 7], [5, 9, 13, 21, 40, 7]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.no_grad():
        want, got = sdpa(ids, attention_mask=mask).logits, varlen(ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], want[mask.bool()])
    kwargs = dict(attention_mask=mask, max_new_tokens=8, do_sample=False)
    assert torch.equal(varlen.generate(ids, **kwargs), sdpa.generate(ids, **kwargs))


def test_models_not_on_sdpa_are_left_alone(tiny_dir):
    eager = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="eager")
    assert not use_varlen_attention(eager) and eager.config._attn_implementation == "eager"
