"""The run directory: `runs/<name>/` with config.json, lineage.json, metrics, checkpoints and final/.

A run directory is created only after the config, the model name, the data and the trackers have been
checked, so a user mistake never leaves a half-written run behind, and an existing run is never
overwritten unless asked (`--run.overwrite`) or resumed (`--run.resume`). A resumed run keeps the config
it was started with (`resume_config`).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Collection, TypeVar

from posttrain import __version__
from posttrain.config import RunConfig
from posttrain.config_parse import from_dict, to_jsonable
from posttrain.errors import ConfigError, UserError
from posttrain.files import write_json_atomic
from posttrain.training.checkpoint import checkpoint_steps, latest_checkpoint

T = TypeVar("T")

# Options a resume takes from today's config, whatever the saved one says: they say which run to continue, and
# from where. The `may change` ones are taken from today's config when given; they leave the numbers alone.
RESUME_LOCATES = ("run.name", "run.output_dir", "run.resume", "run.resume_from")
# what a resume may change: where and how it runs, what it keeps and logs, none of which changes a number it
# trains (log_every and trackers set what is written, not what is computed; every step's metrics are computed)
RESUME_MAY_CHANGE = ("run.progress", "run.device", "run.threads", "run.save_every", "run.keep_checkpoints",
                     "run.log_every", "run.trackers")


def run_path(cfg: RunConfig) -> Path:
    return Path(cfg.output_dir) / cfg.name


def resume_checkpoint(cfg: RunConfig) -> Path:
    """The checkpoint a resume starts from: `resume_from`, or the run's last one. Refuses, in one line, a run
    that is not there or has no checkpoint, and a `resume_from` that is not one of the run's checkpoints."""
    path = run_path(cfg)
    if cfg.resume_from:
        owner = Path(cfg.resume_from).parent.parent  # runs/NAME of runs/NAME/checkpoints/step-N
        if owner.resolve() != path.resolve() and is_run_dir(owner):
            where = "" if owner.parent.resolve() == Path(cfg.output_dir).resolve() else f" --run.output-dir {owner.parent}"
            raise UserError(f"--run.resume-from {cfg.resume_from}: a checkpoint of {owner}, and this run is {path}; "
                            f"add --run.name {owner.name}{where} to resume {owner} from it")
    if not (path / "config.json").is_file():
        given = "--run.resume-from" if cfg.resume_from else "--run.resume"
        raise UserError(f"{path}: nothing to resume (no run there); drop {given} to start a new run")
    if cfg.resume_from:
        chosen = Path(cfg.resume_from)
        steps = checkpoint_steps(path / "checkpoints")
        if chosen.resolve().parent != (path / "checkpoints").resolve() or not (chosen / "state.json").is_file():
            raise UserError(f"--run.resume-from {chosen}: not a checkpoint of {path} (it has: "
                            f"{', '.join(f'step-{s}' for s in steps) or 'none'} in {path / 'checkpoints'})")
        return chosen
    last = latest_checkpoint(path / "checkpoints")
    if last is None:
        aside = replaced_path(path)
        kept = (f"; the run it replaced with --run.overwrite is kept in {aside}: to have that one back, "
                f"rm -r {path} && mv {aside} {path}") if aside.is_dir() else ""
        raise UserError(f"{path}: nothing to resume (no checkpoint in {path / 'checkpoints'}: none was written "
                        "before it stopped; --run.save-every N writes one every N steps); pass --run.overwrite "
                        f"instead of --run.resume to start it again{kept}")
    return last


