"""The statistics module (math tier): pass@k against enumeration, Bradley-Terry recovering simulated strengths,
bootstrap coverage over simulated experiments, Arena ranks, κ by hand and α against the krippendorff package's
own documented examples."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy.stats import spearmanr

from posttrain.eval import stats


@pytest.mark.parametrize("n, c, k", [(n, c, k) for n in range(1, 7) for c in range(n + 1) for k in range(1, n + 1)])
def test_pass_at_k_equals_enumeration_of_all_k_subsets(n, c, k):
    """Samples 0..c-1 are correct; pass@k is the share of k-subsets holding at least one of them."""
    subsets = list(itertools.combinations(range(n), k))
    brute = sum(any(i < c for i in s) for s in subsets) / len(subsets)
    assert stats.pass_at_k(n, c, k) == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_by_hand_and_over_problems():
    """n=4, c=1, k=2: 1 - C(3,2)/C(4,2) = 1 - 3/6 = 0.5. n=10, c=3, k=1: 3/10. Mean of the two: 0.4.
    n=200, c=5, k=100: the binomials are ~1e58, the product form stays exact: 1 - C(195,100)/C(200,100)."""
    assert stats.pass_at_k(4, 1, 2) == pytest.approx(0.5)
    assert stats.mean_pass_at_k(np.array([4, 10]), np.array([1, 3]), 1) == pytest.approx((0.25 + 0.3) / 2)
    assert stats.mean_pass_at_k(np.array([4, 10]), np.array([1, 3]), 2) == pytest.approx(
        (0.5 + 1 - math.comb(7, 2) / math.comb(10, 2)) / 2)
    assert stats.pass_at_k(200, 5, 100) == pytest.approx(1 - math.comb(195, 100) / math.comb(200, 100), rel=1e-12)
    assert stats.pass_at_k_values(8) == [1, 2, 4, 8] and stats.pass_at_k_values(6) == [1, 2, 4]
    with pytest.raises(ValueError, match="k <= n"):
        stats.pass_at_k(2, 1, 3)


def simulate_comparisons(theta, n_prompts, rng, tie_rate=0.0):
    """Every pair of models on each prompt: i beats j with probability σ(θ_i - θ_j); some outcomes are ties."""
    pairs = np.array(list(itertools.combinations(range(len(theta)), 2)))
    a = np.tile(pairs[:, 0], n_prompts)
    b = np.tile(pairs[:, 1], n_prompts)
    prompt = np.repeat(np.arange(n_prompts), len(pairs))
    p_win = 1 / (1 + np.exp(-(theta[a] - theta[b])))
    outcome = (rng.random(a.size) < p_win).astype(float)
    outcome[rng.random(a.size) < tie_rate] = 0.5
    return a, b, outcome, prompt


def test_bradley_terry_recovers_known_strengths_of_eight_models():
    rng = np.random.default_rng(0)
    theta = rng.normal(0, 1, 8)
    a, b, outcome, _ = simulate_comparisons(theta, 100, rng, tie_rate=0.1)
    ratings = stats.bradley_terry(a, b, outcome, 8)
    assert spearmanr(ratings, theta).statistic >= 0.95
    assert ratings.mean() == pytest.approx(1000.0)
    true_ratings = stats.bt_ratings(theta - theta.mean())
    assert np.max(np.abs(ratings - true_ratings)) < 60  # ~2800 comparisons: within a few dozen points


def test_bradley_terry_two_models_is_the_log_odds():
    """A beats B 3 times, B beats A once, one tie: A has 3.5 of 5. The MLE makes σ(θ_A - θ_B) = 0.7, so
    θ_A - θ_B = ln(0.7/0.3) = 0.8473 -> rating gap 400/ln10 * 0.8473 = 147.2 points, centred on 1000."""
    ratings = stats.bradley_terry(np.array([0, 0, 0, 1, 0]), np.array([1, 1, 1, 0, 1]),
                                  np.array([1.0, 1.0, 1.0, 1.0, 0.5]), 2, l2=0.0)
    assert ratings[0] - ratings[1] == pytest.approx(400 / math.log(10) * math.log(0.7 / 0.3), abs=1e-3)
    assert ratings.mean() == pytest.approx(1000.0)
    assert np.all(np.isfinite(stats.bradley_terry(np.array([0]), np.array([1]), np.array([1.0]), 2)))


def test_arena_ranks_tie_where_intervals_overlap():
    """[10, 20], [15, 25], [30, 40]: nothing is above the third; the third's low 30 is above both others' highs."""
    assert stats.arena_ranks(np.array([10, 15, 30]), np.array([20, 25, 40])).tolist() == [2, 2, 1]
    assert stats.arena_ranks(np.array([0, 21, 42]), np.array([20, 41, 60])).tolist() == [3, 2, 1]


def test_bradley_terry_bootstrap_orders_clearly_different_models():
    rng = np.random.default_rng(1)
    theta = np.array([-1.5, 0.0, 1.5])
    a, b, outcome, prompt = simulate_comparisons(theta, 150, rng)
    result = stats.bradley_terry_bootstrap(a, b, outcome, prompt, 3, n_resamples=200, seed=0)
    assert np.all(result.ci_low < result.rating) and np.all(result.rating < result.ci_high)
    assert result.rank.tolist() == [3, 2, 1]


def test_bootstrap_intervals_cover_the_true_mean_in_92_to_98_percent_of_200_experiments():
    """Bernoulli(0.7) scores of 60 prompts per experiment, BCa (scipy) and the clustered percentile bootstrap
    (3 correlated samples per prompt: a prompt's difficulty is shared by its samples)."""
    rng = np.random.default_rng(0)
    bca = percentile = 0
    for e in range(200):
        scores = (rng.random(60) < 0.7).astype(float)
        low, high = stats.bootstrap_ci(scores, n_resamples=999, seed=e)
        bca += low <= 0.7 <= high
        difficulty = rng.beta(2, 1, 60)  # mean 2/3: the true mean of every sample
        samples = (rng.random((60, 3)) < difficulty[:, None]).astype(float)
        _, low, high = stats.cluster_bootstrap(samples.ravel(), np.repeat(np.arange(60), 3), 999, seed=e)
        percentile += low <= 2 / 3 <= high
    assert 184 <= bca <= 196, bca
    assert 184 <= percentile <= 196, percentile


def test_paired_bootstrap_sees_a_difference_that_prompt_difficulty_would_hide():
    """y = x except 8 of 100 prompts that x gets right and y wrong: the paired interval of the difference
    (0.08) excludes 0, though each system's own interval is ~±0.1 wide."""
    rng = np.random.default_rng(0)
    x = (rng.random(100) < 0.6).astype(float)
    y = x.copy()
    y[np.flatnonzero(x)[:8]] = 0.0
    diff, low, high = stats.paired_bootstrap_ci(x, y, seed=0)
    assert diff == pytest.approx(0.08) and 0 < low < 0.08 < high
    assert stats.paired_bootstrap_ci(x, x) == (0.0, 0.0, 0.0)


def test_difference_ci_is_newcombes_for_two_proportions():
    """Newcombe (1998) example-like: 0.6 [0.5, 0.7] vs 0.4 [0.3, 0.5]: d = 0.2, half widths sqrt(0.01+0.01)."""
    d, low, high = stats.difference_ci((0.6, 0.5, 0.7), (0.4, 0.3, 0.5))
    assert d == pytest.approx(0.2) and low == pytest.approx(0.2 - math.sqrt(0.02))
    assert high == pytest.approx(0.2 + math.sqrt(0.02))


def test_cohen_kappa_by_hand():
    """10 items, labels yes/no. Rater a: 6 yes; rater b: 5 yes; they agree on 7 (4 yes-yes, 3 no-no).
    p_o = 0.7; p_e = 0.6*0.5 + 0.4*0.5 = 0.5; κ = (0.7 - 0.5) / (1 - 0.5) = 0.4."""
    a = np.array(["y", "y", "y", "y", "y", "y", "n", "n", "n", "n"])
    b = np.array(["y", "y", "y", "y", "n", "n", "y", "n", "n", "n"])
    assert stats.cohen_kappa(a, b) == pytest.approx(0.4)
    assert stats.cohen_kappa(a, a) == 1.0


# Krippendorff's reliability data as printed in the `krippendorff` package's `alpha` docstring (v0.9.0).
_NAN = np.nan
CLASSIC = [[_NAN, _NAN, _NAN, _NAN, _NAN, 3, 4, 1, 2, 1, 1, 3, 3, _NAN, 3],
           [1, _NAN, 2, 1, 3, 3, 4, 3, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN, _NAN],
           [_NAN, _NAN, 2, 1, 3, 4, 4, _NAN, 2, 1, 1, 3, 3, _NAN, 4]]
FOUR_RATERS = [[1, 2, 3, 3, 2, 1, 4, 1, 2, _NAN, _NAN, _NAN],
               [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, _NAN, 3],
               [_NAN, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, _NAN],
               [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, _NAN]]


def test_krippendorff_alpha_against_the_package_documented_values():
    """The package's docstring prints nominal 0.691358 and interval 0.810845 for the 3-rater data, and
    ordinal 0.815, ratio 0.797 for the 4-rater data (Krippendorff's own worked examples)."""
    assert round(stats.krippendorff_alpha(np.array(CLASSIC), "nominal"), 6) == 0.691358
    assert round(stats.krippendorff_alpha(np.array(CLASSIC), "interval"), 6) == 0.810845
    assert round(stats.krippendorff_alpha(np.array(FOUR_RATERS), "ordinal"), 3) == 0.815
    assert round(stats.krippendorff_alpha(np.array(FOUR_RATERS), "ratio"), 3) == 0.797


def test_position_bias_rate_and_wilson_interval():
    """First-shown wins 8, ties 2 (half each), loses 0 of 10: rate 0.9; 9 of 10 Wilson: (0.5958, 0.9821)."""
    rate, low, high = stats.position_bias(np.array([1.0] * 8 + [0.5] * 2))
    assert rate == pytest.approx(0.9)
    assert low == pytest.approx(0.5958, abs=1e-4) and high == pytest.approx(0.9821, abs=1e-4)


@pytest.mark.slow
def test_bradley_terry_bootstrap_intervals_cover_the_true_ratings():
    """200 simulated experiments of 3 models (θ = -0.5, 0, 0.5), every pair on each of 100 prompts: the clustered
    percentile intervals hold the true centred ratings in 92-98% of cases, averaged over the 3 models (each
    model's own rate moves by ~±2 points from seed to seed at 200 experiments). ~30 s: 40,000 BT fits."""
    theta = np.array([-0.5, 0.0, 0.5])
    true = stats.bt_ratings(theta - theta.mean())
    rng = np.random.default_rng(0)
    covered = np.zeros(3)
    for e in range(200):
        a, b, outcome, prompt = simulate_comparisons(theta, 100, rng)
        fit = stats.bradley_terry_bootstrap(a, b, outcome, prompt, 3, n_resamples=200, seed=e)
        covered += (fit.ci_low <= true) & (true <= fit.ci_high)
    assert 0.92 <= covered.sum() / 600 <= 0.98, covered
