"""Math-tier tests of losses/policy.py: the clipped objective on worked ratios (value, gradient, clip mask), the
three aggregations on a worked batch and under micro-batch splits, entropy."""

import math

import pytest
import torch

import posttrain.losses.policy as policy
from posttrain.losses import (
    clipped_policy_loss,
    constant_normalizer_sum,
    entropy_from_logits,
    sequence_mean_sum,
    token_sum,
)

EPS_LOW, EPS_HIGH = 0.2, 0.28  # DAPO's clip-higher values: the clip range is [0.8, 1.28]


def loss_and_grad(ratios, advantages):
    """One row of tokens with old log-prob 0, so logps = log(ratio), and per-token advantages; returns (loss, d loss / d logps, clip mask)."""
    logps = torch.log(torch.tensor([ratios], dtype=torch.float64)).requires_grad_()
    mask = torch.ones_like(logps, dtype=torch.bool)
    loss, clip_mask = clipped_policy_loss(logps, torch.zeros_like(logps), torch.tensor([advantages], dtype=torch.float64),
                                          mask, EPS_LOW, EPS_HIGH)
    loss.sum().backward()
    return loss[0].tolist(), logps.grad[0].tolist(), clip_mask[0].tolist()


def test_objective_is_minus_advantage_at_ratio_one():
    """ρ = 1: min(1·A, clip(1)·A) = A, so the loss is -A; its gradient in logp is -ρA = -A (dρ/dlogp = ρ)."""
    loss, grad, clipped = loss_and_grad([1.0, 1.0, 1.0], [2.0, -0.5, 0.0])
    assert loss == pytest.approx([-2.0, 0.5, 0.0])
    assert grad == pytest.approx([-2.0, 0.5, 0.0])
    assert clipped == [False, False, False]


def test_positive_advantage_is_flat_above_one_plus_eps_high():
    """A = 2. ρ = 1.5 > 1.28: min(3, 1.28 · 2 = 2.56) = 2.56 is the clipped, constant term: loss -2.56, gradient 0.
    ρ = 0.5 < 0.8: min(1, 0.8 · 2 = 1.6) = 1 is the unclipped term: loss -1, gradient -ρA = -1 (no clip below for
    A > 0). ρ = 1.1 is inside the range: loss -2.2, gradient -2.2."""
    loss, grad, clipped = loss_and_grad([1.5, 0.5, 1.1], [2.0, 2.0, 2.0])
    assert loss == pytest.approx([-2.56, -1.0, -2.2])
    assert grad == pytest.approx([0.0, -1.0, -2.2])
    assert clipped == [True, False, False]


def test_negative_advantage_is_flat_below_one_minus_eps_low():
    """A = -2. ρ = 0.5 < 0.8: min(-1, 0.8 · -2 = -1.6) = -1.6, clipped: loss 1.6, gradient 0.
    ρ = 1.5 > 1.28: min(-3, 1.28 · -2 = -2.56) = -3, unclipped: loss 3, gradient -ρA = 3 (no clip above for A < 0)."""
    loss, grad, clipped = loss_and_grad([0.5, 1.5], [-2.0, -2.0])
    assert loss == pytest.approx([1.6, 3.0])
    assert grad == pytest.approx([0.0, 3.0])
    assert clipped == [True, False]


def test_per_sequence_advantages_broadcast_and_padding_is_zero():
    """advantages (B,) give every token of row b the advantage A_b; masked tokens cost 0 and get no gradient, even
    when their log-probs are junk (inf) that would turn exp into NaN."""
    logps = torch.tensor([[0.0, 0.0, float("inf")], [0.0, float("-inf"), 0.0]], requires_grad=True)
    mask = torch.tensor([[True, True, False], [True, False, False]])
    loss, clip_mask = clipped_policy_loss(logps, torch.zeros(2, 3), torch.tensor([1.0, -3.0]), mask, 0.2, 0.2)
    assert loss.tolist() == [[-1.0, -1.0, 0.0], [3.0, 0.0, 0.0]]
    assert not clip_mask.any()
    loss.sum().backward()
    assert torch.isfinite(logps.grad).all()
    assert logps.grad.tolist() == [[-1.0, -1.0, 0.0], [3.0, 0.0, 0.0]]


def test_clipped_policy_loss_checks_shapes():
    x, mask = torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match="one \\(B, T\\) shape"):
        clipped_policy_loss(x, torch.zeros(2, 4), torch.zeros(2), mask, 0.2, 0.2)
    with pytest.raises(ValueError, match="must be \\(B,\\) or \\(B, T\\)"):
        clipped_policy_loss(x, x, torch.zeros(3), mask, 0.2, 0.2)
    with pytest.raises(ValueError, match="must be \\(B,\\) or \\(B, T\\)"):
        clipped_policy_loss(x, x, torch.zeros(2, 1, 3), mask, 0.2, 0.2)
    with pytest.raises(ValueError, match="eps_low"):
        clipped_policy_loss(x, x, torch.zeros(2), mask, -0.1, 0.2)


