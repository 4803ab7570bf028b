"""Evaluation: how good a policy is, alone or against another.

- `accuracy`  task accuracy on held-out prompts, scored by a reward function (`rewards.functions.RewardFn`).
- `run`       `posttrain eval`, the command around `accuracy`.
- `winrate`   win rate of one policy's responses over another's, judged by a rater (`tasks.raters.Rater`,
  e.g. a simulated one from `tasks.arithmetic_raters`), with a Wilson score interval.
- `figures`   training curves: metrics grouped into figures, drawn by matplotlib as checked inline SVG.
- `report`    `posttrain report`: one self-contained HTML file (curves, evaluation tables, responses side by side).
- `document`  what every recipe writes at the end: the run's report.html and final/README.md (the model card).
"""
