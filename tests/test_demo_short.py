"""A shortened demo runs end to end: its SFT policy rambles to the sampling limit, and the pair, RM and DPO
stages once refused such pairs as longer than max_length (suggesting --data.max-length, which the demo does not
take) and left runs/demo/sft and pairs/ behind. Its feedback stage serves a campaign of the four policies'
answers, two at a time, lets simulated raters judge it over HTTP and trains a reward model on the export. It ends
by printing the path of its report, which holds every run's curves, the evaluation it wrote (both policies'
accuracy, the win rate) and the two policies' answers."""

import json

from posttrain.cli import main


def test_a_short_demo_runs_every_stage(tmp_path, capsys, tiny_dir):
    out = tmp_path / "demo"
    argv = ["demo", "--output-dir", str(out), "--sft-steps", "20", "--pair-prompts", "24", "--rm-steps", "2",
            "--dpo-steps", "2", "--eval-prompts", "8", "--feedback-prompts", "12", "--feedback-rm-steps", "2",
            "--feedback-noise", "0.2", "--grpo-steps", "2", "--ppo-steps", "2", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    for stage in ("sft", "rm", "dpo", "rm-feedback", "grpo", "ppo"):
        assert (out / stage / "final" / "config.json").is_file(), stage
        assert (out / stage / "final" / "README.md").is_file() and (out / stage / "report.html").is_file(), stage
    printed = capsys.readouterr().out
    assert "posttrain demo summary" in printed
    assert "GRPO from the" in printed and (out / "sft-weak" / "final" / "config.json").is_file()
    # the loop: 3 simulated raters judged every item of the campaign of the four policies, two at a time, through
    # the HTTP API, the leaderboard was printed, and the exported judgments are what the last reward model trained on
    assert "Leaderboard" in printed and "Krippendorff's alpha" in printed
    assert "Feedback: 3 simulated" in printed and "Reward model on the" in printed  # table cells wrap at 80 columns
    exported = [json.loads(line) for line in (out / "feedback" / "judgments.jsonl").read_text().splitlines()]
    assert exported and {row["feedback"]["campaign"] for row in exported} == {"demo-versions"}
    assert len({row["feedback"]["rater"] for row in exported}) == 3
    judged = {(row["feedback"]["models"]["chosen"], row["feedback"]["models"]["rejected"]) for row in exported}
    assert {m for pair in judged for m in pair} == {"sft", "dpo", "grpo", "ppo"}
    lineage = json.loads((out / "rm-feedback" / "lineage.json").read_text())
    assert "judgments.jsonl" in json.dumps(lineage)
    assert f"Report (curves, evaluation, answers side by side): {out / 'report.html'}" in printed
    results = json.loads((out / "eval" / "results.json").read_text())
    assert [r["model"] for r in results["accuracy"]] == ["sft", "dpo"] and results["accuracy"][0]["n"] == 8
    assert [(w["a"], w["b"], w["n"]) for w in results["win_rates"]] == [("dpo", "sft", 8), ("ppo", "sft", 8)]
    assert "PPO from the" in printed and (out / "ppo" / "final" / "value_model" / "config.json").is_file()
    html = (out / "report.html").read_text()
    assert html.count("<svg") >= 6 and "Responses side by side: sft vs dpo" in html
    for run in ("sft", "rm", "dpo", "rm-feedback"):
        assert f"<b>{run}</b>" in html
