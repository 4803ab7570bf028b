"""Built-in tasks: data made on the fly, with a reward that is both evaluation and RL reward.

A task is a module with `rows(split="train", **options: str) -> list[dict]`: rows in TRL's
prompt-completion format plus reference fields (e.g. "answer"); `split` is "train" or "heldout" and
the options come as strings from a query string (e.g. `ops=+-&digits=2`). `TASKS` maps each task's
name to its reward, a `RewardFn` (`rewards.functions`): `reward(prompt_record, completion) -> float`.

Simulated raters: the generic `Rater` protocol and `SimulatedRater` in `raters`, the arithmetic
task's raters in `arithmetic_raters`.
"""

from posttrain.rewards.functions import RewardFn, numeric_reward

TASKS: dict[str, RewardFn] = {"arithmetic": numeric_reward}
"""Each built-in task's reward by name (`builtin:NAME`): arithmetic is right when its final number is."""
