"""Where the feedback app's CPU goes per judgment: the benchmark's request (`POST /api/leases/ID/judgment?next=true`
with an API token) driven in-process through the ASGI app, under cProfile. Not a timed benchmark: it reports
CPU time (`time.process_time`), which another job on the machine slows far less than wall time, and the
functions that spend it.

The app's sync handlers normally run in a thread pool, which cProfile (one thread) would not see; here they run
inline on the event loop's thread. The HTTP layer (uvicorn parsing and writing) is not in the figure; httpx's
in-process transport is (a fraction of a millisecond).

    python bench/feedback_profile.py                  # 2000 judgments, 20 raters, top 25 by own time
    python bench/feedback_profile.py --n 500 --sort cumulative --top 40
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))


def _inline_threadpool() -> None:
    """Run FastAPI's sync endpoints and dependencies on the calling thread, so that cProfile sees them."""
    import fastapi.dependencies.utils as deps
    import fastapi.routing as routing

    async def inline(func, *args, **kwargs):  # noqa: ANN001, ANN202
        return func(*args, **kwargs)

    routing.run_in_threadpool = inline
    deps.run_in_threadpool = inline


async def drive(app, tokens: list[str], n: int) -> tuple[int, float]:  # noqa: ANN001
    """`n` judgments round-robin over the raters; returns (judgments, CPU seconds)."""
    import httpx

    clients = [httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://bench",
                                 headers={"Authorization": f"Bearer {t}"}) for t in tokens]
    tasks = [(await c.post("/api/campaigns/1/next")).json() for c in clients]
    done, cpu0 = 0, time.process_time()
    for i in range(n):
        k = i % len(clients)
        if tasks[k] is None:
            continue
        r = await clients[k].post(f"/api/leases/{tasks[k]['lease_id']}/judgment", params={"next": "true"},
                                  json={"client_id": f"{tokens[k][:40]}-{i}", "answer": {"choice": "AB"[i % 2]}})
        r.raise_for_status()
        tasks[k] = r.json()["next"]
        done += 1
    cpu = time.process_time() - cpu0
    for c in clients:
        await c.aclose()
    return done, cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000, help="judgments to profile")
    ap.add_argument("--raters", type=int, default=20)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--sort", default="tottime", help="pstats sort key: tottime, cumulative, ...")
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    from posttrain.feedback.app import Settings, create_app
    from tests.feedback.conftest import prepare

    _inline_threadpool()
    url = f"sqlite:///{tempfile.mkdtemp(prefix='posttrain-prof-fb-')}/prof.db"
    tokens = prepare(url, args.raters, args.items, 3)
    app = create_app(Settings(db=url))
    asyncio.run(drive(app, tokens, 200))  # warm-up: caches, compiled statements, connections
    profiler = cProfile.Profile()
    profiler.enable()
    done, cpu = asyncio.run(drive(app, tokens, args.n))
    profiler.disable()
    print(f"{done} judgments: {1000 * cpu / done:.2f} ms CPU per judgment under cProfile "
          "(cProfile adds its own overhead; run with --top 0 for the figure without it)")
    if args.top:
        pstats.Stats(profiler).sort_stats(args.sort).print_stats(args.top)
    done, cpu = asyncio.run(drive(app, tokens, args.n))
    print(f"{done} judgments: {1000 * cpu / done:.2f} ms CPU per judgment without the profiler")


if __name__ == "__main__":
    main()
