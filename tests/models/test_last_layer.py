"""The last decoder layer at chosen positions (models/last_layer.py): the outputs and gradients at those positions
equal the full forward's, for each supported family, attention implementation and mask shape."""

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification, Qwen2Config, Qwen2ForCausalLM

from posttrain.models.last_layer import last_layer_at, supports_last_layer_at


def model_of(family: str, attention: str = "sdpa", kv_heads: int = 2, layers: int = 2):
    torch.manual_seed(0)
    kwargs = dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                  num_attention_heads=4, num_key_value_heads=kv_heads, max_position_embeddings=64,
                  attn_implementation=attention)
    if family == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**kwargs))
    if family == "llama-classifier":
        return LlamaForSequenceClassification(LlamaConfig(num_labels=1, pad_token_id=0, **kwargs))
    return LlamaForCausalLM(LlamaConfig(**kwargs))


def inputs_of(kind: str) -> dict:
    torch.manual_seed(1)
    ids = torch.randint(1, 64, (3, 11))  # (B, T)
    if kind == "none":
        return {"input_ids": ids}
    if kind == "padding":  # a 2D mask with right padding on two rows
        mask = torch.ones(3, 11, dtype=torch.long)
        mask[0, 8:], mask[2, 5:] = 0, 0
        return {"input_ids": ids, "attention_mask": mask}
    # a 4D block mask: each row two documents (0..5, 6..10), position ids restarting, as rl/batch.py packs them
    doc = torch.tensor([0] * 6 + [1] * 5)
    visible = (doc[:, None] == doc[None, :]) & torch.ones(11, 11, dtype=torch.bool).tril()  # (T, T)
    return {"input_ids": ids, "attention_mask": visible[None, None].expand(3, 1, -1, -1).clone(),
            "position_ids": torch.cat([torch.arange(6), torch.arange(5)])[None].expand(3, -1).clone()}


POSITIONS = torch.tensor([[7, 3, 3, 10], [0, 5, 6, 9], [4, 2, 1, 0]])  # (B, S): any order, repeats allowed


@pytest.mark.parametrize("family", ["llama", "qwen2"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("mask", ["none", "padding", "block"])
def test_outputs_and_gradients_at_the_positions_equal_the_full_forward(family, attention, mask):
    model = model_of(family, attention)
    inputs = inputs_of(mask)
    assert supports_last_layer_at(model)
    full = model(**inputs, use_cache=False).logits  # (B, T, V)
    want = full.gather(1, POSITIONS[..., None].expand(-1, -1, full.shape[-1]))  # (B, S, V)
    want.square().sum().backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with last_layer_at(model, POSITIONS):
        got = model(**inputs, use_cache=False).logits  # (B, S, V)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    got.square().sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], atol=1e-5, rtol=1e-4, msg=name)
    assert "forward" not in vars(model.model.layers[-1])  # the class's own forward is back
    assert model(**inputs, use_cache=False).logits.shape == full.shape


def test_with_valid_slots_only_those_are_computed_in_row_major_order():
    model = model_of("llama")
    inputs = inputs_of("block")
    valid = torch.tensor([[True, True, False, False], [True, False, True, True], [False, False, False, True]])
    full = model(**inputs, use_cache=False).logits  # (B, T, V)
    want = full.gather(1, POSITIONS[..., None].expand(-1, -1, full.shape[-1]))[valid]  # (M, V)
    want.square().sum().backward()
    want_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    with last_layer_at(model, POSITIONS, valid):
        got = model(**inputs, use_cache=False).logits  # (1, M, V)
    assert got.shape == (1, 6, 64)
    torch.testing.assert_close(got[0], want, atol=1e-5, rtol=1e-5)
    got.square().sum().backward()
    for name, p in model.named_parameters():
        torch.testing.assert_close(p.grad, want_grads[name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_classifier_body_reads_its_head_at_the_positions():
    model = model_of("llama-classifier", kv_heads=4)
    inputs = inputs_of("block")
    full = model.model(**inputs, use_cache=False).last_hidden_state  # (B, T, H)
    with last_layer_at(model, POSITIONS):
        got = model.model(**inputs, use_cache=False).last_hidden_state  # (B, S, H)
    torch.testing.assert_close(got, full.gather(1, POSITIONS[..., None].expand(-1, -1, full.shape[-1])),
                               atol=1e-5, rtol=1e-5)


def test_a_wrong_position_changes_the_output():
    """The check above can fail: reading position 6 for 7 (or the full forward's shift by one) differs."""
    model = model_of("llama")
    inputs = inputs_of("none")
    with torch.no_grad():
        full = model(**inputs, use_cache=False).logits
        with last_layer_at(model, POSITIONS - (POSITIONS > 0).long()):
            got = model(**inputs, use_cache=False).logits
    want = full.gather(1, POSITIONS[..., None].expand(-1, -1, full.shape[-1]))
    assert (got - want).abs().max() > 1e-2


def test_unsupported_models_are_said_so():
    model = model_of("llama")
    model.activation_checkpointing_enable()
    assert not supports_last_layer_at(model)
    with pytest.raises(ValueError, match="gradient checkpointing"):
        with last_layer_at(model, POSITIONS):
            pass
    assert not supports_last_layer_at(torch.nn.Linear(2, 2))