def test_aggregations_on_a_worked_batch():
    """per_token [[1, 2, 3], [4, junk, junk]], row lengths 3 and 1.
    token_sum: 1 + 2 + 3 + 4 = 10 over 4 tokens (mean 2.5). sequence_mean_sum: 6/3 + 4/1 = 6 over 2 rows (mean 3).
    constant_normalizer_sum with max_tokens 4: 10 / 4 = 2.5 over 2 rows (mean 1.25)."""
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 99.0, float("nan")]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    loss, units = token_sum(per_token, mask)
    assert (loss.item(), units) == (10.0, 4)
    loss, units = sequence_mean_sum(per_token, mask)
    assert (loss.item(), units) == (6.0, 2)
    loss, units = constant_normalizer_sum(per_token, mask, max_tokens=4)
    assert (loss.item(), units) == (2.5, 2)
    with pytest.raises(ValueError, match="max_tokens"):
        constant_normalizer_sum(per_token, mask, max_tokens=0)
    with pytest.raises(ValueError, match="one \\(B, T\\) shape"):
        token_sum(per_token, mask[:, :2])


AGGREGATIONS = {
    "token_sum": token_sum,
    "sequence_mean_sum": sequence_mean_sum,
    "constant_normalizer_sum": lambda per_token, mask: constant_normalizer_sum(per_token, mask, max_tokens=7),
}


@pytest.mark.parametrize("name", sorted(AGGREGATIONS))
def test_aggregation_is_unchanged_by_micro_batch_splits(name):
    """Σ over micro-batches of loss_sum / (Σ units) -- what training/loop.py's accumulate computes -- equals the
    whole batch's loss_sum / units, and so do the gradients, for splits [6], [2, 1, 3] and [1] * 6 of rows with
    lengths 7, 2, 5, 1, 4, 6."""
    aggregate = AGGREGATIONS[name]
    torch.manual_seed(0)
    lengths = torch.tensor([7, 2, 5, 1, 4, 6])
    mask = torch.arange(7)[None, :] < lengths[:, None]  # (6, 7)
    old_logps = -3 * torch.rand(6, 7)
    logps_init = old_logps + 0.4 * torch.randn(6, 7)  # ratios both sides of the clip range
    advantages = torch.randn(6)

    def step(splits):
        logps = logps_init.clone().requires_grad_()
        per_token, _ = clipped_policy_loss(logps, old_logps, advantages, mask, 0.2, 0.28)
        parts = [aggregate(p, m) for p, m in zip(per_token.split(splits), mask.split(splits))]
        total_units = sum(units for _, units in parts)
        loss = sum(loss_sum / total_units for loss_sum, _ in parts)
        loss.backward()
        return loss.item(), logps.grad

    whole_loss, whole_grad = step([6])
    for splits in ([2, 1, 3], [1] * 6):
        loss, grad = step(splits)
        assert loss == pytest.approx(whole_loss, abs=1e-6)
        assert torch.allclose(grad, whole_grad, atol=1e-6)
    assert whole_grad.abs().sum() > 0 and (whole_grad[~mask] == 0).all()


def test_entropy_worked_and_against_torch():
    """logits [0, log 3] -> p = [1/4, 3/4]: H = 1/4 log 4 + 3/4 log(4/3) = 0.346574 + 0.215762 = 0.562335.
    Uniform logits over V = 5: H = log 5. Random logits agree with torch.distributions.Categorical."""
    out = entropy_from_logits(torch.tensor([[[0.0, math.log(3)], [1.0, 1.0]]]))
    assert out.shape == (1, 2)
    assert out[0].tolist() == pytest.approx([0.562335, math.log(2)], abs=1e-6)
    assert entropy_from_logits(torch.zeros(2, 3, 5)).allclose(torch.full((2, 3), math.log(5)))
    logits = 3 * torch.randn(2, 4, 11)
    assert torch.allclose(entropy_from_logits(logits), torch.distributions.Categorical(logits=logits).entropy(),
                          atol=1e-5)
    with pytest.raises(ValueError, match="\\(B, T, V\\)"):
        entropy_from_logits(torch.zeros(2, 5))


def test_entropy_chunks_give_the_same_values_and_gradients(monkeypatch):
    """With chunks of 2 rows of 11 logits (_CHUNK_ELEMENTS = 22) the 8 rows take 4 chunks; the values and the
    gradient equal the one-chunk computation's."""
    torch.manual_seed(3)
    logits = torch.randn(2, 4, 11, dtype=torch.bfloat16)
    results = []
    for elements in (2**26, 22):
        monkeypatch.setattr(policy, "_CHUNK_ELEMENTS", elements)
        x = logits.float().requires_grad_()
        out = entropy_from_logits(x)
        out.sum().backward()
        results.append((out, x.grad))
    assert results[0][0].dtype == torch.float32
    assert torch.allclose(results[0][0], results[1][0]) and torch.allclose(results[0][1], results[1][1])