def resume_config(cfg: T, given: Collection[str] | None = None) -> T:
    """Resuming (`cfg.run.resume`): the config saved in the run's config.json, so a resume needs no other option
    than the run's name. `given` names the options set explicitly (dotted: `optim.lr`; the command line and its
    --config file); None, as for a caller from Python, takes every field of `cfg` as given. A given option whose
    value differs from the saved one is refused, in one line naming each, unless RESUME_LOCATES or
    RESUME_MAY_CHANGE lists it. Not resuming: `cfg` as it is."""
    run_cfg: RunConfig = cfg.run  # type: ignore[attr-defined]
    if run_cfg.resume_from and not run_cfg.resume:  # set on a built config, after __post_init__ had run
        run_cfg = dataclasses.replace(run_cfg, resume=True)
        cfg = dataclasses.replace(cfg, run=run_cfg)  # type: ignore[type-var]
    if not run_cfg.resume:
        return cfg
    resume_checkpoint(run_cfg)
    path = run_path(run_cfg)
    try:
        saved = _flatten(json.loads((path / "config.json").read_text()))
    except (ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path / 'config.json'}: not JSON ({e}); the run's saved config is damaged: restore it, or "
                        "start again with --run.overwrite") from None
    today = _flatten(to_jsonable(cfg))
    given = set(today if given is None else given)
    differ = [k for k in sorted(given - {*RESUME_LOCATES, *RESUME_MAY_CHANGE}) if today.get(k) != saved.get(k)]
    if differ:
        changes = ", ".join(f"{k}={today.get(k)!r} (saved: {saved.get(k)!r})" for k in differ)
        raise ConfigError(f"{path} is resumed with its saved config, which these options contradict: {changes}; "
                          "drop them, or start a new run with another --run.name")
    merged = {**saved, **{k: today[k] for k in RESUME_LOCATES},
              **{k: today[k] for k in RESUME_MAY_CHANGE if k in given}}
    try:
        return from_dict(type(cfg), _nest(merged))
    except ConfigError as e:
        raise ConfigError(f"{path / 'config.json'}: {e}") from None


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *heads, last = key.split(".")
        node = out
        for h in heads:
            node = node.setdefault(h, {})
        node[last] = value
    return out


def run_finished(cfg: RunConfig, is_main: bool = True) -> bool:
    """Resuming a run that wrote final/ (and so its last step) changes nothing: say so and return True."""
    path = run_path(cfg)
    if not (cfg.resume and not cfg.resume_from and (path / "final").is_dir()):
        return False
    if is_main:
        last = latest_checkpoint(path / "checkpoints")
        print(f"{path} is finished (final/ written after step {last.name.split('-')[1] if last else '?'}); nothing "
              "to do. --run.resume-from CHECKPOINT trains again from an earlier checkpoint", file=sys.stderr)
    return True


def check_run_dir(cfg: RunConfig, world_size: int = 1) -> Path:
    """Refuse to clobber an existing run; refuse to resume a run that cannot be resumed, on another number of
    processes (`world_size`, this launch's) included. Creates nothing. The last of a recipe's checks, so that a
    data error shows even where the run directory exists."""
    path = run_path(cfg)
    blocking = next((p for p in (path, *path.parents) if p.exists() and not p.is_dir()), None)
    if blocking is not None:  # mkdir would raise NotADirectoryError once the model is loaded
        raise UserError(f"--run.output-dir {cfg.output_dir}: {blocking} is a file, not a folder; name a folder for "
                        "the runs")
    if cfg.resume:
        check_world_size(resume_checkpoint(cfg), world_size)
    elif path.exists() and any(path.iterdir()) and not cfg.overwrite:
        raise UserError(
            f"{path} already exists; pass --run.resume to continue it, --run.overwrite to replace it, "
            "or choose another --run.name"
        )
    elif cfg.overwrite and path.exists() and any(path.iterdir()) and not is_run_dir(path):
        raise UserError(f"{path} holds files but is not a posttrain run (no config.json and checkpoints/): "
                        "--run.overwrite replaces runs only; move the files, or choose another --run.name")
    return path


def check_world_size(checkpoint: Path, world_size: int) -> None:
    """A ConfigError (rank 0 says it) when `checkpoint` was written by another number of processes than this launch
    has: each process's batch share, place in the data and random state are saved per process, so a resume keeps
    the number (2 -> 1 halved the global batch and moved the data position back without a word; 1 -> 2 found no
    random state for rank 1)."""
    try:
        saved = int(json.loads((checkpoint / "state.json").read_text()).get("world_size", 1))
    except (OSError, ValueError, TypeError, AttributeError):
        return  # a damaged state.json: loading the checkpoint names it
    if saved == world_size:
        return
    launch = f"torchrun --nproc-per-node {saved} -m posttrain ..." if saved > 1 else "posttrain ... (no torchrun)"
    raise ConfigError(f"{checkpoint} was written by {saved} process{'es' if saved > 1 else ''} and this launch has "
                      f"{world_size}: a resume keeps the number (the global batch, each process's place in the data "
                      f"and its random state depend on it); resume with {launch}")


