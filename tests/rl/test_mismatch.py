"""Math-tier tests of rl/mismatch.py: truncated importance sampling weights on worked numbers and invariants, and
how the RL update applies them."""

import math

import pytest
import torch

from posttrain.rl.mismatch import truncated_importance_weights


def test_weights_on_worked_numbers():
    """Row 0: trainer p = 0.5, engine p = 0.25 -> ratio 2, under the cap 3: w = 2.
              trainer p = 0.2, engine p = 0.4 -> ratio 0.5 (not truncated from below): w = 0.5.
    Row 1: trainer p = 0.8, engine p = 0.1 -> ratio 8, over the cap: w = 3, one clipped token.
           the second token is padding: w = 0, not counted.
    Sums: weights 2 + 0.5 + 3 = 5.5; |log-ratio| log 2 + log 2 + log 8 = 5 log 2 = 3.465736."""
    old = torch.log(torch.tensor([[0.5, 0.2], [0.8, 0.9]], dtype=torch.float64))
    engine = torch.log(torch.tensor([[0.25, 0.4], [0.1, 0.05]], dtype=torch.float64))
    mask = torch.tensor([[True, True], [True, False]])
    weights, sums = truncated_importance_weights(old, engine, mask, cap=3.0)
    assert weights.shape == (2, 2)
    assert torch.allclose(weights, torch.tensor([[2.0, 0.5], [3.0, 0.0]], dtype=torch.float64), atol=1e-12)
    assert sums["tis_weight_sum"] == pytest.approx(5.5)
    assert sums["tis_clipped_tokens"] == 1
    assert sums["tis_abs_logp_diff_sum"] == pytest.approx(5 * math.log(2))


def test_weight_is_one_where_trainer_and_engine_agree():
    torch.manual_seed(0)
    logps = -4 * torch.rand(3, 5)
    mask = torch.rand(3, 5) < 0.7
    weights, sums = truncated_importance_weights(logps, logps.clone(), mask, cap=1.0)
    assert torch.equal(weights, mask.float())
    assert sums["tis_clipped_tokens"] == 0 and sums["tis_abs_logp_diff_sum"] == 0


def test_cap_holds_and_masked_tokens_are_zero():
    torch.manual_seed(1)
    old, engine = -6 * torch.rand(4, 7), -6 * torch.rand(4, 7)
    mask = torch.rand(4, 7) < 0.6
    mask[:, 0] = True
    for cap in (1.0, 1.5, 10.0):
        weights, sums = truncated_importance_weights(old, engine, mask, cap)
        assert (weights <= cap).all() and (weights[~mask] == 0).all() and (weights[mask] > 0).all()
        over = (torch.exp(old - engine) > cap) & mask
        assert sums["tis_clipped_tokens"] == int(over.sum())
        assert torch.allclose(weights[over], torch.full_like(weights[over], cap))


def test_no_gradient_through_the_weights():
    old = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    weights, _ = truncated_importance_weights(old, torch.tensor([[-1.5, -1.0]]), torch.ones(1, 2, dtype=torch.bool), 2)
    assert not weights.requires_grad


def test_refuses_a_cap_below_one_and_mismatched_shapes():
    x = torch.zeros(2, 3)
    mask = torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=">= 1"):
        truncated_importance_weights(x, x, mask, 0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        truncated_importance_weights(x, torch.zeros(2, 4), mask, 2.0)


def test_the_update_keeps_the_engine_log_probs_and_weighs_the_surrogate(model, tiny_dir):
    """With rl.sampler=vllm (the built-in sampler's rollout standing in for an engine's): prepare_update keeps the
    rollout's log-probs as sampler_logps and takes the old ones from a forward; policy_loss then scales the
    surrogate by the TIS weights. An engine that found every token half as likely (log-probs minus log 2) gives
    weight 2, so the loss doubles; under a cap of 1.5 it is 1.5 times."""
    from transformers import AutoTokenizer

    from posttrain.config import SamplingParams
    from posttrain.models.attention import pair_layout
    from posttrain.rl.engine import Layout, make_groups, policy_loss, prepare_update
    from posttrain.rl.setup import RLConfig
    from posttrain.sampling.sampler import ModelSampler

    tokenizer = AutoTokenizer.from_pretrained(tiny_dir)
    prompts = [tokenizer("one two three")["input_ids"], tokenizer("seven")["input_ids"]]
    rollout = ModelSampler(model, tokenizer).sample(prompts, 2, SamplingParams(max_new_tokens=8, seed=3))
    groups = make_groups(rollout, torch.tensor([1.0, 0.5, 0.25, 2.0]), 2, [0, 1])
    pairs = pair_layout(model, True)
    layout = Layout(pairs.share_prompt, pairs.mask_dtype, pairs.trim_logits, tokenizer.pad_token_id, torch.device("cpu"))

    def loss_with(cap: float, shift: float) -> float:
        rl = RLConfig(group_size=2, prompts_per_step=2, micro_batch=2, sampler="vllm", tis_cap=cap)
        parts, aggregate = prepare_update(groups, rl, layout, 8, None, model)
        (batch,) = parts[0]
        assert batch.sampler_logps is not None and not torch.equal(batch.sampler_logps, batch.old_logps)
        torch.testing.assert_close(torch.where(batch.mask, batch.sampler_logps, 0.0),
                                   torch.where(batch.mask, batch.old_logps, 0.0), atol=1e-4, rtol=0)
        batch.sampler_logps = batch.old_logps - shift
        loss, sums = policy_loss(rl, aggregate, model, batch)
        assert sums["tis_weight_sum"] == pytest.approx(min(math.exp(shift), cap) * sums["tokens"], rel=1e-5)
        return float(loss.detach())

    base = loss_with(3.0, 0.0)
    assert base != 0
    assert loss_with(3.0, math.log(2)) == pytest.approx(2 * base, rel=1e-5)
    assert loss_with(1.5, math.log(2)) == pytest.approx(1.5 * base, rel=1e-5)
