"""Recipe tier: `--model.gradient-checkpointing` changes memory, not numbers; LoRA wraps without transformers'
`is_gradient_checkpointing` FutureWarning (which peft triggered on every LoRA run)."""

from __future__ import annotations

import warnings

import pytest
import torch

from posttrain.config import ModelConfig
from posttrain.losses.sft import sft_loss
from posttrain.models.heads import load_reward_model
from posttrain.models.load import load_model


def loss_and_grads(cfg: ModelConfig) -> tuple[float, dict[str, torch.Tensor], bool]:
    torch.manual_seed(0)
    model, _ = load_model(cfg)
    model.train()
    ids = torch.randint(3, 200, (2, 12), generator=torch.Generator().manual_seed(0))
    labels = ids.clone()
    labels[:, :4] = -100
    loss_sum, _ = sft_loss(model(input_ids=ids).logits, labels)
    loss_sum.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    checkpointing = any(getattr(m, "gradient_checkpointing", False) for m in model.modules())
    return loss_sum.item(), grads, checkpointing


@pytest.mark.parametrize("lora_r", [0, 4])
def test_a_step_has_the_same_loss_and_gradients_with_checkpointing(tiny_dir, lora_r):
    plain_loss, plain_grads, plain_on = loss_and_grads(ModelConfig(name="tiny", lora_r=lora_r))
    cfg = ModelConfig(name="tiny", lora_r=lora_r, gradient_checkpointing=True)
    ckpt_loss, ckpt_grads, ckpt_on = loss_and_grads(cfg)
    assert ckpt_on and not plain_on
    assert ckpt_loss == pytest.approx(plain_loss, rel=1e-6)
    assert plain_grads.keys() == ckpt_grads.keys() and plain_grads
    for name, grad in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[name], grad, rtol=1e-5, atol=1e-6, msg=name)


def test_reward_model_takes_checkpointing_too(tiny_dir):
    model, _ = load_reward_model(ModelConfig(name="tiny", gradient_checkpointing=True))
    assert any(getattr(m, "gradient_checkpointing", False) for m in model.modules())


def test_lora_wraps_without_the_is_gradient_checkpointing_future_warning(tiny_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_model(ModelConfig(name="tiny", lora_r=4))
        load_reward_model(ModelConfig(name="tiny", lora_r=4))
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]
