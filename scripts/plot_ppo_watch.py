"""The over-optimisation watch of PPO runs as one figure: held-out reward-model score (proxy), gold rater score and
KL to the reference against the step, one line per run (docs/algorithms/ppo.md's figure).

    python scripts/plot_ppo_watch.py OUT.png LABEL=RUN_DIR [LABEL=RUN_DIR ...]

Each RUN_DIR is a `posttrain ppo` run made with --ppo.gold-rater (its metrics.jsonl holds eval/proxy_score,
eval/gold_score and eval/kl at every evaluation).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from posttrain.training.metrics import read_metrics  # noqa: E402

PANELS = (("eval/proxy_score", "reward-model score (proxy)"), ("eval/gold_score", "gold rater score"),
          ("eval/kl", "KL to the SFT policy (nats)"))


def main(argv: list[str]) -> int:
    if len(argv) < 2 or any("=" not in a for a in argv[1:]):
        print(__doc__.strip().splitlines()[-3], file=sys.stderr)
        return 2
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for spec in argv[1:]:
        label, run = spec.split("=", 1)
        evals = [m for m in read_metrics(Path(run)) if "eval/gold_score" in m]
        steps = [m["step"] for m in evals]
        for ax, (key, _) in zip(axes, PANELS):
            ax.plot(steps, [m[key] for m in evals], marker="o", label=label)
    for ax, (_, title) in zip(axes, PANELS):
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(argv[0], dpi=110)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
