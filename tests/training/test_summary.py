"""Recipe tier: `posttrain sft|rm|dpo` end with one line on stdout: the last held-out figures and where final/ is."""

from __future__ import annotations

import json
import re

from posttrain.cli import main

QUICK = ["--optim.max-steps", "2", "--optim.warmup-steps", "0", "--optim.batch-size", "4", "--run.output-dir"]


def pairs(path):
    rows = [{"prompt": f"What is {a} + 1?", "chosen": str(a + 1), "rejected": "I do not know, maybe a lot"}
            for a in range(12)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_sft_prints_its_held_out_loss_and_final(tmp_path, capsys, tiny_dir):
    assert main(["sft", *QUICK, str(tmp_path), "--run.log-every", "1", "--data.limit", "16"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert re.fullmatch(rf"posttrain sft: held-out loss \d+\.\d{{3}} after 2 steps; the model is in "
                        rf"{re.escape(str(tmp_path / 'sft' / 'final'))}", out[-1]), out
    logged = [json.loads(x) for x in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert f"{[r['eval/loss'] for r in logged if 'eval/loss' in r][-1]:.3f}" in out[-1]


def test_rm_and_dpo_print_their_held_out_accuracy(tmp_path, capsys, tiny_dir):
    data = pairs(tmp_path / "pairs.jsonl")
    common = [*QUICK, str(tmp_path), "--data.train", data, "--data.eval-fraction", "0.25"]
    assert main(["rm", *common]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(r"posttrain rm: held-out pair accuracy \d+\.\d%, loss \S+ after 2 steps; "
                        r"the model is in .*rm/final", line), line
    assert main(["dpo", *common]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    assert line.startswith("posttrain dpo: held-out implicit-reward accuracy ") and line.endswith("dpo/final"), line


def test_a_quiet_run_prints_nothing(tmp_path, capsys, tiny_dir):
    assert main(["sft", *QUICK, str(tmp_path), "--data.limit", "16", "--run.no-progress"]) == 0
    assert capsys.readouterr().out == ""
