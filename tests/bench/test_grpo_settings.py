"""bench/grpo.py: the posttrain and TRL configurations it times agree on every setting the comparison holds equal."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import grpo  # noqa: E402


def test_posttrain_and_trl_configs_agree(tmp_path):
    """256 completions per optimizer step on both sides (32 prompts x 8; TRL: 64 per forward x 4 accumulated, one
    generation per step), and the same sampling, optimizer, schedule, clipping, KL, loss and reward scaling."""
    cfg = grpo.BenchConfig(steps=7)
    ours = grpo.posttrain_settings(grpo.posttrain_config(cfg, "prompts.jsonl", "tiny", str(tmp_path), 1))
    theirs = grpo.trl_settings(grpo.trl_config(cfg, str(tmp_path)))
    assert ours == theirs
    assert ours["completions per step"] == 256 and ours["steps"] == 7 and ours["loss aggregation"] == "token"


def test_a_changed_setting_is_caught(tmp_path):
    cfg = grpo.BenchConfig(steps=7)
    trl_args = grpo.trl_config(cfg, str(tmp_path))
    trl_args.top_k = 50
    with pytest.raises(SystemExit, match="top_k: posttrain 0, TRL 50"):
        grpo.check_same_settings(grpo.posttrain_config(cfg, "prompts.jsonl", "tiny", str(tmp_path), 1), trl_args)


def test_the_stop_string_is_one_end_token():
    """The tiny tokenizer spells "." with one token (16) that nothing else contains, so ending at that token is
    posttrain's stop string; it is added to the eos id (2)."""
    from posttrain.models.load import load_tokenizer

    assert grpo.end_token_ids(load_tokenizer("tiny"), 2) == [2, 16]
