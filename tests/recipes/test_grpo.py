"""Recipe tier: GRPO and RLOO on the tiny model. A run writes what it should and logs what it promises; a killed
run resumes exactly; 2 torchrun processes equal 1; bad input stops before any sampling with one line, and so do
vLLM settings that cannot work (the vLLM runs themselves: tests/vllm_tier)."""

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posttrain.config import ModelConfig, OptimConfig, RunConfig, SamplingParams, VLLMConfig
from posttrain.errors import ConfigError, DataError
from posttrain.generate import GenerateConfig
from posttrain.recipes.grpo import GRPOConfig, train
from posttrain.rewards.score import RewardError
from posttrain.rl.samplers import check_sampler
from posttrain.rl.setup import PromptDataConfig, RLConfig
from posttrain.training.distributed import Dist

# A reward that varies on a random-init model's text, so that advantages and gradients are not all zero.
REWARD_MODULE = "def digits(prompt, completion):\n    return sum(c.isdigit() for c in completion) / 8\n"
TASK = "builtin:arithmetic?ops=+&digits=2"


@pytest.fixture
def reward_module(tmp_path, monkeypatch):
    (tmp_path / "myreward.py").write_text(REWARD_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "myreward:digits"


def cfg_for(tmp: Path, name: str, reward: str = "", **rl) -> GRPOConfig:
    return GRPOConfig(
        model=ModelConfig(name="tiny"),
        data=PromptDataConfig(train=TASK, eval_prompts=8, limit=64),
        sampling=SamplingParams(max_new_tokens=8, temperature=1.0),
        optim=OptimConfig(lr=1e-3, warmup_steps=0, max_steps=3),
        run=RunConfig(name=name, output_dir=str(tmp), progress=False, log_every=1),
        rl=RLConfig(**{"reward": reward, "group_size": 4, "prompts_per_step": 4, "micro_batch": 2, **rl}),
    )


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


LOGGED = ("train/loss", "train/reward", "train/reward_std", "train/frac_reward_zero_std", "train/clip_ratio",
          "train/entropy", "completions/mean_length", "completions/clipped_ratio", "completions/eos_ratio",
          "perf/sampler_tokens_per_second", "perf/tokens_per_second", "train/grad_norm")


def test_grpo_run_logs_and_writes_a_loadable_model(tmp_path, reward_module, capsys):
    run_dir = train(cfg_for(tmp_path, "g", reward=f"{reward_module}+0.5*numeric", kl_beta=0.05))
    assert "equal rewards" not in capsys.readouterr().err  # rewards that vary: no note
    rows = metrics(run_dir)
    steps = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for key in (*LOGGED, "train/kl", "rewards/numeric/mean", f"rewards/{reward_module}/mean"):
        assert all(key in r for r in steps), key
    assert steps[0]["train/ratio_mean"] == pytest.approx(1.0, abs=1e-4)  # sampler log-probs = the policy's
    assert any(r["train/grad_norm"] > 0 for r in steps)
    evals = [r for r in rows if "eval/accuracy" in r]
    assert [r["step"] for r in evals] == [0, 3]  # before training, and at the end
    held_out = [json.loads(x) for x in (run_dir / "samples" / "eval-step-3.jsonl").read_text().splitlines()]
    assert held_out and all(f"expected {r['answer']}" in r["reason"] for r in held_out)  # numeric's reason
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(run_dir / "final")
    assert (run_dir / "report.html").is_file() and (run_dir / "final" / "README.md").is_file()


def test_reused_samples_take_several_updates_and_clip(tmp_path, reward_module):
    """mu = 2 passes over 2 minibatches: the old policy gets its own forward, the ratio moves off 1 and the clip
    acts."""
    run_dir = train(cfg_for(tmp_path, "mu", reward=reward_module, updates_per_batch=2, minibatches=2, eps_low=0.01,
                            eps_high=0.01))
    steps = [r for r in metrics(run_dir) if "train/loss" in r]
    assert any(r["train/clip_ratio"] > 0 for r in steps)
    assert any(abs(r["train/ratio_mean"] - 1) > 1e-4 for r in steps)


CONSTANT_REWARD = "def same(prompt, completion):\n    return 1.0\n"


@pytest.mark.parametrize("drop", [True, False])
def test_a_step_whose_groups_are_all_dropped_leaves_the_weights_alone(tmp_path, monkeypatch, capsys, drop):
    """Every group's rewards are equal, so --rl.drop-zero-variance leaves nothing to train on: no optimizer
    update at all, so AdamW's weight decay (and momentum) do not move the weights either. Without the flag the
    same run takes zero-gradient steps, and weight decay does move them (the contrast the check needs)."""
    from posttrain.models.load import resolve_model_dir
    (tmp_path / "constreward.py").write_text(CONSTANT_REWARD)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = cfg_for(tmp_path, "flat", reward="constreward:same", drop_zero_variance=drop)
    cfg.optim.weight_decay = 0.1
    run_dir = train(cfg)
    assert all(r["train/frac_reward_zero_std"] == 1.0 for r in metrics(run_dir) if "train/loss" in r)
    start = load_file(str(resolve_model_dir("tiny") / "model.safetensors"))
    after = final_weights(run_dir)
    same = all(torch.equal(start[k], after[k]) for k in start)
    assert same == drop
    err = capsys.readouterr().err  # the run says that its first steps learned nothing, once
    assert err.count("every prompt's 4 completions got equal rewards (mean reward 1)") == 1


def test_rloo_runs_with_the_same_loop(tmp_path, reward_module):
    from posttrain.recipes.rloo import RLOOConfig
    from posttrain.recipes.rloo import train as rloo_train

    base = cfg_for(tmp_path, "r", reward=reward_module)
    run_dir = rloo_train(RLOOConfig(model=base.model, data=base.data, sampling=base.sampling, optim=base.optim,
                                    run=RunConfig(name="r", output_dir=str(tmp_path), progress=False, log_every=1),
                                    rl=base.rl))
    assert (run_dir / "final").is_dir() and "rloo" in (run_dir / "final" / "README.md").read_text()


@pytest.mark.parametrize("make, error, match", [
    (lambda t: cfg_for(t, "bad", reward="nonsense"), ConfigError, "rl.reward='nonsense': unknown reward 'nonsense'"),
    (lambda t: cfg_for(t, "bad", reward="no_such_module:f"), ConfigError, "no_such_module"),
    (lambda t: GRPOConfig(data=PromptDataConfig(train=str(t / "no_answers.jsonl")), rl=RLConfig(reward="numeric"),
                          run=RunConfig(name="bad", output_dir=str(t))), DataError, 'no "answer" field'),
    (lambda t: cfg_for(t, "bad", reward="numeric", prompts_per_step=100), DataError, "prompts_per_step"),
])
def test_bad_input_stops_before_sampling(tmp_path, make, error, match):
    (tmp_path / "no_answers.jsonl").write_text('{"prompt": "What is 2 + 2?"}\n' * 4)
    with pytest.raises(error, match=match):
        train(make(tmp_path))
    assert not (tmp_path / "bad").exists()


@pytest.mark.parametrize("eval_prompts", [8, 0])  # found at the step-0 evaluation, or in the first step
def test_a_reward_that_raises_leaves_no_run_directory(tmp_path, monkeypatch, eval_prompts):
    """The mistake shows only once completions are scored: the run directory goes, so the rerun after the fix
    is not refused with 'already exists'."""
    (tmp_path / "raising.py").write_text("def boom(prompt, completion):\n    raise ValueError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = cfg_for(tmp_path, "bad", reward="raising:boom")
    cfg.data.eval_prompts = eval_prompts
    with pytest.raises(RewardError, match="boom"):
        train(cfg)
    assert not (tmp_path / "bad").exists()


def test_group_size_one_is_refused_with_the_rule():
    with pytest.raises(ConfigError, match="rl.group_size=1: GRPO compares"):
        GRPOConfig(rl=RLConfig(group_size=1))
    with pytest.raises(ConfigError, match="rl.group_size=1: RLOO"):
        from posttrain.recipes.rloo import RLOOConfig

        RLOOConfig(rl=RLConfig(group_size=1))


def test_cli_bad_reward_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "posttrain", "grpo", "--rl.reward", "nmeric", "--run.output-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "did you mean numeric" in out.stderr


def run_cli(args: list[str], tmp: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": f"{tmp}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.Popen([sys.executable, "-m", "posttrain", "grpo", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def common_args(tmp: Path, steps: int) -> list[str]:
    (tmp / "myreward.py").write_text(REWARD_MODULE)
    return ["--data.train", TASK, "--data.limit", "64", "--data.eval-prompts", "8", "--rl.reward", "myreward:digits",
            "--rl.group-size", "4", "--rl.prompts-per-step", "4", "--rl.micro-batch", "1", "--sampling.max-new-tokens",
            "8", "--optim.max-steps", str(steps), "--optim.lr", "1e-3", "--optim.warmup-steps", "1",
            "--run.output-dir", str(tmp), "--run.no-progress", "--run.log-every", "1", "--run.eval-every", "4",
            "--rl.kl-beta", "0.05"]


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    common = common_args(tmp_path, 12) + ["--run.save-every", "2", "--run.keep-checkpoints", "100"]
    full = run_cli([*common, "--run.name", "full"], tmp_path)
    assert full.wait(timeout=600) == 0, full.stderr.read().decode()
    killed = run_cli([*common, "--run.name", "killed"], tmp_path)
    ckpt = tmp_path / "killed" / "checkpoints" / "step-6" / "state.json"
    deadline = time.time() + 300
    while not ckpt.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "final").exists()
    resumed = run_cli([*common, "--run.name", "killed", "--run.resume"], tmp_path)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    timing = ("perf/", "time/")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(timing)} for r in rows]  # noqa: E731
    assert strip(metrics(tmp_path / "killed")) == strip(metrics(tmp_path / "full"))
    assert any(r.get("train/grad_norm", 0) > 0 for r in metrics(tmp_path / "full"))


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path, one_and_two_processes):
    """2 processes sampling 2 prompts each equal 1 process sampling 4, with zero-variance groups dropped (so a
    process can be left with nothing to train on) and the batch-std scale (a reduction over processes)."""
    common = common_args(tmp_path, 4) + ["--rl.drop-zero-variance", "--grpo.scale", "batch"]
    one_and_two_processes("grpo", common, env={"PYTHONPATH": str(tmp_path)})
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=5e-5, rtol=1e-4)
    for key in ("train/loss", "train/reward", "train/grad_norm", "completions/mean_length", "eval/accuracy"):
        one_run = [m[key] for m in metrics(tmp_path / "one") if key in m]
        two_runs = [m[key] for m in metrics(tmp_path / "two") if key in m]
        assert one_run and one_run == pytest.approx(two_runs, rel=1e-4, abs=1e-6), key


