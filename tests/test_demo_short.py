"""A shortened demo runs end to end: its SFT policy rambles to the sampling limit, and the pair, RM and DPO
stages once refused such pairs as longer than max_length (suggesting --data.max-length, which the demo does not
take) and left runs/demo/sft and pairs/ behind."""

from posttrain.cli import main


def test_a_short_demo_runs_every_stage(tmp_path, capsys, tiny_dir):
    out = tmp_path / "demo"
    argv = ["demo", "--output-dir", str(out), "--sft-steps", "20", "--pair-prompts", "24", "--rm-steps", "2",
            "--dpo-steps", "2", "--eval-prompts", "8", "--no-progress"]
    assert main(argv) == 0, capsys.readouterr().err
    for stage in ("sft", "rm", "dpo"):
        assert (out / stage / "final" / "config.json").is_file(), stage
    assert "posttrain demo summary" in capsys.readouterr().out
