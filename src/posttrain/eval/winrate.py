"""Win rates: how often policy A's response beats policy B's on the same prompt, with a 95% interval.

`win_rate` turns outcomes (1 win, 0.5 tie, 0 loss) into a rate and a Wilson score interval
(Wilson 1927; Brown, Cai & DasGupta 2001 recommend it over the normal interval for small n and
rates near 0 or 1). Ties count as half a win, as in AlpacaEval (arXiv:2305.14387); the interval
then treats the n outcomes as Bernoulli draws with mean p̂, which overstates the spread when there are
ties (a tie varies less than a coin flip), so it errs on the wide side: a little with few ties, a lot when
most outcomes are ties (8 wins, 72 ties: [44.1%, 65.4%] though no outcome went the other way; `eval.tables`'s
`tie_notes` says so under the table, and the Bradley-Terry bootstrap over prompts is the sharper test).

`compare_policies` judges paired responses with any `tasks.raters.Rater` (e.g. a simulated rater
from `tasks.arithmetic_raters`); `sample_and_compare` samples both policies first (greedy by
default), e.g. the DPO policy against the SFT policy it started from, on held-out prompts.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Any

from posttrain.data.records import Prompt
from posttrain.tasks.raters import Judgment, Rater

OUTCOMES = (0.0, 0.5, 1.0)
A_OUTCOME = {Judgment.A: 1.0, Judgment.TIE: 0.5, Judgment.B: 0.0}
"""A's outcome for each judgment of (A's response, B's response): a tie is half a win."""


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial rate: p̂ = successes / n, z the normal quantile.

    center = (p̂ + z²/2n) / (1 + z²/n);  half width = z / (1 + z²/n) * sqrt(p̂(1 - p̂)/n + z²/4n²).
    """
    if n < 1 or not 0 <= successes <= n:
        raise ValueError(f"need n >= 1 and 0 <= successes <= n, got successes={successes}, n={n}")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)  # 1.959964 for 95%
    p = successes / n
    scale = 1 + z * z / n
    center = (p + z * z / (2 * n)) / scale
    half = z / scale * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    # at p̂ = 0 (or 1) the bound is exactly 0 (or 1): center and half width are both z²/2n / (1 + z²/n), and
    # rounding would leave 2.8e-17 where a table should read 0
    low = 0.0 if successes == 0 else max(0.0, center - half)
    high = 1.0 if successes == n else min(1.0, center + half)
    return low, high


def win_rate(outcomes: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(rate, ci_low, ci_high) for outcomes 1 (win), 0.5 (tie) and 0 (loss); ties count half a win.

    E.g. 8 wins of 10: p̂ = 0.8, z² = 3.8415, 1 + z²/n = 1.38415, center = (0.8 + 0.19207) / 1.38415 = 0.71674,
    half width = 1.95996 / 1.38415 * sqrt(0.016 + 0.0096037) = 0.22658 -> (0.8, 0.4902, 0.9433).
    """
    if not outcomes:
        raise ValueError("win_rate needs at least one outcome")
    bad = sorted({o for o in outcomes if o not in OUTCOMES})
    if bad:
        raise ValueError(f"outcomes must be 1 (win), 0.5 (tie) or 0 (loss), got {bad[:3]}")
    wins = float(sum(outcomes))
    low, high = wilson_interval(wins, len(outcomes), confidence)
    return wins / len(outcomes), low, high


def compare_policies(
    prompts: list[Prompt], responses_a: list[str], responses_b: list[str], rater: Rater
) -> dict[str, Any]:
    """A's response against B's on each prompt, judged by `rater`: counts, A's win rate and its 95% interval.

    Ties (`Judgment.TIE`: identical responses, or responses the rater cannot tell apart) count half a win.
    """
    if not len(prompts) == len(responses_a) == len(responses_b):
        raise ValueError(f"need one response of each policy per prompt, got {len(prompts)} prompts, "
                         f"{len(responses_a)} and {len(responses_b)} responses")
    judgments = [rater.compare(p, a, b) for p, a, b in zip(prompts, responses_a, responses_b)]
    outcomes = [A_OUTCOME[j] for j in judgments]
    rate, low, high = win_rate(outcomes)
    return {
        "n": len(outcomes),
        "wins": outcomes.count(1.0),
        "losses": outcomes.count(0.0),
        "ties": outcomes.count(0.5),
        "win_rate": rate,
        "ci_low": low,
        "ci_high": high,
        "rater": rater.name,
    }


def sample_and_compare(
    model_a, model_b, tokenizer, prompts: list[Prompt], rater: Rater, params=None, batch_size: int = 64
) -> dict[str, Any]:
    """Sample one response per prompt from each model (greedy, 32 new tokens unless `params` says otherwise),
    then `compare_policies`. Both models must share `tokenizer`, as a policy and its starting point do."""
    from posttrain.sampling.sampler import ModelSampler, SamplingParams, sample_messages

    params = params if params is not None else SamplingParams(max_new_tokens=32, temperature=0.0)
    texts_a = sample_messages(ModelSampler(model_a, tokenizer, batch_size), prompts, tokenizer, 1, params).texts
    texts_b = sample_messages(ModelSampler(model_b, tokenizer, batch_size), prompts, tokenizer, 1, params).texts
    return compare_policies(prompts, texts_a, texts_b, rater)
