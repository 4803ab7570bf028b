"""What a training command prints when it finishes: its last held-out figures and where final/ is.

    posttrain sft: held-out loss 0.083 after 1500 steps; the model is in runs/sft/final

The figures are the run's last logged eval/* values (metrics.jsonl), so the line says what the logs say.
"""

from __future__ import annotations

from pathlib import Path

from posttrain.training.metrics import read_metrics


def print_summary(run_dir: Path, command: str, figures: dict[str, str], show: bool = True) -> Path:
    """Print one line on stdout when `show` (the recipes pass `run.progress` on the main process, so a quiet run,
    the demo with `--no-progress` included, prints nothing): each metric of `figures` (name -> format, e.g.
    `{"eval/loss": "held-out loss {:.3f}"}`) at its last logged value. Returns `run_dir`."""
    if not show:
        return run_dir
    rows = read_metrics(run_dir)
    steps = max((int(r.get("step", 0)) for r in rows), default=0)
    found = [fmt.format(next(r[k] for r in reversed(rows) if k in r)) for k, fmt in figures.items()
             if any(k in r for r in rows)]
    said = ", ".join(found) if found else "no held-out data to report"
    print(f"posttrain {command}: {said} after {steps} step{'s' if steps != 1 else ''}; the model is in {run_dir / 'final'}", flush=True)
    return run_dir
