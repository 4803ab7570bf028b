"""Built-in tasks: data made on the fly, with a reward that is both evaluation and RL reward.

A task is a module with:
- `rows(split="train", **options: str) -> list[dict]`: rows in TRL's prompt-completion
  format plus an "answer" field; `split` is "train" or "heldout" and the options
  come as strings from a query string (e.g. `ops=+-&digits=2`).
- `REWARD: str`: its reward as a config names one (`numeric`, `exact` or `module:function`), made a
  `RewardFn` by `rewards.functions.resolve_reward`. A name, not the function: tasks sit below rewards.

`TASKS` maps each task's name to its module.

Simulated raters: the generic `Rater` protocol and `SimulatedRater` in `raters`, the arithmetic
task's raters in `arithmetic_raters`.
"""

from posttrain.tasks import arithmetic

TASKS = {"arithmetic": arithmetic}
