"""Math-tier tests of losses/value.py: PPO's clipped value loss on worked numbers."""

import math

import pytest
import torch

from posttrain.losses.value import clipped_value_loss


def test_clipped_value_loss_worked_numbers():
    """clip 0.2, returns R = 1 everywhere.
    token 1: V_old 0.5, V 0.9: clipped V = 0.7; errors (0.9-1)² = 0.01, (0.7-1)² = 0.09 -> ½·0.09 = 0.045, clipped.
    token 2: V_old 0.5, V 0.6 (inside the clip): both errors 0.16 -> 0.08, not clipped.
    token 3: V_old 1.5, V 0.8: clipped V = 1.3; errors 0.04, 0.09 -> 0.045, clipped (the clip holds V far above R).
    token 4: V_old 0.0, V 1.4: clipped V = 0.2; errors 0.16, 0.64 -> 0.32, clipped.
    token 5: padding -> 0."""
    values = torch.tensor([[0.9, 0.6, 0.8, 1.4, 7.0]])
    old = torch.tensor([[0.5, 0.5, 1.5, 0.0, 0.0]])
    returns = torch.ones(1, 5)
    mask = torch.tensor([[True, True, True, True, False]])
    loss, clipped = clipped_value_loss(values, old, returns, mask, 0.2)
    assert loss[0].tolist() == pytest.approx([0.045, 0.08, 0.045, 0.32, 0.0], abs=1e-6)
    assert clipped[0].tolist() == [True, False, True, True, False]


def test_without_clipping_it_is_half_the_squared_error_and_its_gradient_is_v_minus_r():
    torch.manual_seed(0)
    values = torch.randn(3, 4, requires_grad=True)
    old, returns = torch.randn(3, 4), torch.randn(3, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    loss, clipped = clipped_value_loss(values, old, returns, mask, math.inf)
    assert torch.allclose(loss, 0.5 * (values - returns) ** 2)
    assert not clipped.any()
    loss.sum().backward()
    assert torch.allclose(values.grad, (values - returns).detach())


def test_clipped_tokens_get_no_gradient():
    """Where the clipped error is the larger, the loss is a constant in V: its gradient is 0."""
    values = torch.tensor([[0.9, 0.6]], requires_grad=True)
    loss, clipped = clipped_value_loss(values, torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), torch.ones(1, 2).bool(), 0.2)
    loss.sum().backward()
    assert clipped[0].tolist() == [True, False]
    assert values.grad[0].tolist() == pytest.approx([0.0, -0.4])


def test_clipped_value_loss_checks_its_inputs():
    t = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="one \\(B, T\\) shape"):
        clipped_value_loss(t, t, torch.zeros(2, 2), t.bool(), 0.2)
    with pytest.raises(ValueError, match="clip must be > 0"):
        clipped_value_loss(t, t, t, t.bool(), 0.0)
