"""Math-tier tests of rl/advantages.py: hand-worked groups, invariants, edge cases, GAE against a plain loop."""

import math

import pytest
import torch

from posttrain.rl.advantages import (
    gae,
    group_advantages,
    leave_one_out_advantages,
    whiten,
    zero_advantage_groups,
    zero_variance_groups,
)
from posttrain.rl.engine import global_moments
from posttrain.training.distributed import Dist


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_group_advantages_have_zero_mean_per_group(scale):
    """Each group's advantages are its centred rewards times one positive number, so they sum to 0 per group."""
    torch.manual_seed(0)
    rewards = torch.rand(5 * 4)
    advantages = group_advantages(rewards, 4, scale)
    assert advantages.shape == (20,)
    assert torch.allclose(advantages.view(5, 4).mean(1), torch.zeros(5), atol=1e-6)


def test_grpo_worked_group():
    """rewards [1, 0, 0, 1]: mean 1/2, centred [1/2, -1/2, -1/2, 1/2]; unbiased variance (4 · 1/4) / 3 = 1/3,
    std 0.577350. With eps = 0: ±0.5 / 0.577350 = ±0.866025 (= √3 / 2); with eps = 1e-4: 0.5 / 0.577450 = 0.865875."""
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0])
    assert torch.allclose(group_advantages(rewards, 4, eps=0.0), torch.tensor([1, -1, -1, 1]) * math.sqrt(3) / 2)
    assert group_advantages(rewards, 4)[0].item() == pytest.approx(0.5 / (math.sqrt(1 / 3) + 1e-4), rel=1e-6)
    assert group_advantages(rewards, 4)[0].item() == pytest.approx(0.865875, abs=1e-6)


def test_dr_grpo_advantages_are_unscaled():
    """scale "none" is r - group mean. Groups [3, 1, 2] (mean 2) and [0, 0, 4] (mean 4/3):
    [1, -1, 0] and [-4/3, -4/3, 8/3], whatever the spread of either group."""
    rewards = torch.tensor([3.0, 1.0, 2.0, 0.0, 0.0, 4.0])
    expected = torch.tensor([1.0, -1.0, 0.0, -4 / 3, -4 / 3, 8 / 3])
    assert torch.allclose(group_advantages(rewards, 3, "none"), expected)


def test_batch_scale_divides_by_the_std_of_all_rewards():
    """rewards [1, 0, 0, 1 | 1, 1, 1, 0]: batch mean 5/8; squared deviations 5 · 9/64 + 3 · 25/64 = 120/64 = 15/8;
    unbiased variance 15/8 / 7 = 15/56, std 0.517549. Group 2's mean is 3/4, centred [1/4, 1/4, 1/4, -3/4];
    so its advantages are [1/4, 1/4, 1/4, -3/4] / (0.517549 + 1e-4)."""
    rewards = torch.tensor([1.0, 0, 0, 1, 1, 1, 1, 0])
    std = math.sqrt(15 / 56)
    expected = torch.tensor([0.5, -0.5, -0.5, 0.5, 0.25, 0.25, 0.25, -0.75]) / (std + 1e-4)
    assert torch.allclose(group_advantages(rewards, 4, "batch"), expected)


def test_rloo_worked_group():
    """rewards [1, 0, 0, 1]: sample 0's baseline is the mean of the other three, (0 + 0 + 1) / 3 = 1/3, advantage
    1 - 1/3 = 2/3; sample 1's baseline (1 + 0 + 1) / 3 = 2/3, advantage -2/3. Same as G/(G-1) (r - mean) = 4/3 · ±1/2."""
    advantages = leave_one_out_advantages(torch.tensor([1.0, 0.0, 0.0, 1.0, 5.0, 5.0, 5.0, 5.0]), 4)
    assert torch.allclose(advantages, torch.tensor([2 / 3, -2 / 3, -2 / 3, 2 / 3, 0, 0, 0, 0]))


def test_zero_variance_groups_worked_case():
    """Groups [1, 1, 1] (all right), [0, 1, 0] (mixed), [0, 0, 0] (all wrong): only the mixed one has spread."""
    rewards = torch.tensor([1.0, 1, 1, 0, 1, 0, 0, 0, 0])
    assert zero_variance_groups(rewards, 3).tolist() == [True, False, True]


