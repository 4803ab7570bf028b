"""DDP against FSDP2 on one machine: `posttrain sft` on the same data and global batch as 1 process, as 2 processes
under DDP and as 2 under FSDP2 (with and without resharding after forward). Reports each run's loop tokens/s
(posttrain's own metrics: real input tokens over the loop's wall time less checkpoint writes), the peak resident
memory of its largest process, and the training state each process holds (weights, gradients and AdamW's two
moments: 16 bytes per float32 parameter, split over the processes by FSDP2).

    python bench/scale.py                       # tiny-30m, 30 steps, writes its section of bench/RESULTS.md
    python bench/scale.py --model tiny --steps 10 --no-write
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, posttrain_loop_seconds, update_results  # noqa: E402

RUNS = [  # (label, processes, extra options)
    ("1 process", 1, []),
    ("2 processes, DDP", 2, ["--dist.strategy", "ddp"]),
    ("2 processes, FSDP2", 2, ["--dist.strategy", "fsdp"]),
    ("2 processes, FSDP2, no reshard after forward", 2, ["--dist.strategy", "fsdp", "--dist.no-reshard-after-forward"]),
]


def chats(path: Path, n: int) -> Path:
    rows = []
    for i in range(n):
        text = " ".join(f"step {j}: {i} plus {j} is {i + j}." for j in range(1 + i % 10))
        rows.append({"messages": [{"role": "user", "content": f"Count up from {i}."},
                                  {"role": "assistant", "content": text}]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# runs a command and prints the peak RSS (KiB) of its largest process, torchrun's workers included: a fresh
# process per run, as RUSAGE_CHILDREN only ever grows
PEAK = ("import resource, subprocess, sys; subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run(label: str, nproc: int, extra: list[str], common: list[str], out: Path, batch: int) -> dict:
    launcher = ([sys.executable, "-m", "posttrain"] if nproc == 1 else
                [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                 "-m", "posttrain"])
    name = label.replace(" ", "-").replace(",", "")
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", str(max(1, os.cpu_count() // nproc)))}
    peak = int(subprocess.run([sys.executable, "-c", PEAK, *launcher, "sft", *common, *extra, "--optim.batch-size",
                               str(batch // nproc), "--run.name", name], check=True, env=env, capture_output=True,
                              text=True).stdout.split()[-1])
    rows = [json.loads(x) for x in (out / name / "metrics.jsonl").read_text().splitlines()]
    tokens = rows[-2]["perf/tokens_per_second"] * rows[-1]["time/train_seconds"]  # the loop's tokens (all ranks)
    loss = [r["train/loss"] for r in rows if "train/loss" in r][-1]
    lineage = json.loads((out / name / "lineage.json").read_text())
    params = lineage["base_model"]["parameters"]
    return {"label": label, "tokens_per_second": tokens / posttrain_loop_seconds(rows), "peak_mib": peak / 1024,
            "state_mib": 16 * params / 2**20 / (nproc if "FSDP" in label else 1),
            "loss": loss, "params": params}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny-30m")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--batch", type=int, default=8, help="global batch (examples per step, over all processes)")
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        data = chats(out / "chats.jsonl", 256)
        common = ["--model.name", args.model, "--data.train", str(data), "--data.max-length", "256", "--optim.max-steps",
                  str(args.steps), "--run.output-dir", str(out), "--run.no-progress", "--run.log-every", "1",
                  "--data.eval-fraction", "0", "--run.trackers"]
        results = [run(label, n, extra, common, out, args.batch) for label, n, extra in RUNS]
    lines = [f"`posttrain sft --model.name {args.model}`, {args.steps} steps of {args.batch} examples (up to 256 tokens), "
             f"{results[0]['params'] / 1e6:.1f}M parameters; {machine_line()}.", "",
             "| run | loop tokens/s | peak RSS of the largest process (MiB) | training state per process (MiB) | last loss |",
             "|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {r['label']} | {r['tokens_per_second']:.0f} | {r['peak_mib']:.0f} | {r['state_mib']:.0f} | "
                     f"{r['loss']:.4f} |")
    table = "\n".join(lines)
    print(table)
    if not args.no_write:
        update_results(f"DDP and FSDP2 on one machine ({args.model})", table)


if __name__ == "__main__":
    main()
