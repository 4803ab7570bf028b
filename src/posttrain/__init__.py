"""posttrain: an open post-training system for language models.

SFT, reward models and the DPO family as readable recipes over one set of records, one model loader,
one sampler and one training engine.

Layers, bottom to top. A module imports only from its own layer or the ones below it
(tests/test_layers.py reads this list and checks every import, lazy ones included):

1. `__init__, errors, files, extras, config, config_parse, cpu` — user-facing errors, atomic writers, optional
   dependencies, the typed configs every command shares and their parsing from files and the command line, the CPU
   thread count and allocator policy
2. `data.records, data.shapes, tasks` — the records everything speaks, and the public data sets' shapes read as
   them; the built-in tasks' rows (the one registry of built-in data, `tasks.TASKS`)
3. `data` — loading any source, chat-template tokenization, batches for every recipe, the held-out split
4. `models` — the model loader, LoRA, reward heads, log-probs, attention layouts, the last layer at scored
   positions, the reference model
5. `losses, sampling, rewards, rl, tasks.raters, tasks.arithmetic_raters` — pure losses, the sampler, reward
   functions, RL's pure math (advantages, KL estimators and controllers), raters (simulated ones judge with the
   task's rewards)
6. `training, rl.setup, rl.engine, rl.samplers` — the engine: data order, accumulation, evaluation, checkpoints,
   metrics, DDP; an online-RL run's options, prompts and start-up checks, its step (sample, score, advantages,
   updates) and which sampler it samples with
7. `recipes, eval, feedback` — one file per algorithm; evaluation and its statistics; the human-feedback app
8. `cli, __main__, demo, generate, pairs, models.cli, feedback.cli, rewards.cli` — the commands
"""

__version__ = "0.1.0"

from posttrain import cpu as _cpu  # noqa: E402,F401  its START sample opens the window that measures other processes' load