def is_run_dir(path: Path) -> bool:
    """Whether `path` is a run directory as `prepare_run_dir` makes one (config.json beside checkpoints/): what
    --run.overwrite may delete. A model folder has a config.json too, but no checkpoints/."""
    return (path / "config.json").is_file() and (path / "checkpoints").is_dir()


def prepare_run_dir(cfg: RunConfig, config: dict[str, Any], is_main: bool = True) -> tuple[Path, bool]:
    """Create (or clear, with overwrite) the run directory and write the resolved config; a resumed run keeps its
    own. Returns the directory and whether this call created it."""
    path = run_path(cfg)
    created = not cfg.resume
    if is_main and created:
        if cfg.overwrite and path.exists():
            if any(path.iterdir()) and not is_run_dir(path):  # check_run_dir refused it; never delete a user's files
                raise UserError(f"{path} is not a posttrain run; --run.overwrite replaces runs only")
            set_aside(path)
        (path / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json_atomic(path / "config.json", config)
    return path, created


def replaced_path(path: Path) -> Path:
    """Where --run.overwrite keeps the run it replaces until the new run's first checkpoint: OUTPUT/.NAME.replaced."""
    return path.with_name(f".{path.name}.replaced")


def set_aside(path: Path) -> None:
    """--run.overwrite: move the old run to `replaced_path` rather than delete it, so that a new run that stops
    before its first checkpoint (a mistake found in step 1, Ctrl-C) can put it back (`put_back`). Where one is set
    aside already (a new run killed outright before its first checkpoint), the run with checkpoints is kept."""
    aside = replaced_path(path)
    if aside.exists():
        if latest_checkpoint(path / "checkpoints") is None:  # the killed run trained nothing: keep the one it replaced
            shutil.rmtree(path)
            return
        shutil.rmtree(aside)
    path.rename(aside)


def put_back(path: Path) -> bool:
    """Remove the new run at `path` (it completed no step) and move the run it replaced back; whether there was one."""
    shutil.rmtree(path, ignore_errors=True)
    aside = replaced_path(path)
    if not aside.is_dir():
        return False
    aside.rename(path)
    return True


def drop_replaced(path: Path) -> None:
    """The new run has a checkpoint to resume from: the run it replaced is deleted, as --run.overwrite asked."""
    aside = replaced_path(path)
    if aside.exists():
        shutil.rmtree(aside)


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


def write_lineage(path: Path, base_model: dict[str, Any], data: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """lineage.json: where the model came from, the data files with sha256, and the code version."""
    lineage = {
        "base_model": base_model,
        "data": data,
        "code": code_version(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    write_json_atomic(path / "lineage.json", lineage)
    return lineage


def discard_after(path: Path, step: int) -> None:
    """Resuming from step `step`: the checkpoints after it and final/ are trained again, so they go."""
    for later in checkpoint_steps(path / "checkpoints"):
        if later > step:
            shutil.rmtree(path / "checkpoints" / f"step-{later}")
    shutil.rmtree(path / "final", ignore_errors=True)


def record_resume(path: Path, step: int, checkpoint: Path, cfg: Any) -> dict[str, Any]:
    """lineage.json's `resumes`: when each resume started, from which checkpoint, with which code, and the
    options it changed (RESUME_MAY_CHANGE) against config.json."""
    lineage_file = path / "lineage.json"
    lineage = json.loads(lineage_file.read_text()) if lineage_file.is_file() else {}
    saved = _flatten(json.loads((path / "config.json").read_text()))
    today = _flatten(to_jsonable(cfg))
    changed = {k: today[k] for k in RESUME_MAY_CHANGE if today.get(k) != saved.get(k)}
    entry = {"at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "from_step": step, "checkpoint": str(checkpoint),
             "code": code_version(), **({"changed": changed} if changed else {})}
    lineage["resumes"] = [*lineage.get("resumes", []), entry]
    write_json_atomic(lineage_file, lineage)
    return lineage
