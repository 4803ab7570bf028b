"""Math-tier tests of the reward-model losses and of reading the reward at the last token."""

import math

import pytest
import torch

from posttrain.losses import bradley_terry_loss, ranking_loss, ranking_pairs


def test_bradley_terry_worked_example_and_metrics():
    """Pairs (r_c, r_r) = (2, 1) and (0, 0.5): gaps 1 and -0.5.
    loss = (log(1 + e^-1) + log(1 + e^0.5)) / 2 = (0.313262 + 0.974077) / 2 = 0.643669.
    accuracy = 1/2, margin = (1 - 0.5)/2 = 0.25, chosen mean = 1, rejected mean = 0.75,
    std of {2, 1, 0, 0.5} (mean 0.875): sqrt((1.265625 + 0.015625 + 0.765625 + 0.140625)/4)
    = sqrt(0.546875) = 0.739510."""
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5])
    loss, metrics = bradley_terry_loss(chosen, rejected)
    assert loss.item() == pytest.approx(0.6436694, abs=1e-6)
    assert metrics["loss"].item() == pytest.approx(loss.item())
    assert metrics["accuracy"].item() == 0.5
    assert metrics["margin"].item() == pytest.approx(0.25)
    assert metrics["rewards/chosen_mean"].item() == pytest.approx(1.0)
    assert metrics["rewards/rejected_mean"].item() == pytest.approx(0.75)
    assert metrics["rewards/std"].item() == pytest.approx(math.sqrt(0.546875))


def test_bradley_terry_margin_asks_for_a_larger_gap():
    """Gap 1 with margin 1: -log σ(0) = log 2. The logged margin stays the raw gap, 1."""
    loss, metrics = bradley_terry_loss(torch.tensor([2.0]), torch.tensor([1.0]), margin=torch.tensor([1.0]))
    assert loss.item() == pytest.approx(math.log(2))
    assert metrics["margin"].item() == 1.0


def test_bradley_terry_centering_term():
    """r_c = 2, r_r = 1: base 0.313262; (r_c + r_r)² = 9, times 0.01 = 0.09; total 0.403262.
    Its gradient on r_c is -σ(-1) + 0.01·2·3 = -0.268941 + 0.06 = -0.208941."""
    chosen = torch.tensor([2.0], requires_grad=True)
    loss, _ = bradley_terry_loss(chosen, torch.tensor([1.0]), center_coef=0.01)
    assert loss.item() == pytest.approx(0.3132617 + 0.09, abs=1e-6)
    loss.backward()
    assert chosen.grad.item() == pytest.approx(-0.2689414 + 0.06, abs=1e-6)


def test_bradley_terry_is_invariant_to_a_shared_shift_without_centering():
    """Only differences enter the pairwise loss, which is why centering is needed at all."""
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 0.5])
    loss, _ = bradley_terry_loss(chosen, rejected)
    shifted, _ = bradley_terry_loss(chosen + 7, rejected + 7)
    assert shifted.item() == pytest.approx(loss.item(), abs=1e-6)


def test_ranking_pairs_count_and_order():
    """K completions give K(K-1)/2 pairs, each (better, worse) as placed in the best-first order."""
    assert ranking_pairs(3, [2, 0, 1]) == [(2, 0), (2, 1), (0, 1)]
    for k in range(2, 8):
        order = list(reversed(range(k)))
        pairs = ranking_pairs(k, order)
        assert len(pairs) == k * (k - 1) // 2
        assert len(set(pairs)) == len(pairs)
        assert all(order.index(better) < order.index(worse) for better, worse in pairs)


def test_ranking_pairs_refuses_a_non_permutation():
    with pytest.raises(ValueError, match="once"):
        ranking_pairs(3, [0, 0, 1])


def test_ranking_loss_k3_worked_example():
    """rewards = [0.5, 2.0, 1.0], order best-first [1, 2, 0]: pairs (1,2) gap 1, (1,0) gap 1.5,
    (2,0) gap 0.5. loss = (log(1+e^-1) + log(1+e^-1.5) + log(1+e^-0.5)) / 3
    = (0.313262 + 0.201413 + 0.474077) / 3 = 0.329584; all 3 pairs correctly ordered."""
    loss, metrics = ranking_loss(torch.tensor([0.5, 2.0, 1.0]), [1, 2, 0])
    assert loss.item() == pytest.approx(0.3295840, abs=1e-6)
    assert metrics["accuracy"].item() == 1.0


def test_ranking_loss_with_two_completions_is_bradley_terry():
    """K = 2, order [1, 0]: the one pair has chosen = rewards[1] = 0.3, rejected = rewards[0] = 1.2."""
    rewards = torch.tensor([1.2, 0.3])
    loss, _ = ranking_loss(rewards, [1, 0])
    expected, _ = bradley_terry_loss(torch.tensor([0.3]), torch.tensor([1.2]))
    assert loss.item() == pytest.approx(expected.item())
    assert loss.item() == pytest.approx(math.log(1 + math.exp(0.9)), abs=1e-6)
