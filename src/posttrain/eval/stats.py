"""Evaluation statistics: pure functions over numpy arrays, shared by `posttrain eval` and the feedback app.

- `pass_at_k`, `mean_pass_at_k`     the unbiased pass@k estimator (arXiv:2107.03374 §2.1)
- `fit_bradley_terry`, `bt_ratings`  Bradley-Terry strengths by maximum likelihood, on an Elo-like scale
- `bootstrap_ci`                     a percentile or BCa interval of a statistic of per-prompt values (scipy)
- `paired_bootstrap_ci`              the same for a difference between paired per-prompt values
- `cluster_bootstrap`                resample prompts (clusters) with a seeded numpy Generator
- `bradley_terry_bootstrap`          BT ratings with intervals, resampling prompts with all their comparisons
- `arena_ranks`                      ranks that tie where intervals overlap (Chatbot Arena, arXiv:2403.04132)
- `difference_ci`                    the interval of a difference of two independent estimates (MOVER)
- `cohen_kappa`, `krippendorff_alpha` agreement between raters
- `position_bias`                    how often the first-shown response wins, with a Wilson interval

Everything takes and returns plain numbers and arrays; nothing here knows about models or files.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import optimize, stats

from posttrain.eval.winrate import wilson_interval

ELO_SCALE = 400 / math.log(10)  # rating points per unit of natural log-strength: 10^(ΔR/400) = e^Δθ
ELO_BASE = 1000.0
"""Ratings are ELO_SCALE * θ + ELO_BASE, so a 400-point gap is 10:1 odds, as Chatbot Arena shows them."""


# --------------------------------------------------------------------------------------------- pass@k


def pass_at_k(n: int | np.ndarray, c: int | np.ndarray, k: int) -> float | np.ndarray:
    """The chance that at least one of k samples drawn without replacement from n (c of them correct) is correct.

    pass@k = 1 - C(n-c, k) / C(n, k), written as the product 1 - Π_{i=n-c+1}^{n} (1 - k/i) that never forms
    the huge binomials (arXiv:2107.03374 §2.1 and its numpy listing); 1 when n - c < k (every k-subset holds
    a correct sample). E.g. n=4, c=1, k=2: 1 - (1 - 2/4) = 0.5 = 1 - C(3,2)/C(4,2) = 1 - 3/6.
    Vectorised over arrays of n and c (one entry per problem).
    """
    n_arr, c_arr = np.asarray(n, dtype=np.int64), np.asarray(c, dtype=np.int64)
    if np.any(n_arr < k) or k < 1:
        raise ValueError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    if np.any((c_arr < 0) | (c_arr > n_arr)):
        raise ValueError(f"need 0 <= c <= n, got c={c}, n={n}")
    n_flat, c_flat = np.broadcast_arrays(n_arr, c_arr)
    out = np.empty(n_flat.shape, dtype=np.float64)
    for idx in np.ndindex(n_flat.shape):
        ni, ci = int(n_flat[idx]), int(c_flat[idx])
        out[idx] = 1.0 if ni - ci < k else 1.0 - float(np.prod(1.0 - k / np.arange(ni - ci + 1, ni + 1)))
    return float(out) if out.ndim == 0 else out


def mean_pass_at_k(n: np.ndarray, c: np.ndarray, k: int) -> float:
    """pass@k averaged over problems: problem i drew n[i] samples, c[i] of them correct."""
    return float(np.mean(pass_at_k(np.asarray(n), np.asarray(c), k)))


def pass_at_k_values(n_samples: int) -> list[int]:
    """The k reported for n samples per prompt: 1, 2, 4, ... up to n."""
    return [2**i for i in range(int(math.log2(n_samples)) + 1)] if n_samples >= 1 else []


# --------------------------------------------------------------------------------------------- Bradley-Terry


def wins_matrix(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, n_models: int) -> np.ndarray:
    """(M, M) matrix W with W[i, j] = how often i beat j; an outcome is A's score (1 win, 0.5 tie, 0 loss),
    so a tie adds half a win to each side."""
    a, b, outcome = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64), np.asarray(outcome, dtype=float)
    if not a.shape == b.shape == outcome.shape:
        raise ValueError(f"a, b and outcome must have one shape, got {a.shape}, {b.shape}, {outcome.shape}")
    if np.any(a == b):
        raise ValueError("a model cannot be compared with itself")
    wins = np.zeros((n_models, n_models))
    np.add.at(wins, (a, b), outcome)
    np.add.at(wins, (b, a), 1.0 - outcome)
    return wins


def fit_bradley_terry(wins: np.ndarray, l2: float = 1e-4) -> np.ndarray:
    """Log-strengths θ (M,) maximising Σ_ij W[i,j] log σ(θ_i - θ_j) - l2/2 |θ|², centred to sum 0.

    The Bradley-Terry model (Bradley & Terry 1952): P(i beats j) = σ(θ_i - θ_j). Its likelihood only sees
    differences, so θ is fixed by centring; the tiny L2 keeps θ finite when a model wins (or loses) every
    comparison and chooses the centred solution. Fitted with L-BFGS (scipy.optimize) on the exact gradient.
    """
    wins = np.asarray(wins, dtype=float)
    m = wins.shape[0]
    if wins.shape != (m, m):
        raise ValueError(f"wins must be a square matrix, got shape {wins.shape}")

    def loss_and_grad(theta: np.ndarray) -> tuple[float, np.ndarray]:
        diff = theta[:, None] - theta[None, :]  # (M, M): θ_i - θ_j
        loss = float(np.sum(wins * np.logaddexp(0.0, -diff))) + 0.5 * l2 * float(theta @ theta)  # -log σ(d)
        weight = wins * stats.logistic.cdf(-diff)  # (M, M): W_ij σ(-(θ_i - θ_j)), d loss / d θ_i = -Σ_j this
        grad = -weight.sum(axis=1) + weight.sum(axis=0) + l2 * theta
        return loss, grad

    result = optimize.minimize(loss_and_grad, np.zeros(m), jac=True, method="L-BFGS-B")
    return result.x - result.x.mean()


def bt_ratings(theta: np.ndarray) -> np.ndarray:
    """Log-strengths on the Elo-like scale: ELO_SCALE * θ + ELO_BASE (mean rating 1000)."""
    return ELO_SCALE * np.asarray(theta) + ELO_BASE


def bradley_terry(a: np.ndarray, b: np.ndarray, outcome: np.ndarray, n_models: int, l2: float = 1e-4) -> np.ndarray:
    """Ratings (M,) from comparisons: model a[t] against b[t] with A's outcome[t] (1, 0.5 or 0)."""
    return bt_ratings(fit_bradley_terry(wins_matrix(a, b, outcome, n_models), l2))


