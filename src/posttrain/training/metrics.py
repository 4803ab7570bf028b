"""Where numbers go: `metrics.jsonl` (one JSON object per logged step), TensorBoard always,
Weights & Biases when installed and asked for; and the progress bar (ETA, tokens/s).

Only the main process writes; other ranks get a sink that drops everything.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class MetricsSink:
    def __init__(self, run_dir: Path, enabled: bool = True, wandb: bool = False, config: dict | None = None, resume_step: int = 0):
        self.enabled = enabled
        self._tb = self._wandb = self._file = None
        if not enabled:
            return
        path = run_dir / "metrics.jsonl"
        if resume_step and path.exists():
            _truncate_after(path, resume_step)
        self._file = path.open("a")
        from torch.utils.tensorboard import SummaryWriter

        self._tb = SummaryWriter(str(run_dir / "tensorboard"), purge_step=resume_step or None)
        if wandb:
            try:
                import wandb as wb
            except ImportError:
                from posttrain.errors import ConfigError

                raise ConfigError("run.wandb=True needs the wandb package: pip install wandb") from None
            self._wandb = wb.init(project="posttrain", name=run_dir.name, config=config, resume="allow")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        if not self.enabled:
            return
        clean = {k: (float(v) if not isinstance(v, str) else v) for k, v in metrics.items()}
        self._file.write(json.dumps({"step": step, **clean}) + "\n")
        self._file.flush()
        for k, v in clean.items():
            if isinstance(v, float) and math.isfinite(v):
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        if self._file:
            self._file.close()
        if self._tb:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _truncate_after(path: Path, step: int) -> None:
    """On resume, drop lines logged after the checkpoint so the file matches an uninterrupted run."""
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line).get("step", 0) <= step]
    path.write_text("".join(line + "\n" for line in kept))


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


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
