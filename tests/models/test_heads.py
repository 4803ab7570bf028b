"""Reward-model heads: the reward is read at the last real token for any padding, a causal LM gets a small
seeded head, and the saved directory reloads (with posttrain and with plain transformers) to the same rewards."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from posttrain.config import ModelConfig
from posttrain.data.collate import pad_batch
from posttrain.data.tokenize import Example
from posttrain.errors import ModelError
from posttrain.models.heads import (
    MARKER_FILE,
    last_token_rewards,
    load_classifier,
    load_reward_model,
    save_reward_model,
)

SEQUENCES = [[1, 40, 41, 42, 43, 44, 2], [1, 50, 51, 2], [1, 60, 61, 62, 63, 2, 10, 11, 12, 2]]


def batch(side: str) -> dict[str, torch.Tensor]:
    return pad_batch([Example(s, [True] * len(s)) for s in SEQUENCES], pad_id=0, side=side)


@pytest.fixture(scope="module")
def reward_model(tiny_dir):
    model, tokenizer = load_reward_model(ModelConfig(name=str(tiny_dir)), seed=3)
    return model.eval(), tokenizer


@torch.no_grad()
def test_right_and_left_padding_give_the_rewards_of_each_sequence_alone(reward_model):
    model, _ = reward_model
    alone = torch.cat([model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long)) for s in SEQUENCES])
    right, left = batch("right"), batch("left")
    assert right["input_ids"][1, -1] == 0 and left["input_ids"][1, 0] == 0  # padding really is on each side
    torch.testing.assert_close(model(right["input_ids"], right["attention_mask"]), alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(model(left["input_ids"], left["attention_mask"]), alone, atol=1e-5, rtol=1e-5)
    assert alone.std() > 0  # different sequences, different rewards: the test can tell positions apart


def test_a_causal_lm_gets_the_same_body_and_a_small_seeded_head(tiny_dir):
    """The head is N(0, 1/(hidden+1)): for hidden 128 the std is 1/sqrt(129) = 0.088; 128 draws estimate
    it within about 6% (one standard error), so [0.06, 0.12] is a wide band."""
    a, new_head = load_classifier(tiny_dir, torch.float32, seed=0)
    b, _ = load_classifier(tiny_dir, torch.float32, seed=0)
    c, _ = load_classifier(tiny_dir, torch.float32, seed=1)
    lm = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert new_head
    assert torch.equal(a.model.layers[1].mlp.up_proj.weight, lm.model.layers[1].mlp.up_proj.weight)
    assert torch.equal(a.score.weight, b.score.weight) and not torch.equal(a.score.weight, c.score.weight)
    assert 0.06 < a.score.weight.std().item() < 0.12


@torch.no_grad()
def test_save_then_reload_gives_the_same_rewards(reward_model, tmp_path):
    model, tokenizer = reward_model
    out = save_reward_model(model, tokenizer, tmp_path / "rm", {"kind": "bradley_terry", "pooling": "last_token"})
    assert json.loads((out / MARKER_FILE).read_text())["pooling"] == "last_token"
    reloaded, _ = load_reward_model(ModelConfig(name=str(out)))
    _, new_head = load_classifier(out, torch.float32)
    assert not new_head
    right = batch("right")
    expected = model(right["input_ids"], right["attention_mask"])
    torch.testing.assert_close(reloaded.eval()(right["input_ids"], right["attention_mask"]), expected)
    # plain transformers reads the same reward for an unpadded sequence (its pooling then takes the last token)
    plain = AutoModelForSequenceClassification.from_pretrained(out)
    ids = torch.tensor([SEQUENCES[0]])
    torch.testing.assert_close(plain(ids).logits[0, 0], expected[0], atol=1e-5, rtol=1e-5)


@torch.no_grad()
def test_lora_starts_at_the_base_rewards_trains_the_head_and_saves_merged(tiny_dir, reward_model, tmp_path):
    base, tokenizer = reward_model
    lora, _ = load_reward_model(ModelConfig(name=str(tiny_dir), lora_r=4), seed=3)
    trainable = [n for n, p in lora.named_parameters() if p.requires_grad]
    assert any("score" in n for n in trainable) and any("lora_" in n for n in trainable)
    assert not any("up_proj.base_layer" in n for n in trainable)
    right = batch("right")
    expected = base(right["input_ids"], right["attention_mask"])
    torch.testing.assert_close(lora.eval()(right["input_ids"], right["attention_mask"]), expected)
    out = save_reward_model(lora, tokenizer, tmp_path / "lora-rm", {"pooling": "last_token"})
    assert not (out / "adapter_config.json").exists()
    reloaded, _ = load_reward_model(ModelConfig(name=str(out)))
    torch.testing.assert_close(reloaded.eval()(right["input_ids"], right["attention_mask"]), expected)


def test_a_directory_without_the_body_weights_is_refused(tmp_path, tiny_dir):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "config.json").write_text((tiny_dir / "config.json").read_text())
    with pytest.raises(ModelError, match="cannot load|missing"):
        load_classifier(tmp_path / "empty", torch.float32)


def test_last_token_rewards_right_padding():
    """Real lengths 3 and 1 (then pad): read positions 2 and 0."""
    values = torch.tensor([[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0]])
    assert last_token_rewards(values, mask).tolist() == [12.0, 20.0]


def test_last_token_rewards_left_padding():
    """Left padding ends every row at T - 1 = 3; a full row also ends there."""
    values = torch.tensor([[10.0, 11.0, 12.0, 13.0], [20.0, 21.0, 22.0, 23.0]])
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    assert last_token_rewards(values, mask).tolist() == [13.0, 23.0]


def test_last_token_rewards_gradient_reaches_only_the_read_position():
    values = torch.zeros(1, 4, requires_grad=True)
    last_token_rewards(values, torch.tensor([[1, 1, 0, 0]])).sum().backward()
    assert values.grad.tolist() == [[0.0, 1.0, 0.0, 0.0]]
