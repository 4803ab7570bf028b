"""Evaluation: how good a policy is, alone or against another.

- `accuracy`  task accuracy on held-out prompts, scored by a reward function (`rewards.functions.RewardFn`).
- `run`       one model's accuracy on one task (`run_eval`), as the demo measures it.
- `suite`     `posttrain eval`: several models x several tasks, each loaded once; accuracy, pass@k, reward-model
  score, length, finish reasons, pairwise win rates, Bradley-Terry ratings; results.json and samples.jsonl.
- `stats`     pass@k, Bradley-Terry ratings, bootstraps (paired, clustered by prompt), Arena ranks, κ, α and
  position bias: pure functions over numpy arrays, also used by the feedback app.
- `winrate`   win rate of one policy's responses over another's, judged by a rater (`tasks.raters.Rater`,
  e.g. a simulated one from `tasks.arithmetic_raters`), with a Wilson score interval.
- `figures`   training curves: metrics grouped into figures, drawn by matplotlib as checked inline SVG.
- `report`    `posttrain report`: one self-contained HTML file (curves, evaluation tables, responses side by side).
- `document`  what every recipe writes at the end: the run's report.html and final/README.md (the model card).
"""