@dataclass
class Ratings:
    """Bradley-Terry ratings with percentile intervals from a bootstrap over prompts, and Arena ranks."""

    rating: np.ndarray  # (M,)
    ci_low: np.ndarray  # (M,)
    ci_high: np.ndarray  # (M,)
    rank: np.ndarray  # (M,) ints, 1 = best


def bradley_terry_bootstrap(
    a: np.ndarray, b: np.ndarray, outcome: np.ndarray, cluster: np.ndarray, n_models: int,
    n_resamples: int = 500, confidence: float = 0.95, seed: int = 0, l2: float = 1e-4,
) -> Ratings:
    """BT ratings of `n_models` with intervals from a clustered bootstrap: resample clusters (prompts) with
    replacement, keeping all of a prompt's comparisons together (every model answered the same prompt, so its
    comparisons are correlated), refit, and take percentiles. Ranks: `arena_ranks` of the intervals.

    Per-prompt wins matrices are summed with multinomial counts, so a resample costs one (P,) @ (P, M²)."""
    a, b, outcome = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64), np.asarray(outcome, dtype=float)
    keys, index = np.unique(np.asarray(cluster), return_inverse=True)
    wins_matrix(a, b, outcome, n_models)  # checks the shapes and self-comparisons
    per_cluster = np.zeros((len(keys), n_models, n_models))  # (P, M, M): each prompt's own wins matrix
    np.add.at(per_cluster, (index, a, b), outcome)
    np.add.at(per_cluster, (index, b, a), 1.0 - outcome)
    flat = per_cluster.reshape(len(keys), -1)  # (P, M²)
    rating = bt_ratings(fit_bradley_terry(flat.sum(0).reshape(n_models, n_models), l2))
    counts = cluster_resample_counts(len(keys), n_resamples, seed)  # (R, P)
    boot = np.stack([bt_ratings(fit_bradley_terry((c @ flat).reshape(n_models, n_models), l2)) for c in counts])
    low, high = np.percentile(boot, [50 * (1 - confidence), 50 * (1 + confidence)], axis=0)
    return Ratings(rating, low, high, arena_ranks(low, high))


