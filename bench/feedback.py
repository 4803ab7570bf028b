"""Feedback app throughput: sustained judgments/s and latency with 20 concurrent raters, through the real HTTP
server (`posttrain feedback serve`, one uvicorn process, or `--workers N`) on SQLite.

Each simulated rater asks for work once (`POST /api/campaigns/1/next`), then loops: submit a pairwise judgment
and receive the next task in the same round trip (`POST /api/leases/ID/judgment?next=true`, as a client that
wants no idle time between items would), with an API token, as fast as answers come back. With `--two-calls`
it asks for the next task in a separate request instead. The latency quoted is the judgment request's (and,
separately, the whole cycle's). The first `--warmup` seconds are not counted. The goal (issue 13): >= 200 judgments/s with p95 < 100 ms on 2 cores.

    python bench/feedback.py                 # 20 raters, 20 s, writes its section of bench/RESULTS.md
    python bench/feedback.py --seconds 5 --no-write
    python bench/feedback.py --workers 2         # two server processes
    python bench/feedback_profile.py             # where the CPU goes per judgment (cProfile, not timed)

The load generator runs in this process (threads with httpx keep-alive clients) and shares the 2 cores with the
server, as a real deployment's reverse proxy would; quote it with the machine's load (printed).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--raters", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=20.0, help="measured time after the warm-up")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--items", type=int, default=20000)
    ap.add_argument("--overlap", type=int, default=3)
    ap.add_argument("--db", default=None, help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--two-calls", action="store_true", help="ask for the next task in a request of its own")
    ap.add_argument("--workers", type=int, default=1, help="server processes (serve --workers)")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/RESULTS.md alone")
    args = ap.parse_args()

    import httpx

    from tests.feedback.conftest import LiveServer, prepare

    tmp = Path(tempfile.mkdtemp(prefix="posttrain-bench-fb-"))
    url = args.db or f"sqlite:///{tmp}/bench.db"
    t0 = time.perf_counter()
    tokens = prepare(url, args.raters, args.items, args.overlap)
    print(f"prepared {args.items} items x overlap {args.overlap} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    server = LiveServer(url, tmp, workers=args.workers)
    start = time.perf_counter()
    measure_from, stop_at = start + args.warmup, start + args.warmup + args.seconds
    submits: list[float] = []
    cycles: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()

    def rater(token: str) -> None:
        n = 0
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}, timeout=30) as c:
            task = c.post("/api/campaigns/1/next").json()
            while (now := time.perf_counter()) < stop_at and task is not None:
                try:
                    if args.two_calls and n:
                        task = c.post("/api/campaigns/1/next").json()
                        if task is None:
                            return
                    t1 = time.perf_counter()
                    r = c.post(f"/api/leases/{task['lease_id']}/judgment",
                               params={} if args.two_calls else {"next": "true"},
                               json={"client_id": f"{token[:40]}-{n}", "answer": {"choice": "AB"[n % 2]}})
                    r.raise_for_status()
                    if not args.two_calls:
                        task = r.json()["next"]
                except Exception as e:  # noqa: BLE001
                    errors.append(repr(e))
                    return
                end = time.perf_counter()
                n += 1
                if now >= measure_from and end <= stop_at:
                    with lock:
                        submits.append(end - t1)
                        cycles.append(end - now)

    threads = [threading.Thread(target=rater, args=(t,)) for t in tokens]
    load_before = os.getloadavg()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    load_after = os.getloadavg()
    server.stop()
    if errors:
        raise SystemExit(f"{len(errors)} raters failed; first: {errors[0]}")
    rate = len(submits) / args.seconds
    ms = [1000 * s for s in submits]
    cyc = [1000 * s for s in cycles]
    backend = url.split(":", 1)[0]
    lines = [
        f"`python bench/feedback.py` ({time.strftime('%Y-%m-%d %H:%M')}): {args.raters} raters, {backend}, "
        f"{args.seconds:.0f} s measured after {args.warmup:.0f} s warm-up; "
        f"{'one uvicorn process' if args.workers == 1 else f'{args.workers} uvicorn worker processes'}; the load generator "
        f"in the same machine; {'next task in its own request' if args.two_calls else 'submit returns the next task'}.",
        "",
        "| judgments/s | submit p50 | submit p95 | submit p99 | cycle p50 | cycle p95 |",
        "|---|---|---|---|---|---|",
        f"| {rate:.0f} | {p(ms, 50):.1f} ms | {p(ms, 95):.1f} ms | {p(ms, 99):.1f} ms | {p(cyc, 50):.1f} ms "
        f"| {p(cyc, 95):.1f} ms |",
        "",
        f"- {os.cpu_count()} cores; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}",
        "- goal: >= 200 judgments/s with submit p95 < 100 ms on 2 cores",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        from bench.common import update_results

        title = "Feedback app: judgments/s with 20 raters" + (" (two calls)" if args.two_calls else "")
        update_results(title + (f" ({args.workers} workers)" if args.workers > 1 else ""), text)


if __name__ == "__main__":
    main()
