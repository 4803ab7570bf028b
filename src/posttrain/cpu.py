"""How many CPU cores other processes keep busy, and the torch thread count that follows from it.

On a laptop doing other work, torch's default (one thread per core) makes its threads wait on each other:
each parallel region ends when its slowest thread does, and a thread that shares its core with a busy
process gets half of it. Measured on 2 cores with one held by a busy loop, a tiny-model SFT ran at 27% of
its quiet speed with 2 threads and at 64% with 1 (bench/RESULTS.md, "A busy CPU"). So a run measures the
other processes' load over its own setup (imports, model loading: seconds it spends anyway) and trains with
one thread per core they leave free.

The choice is made once, at the start, so a run's speed does not jump around; a load that starts later is
not seen, and `--run.threads N` sets the count. (On the tiny model 1 and 2 threads train to the same weights,
bit for bit: the matmuls split rows, not sums, across threads.)
"""

from __future__ import annotations

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
