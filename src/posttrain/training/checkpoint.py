"""Seeding, RNG capture and checkpoints that resume exactly.

A checkpoint is a directory `checkpoints/step-N/` holding the trainable weights
(`trainable.safetensors`: all weights for full fine-tuning, only adapters for
LoRA), `optimizer.pt`, `scheduler.pt`, `rng.pt` (Python, NumPy, torch and CUDA
generators, per process) and `state.json` (step and anything the recipe adds,
e.g. its data position). It is written to a temporary directory and renamed into
place, so a run killed mid-write never leaves a half checkpoint behind.

A model sharded by FSDP2 (`models.sharding`) is saved sharded instead: `sharded/` holds the trainable weights
and the optimizer state as torch.distributed.checkpoint writes them, each process its own part, with no process
ever holding the whole; `trainable.safetensors` and `optimizer.pt` are then absent. Loading reads them back
into the sharded model, exactly.
"""

from __future__ import annotations

import json
import os
import pickle
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from posttrain.errors import UserError
from posttrain.models.lora import unwrap
from posttrain.models.sharding import is_sharded

SHARDED = "sharded"  # the directory of a sharded checkpoint's weights and optimizer state


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in unwrap(model).named_parameters() if p.requires_grad}


def save_checkpoint(
    checkpoints_dir: Path,
    step: int,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    rank: int = 0,
    keep: int = 2,
) -> Path:
    """Write `step-N/` atomically. Rank 0 writes weights and optimizer; every rank writes its RNG file.

    Under DDP every rank must call this (weights and optimizer state are identical across ranks,
    RNG streams are not); a sharded model's weights and optimizer state are written by every rank.
    """
    final = checkpoints_dir / f"step-{step}"
    tmp = checkpoints_dir / f".tmp-step-{step}"
    sharded = is_sharded(unwrap(model))
    if rank == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        if not sharded:
            # tied weights appear once in named_parameters, so no shared storage reaches safetensors
            save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=2))
    _barrier()
    if sharded:
        import torch.distributed.checkpoint as dcp

        dcp.save(_sharded_state(model, optimizer), checkpoint_id=str(tmp / SHARDED))
    torch.save(rng_state(), tmp / f"rng-{rank}.pt")
    _barrier()
    if rank == 0:
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _prune(checkpoints_dir, keep)
    _barrier()
    return final


def _barrier() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def _prune(checkpoints_dir: Path, keep: int) -> None:
    steps = sorted(checkpoint_steps(checkpoints_dir))
    for s in steps[:-keep]:
        shutil.rmtree(checkpoints_dir / f"step-{s}", ignore_errors=True)


def checkpoint_steps(checkpoints_dir: Path) -> list[int]:
    if not checkpoints_dir.is_dir():
        return []
    return sorted(
        int(p.name.split("-", 1)[1])
        for p in checkpoints_dir.iterdir()
        if p.is_dir() and p.name.startswith("step-") and (p / "state.json").exists()
    )


def latest_checkpoint(checkpoints_dir: Path) -> Path | None:
    steps = checkpoint_steps(checkpoints_dir)
    return checkpoints_dir / f"step-{steps[-1]}" if steps else None


def load_checkpoint(
    path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, rank: int = 0
) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and this rank's RNGs; return the saved state dict. A checkpoint whose
    files cannot be read (damaged after it was written: posttrain writes them atomically) is a one-line UserError
    naming it and the earlier checkpoints to resume from instead."""
    try:
        return _load_checkpoint(path, model, optimizer, scheduler, rank)
    except (OSError, EOFError, ValueError, RuntimeError, pickle.UnpicklingError, SafetensorError) as e:
        step = int(path.name.split("-", 1)[1])  # step-N, as resume_checkpoint checked
        earlier = [s for s in checkpoint_steps(path.parent) if s < step]
        way = (f"resume from an earlier one with --run.resume-from {path.parent / f'step-{earlier[-1]}'}" if earlier
               else "no earlier checkpoint is kept; start the run again with --run.overwrite")
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"{path}: cannot be read ({reason}); {way}") from None


def _load_checkpoint(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                     rank: int) -> dict[str, Any]:
    if (path / SHARDED).is_dir():
        _load_sharded(path / SHARDED, model, optimizer)
    else:
        weights = load_file(str(path / "trainable.safetensors"))
        params = dict(unwrap(model).named_parameters())
        with torch.no_grad():
            for name, value in weights.items():
                params[name].copy_(value)
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(path / f"rng-{rank}.pt", weights_only=False))
    return json.loads((path / "state.json").read_text())


def _sharded_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """This process's shards of the trainable weights and of the optimizer state, keyed by parameter name."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict

    weights, optim = get_state_dict(unwrap(model), optimizer, options=StateDictOptions(ignore_frozen_params=True))
    return {"model": weights, "optimizer": optim}


def _load_sharded(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_state_dict

    state = _sharded_state(model, optimizer)  # the layout to read into
    dcp.load(state, checkpoint_id=str(path))
    set_state_dict(unwrap(model), optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(ignore_frozen_params=True, strict=False))
