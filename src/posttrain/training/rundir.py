"""The run directory: `runs/<name>/` with config.json, lineage.json, metrics, checkpoints and final/.

A run directory is created only after the config, the model name and the data
have been checked, so a user mistake never leaves a half-written run behind, and
an existing run is never overwritten unless asked (`--run.overwrite`) or resumed
(`--run.resume`).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from posttrain import __version__
from posttrain.config import RunConfig
from posttrain.errors import UserError
from posttrain.files import write_json_atomic


def run_path(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def check_run_dir(cfg: RunConfig) -> Path:
    """Refuse to clobber an existing run; refuse to resume a run that is not there. Creates nothing."""
    path = run_path(cfg)
    exists = path.exists() and any(path.iterdir())
    if cfg.resume and not (path / "checkpoints").is_dir():
        raise UserError(f"{path}: nothing to resume (no checkpoints/ there); drop --run.resume to start a new run")
    if exists and not cfg.resume and not cfg.overwrite:
        raise UserError(
            f"{path} already exists; pass --run.resume to continue it, --run.overwrite to replace it, "
            "or choose another --run.name"
        )
    return path


def prepare_run_dir(cfg: RunConfig, config: dict[str, Any], is_main: bool = True) -> Path:
    """Create (or clear, with overwrite) the run directory and write the resolved config."""
    path = run_path(cfg)
    if is_main:
        if cfg.overwrite and not cfg.resume and path.exists():
            shutil.rmtree(path)
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / "config.json", config)
    return path


def code_version() -> dict[str, str]:
    """posttrain's version and, when run from a git checkout, the commit."""
    version = {"posttrain": __version__}
    try:
        here = Path(__file__).resolve().parent
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=here, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        version["git_commit"] = commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def write_lineage(path: Path, base_model: dict[str, Any], data: list[dict[str, Any]], **extra: Any) -> None:
    """lineage.json: where the model came from, the data files with sha256, and the code version."""
    write_json_atomic(
        path / "lineage.json",
        {
            "base_model": base_model,
            "data": data,
            "code": code_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            **extra,
        },
    )
