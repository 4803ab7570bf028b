"""Math-tier tests of rl/token_rewards.py: PPO's per-token rewards, the missing-EOS penalty, sequence KL and the
explained variance, on worked numbers."""

import math

import pytest
import torch

from posttrain.rl.advantages import gae
from posttrain.rl.token_rewards import explained_variance, penalize_unfinished, sequence_kl, token_rewards


def test_the_eos_penalty_hits_only_completions_that_did_not_end():
    scores = torch.tensor([1.0, -0.5, 2.0])
    ended = torch.tensor([True, False, True])
    assert penalize_unfinished(scores, ended, 1.0).tolist() == [1.0, -1.5, 2.0]
    assert penalize_unfinished(scores, torch.ones(3, dtype=torch.bool), 5.0).tolist() == scores.tolist()
    assert penalize_unfinished(scores, ended, 0.0).tolist() == scores.tolist()
    with pytest.raises(ValueError, match="penalty must be >= 0"):
        penalize_unfinished(scores, ended, -1.0)


def test_token_rewards_worked_numbers():
    """kl_coef 0.1. Row 1, 3 tokens, kl [0.5, -0.2, 1.0], score 2: [-0.05, 0.02, -0.1 + 2] = [-0.05, 0.02, 1.9].
    Row 2, 1 token, kl [0.3], score -1: [-0.03 - 1] = [-1.03], then padding 0, 0."""
    kl = torch.tensor([[0.5, -0.2, 1.0], [0.3, 9.0, 9.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    out = token_rewards(torch.tensor([2.0, -1.0]), kl, mask, 0.1)
    assert out.tolist()[0] == pytest.approx([-0.05, 0.02, 1.9])
    assert out.tolist()[1] == pytest.approx([-1.03, 0.0, 0.0])


def test_token_rewards_sum_to_the_score_less_beta_times_the_sequence_kl():
    torch.manual_seed(0)
    kl = torch.randn(4, 6)
    mask = torch.arange(6)[None, :] < torch.tensor([6, 3, 1, 0])[:, None]
    scores = torch.randn(4)
    out = token_rewards(scores, kl, mask, 0.05)
    expected = torch.where(mask.sum(1) > 0, scores, 0.0) - 0.05 * sequence_kl(kl, mask)
    assert torch.allclose(out.sum(1), expected, atol=1e-6)
    assert (out[~mask] == 0).all()


def test_returns_are_advantages_plus_values_and_gamma_one_lambda_one_gives_reward_to_go():
    """With γ = λ = 1 the advantage at t is Σ_{s>=t} r_s - V_t, so the return is the reward-to-go."""
    kl = torch.tensor([[0.5, -0.2, 1.0], [0.3, 0.0, 0.0]])
    mask = torch.tensor([[True, True, True], [True, False, False]])
    rewards = token_rewards(torch.tensor([2.0, -1.0]), kl, mask, 0.1)
    values = torch.tensor([[0.3, -0.1, 0.7], [0.2, 5.0, 5.0]])
    adv, ret = gae(rewards, values, mask, 1.0, 1.0)
    assert torch.allclose(ret, torch.where(mask, adv + values, 0.0))
    to_go = rewards.flip(1).cumsum(1).flip(1)
    assert torch.allclose(ret[mask], to_go[mask], atol=1e-6)


def test_explained_variance_worked_numbers():
    """R = [1, 2, 3, 4] (unbiased var 5/3); V = R: 1; V = mean: 0; V = [2, 1, 4, 3] (R - V = [-1, 1, -1, 1],
    var 4/3): 1 - (4/3)/(5/3) = 0.2. Masked-out tokens are ignored."""
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    mask = torch.tensor([[True, True, True, True, False]])
    assert explained_variance(r, r, mask) == pytest.approx(1.0)
    assert explained_variance(torch.full_like(r, 2.5), r, mask) == pytest.approx(0.0)
    assert explained_variance(torch.tensor([[2.0, 1.0, 4.0, 3.0, 0.0]]), r, mask) == pytest.approx(0.2)
    assert math.isnan(explained_variance(r, torch.ones_like(r), mask))


def test_explained_variance_over_two_processes_equals_the_whole():
    """A `variance` over both processes' values (here: this half's and the other's, concatenated) makes one
    process's half give the whole's figure: PPO's train/explained_variance under torchrun."""
    r = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    v = torch.tensor([[2.0, 1.0, 4.0, 3.0]])
    ones = torch.ones_like(r, dtype=torch.bool)
    calls = iter([r[0, 2:].double(), (r - v)[0, 2:].double()])  # the other process's R, then R - V
    half = explained_variance(v[:, :2], r[:, :2], ones[:, :2], lambda x: float(torch.cat([x, next(calls)]).var()))
    assert half == pytest.approx(explained_variance(v, r, ones)) == pytest.approx(0.2)
