"""Math-tier tests of rl/mismatch.py: truncated importance sampling weights on worked numbers and invariants."""

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
