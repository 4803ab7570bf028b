"""torchrun set-up. One process per device; gloo on CPU, NCCL on GPU.

A recipe calls `setup_distributed(device)` once; under plain `python` it returns a
single-process `Dist` and every helper here becomes a no-op, so the same loop runs
on a laptop and on many nodes.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace

import torch
import torch.distributed as dist

from posttrain.config import DistConfig
from posttrain.cpu import choose_threads, keep_freed_memory
from posttrain.errors import ConfigError
from posttrain.models.load import resolve_device
from posttrain.models.reference import Reference
from posttrain.models.sharding import shard


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    threads_note: str | None = None  # set by `distributed`: why the run uses fewer CPU threads (start_run says it)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device: str = "auto") -> Dist:
    """Read torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK) and join the process group."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world_size, local_rank, dev)


def parallelize(model: torch.nn.Module, d: Dist, cfg: DistConfig, reference: Reference | None = None
                ) -> torch.nn.Module:
    """`model` ready to train under torchrun as `cfg.strategy` says: wrapped in DistributedDataParallel, or
    sharded in place by FSDP2 (`models.sharding.shard`), and then `reference`'s frozen copy too; one process: the
    model itself (saying so when --dist.* asked for more). Build the optimizer after this: sharding replaces the
    parameters."""
    if not d.enabled:
        if cfg != DistConfig():
            print(f"note: --dist.strategy {cfg.strategy} (and the other --dist.* options) take effect only under "
                  "torchrun with 2 or more processes; this one-process run trains the model as it is",
                  file=sys.stderr)
        return model
    if cfg.strategy == "fsdp":
        model = shard(model, cfg.reshard_after_forward, cfg.mixed_precision, d.is_main)
        if reference is not None:
            reference.shard(cfg.reshard_after_forward, cfg.mixed_precision)
        return model
    return torch.nn.parallel.DistributedDataParallel(model)


def check_heldout(n_heldout: int, d: Dist, cfg: DistConfig, more: str = "--data.eval-fraction",
                  source: str | None = None) -> None:
    """A ConfigError when a sharded run's held-out set has examples but fewer than the processes: the processes of a
    sharded model evaluate in step, each on a share of its own (training.loop.eval_order). `source`: the held-out
    file where one was given (--data.eval), which `more` (the option that holds out more) does not change."""
    if cfg.strategy == "fsdp" and d.enabled and 0 < n_heldout < d.world_size:
        fix = f"add rows to {source}" if source else f"hold out more ({more})"
        raise ConfigError(f"the held-out set has {n_heldout} example(s) for {d.world_size} processes: with "
                          f"--dist.strategy fsdp each process needs one of its own; {fix}, or use --dist.strategy ddp")


def no_sync(model: torch.nn.Module, last: bool):
    """Around a micro-batch's backward: DDP's `no_sync` unless it is the step's last (gradients are averaged
    once per step). FSDP2 reduce-scatters every micro-batch's gradients (they stay sharded, the memory FSDP saves)."""
    if not last and isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return nullcontext()


def all_reduce_sum(value: float | torch.Tensor, d: Dist) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu").clone()
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_max(value: float, d: Dist) -> float:
    t = torch.tensor(float(value), dtype=torch.float64, device=d.device if d.device.type == "cuda" else "cpu")
    if d.enabled:
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def gather_to_main(items: list, d: Dist) -> list:
    """Every process's `items` (picklable), concatenated in rank order, on the main process; [] on the others."""
    if not d.enabled:
        return items
    parts = [None] * d.world_size if d.is_main else None
    dist.gather_object(items, parts, dst=0)
    return [x for part in parts for x in part] if d.is_main else []


@contextmanager
def distributed(device: str = "auto", threads: int = 0) -> Iterator[Dist]:
    """`setup_distributed(device)`, the CPU threads (`cpu.choose_threads`) and the allocator policy
    (`cpu.keep_freed_memory`) for the block, and `teardown` however it ends: a recipe's `train` is
    `with distributed(cfg.run.device, cfg.run.threads) as d: ...`."""
    keep_freed_memory()
    d = setup_distributed(device)
    d = replace(d, threads_note=choose_threads(threads)[1])
    try:
        yield d
    finally:
        teardown(d)


def teardown(d: Dist) -> None:
    """Leave the process group. Then release the GIL for a moment: a gloo worker thread drops its last reference
    to a finished collective (and so to the Python tensor in it) only after the caller has been woken, and it
    needs the GIL to do so; a process that went straight on into interpreter shutdown aborted there ("terminate
    called without an active exception", 1 run in ~10 of tests/recipes/test_sft.py's torchrun test; the race is
    pytorch/pytorch#179291's)."""
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
        time.sleep(0.05)
