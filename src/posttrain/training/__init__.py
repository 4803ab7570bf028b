"""What recipes share, as plain functions and small objects (never a base class).

- `loop`: the engine's steps: the data order (`DataOrder`), `start_run`, `accumulate`, `optimizer_step`,
  `end_step`, `finish_run`, Ctrl-C (`interruptible`), and the one held-out evaluation (`eval_order`, `evaluate`).
- `distributed`: torchrun set-up and all-reduce helpers.
- `optim`: AdamW with decay groups and the warmup + decay schedule.
- `checkpoint`: seeding, RNG capture, atomic checkpoints that resume exactly.
- `rundir`: the run directory: config.json, lineage.json, refusing to clobber a run, resuming with its saved config.
- `metrics`: metrics.jsonl + the trackers `run.trackers` names (TensorBoard, W&B, trackio) and the progress bar.
"""
