"""Built-in tasks: data made on the fly, with a verifier that is both evaluation and reward.

A task is a module with two functions:
- `rows(split="train", **options: str) -> list[dict]`: rows in TRL's prompt-completion
  format plus an "answer" field; `split` is "train" or "heldout" and the options
  come as strings from a query string (e.g. `ops=+-&digits=2`).
- `verify(completion: str, reference: dict) -> float`: 1.0 when a completion is right.

`TASKS` maps each task's name to its module.
"""

from posttrain.tasks import arithmetic

TASKS = {"arithmetic": arithmetic}