def arena_ranks(ci_low: np.ndarray, ci_high: np.ndarray) -> np.ndarray:
    """Rank of model i = 1 + the number of models whose lower bound is above i's upper bound.

    Models whose intervals overlap share a rank, as on the Chatbot Arena leaderboard (arXiv:2403.04132):
    e.g. intervals [10, 20], [15, 25], [30, 40] -> ranks 2, 2, 1 (only the third is surely better)."""
    low, high = np.asarray(ci_low, dtype=float), np.asarray(ci_high, dtype=float)
    return 1 + (low[None, :] > high[:, None]).sum(axis=1)


# --------------------------------------------------------------------------------------------- bootstrap


def bootstrap_ci(
    values: np.ndarray, statistic: Callable[..., np.ndarray] = np.mean, confidence: float = 0.95,
    method: Literal["BCa", "percentile"] = "BCa", n_resamples: int = 2000, seed: int = 0,
) -> tuple[float, float]:
    """Interval of `statistic(values)` by resampling the values (one per prompt) with scipy.stats.bootstrap;
    `statistic(x, axis=...)` must reduce along an axis, as np.mean and np.median do (resamples are batched).

    BCa (bias-corrected and accelerated, Efron 1987) by default; it is undefined when every value is equal,
    and then the interval is that value on both sides. For values that come several per prompt, reduce them to
    one per prompt first (a mean over a prompt's samples): resampling prompts is then the clustered bootstrap."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        raise ValueError("bootstrap_ci needs at least one value")
    if np.all(values == values[0]):
        point = float(statistic(values))
        return point, point
    result = stats.bootstrap((values,), statistic, confidence_level=confidence, method=method,
                             n_resamples=n_resamples, vectorized=True, rng=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def paired_bootstrap_ci(
    x: np.ndarray, y: np.ndarray, confidence: float = 0.95, method: Literal["BCa", "percentile"] = "BCa",
    n_resamples: int = 2000, seed: int = 0,
) -> tuple[float, float, float]:
    """(mean(x) - mean(y), low, high): x[i] and y[i] are two systems' values on the same prompt i, resampled
    together (scipy's paired bootstrap), so the prompts' shared difficulty cancels out of the interval."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.size == 0:
        raise ValueError(f"paired values need one shape and at least one pair, got {x.shape} and {y.shape}")
    diff = float(x.mean() - y.mean())
    if np.all(x - y == (x - y)[0]):
        return diff, diff, diff
    result = stats.bootstrap((x, y), _mean_difference, paired=True, vectorized=True,
                             confidence_level=confidence, method=method, n_resamples=n_resamples,
                             rng=np.random.default_rng(seed))
    return diff, float(result.confidence_interval.low), float(result.confidence_interval.high)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis) - np.mean(y, axis=axis)


