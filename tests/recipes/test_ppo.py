"""Recipe tier: PPO on the tiny model against a (random-head) reward model. A run logs what it promises and writes
the policy and the value model; a SIGKILLed run resumes to the same policy, value model and KL coefficient; bad
input stops before any sampling with one line."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posttrain.config import ModelConfig, OptimConfig, RunConfig, SamplingParams
from posttrain.errors import ConfigError, ModelError
from posttrain.models.heads import RewardModel, load_classifier, save_reward_model
from posttrain.models.load import load_tokenizer, resolve_model_dir
from posttrain.recipes.ppo import PPOConfig, PPOSettings, train
from posttrain.rl.engine import PromptDataConfig, RLConfig

TASK = "builtin:arithmetic?ops=+&digits=2"


def make_reward_model(out: Path, seed: int = 1) -> Path:
    """A reward model in posttrain rm's saved format: the tiny model's body with a seeded random score head."""
    if not out.exists():
        path = resolve_model_dir("tiny")
        classifier, _ = load_classifier(path, torch.float32, seed=seed)
        save_reward_model(RewardModel(classifier), load_tokenizer(str(path)), out,
                          {"kind": "bradley_terry", "pooling": "last_token"})
    return out


@pytest.fixture(scope="module")
def reward_model(tmp_path_factory) -> Path:
    return make_reward_model(tmp_path_factory.mktemp("rm") / "rm")


def cfg_for(tmp: Path, name: str, rm: Path | str, rl_reward: str = "", **ppo) -> PPOConfig:
    return PPOConfig(
        model=ModelConfig(name="tiny"),
        data=PromptDataConfig(train=TASK, eval_prompts=8, limit=64),
        sampling=SamplingParams(max_new_tokens=8, temperature=1.0),
        optim=OptimConfig(lr=1e-3, warmup_steps=0, max_steps=3),
        run=RunConfig(name=name, output_dir=str(tmp), progress=False, log_every=1, eval_every=2),
        rl=RLConfig(reward=rl_reward, group_size=1, prompts_per_step=8, updates_per_batch=2, minibatches=2, micro_batch=2,
                    kl_estimator="k1"),
        ppo=PPOSettings(reward_model=str(rm), **ppo),
    )


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


LOGGED = ("ppo/score", "ppo/kl", "ppo/kl_coef", "train/loss", "train/value_loss", "train/clip_ratio",
          "train/value_clip_ratio", "train/explained_variance", "train/entropy", "train/approx_kl",
          "completions/mean_length", "completions/eos_ratio", "completions/clipped_ratio",
          "perf/tokens_per_second", "perf/sampler_tokens_per_second")


def test_ppo_run_logs_its_metrics_and_writes_policy_and_value_model(tmp_path, reward_model):
    run_dir = train(cfg_for(tmp_path, "p", reward_model, kl_target=0.5, gold_rater="concise"))
    rows = metrics(run_dir)
    steps = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for key in LOGGED:
        assert all(key in r for r in steps), key
    assert steps[0]["ppo/kl"] == pytest.approx(0.0, abs=1e-5)  # the policy is the reference before any update
    assert steps[0]["train/passes"] == 2
    coefs = [r["ppo/kl_coef"] for r in steps]
    assert coefs[0] == 0.05 and coefs[1] != coefs[0]  # adaptive: β moved after step 1's KL
    evals = [r for r in rows if "eval/proxy_score" in r]
    assert [r["step"] for r in evals] == [0, 2, 3]
    assert all("eval/gold_score" in r and "eval/kl" in r for r in evals)
    assert evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-4)
    final = run_dir / "final"
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    AutoModelForCausalLM.from_pretrained(final)
    value = AutoModelForSequenceClassification.from_pretrained(final / "value_model")
    assert value.config.num_labels == 1
    assert "ppo" in (final / "README.md").read_text()


def test_the_value_model_can_start_from_the_policy_and_the_reward_be_a_verifier_alone(tmp_path):
    run_dir = train(cfg_for(tmp_path, "v", "", rl_reward="numeric", value_model="policy"))
    assert all("train/value_loss" in r for r in metrics(run_dir) if "train/loss" in r)


def test_early_stop_skips_the_remaining_passes(tmp_path, reward_model):
    run_dir = train(cfg_for(tmp_path, "e", reward_model, max_approx_kl=1e-12))
    passes = [r["train/passes"] for r in metrics(run_dir) if "train/passes" in r]
    assert passes == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("make, error, match", [
    # a causal LM given as the reward model
    (lambda t, rm: cfg_for(t, "bad", resolve_model_dir("tiny")), ModelError, "has no reward head"),
    (lambda t, rm: cfg_for(t, "bad", "", rl_reward="numeric"), ConfigError, "value_model=reward needs ppo.reward_model"),
    (lambda t, rm: cfg_for(t, "bad", ""), ConfigError, "ppo.reward_model is required"),
    (lambda t, rm: cfg_for(t, "bad", rm, gold_rater="nobody"), ConfigError, "ppo.gold_rater='nobody'"),
])
def test_bad_input_stops_before_sampling(tmp_path, reward_model, make, error, match):
    with pytest.raises(error, match=match):
        train(make(tmp_path, reward_model))
    assert not (tmp_path / "bad").exists()


def test_a_reward_model_with_another_tokenizer_is_refused_unless_bridged(tmp_path, reward_model):
    rm = tmp_path / "other-rm"
    shutil.copytree(reward_model, rm)
    tokenizer = load_tokenizer(str(rm))
    tokenizer.add_tokens(["<another-vocabulary>"])  # a tokenizer that reads other ids than the policy writes
    tokenizer.save_pretrained(rm)
    with pytest.raises(ConfigError, match="tokenizer differs from the policy's.*--ppo.retokenize"):
        train(cfg_for(tmp_path, "bad", rm))
    with pytest.raises(ConfigError, match="value_model=reward: the value model reads the policy's tokens"):
        train(cfg_for(tmp_path, "bad", rm, retokenize=True))
    assert not (tmp_path / "bad").exists()


def test_config_rules_are_explained():
    with pytest.raises(ConfigError, match="rl.kl_beta=0.1: PPO puts the KL into the reward"):
        PPOConfig(rl=RLConfig(group_size=1, kl_beta=0.1))
    with pytest.raises(ConfigError, match="ppo.lam=1.5"):
        PPOSettings(lam=1.5)


def test_cli_without_a_reward_model_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "posttrain", "ppo", "--run.output-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "ppo.reward_model is required" in out.stderr


def run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "posttrain", "ppo", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, reward_model):
    common = ["--ppo.reward-model", str(reward_model), "--ppo.kl-target", "0.5", "--data.train", TASK,
              "--data.limit", "64", "--data.eval-prompts", "8", "--rl.prompts-per-step", "8", "--rl.micro-batch", "2",
              "--sampling.max-new-tokens", "8", "--optim.max-steps", "10", "--optim.lr", "1e-3",
              "--run.output-dir", str(tmp_path), "--run.no-progress", "--run.log-every", "1", "--run.eval-every", "5",
              "--run.save-every", "2", "--run.keep-checkpoints", "100"]
    full = run_cli([*common, "--run.name", "full"])
    assert full.wait(timeout=600) == 0, full.stderr.read().decode()
    killed = run_cli([*common, "--run.name", "killed"])
    ckpt = tmp_path / "killed" / "checkpoints" / "step-4" / "state.json"
    deadline = time.time() + 300
    while not ckpt.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "final").exists()
    resumed = run_cli([*common, "--run.name", "killed", "--run.resume"])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    for part in ("model.safetensors", "value_model/model.safetensors"):
        a = load_file(str(tmp_path / "full" / "final" / part))
        b = load_file(str(tmp_path / "killed" / "final" / part))
        for name in a:
            assert torch.equal(a[name], b[name]), (part, name)
    timing = ("perf/", "time/")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(timing)} for r in rows]  # noqa: E731
    full_rows, killed_rows = strip(metrics(tmp_path / "full")), strip(metrics(tmp_path / "killed"))
    assert killed_rows == full_rows  # the KL coefficient (ppo/kl_coef) of every step included
    coefs = [r["ppo/kl_coef"] for r in full_rows if "ppo/kl_coef" in r]
    assert len(set(coefs)) == len(coefs), "the adaptive β should move every step"


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path, reward_model):
    """2 processes sampling 4 prompts each equal 1 process sampling 8: 2 minibatches (each spread over both
    processes), 2 passes, the adaptive β (steered by the step's KL over both processes), whitening over both
    processes' tokens, and the held-out scores over both shares."""
    common = ["--ppo.reward-model", str(reward_model), "--ppo.kl-target", "0.5", "--ppo.gold-rater", "correctness",
              "--data.train", TASK, "--data.limit", "64", "--data.eval-prompts", "6", "--rl.prompts-per-step", "8",
              "--rl.micro-batch", "2", "--sampling.max-new-tokens", "8", "--optim.max-steps", "4", "--optim.lr",
              "1e-3", "--run.output-dir", str(tmp_path), "--run.no-progress", "--run.log-every", "1",
              "--run.eval-every", "2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, "-m", "posttrain", "ppo", *common, "--run.name", "one"], env=env,
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                          "-m", "posttrain", "ppo", *common, "--run.name", "two"], env=env, capture_output=True,
                         text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    for part in ("model.safetensors", "value_model/model.safetensors"):
        a = load_file(str(tmp_path / "one" / "final" / part))
        b = load_file(str(tmp_path / "two" / "final" / part))
        for name in a:
            torch.testing.assert_close(b[name], a[name], atol=5e-5, rtol=1e-4, msg=f"{part} {name}")
    keys = ("train/loss", "train/value_loss", "train/grad_norm", "train/clip_ratio", "train/explained_variance",
            "ppo/score", "ppo/kl", "ppo/kl_coef", "completions/mean_length", "eval/proxy_score", "eval/kl",
            "eval/gold_score")
    for key in keys:
        one_run = [m[key] for m in metrics(tmp_path / "one") if key in m]
        two_runs = [m[key] for m in metrics(tmp_path / "two") if key in m]
        assert one_run and one_run == pytest.approx(two_runs, rel=1e-4, abs=1e-5), key
    samples = [json.loads(x) for x in (tmp_path / "two" / "samples" / "eval-step-4.jsonl").read_text().splitlines()]
    assert len(samples) == 6  # both processes' held-out samples, gathered