def test_group_size_must_divide_the_number_of_rewards():
    for fn in (group_advantages, leave_one_out_advantages, zero_variance_groups):
        with pytest.raises(ValueError, match="group_size 4 must be >= 1 and divide the number of rewards 6"):
            fn(torch.zeros(6), 4)
        with pytest.raises(ValueError, match="1-D"):
            fn(torch.zeros(2, 4), 4)
    with pytest.raises(ValueError, match="scale"):
        group_advantages(torch.zeros(4), 2, "std")


def test_a_group_of_one_gets_advantage_zero_not_nan():
    """G = 1: r - mean = 0, and the unbiased std of one sample (NaN in torch) is taken as 0: 0 / (0 + eps) = 0.
    The batch scale with N = 1 likewise. RLOO has no baseline with G = 1 and refuses."""
    rewards = torch.tensor([0.3, 1.0, 0.0])
    for scale in ("group", "batch", "none"):
        assert group_advantages(rewards, 1, scale).tolist() == [0.0, 0.0, 0.0]
        assert group_advantages(rewards[:1], 1, scale).tolist() == [0.0]
    assert zero_variance_groups(rewards, 1).tolist() == [True, True, True]
    with pytest.raises(ValueError, match="group_size >= 2"):
        leave_one_out_advantages(rewards, 1)


def test_whiten_worked_example_and_mask():
    """values [1, 2, 3, pad 100], mask [T, T, T, F]: mean 2, unbiased variance (1 + 0 + 1) / 2 = 1,
    so [-1, 0, 1] and 0 at the padding. shift_mean=False adds the mean back: [1, 2, 3, 0]."""
    values = torch.tensor([1.0, 2.0, 3.0, 100.0])
    mask = torch.tensor([True, True, True, False])
    assert torch.allclose(whiten(values, mask), torch.tensor([-1.0, 0.0, 1.0, 0.0]))
    assert torch.allclose(whiten(values, mask, shift_mean=False), torch.tensor([1.0, 2.0, 3.0, 0.0]))


def test_whiten_gives_mean_zero_std_one_over_the_mask():
    torch.manual_seed(1)
    values = 5 + 3 * torch.randn(4, 7, dtype=torch.float64)
    mask = torch.arange(7)[None, :] < torch.tensor([7, 3, 5, 1])[:, None]  # rows of different lengths
    out = whiten(values, mask)
    assert out[mask].mean().item() == pytest.approx(0.0, abs=1e-9)
    assert out[mask].std().item() == pytest.approx(1.0, abs=1e-7)
    assert (out[~mask] == 0).all()
    kept = whiten(values, mask, shift_mean=False)[mask]
    assert kept.mean().item() == pytest.approx(values[mask].mean().item())
    assert kept.std().item() == pytest.approx(1.0, abs=1e-7)
    assert whiten(values).std().item() == pytest.approx(1.0, abs=1e-7)  # no mask: every position
    one = torch.zeros_like(mask)
    one[0, 0] = True
    with pytest.raises(ValueError, match="at least 2 positions in the mask to estimate a spread, got 1"):
        whiten(values, one)


def test_whiten_with_moments_of_the_whole_equals_whitening_the_whole():
    """Two processes' halves, each whitened with the moments of both (what PPO does under torchrun), give the
    whitened whole; rl.engine.global_moments gives those moments (worked: [1, 2, 3, 6] has mean 3, variance 14/3)."""
    values = torch.tensor([1.0, 2.0, 3.0, 6.0], dtype=torch.float64)
    n, mean, variance = global_moments(values, Dist(0, 1, 0, torch.device("cpu")))
    assert (n, mean, variance) == (4, 3.0, pytest.approx(14 / 3))
    halves = torch.cat([whiten(values[:1], moments=(mean, variance)), whiten(values[1:], moments=(mean, variance))])
    torch.testing.assert_close(halves, whiten(values))


def loop_gae(rewards, values, mask, gamma, lam):
    """GAE the plain way, one row and one token at a time, over each row's masked positions only."""
    advantages = torch.zeros_like(values)
    for b in range(values.shape[0]):
        positions = [t for t in range(values.shape[1]) if mask[b, t]]
        last = 0.0
        for i in reversed(range(len(positions))):
            t = positions[i]
            next_value = values[b, positions[i + 1]].item() if i + 1 < len(positions) else 0.0
            delta = rewards[b, t].item() + gamma * next_value - values[b, t].item()
            last = delta + gamma * lam * last
            advantages[b, t] = last
    return advantages, (advantages + values) * mask