VLLM_INSTALLED = importlib.util.find_spec("vllm") is not None


@pytest.mark.parametrize("make, match", [
    (lambda: RLConfig(tis_cap=0.5), "rl.tis_cap=0.5: must be 0 .no correction. or >= 1"),
    (lambda: RLConfig(sampler="vllm", old_logps="sampler"), "rl.old_logps='sampler': 'sampler' takes the engine"),
    (lambda: GenerateConfig(vllm=VLLMConfig(sleep_mode=True)), "vllm.sleep_mode=True: frees the engine's memory"),
])
def test_vllm_settings_are_checked_with_the_rule(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_vllm_runs_that_cannot_work_are_refused_before_loading(tmp_path):
    cfg = GRPOConfig(rl=RLConfig(sampler="vllm"), run=RunConfig(output_dir=str(tmp_path)))
    with pytest.raises(ConfigError, match="run one process, not torchrun"):
        check_sampler(cfg, Dist(rank=0, world_size=2, local_rank=0, device=torch.device("cpu")))
    cfg.vllm.sleep_mode = True
    with pytest.raises(ConfigError, match="sleep mode on GPUs only"):
        check_sampler(cfg, Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu")))


@pytest.mark.skipif(VLLM_INSTALLED, reason="vLLM is installed here")
def test_a_missing_vllm_is_one_line_naming_the_install(tmp_path):
    with pytest.raises(ConfigError, match="vLLM is not installed: scripts/test-vllm.sh"):
        train(cfg_for(tmp_path, "novllm", reward="numeric", sampler="vllm"))
    assert not (tmp_path / "novllm").exists()


def test_a_sharded_run_with_fewer_held_out_prompts_than_processes_is_refused_up_front(tmp_path):
    """Under FSDP2 every process evaluates its own share in step with the others: 1 held-out prompt for 2
    processes used to hang the run silently (found under torchrun); it is one line before anything is written."""
    from posttrain.config import DistConfig
    from posttrain.recipes.grpo import grpo_advantages, run_policy_optimization

    cfg = cfg_for(tmp_path, "sharded", reward="numeric")
    cfg.data.eval_prompts = 1
    cfg.dist = DistConfig(strategy="fsdp")
    d = Dist(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"the held-out set has 1 example\(s\) for 2 processes: .*--data.eval-prompts"):
        run_policy_optimization(cfg, d, "grpo", grpo_advantages)
    assert not (tmp_path / "sharded").exists()
