"""Where numbers go: `metrics.jsonl` (one JSON object per logged step, always), the trackers that
`run.trackers` names (TensorBoard, Weights & Biases, trackio), and the progress bar (ETA, tokens/s).

Only the main process writes; other ranks get a sink that drops everything. A tracker's package is
imported only when it is asked for, and `check_trackers` imports them before the run directory is made.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any, Sequence

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from posttrain.extras import require
from posttrain.files import jsonl_lines

# tracker -> (module, the pyproject extra that installs it); tensorboard is a core dependency
TRACKER_PACKAGES = {"wandb": ("wandb", "wandb"), "trackio": ("trackio", "trackio")}


def check_trackers(trackers: Sequence[str]) -> None:
    """Import the packages of the asked-for trackers: a missing one is a one-line error with its install command."""
    for name in trackers:
        if name in TRACKER_PACKAGES:
            require(*TRACKER_PACKAGES[name], f"--run.trackers {name}")


class _TensorBoard:
    def __init__(self, run_dir: Path, config: dict, resume_step: int):
        from torch.utils.tensorboard import SummaryWriter

        # purge_step drops events from that step on: the checkpoint's own step was logged before it was saved
        self._writer = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        if not resume_step:
            for key, value in config.items():
                self._writer.add_text(key, f"```json\n{json.dumps(value, indent=2)}\n```", 0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self._writer.add_scalar(k, v, step)

    def close(self) -> None:
        self._writer.close()


class _WandB:
    def __init__(self, run_dir: Path, config: dict, resume_step: int):
        import wandb

        self._run = wandb.init(project="posttrain", name=run_dir.name, config=config, resume="allow")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(scalars, step=step)

    def close(self) -> None:
        self._run.finish()


class _Trackio:
    def __init__(self, run_dir: Path, config: dict, resume_step: int):
        import trackio

        # a resumed run continues its trackio run; a new one is a new trackio run even where the name was used
        self._run = trackio.init(project="posttrain", name=run_dir.name, config=config, embed=False,
                                 resume="allow" if resume_step else "never")

    def log(self, step: int, scalars: dict[str, float]) -> None:
        self._run.log(scalars, step=step)

    def close(self) -> None:
        self._run.finish()


TRACKERS = {"tensorboard": _TensorBoard, "wandb": _WandB, "trackio": _Trackio}


class MetricsSink:
    """metrics.jsonl and the trackers. `config` ({"config": ..., "lineage": ...}) is each tracker's run config."""

    def __init__(self, run_dir: Path, enabled: bool = True, trackers: Sequence[str] = ("tensorboard",),
                 config: dict | None = None, resume_step: int = 0):
        self.enabled = enabled
        self._file = None
        self._trackers: list[Any] = []
        if not enabled:
            return
        path = run_dir / "metrics.jsonl"
        if resume_step and path.exists():
            _truncate_after(path, resume_step)
        self._file = path.open("a")
        self._trackers = [TRACKERS[name](run_dir, config or {}, resume_step) for name in trackers]

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if not isinstance(v, str) else v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, **clean}) + "\n")
        self._file.flush()
        scalars = {k: v for k, v in clean.items() if isinstance(v, float) and math.isfinite(v)}
        for tracker in self._trackers:
            tracker.log(step, scalars)

    def close(self) -> None:
        if self._file:
            self._file.close()
            self._file = None
        for tracker in self._trackers:
            tracker.close()
        self._trackers = []


def _truncate_after(path: Path, step: int) -> None:
    """On resume, drop lines logged after the checkpoint so the file matches an uninterrupted run."""
    kept = [line for line in jsonl_lines(path.read_text()) if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in jsonl_lines(path.read_text()) if line.strip()] if path.exists() else []


class TrainProgress:
    """A rich progress bar over optimizer steps, showing loss, tokens/s and ETA."""

    def __init__(self, total: int, start: int = 0, enabled: bool = True, description: str = "train"):
        self.enabled = enabled
        self._tokens = 0
        self._t0 = time.perf_counter()
        if not enabled:
            return
        self._bar = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            transient=False,
        )
        self._task = self._bar.add_task(description, total=total, completed=start, stats="")
        self._bar.start()

    def update(self, tokens: int, **stats: float) -> None:
        self._tokens += tokens
        if not self.enabled:
            return
        tps = self._tokens / max(1e-9, time.perf_counter() - self._t0)
        text = " ".join(f"{k} {v:.4g}" for k, v in stats.items()) + f" {tps:,.0f} tok/s"
        self._bar.update(self._task, advance=1, stats=text)

    def close(self) -> None:
        if self.enabled:
            self._bar.stop()