def test_gae_worked_example():
    """rewards [0, 0, 1], values [0.5, 0.6, 0.7], the episode ending after token 2.
    γ = λ = 1: A_t = (sum of rewards from t) - V_t = [0.5, 0.4, 0.3]; returns A + V = [1, 1, 1].
    γ = 0.5, λ = 0: A_t = δ_t = r_t + γ V_{t+1} - V_t = [0.3 - 0.5, 0.35 - 0.6, 1 - 0.7] = [-0.2, -0.25, 0.3]."""
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    advantages, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    assert torch.allclose(advantages, torch.tensor([[0.5, 0.4, 0.3]]))
    assert torch.allclose(returns, torch.ones(1, 3))
    advantages, _ = gae(rewards, values, mask, gamma=0.5, lam=0.0)
    assert torch.allclose(advantages, torch.tensor([[-0.2, -0.25, 0.3]]))


def test_vectorised_gae_equals_a_plain_loop_with_masks_of_different_lengths():
    """Rows of lengths 6, 2, 4 (right padding), 3 (left padding) and 1; the padding holds junk rewards and values,
    which must not leak into any row's advantages."""
    torch.manual_seed(2)
    rewards, values = torch.randn(5, 6, dtype=torch.float64), torch.randn(5, 6, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0], [0, 0, 0, 1, 1, 1],
                         [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    for gamma, lam in [(1.0, 0.95), (0.99, 0.9), (0.5, 0.0), (1.0, 1.0)]:
        advantages, returns = gae(rewards, values, mask, gamma, lam)
        expected_advantages, expected_returns = loop_gae(rewards, values, mask, gamma, lam)
        assert torch.allclose(advantages, expected_advantages, atol=1e-12)
        assert torch.allclose(returns, expected_returns, atol=1e-12)
        assert (advantages[~mask] == 0).all() and (returns[~mask] == 0).all()


def test_gae_checks_its_inputs():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="one \\(B, T\\) shape"):
        gae(x, torch.zeros(2, 4), torch.ones(2, 3, dtype=torch.bool), 1.0, 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        gae(x, x, torch.tensor([[1, 0, 1], [1, 1, 1]], dtype=torch.bool), 1.0, 1.0)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        gae(x, x, torch.ones(2, 3, dtype=torch.bool), 1.5, 1.0)


def test_a_group_of_equal_rewards_gets_advantages_of_exactly_zero():
    """8 rewards of 0.7 in float32: their mean is a few ulps off 0.7, and dividing by their (as tiny) std made
    GRPO's advantages ~6e-4 instead of 0; every estimator now gives exactly 0 to such a group, and the groups
    that differ keep their values."""
    for value in (0.1, 0.7, 1 / 3, 2.2):
        for g in (3, 7, 8, 12, 16):
            rewards = torch.cat([torch.full((g,), value), torch.arange(g, dtype=torch.float32) / g])  # flat, then not
            for adv in (group_advantages(rewards, g), group_advantages(rewards, g, "batch"),
                        group_advantages(rewards, g, "none"), leave_one_out_advantages(rewards, g)):
                assert adv[:g].eq(0).all() and adv[g:].ne(0).any(), (value, g, adv)
                assert zero_advantage_groups(adv, g).tolist() == [True, False]


def test_zero_advantage_groups_is_about_the_advantages_not_the_rewards():
    """A baseline over the whole batch (REINFORCE++) gives a group of equal rewards advantages that are not 0:
    it is not a group without signal, though its rewards have no spread."""
    rewards = torch.tensor([1.0, 1.0, 0.0, 0.0])
    batch_baseline = rewards - rewards.mean()  # (N,): 0.5, 0.5, -0.5, -0.5
    assert zero_variance_groups(rewards, 2).tolist() == [True, True]
    assert zero_advantage_groups(batch_baseline, 2).tolist() == [False, False]
    assert zero_advantage_groups(torch.tensor([0.0, 0.0, 0.3, -0.3]), 2).tolist() == [True, False]
