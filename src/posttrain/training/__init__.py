"""What recipes share, as plain functions and small objects (never a base class).

- `distributed`: torchrun set-up, DDP wrapping, all-reduce helpers.
- `optim`: AdamW with decay groups and the warmup + decay schedule.
- `checkpoint`: seeding, RNG capture, atomic checkpoints that resume exactly.
- `rundir`: the run directory: config.json, lineage.json, refusing to clobber a finished run.
- `metrics`: metrics.jsonl + TensorBoard (+ W&B when asked) and the progress bar.
"""
