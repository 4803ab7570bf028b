"""What recipes share, as plain functions and small objects (never a base class).

- `loop`: the engine's steps: the data order (`DataOrder`), `start_run`, `accumulate`, `optimizer_step`,
  `end_step`, `finish_run`, and the one held-out evaluation (`eval_order`, `evaluate`).
- `distributed`: torchrun set-up and all-reduce helpers.
- `optim`: AdamW with decay groups and the warmup + decay schedule.
- `checkpoint`: seeding, RNG capture, atomic checkpoints that resume exactly.
- `rundir`: the run directory: config.json, lineage.json, refusing to clobber a finished run.
- `metrics`: metrics.jsonl + TensorBoard (+ W&B when asked) and the progress bar.
"""