def cluster_resample_counts(n_clusters: int, n_resamples: int, seed: int = 0) -> np.ndarray:
    """(R, P) how often each of P clusters is drawn in each of R resamples of P clusters with replacement."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n_clusters, np.full(n_clusters, 1.0 / n_clusters), size=n_resamples).astype(float)


def cluster_bootstrap(
    values: np.ndarray, cluster: np.ndarray, n_resamples: int = 2000, confidence: float = 0.95, seed: int = 0,
) -> tuple[float, float, float]:
    """(mean, low, high) of `values` where values of one cluster (prompt) are correlated: resample whole
    clusters with replacement and take the percentile interval of the pooled mean (each resample's mean is
    Σ counts·sums / Σ counts·sizes, vectorised over resamples)."""
    values, cluster = np.asarray(values, dtype=float), np.asarray(cluster)
    if values.shape != cluster.shape or values.size == 0:
        raise ValueError(f"need one cluster id per value and at least one value, got {values.shape}, {cluster.shape}")
    _, index = np.unique(cluster, return_inverse=True)
    sums, sizes = np.bincount(index, weights=values), np.bincount(index).astype(float)
    counts = cluster_resample_counts(len(sums), n_resamples, seed)  # (R, P)
    means = (counts @ sums) / (counts @ sizes)  # (R,)
    low, high = np.percentile(means, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(values.mean()), float(low), float(high)


def difference_ci(
    new: tuple[float, float, float], old: tuple[float, float, float]
) -> tuple[float, float, float]:
    """(new - old, low, high) from two independent estimates, each (value, ci_low, ci_high).

    MOVER (Zou & Donner 2008; for two proportions with Wilson intervals it is Newcombe's 1998 method 10):
    low = d - sqrt((v1 - l1)² + (u2 - v2)²), high = d + sqrt((u1 - v1)² + (v2 - l2)²). It reuses each figure's
    own (possibly asymmetric) interval. Two evaluations on the same prompts are positively correlated, which
    makes the true interval narrower: this one errs on the wide side, so "outside noise" is said sparingly."""
    (v1, l1, u1), (v2, l2, u2) = new, old
    d = v1 - v2
    return d, d - math.hypot(v1 - l1, u2 - v2), d + math.hypot(u1 - v1, v2 - l2)


# --------------------------------------------------------------------------------------------- agreement


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float:
    """Cohen's κ between two raters' labels of the same items: (p_o - p_e) / (1 - p_e) (Cohen 1960).

    p_o = the share of items they label alike; p_e = Σ_label P_a(label) P_b(label), the agreement two raters
    with these label frequencies would reach by chance. 1 when p_e = 1 (both always give the same one label)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.size == 0:
        raise ValueError(f"need one label from each rater per item, got {a.shape} and {b.shape}")
    labels = np.union1d(a, b)
    observed = float(np.mean(a == b))
    expected = float(sum(np.mean(a == label) * np.mean(b == label) for label in labels))
    return 1.0 if expected == 1.0 else (observed - expected) / (1.0 - expected)


def krippendorff_alpha(
    reliability_data: np.ndarray, level: Literal["nominal", "ordinal", "interval", "ratio"] = "nominal",
    value_domain: list | None = None,
) -> float:
    """Krippendorff's α (Krippendorff 2004, ch. 11) of a (raters, items) array, NaN where a rater gave no
    label; computed by the `krippendorff` package. 1 is perfect agreement, 0 chance agreement."""
    import krippendorff

    return float(krippendorff.alpha(reliability_data=reliability_data, level_of_measurement=level,
                                    value_domain=value_domain))


def position_bias(first_outcomes: np.ndarray, confidence: float = 0.95) -> tuple[float, float, float]:
    """(rate, low, high) at which the first-shown response wins: outcomes 1 (first won), 0.5 (tie), 0.

    An unbiased judge, shown each pair in both orders, has rate 0.5 (Zheng et al., arXiv:2306.05685, on position bias);
    the interval is Wilson's (`winrate.wilson_interval`) with ties as half a win."""
    outcomes = np.asarray(first_outcomes, dtype=float)
    if outcomes.size == 0:
        raise ValueError("position_bias needs at least one outcome")
    low, high = wilson_interval(float(outcomes.sum()), int(outcomes.size), confidence)
    return float(outcomes.mean()), low, high
