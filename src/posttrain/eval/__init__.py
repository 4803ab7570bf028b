"""Evaluation: how good a policy is, alone or against another.

- `accuracy`  task accuracy on held-out prompts, scored by a reward function (`rewards.functions.RewardFn`).
- `run`       `posttrain eval`, the command around `accuracy`.
- `stats`     pass@k, Bradley-Terry ratings, bootstraps (paired, clustered by prompt), Arena ranks, κ, α and
  position bias: pure functions over numpy arrays, also used by the feedback app.
- `winrate`   win rate of one policy's responses over another's, judged by a rater (`tasks.raters.Rater`,
  e.g. a simulated one from `tasks.arithmetic_raters`), with a Wilson score interval.
"""
