"""How many CPU cores other processes keep busy, the torch thread count that follows from it, and the memory
allocator policy posttrain's runs set.

On a laptop doing other work, torch's default (one thread per core) makes its threads wait on each other:
each parallel region ends when its slowest thread does, and a thread that shares its core with a busy
process gets half of it. Measured on 2 cores with one held by a busy loop, a tiny-model SFT ran at 27% of
its quiet speed with 2 threads and at 64% with 1 (bench/RESULTS.md, "A busy CPU"). So a run measures the
other processes' load over its own setup (imports, model loading: seconds it spends anyway) and trains with
one thread per core they leave free.

The choice is made once, at the start, so a run's speed does not jump around; a load that starts later is
not seen, and `--run.threads N` sets the count. (On the tiny model 1 and 2 threads train to the same weights,
bit for bit: the matmuls split rows, not sums, across threads.)

`keep_freed_memory` asks glibc's malloc to keep the memory torch frees for its next tensors, instead of handing
large blocks back to the kernel and faulting fresh zeroed pages in again for the next one (see its docstring).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class CpuSample:
    wall: float  # time.monotonic()
    busy: float  # CPU seconds every process has used since boot (/proc/stat: all but idle and iowait)
    own: float  # CPU seconds of this process (all its threads) and of its waited-for children


def sample() -> CpuSample | None:
    """Now, or None where /proc/stat does not exist (not Linux)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
    except (OSError, ValueError):
        return None
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    busy_ticks = sum(fields) - fields[3] - fields[4]
    return CpuSample(time.monotonic(), busy_ticks / os.sysconf("SC_CLK_TCK"),
                     me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime)


_DEFAULT: int | None = None  # torch's thread count before posttrain first changed it
START = sample()  # when posttrain was first imported: the window runs over the setup that follows


def others_busy(since: CpuSample | None = None, min_window: float = 0.5) -> float | None:
    """Cores' worth of CPU other processes used since `since` (default: posttrain's import), waiting until the
    window is at least `min_window` seconds long; None off Linux."""
    since = since or START
    if since is None:
        return None
    wait = min_window - (time.monotonic() - since.wall)
    if wait > 0:
        time.sleep(wait)
    now = sample()
    if now is None:
        return None
    return max(0.0, ((now.busy - since.busy) - (now.own - since.own)) / (now.wall - since.wall))


def cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset or a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def choose_threads(requested: int = 0) -> tuple[int, str | None]:
    """Set torch's intra-op threads; return the count and, when it is fewer than torch's default because other
    processes keep cores busy, the one line that says so (the run prints it once its checks have passed).
    `requested` when > 0; torch's own count when OMP_NUM_THREADS is set (the user's or torchrun's choice); else
    torch's default less the cores other processes keep busy."""
    import torch

    global _DEFAULT
    if _DEFAULT is None:  # torch's own count, kept: a later run in this process (a notebook, a bench) may
        _DEFAULT = torch.get_num_threads()  # find the machine quiet again after one ran with fewer
    if requested > 0:
        torch.set_num_threads(requested)
        return requested, None
    default = _DEFAULT
    if os.environ.get("OMP_NUM_THREADS") or default == 1:
        return torch.get_num_threads(), None
    busy = others_busy()
    if busy is None:
        return default, None
    threads = max(1, min(default, round(cores() - busy)))
    torch.set_num_threads(threads)
    if threads == default:
        return threads, None
    return threads, (f"posttrain: other processes keep {busy:.1f} of {cores()} CPU cores busy: {threads} torch "
                     f"thread(s) instead of {default}, which would wait on each other (--run.threads N to choose)")


# glibc's mallopt parameters (malloc.h) and the environment variables through which a user sets them instead.
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 2**30  # blocks below 1 GiB come from the heap, where freed ones are reused
USER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_KEPT: bool | None = None  # what keep_freed_memory did; None until it first ran


def keep_freed_memory() -> bool:
    """Make glibc's malloc keep freed memory for reuse (once per process); True where that policy is now set.

    By default glibc serves a block over its mmap threshold (128 KiB, rising to at most 32 MiB as such blocks
    are freed) with a fresh mmap and returns it to the kernel on free, and it trims the heap's free top. A
    tensor of a few MiB or more, allocated and freed again at every layer and step (activations, the KV cache's
    buffers, a batch's logits), then costs one page fault per 4 KiB page and the kernel's zeroing of it each
    time. Measured on a 2-core AMD EPYC (`posttrain eval` of SmolLM2-135M on 200 prompts at batch 200, 3 runs
    each, alternating): ~490k minor page faults and 22.5 s (median) with the default, ~355k and 20.1 s with
    this policy, the same completions; most of the faults left are the model's load.
    Here the threshold is 1 GiB and the heap is never trimmed, so freed blocks stay mapped and are reused:
    the process keeps its peak memory mapped instead of handing it back between steps.

    Left alone where the user chose (MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES set:
    an empty `GLIBC_TUNABLES=` keeps glibc's defaults) and off glibc (musl, macOS, Windows)."""
    global _KEPT
    if _KEPT is None:
        _KEPT = False
        path = ctypes.util.find_library("c")
        if not any(name in os.environ for name in USER_MALLOC_SETTINGS) and path:
            mallopt = getattr(ctypes.CDLL(path), "mallopt", None)
            if mallopt is not None:  # glibc's; it returns 1 on success
                _KEPT = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
    return _KEPT
