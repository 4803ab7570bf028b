"""GRPO, RLOO and PPO with `--rl.sampler vllm` on the tiny model: the engine follows the trainer's updates (full and
LoRA) and the run learns as it does with the built-in sampler.

Run by scripts/test-vllm.sh in .venv-vllm; skipped where vLLM is not installed."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="vLLM is not installed here: scripts/test-vllm.sh runs this tier in .venv-vllm")

from posttrain.config import ModelConfig, OptimConfig, RunConfig, SamplingParams  # noqa: E402
from posttrain.models.load import load_model  # noqa: E402
from posttrain.recipes import grpo, ppo, rloo  # noqa: E402
from posttrain.rl.setup import PromptDataConfig, RLConfig, heldout_source, load_prompts  # noqa: E402
from posttrain.sampling.sampler import ModelSampler  # noqa: E402

# The share of digits in the completion: a random-init model's samples vary in it, and it is learnt in ~10 steps.
REWARD_MODULE = "def digits(prompt, completion):\n    return sum(c.isdigit() for c in completion) / max(1, len(completion))\n"
TASK = "builtin:arithmetic?ops=+&digits=2"


@pytest.fixture
def reward(tmp_path, monkeypatch):
    (tmp_path / "myreward.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "myreward:digits"


def config(tmp: Path, name: str, reward: str, sampler: str, steps: int, lora_r: int = 0, cls=grpo.GRPOConfig):
    return cls(
        model=ModelConfig(name="tiny", lora_r=lora_r, **({"lora_alpha": 2 * lora_r} if lora_r else {})),
        data=PromptDataConfig(train=TASK, eval_prompts=8, limit=256),
        sampling=SamplingParams(max_new_tokens=8, temperature=1.0),
        optim=OptimConfig(lr=1e-2, warmup_steps=0, max_steps=steps, schedule="constant"),
        run=RunConfig(name=name, output_dir=str(tmp), progress=False, log_every=1),
        rl=RLConfig(reward=reward, group_size=8, prompts_per_step=8, micro_batch=8, sampler=sampler),
    )


def step_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/reward" in r]


def eval_texts(run_dir: Path, step: int) -> list[str]:
    return [json.loads(x)["completion"] for x in (run_dir / "samples" / f"eval-step-{step}.jsonl").read_text()
            .splitlines()]


def ppo_config(tmp: Path, reward: str, lora_r: int) -> ppo.PPOConfig:
    """PPO on the verifier alone, the value model a copy of the policy: one completion per prompt, greedy (its
    held-out evaluation samples as training does, so greedy is what makes it comparable with final/'s)."""
    return replace(  # replace: PPOConfig's own checks run on these settings
        config(tmp, "sync", reward, "vllm", 3, lora_r, ppo.PPOConfig),
        sampling=SamplingParams(max_new_tokens=8, temperature=0.0),
        rl=RLConfig(reward=reward, group_size=1, prompts_per_step=16, updates_per_batch=2, minibatches=2,
                    micro_batch=8, kl_estimator="k1", sampler="vllm"),
        ppo=ppo.PPOSettings(reward_model="", value_model="policy"))


@pytest.mark.parametrize("recipe, lora_r", [(grpo, 0), (rloo, 8), (ppo, 0)], ids=["grpo-full", "rloo-lora", "ppo-full"])
def test_the_engine_follows_the_updates(tmp_path, reward, recipe, lora_r):
    """After 3 steps the engine's greedy held-out completions (the run's last evaluation samples with it) are
    those of final/ sampled by the built-in sampler, and differ from the starting policy's: the weights reached
    the engine after every update, LoRA merged. TIS weights are 1 within float32 rounding."""
    if recipe is ppo:
        cfg = ppo_config(tmp_path, reward, lora_r)
    else:
        cfg = config(tmp_path, "sync", reward, "vllm", 3, lora_r, grpo.GRPOConfig if recipe is grpo else rloo.RLOOConfig)
    run_dir = recipe.train(cfg)
    model, tokenizer = load_model(ModelConfig(name=str(run_dir / "final")))
    _, ids = load_prompts(heldout_source(cfg.data), tokenizer, cfg.data.eval_prompts, cfg.data.max_prompt_length)
    greedy = SamplingParams(max_new_tokens=cfg.sampling.max_new_tokens, temperature=0.0)
    assert eval_texts(run_dir, 3) == ModelSampler(model, tokenizer).sample(ids, 1, greedy).texts
    assert eval_texts(run_dir, 3) != eval_texts(run_dir, 0)
    for row in step_rows(run_dir):
        assert row["train/tis_weight_mean"] == pytest.approx(1.0, abs=1e-3)
        assert row["train/tis_clip_ratio"] == 0 and row["train/tis_abs_logp_diff"] < 1e-4
        assert row["perf/weight_sync_seconds"] > 0


def test_grpo_with_vllm_learns_as_with_the_builtin_sampler(tmp_path, reward):
    """15 steps from the random-init tiny model: with either sampler the reward climbs from under 0.1 to over 0.8,
    and the two curves stay close (the samples differ: each sampler draws with its own random streams)."""
    curves = {}
    for sampler in ("builtin", "vllm"):
        rows = step_rows(grpo.train(config(tmp_path, sampler, reward, sampler, 15)))
        curves[sampler] = [r["train/reward"] for r in rows]
    for sampler, curve in curves.items():
        assert sum(curve[:3]) / 3 < 0.1 and sum(curve[-3:]) / 3 > 0.8, (sampler, curve)
    gaps = [abs(a - b) for a, b in zip(curves["builtin"], curves["vllm"])]
    assert sum(gaps) / len(gaps) < 0.15, curves
