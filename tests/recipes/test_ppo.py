"""Recipe tier: PPO on the tiny model against a (random-head) reward model. A run logs what it promises and writes
the policy and the value model (or, shared, the value head on the policy's backbone); the shared forward reads
log-probs and values at the right positions; a SIGKILLed run resumes to the same policy, value model and KL
coefficient; bad input stops before any sampling with one line."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posttrain.config import ModelConfig, OptimConfig, RunConfig, SamplingParams
from posttrain.errors import ConfigError, ModelError
from posttrain.models.heads import RewardModel, SharedValueHead, load_classifier, save_reward_model
from posttrain.models.load import load_tokenizer, resolve_model_dir
from posttrain.recipes.ppo import PPOConfig, PPOSettings, train
from posttrain.rl.batch import completion_logps, completion_logps_and_values, completion_values, rollout_batch
from posttrain.rl.setup import PromptDataConfig, RLConfig

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


def cfg_for(tmp: Path, name: str, rm: Path | str, rl_reward: str = "", train: str = TASK, **ppo) -> PPOConfig:
    return PPOConfig(
        model=ModelConfig(name="tiny"),
        data=PromptDataConfig(train=train, eval_prompts=8, limit=64),
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


def test_the_value_model_can_start_from_the_policy_and_the_reward_be_a_verifier_alone(tmp_path, capsys):
    cfg = cfg_for(tmp_path, "v", "", rl_reward="numeric", value_model="policy")
    cfg.run.progress = True
    run_dir = train(cfg)
    assert all("train/value_loss" in r for r in metrics(run_dir) if "train/loss" in r)
    said = capsys.readouterr().out.splitlines()[-1]  # no reward model: the summary names the reward, not one
    assert said.startswith("posttrain ppo: held-out reward ") and "reward-model" not in said


def other_tokenizer_rm(tmp_path: Path, reward_model: Path) -> Path:
    """The reward model with a tokenizer that reads other ids than the policy writes."""
    rm = tmp_path / "other-rm"
    shutil.copytree(reward_model, rm)
    tokenizer = load_tokenizer(str(rm))
    tokenizer.add_tokens(["<another-vocabulary>"])
    tokenizer.save_pretrained(rm)
    return rm


def test_a_shared_value_head_trains_on_the_policy_backbone_and_is_saved_beside_it(tmp_path, reward_model):
    # a reward model of another tokenizer, bridged by retokenize: the shared head reads the policy's own tokens
    run_dir = train(cfg_for(tmp_path, "s", other_tokenizer_rm(tmp_path, reward_model), value_model="shared",
                            retokenize=True))
    steps = [r for r in metrics(run_dir) if "train/loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]
    for key in ("train/value_loss", "train/value_clip_ratio", "train/explained_variance", "ppo/value_mean"):
        assert all(key in r for r in steps), key
    assert steps[0]["ppo/value_mean"] == 0.0  # the head starts at zero
    assert steps[-1]["ppo/value_mean"] != 0.0 and steps[-1]["train/value_loss"] > 0
    final = run_dir / "final"
    from transformers import AutoModelForCausalLM

    policy = AutoModelForCausalLM.from_pretrained(final)
    hidden = policy.config.hidden_size
    assert not (final / "value_model").exists()
    head = load_file(str(final / "value_head.safetensors"))
    assert head["weight"].shape == (1, hidden) and head["bias"].shape == (1,) and head["weight"].abs().sum() > 0
    from safetensors import safe_open

    with safe_open(str(final / "value_head.safetensors"), "pt") as f:
        assert f.metadata()["hidden_size"] == str(hidden)
    # one copy of the backbone: the trained module is the policy and the head's H + 1 numbers, in the optimizer too
    n_policy = sum(p.numel() for p in policy.parameters())
    assert json.loads((run_dir / "lineage.json").read_text())["base_model"]["parameters"] == n_policy + hidden + 1
    ckpt = run_dir / "checkpoints" / "step-3"
    weights = load_file(str(ckpt / "trainable.safetensors"))
    assert {k for k in weights if not k.startswith("policy.")} == {"value.head.weight", "value.head.bias"}
    assert sum(w.numel() for w in weights.values()) == n_policy + hidden + 1
    groups = torch.load(ckpt / "optimizer.pt", weights_only=False)["param_groups"]
    assert sum(len(g["params"]) for g in groups) == len(list(policy.parameters())) + 2


def test_under_lora_the_shared_head_trains_in_full_beside_the_policys_adapters(tmp_path, reward_model):
    cfg = cfg_for(tmp_path, "l", reward_model, value_model="shared")
    cfg.model.lora_r = 4
    run_dir = train(cfg)
    weights = load_file(str(run_dir / "checkpoints" / "step-3" / "trainable.safetensors"))
    assert {k for k in weights if "lora_" not in k} == {"value.head.weight", "value.head.bias"}
    assert weights["value.head.weight"].abs().sum() > 0
    evals = [r for r in metrics(run_dir) if "eval/kl" in r]
    assert evals[0]["eval/kl"] == pytest.approx(0.0, abs=1e-4)  # the reference is the policy with adapters off
    assert (run_dir / "final" / "value_head.safetensors").is_file()


def packed_batch(head: str):
    """Three groups whose spans are 18, 13 and 5 tokens (tests/rl/test_batch.py's): the last two share a row."""
    g = torch.Generator().manual_seed(2)
    prompts = [torch.randint(5, 200, (n,), generator=g).tolist() for n in (7, 3, 2)]
    completions = [[torch.randint(5, 200, (n,), generator=g).tolist() for n in lens]
                   for lens in ((4, 1, 6), (2, 5, 3), (1, 2))]
    old = [[torch.zeros(len(c)) for c in group] for group in completions]
    adv = [[0.0] * len(group) for group in completions]
    idx = [[0, 1, 2], [3, 4, 5], [6, 7]]
    b = rollout_batch(prompts, completions, old, adv, idx, 0, torch.device("cpu"), True,
                      **{"full": {}, "trim": {"trim_logits": True}, "last": {"last_layer": True}}[head])
    return b, [(prompts[g], c) for g in range(3) for c in completions[g]]


@pytest.mark.parametrize("head", ["full", "trim", "last"])  # tests/rl/test_batch.py's HEADS
def test_the_shared_forward_reads_logps_and_values_where_the_separate_ones_do(tiny_dir, head):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="sdpa").eval()
    value = SharedValueHead(model)
    with torch.no_grad():
        value.head.weight.normal_(generator=torch.Generator().manual_seed(0))  # values that differ by position
        value.head.bias.fill_(0.5)
    b, pairs = packed_batch(head)
    assert b.inputs["input_ids"].shape == (2, 18) and ("logits_to_keep" in b.inputs) == (head == "trim")
    with torch.no_grad():
        logps, entropy, values = completion_logps_and_values(model, value.head, b, with_entropy=True)
        want_logps, want_entropy = completion_logps(model, b, with_entropy=True)
        sampling_time = completion_values(value, b)  # score_step's path: the body alone, then the head
        assert torch.equal(logps, want_logps) and torch.equal(entropy, want_entropy)
        for c, (prompt, completion) in enumerate(pairs):
            # a plain forward of [prompt, completion]: V_t is read where the logits that predict token t are
            hidden = model.model(torch.tensor([prompt + completion])).last_hidden_state[0]  # (T, H)
            n, p = len(completion), len(prompt)
            want = value.head(hidden[p - 1 : p + n - 1]).squeeze(-1)  # (n,)
            torch.testing.assert_close(values[c, :n], want, atol=1e-5, rtol=1e-5)
            assert (values[c, n:] == 0).all() and b.mask[c].sum() == n
    torch.testing.assert_close(sampling_time, values, atol=1e-5, rtol=1e-5)
    # shared means shared: the values' gradient reaches the backbone, not only the head
    completion_logps_and_values(model, value.head, b)[2].sum().backward()
    assert model.model.layers[0].mlp.down_proj.weight.grad.abs().sum() > 0 and value.head.weight.grad is not None


def test_a_value_models_values_with_the_last_layer_at_the_scored_positions_equal_the_full_forwards(reward_model):
    classifier, _ = load_classifier(reward_model, torch.float32)
    value = RewardModel(classifier).eval()
    with torch.no_grad():
        full = completion_values(value, packed_batch("full")[0])  # (C, L)
        last = completion_values(value, packed_batch("last")[0])
    torch.testing.assert_close(last, full, atol=1e-5, rtol=1e-5)
    assert full.abs().sum() > 0


def test_early_stop_skips_the_remaining_passes(tmp_path, reward_model):
    run_dir = train(cfg_for(tmp_path, "e", reward_model, max_approx_kl=1e-12))
    passes = [r["train/passes"] for r in metrics(run_dir) if "train/passes" in r]
    assert passes == [1.0, 1.0, 1.0]


def prompts_file(tmp: Path) -> str:
    path = tmp / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"What is {i} + 1?"}) + "\n" for i in range(16)))
    return str(path)


def test_the_embedded_default_scores_with_the_tasks_own_reward(tmp_path, capsys):
    """`posttrain ppo` with no reward model or reward: the built-in task's reward, a value model from the policy,
    said in one line at the start; config.json records the resolved value model."""
    from posttrain.cli import main

    assert main(["ppo", "--optim.max-steps", "2", "--data.limit", "16", "--data.eval-prompts", "8",
                 "--rl.prompts-per-step", "8", "--rl.micro-batch", "8", "--sampling.max-new-tokens", "8",
                 "--run.output-dir", str(tmp_path)]) == 0
    assert "no --ppo.reward-model: each completion is scored by the task's own reward, numeric (builtin:arithmetic" \
        in " ".join(capsys.readouterr().err.split())
    config = json.loads((tmp_path / "ppo" / "config.json").read_text())
    assert config["ppo"]["value_model"] == "policy" and (tmp_path / "ppo" / "final" / "value_model").is_dir()


@pytest.mark.parametrize("make, error, match", [
    # a causal LM given as the reward model
    (lambda t, rm: cfg_for(t, "bad", resolve_model_dir("tiny")), ModelError, "has no reward head"),
    (lambda t, rm: cfg_for(t, "bad", "", rl_reward="numeric", value_model="reward"), ConfigError,
     "value_model=reward needs ppo.reward_model"),
    # prompts of a file bring no reward of their own
    (lambda t, rm: cfg_for(t, "bad", "", train=prompts_file(t)), ConfigError, "ppo.reward_model is required for"),
    (lambda t, rm: cfg_for(t, "bad", rm, gold_rater="nobody"), ConfigError, "ppo.gold_rater='nobody'"),
    (lambda t, rm: cfg_for(t, "bad", str(t / "no-such-rm")), ModelError, "^ppo.reward_model=.*no-such-rm: model "),
    # a gold rater with nothing held out to score was ignored without a word
    (lambda t, rm: replace(cfg_for(t, "bad", rm, gold_rater="concise"), data=PromptDataConfig(train=TASK, eval_prompts=0)),
     ConfigError, "ppo.gold_rater='concise': scores the held-out answers, and this run holds none out"),
])
def test_bad_input_stops_before_sampling(tmp_path, reward_model, make, error, match):
    with pytest.raises(error, match=match):
        train(make(tmp_path, reward_model))
    assert not (tmp_path / "bad").exists()


def test_a_reward_model_with_another_tokenizer_is_refused_unless_bridged(tmp_path, reward_model):
    rm = other_tokenizer_rm(tmp_path, reward_model)
    with pytest.raises(ConfigError, match="tokenizer differs from the policy's.*--ppo.retokenize"):
        train(cfg_for(tmp_path, "bad", rm))
    with pytest.raises(ConfigError, match="value_model=reward: the value model reads the policy's tokens"):
        train(cfg_for(tmp_path, "bad", rm, retokenize=True, value_model="reward"))
    assert not (tmp_path / "bad").exists()


def test_auto_picks_the_reward_model_as_value_model_from_the_command_line_too(tmp_path, reward_model):
    """`auto` is resolved when the run starts, not when the default config is built (where --ppo.reward-model is
    still unset): from the CLI too, a reward model of the policy's tokens is the value model's start."""
    from posttrain.cli import main
    from posttrain.recipes.ppo import check_reward_model, resolve_value_model

    assert main(["ppo", "--ppo.reward-model", str(reward_model), "--optim.max-steps", "1", "--data.limit", "16",
                 "--data.eval-prompts", "0", "--rl.prompts-per-step", "8", "--rl.micro-batch", "8",
                 "--sampling.max-new-tokens", "4", "--run.output-dir", str(tmp_path), "--run.no-progress"]) == 0
    assert json.loads((tmp_path / "ppo" / "config.json").read_text())["ppo"]["value_model"] == "reward"
    other = cfg_for(tmp_path, "o", other_tokenizer_rm(tmp_path, reward_model), retokenize=True)
    from posttrain.models.load import load_tokenizer

    same = check_reward_model(other, load_tokenizer("tiny"))
    assert resolve_value_model(other, same).ppo.value_model == "policy"  # it could not read the policy's tokens


def test_config_rules_are_explained():
    with pytest.raises(ConfigError, match="rl.kl_beta=0.1: PPO puts the KL into the reward"):
        PPOConfig(rl=RLConfig(group_size=1, kl_beta=0.1))
    with pytest.raises(ConfigError, match="ppo.lam=1.5"):
        PPOSettings(lam=1.5)


@pytest.mark.parametrize("command", ["grpo", "rloo", "ppo"])
@pytest.mark.parametrize("option", ["--optim.batch-size", "--optim.grad-accum"])
def test_rl_recipes_refuse_the_batch_options_they_would_ignore(command, option, capsys):
    from posttrain.cli import main

    assert main([command, option, "3"]) == 2
    err = capsys.readouterr().err
    assert f"{option[2:].replace('-', '_')}=3: is not used by RL recipes" in err and "--rl.micro-batch" in err


def test_cli_without_a_reward_model_for_a_prompts_file_is_one_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "posttrain", "ppo", "--data.train", prompts_file(tmp_path),
                          "--run.output-dir", str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count("\n") == 1 and "ppo.reward_model is required" in out.stderr


def run_cli(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "posttrain", "ppo", *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


@pytest.mark.slow
@pytest.mark.parametrize("value_model, steps, parts", [
    ("reward", 10, ("model.safetensors", "value_model/model.safetensors")),
    ("shared", 6, ("model.safetensors", "value_head.safetensors")),  # fewer steps: the same code resumes both
])
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path, reward_model, value_model, steps, parts):
    common = ["--ppo.reward-model", str(reward_model), "--ppo.value-model", value_model, "--ppo.kl-target", "0.5",
              "--data.train", TASK, "--data.limit", "64", "--data.eval-prompts", "8", "--rl.prompts-per-step", "8",
              "--rl.micro-batch", "2", "--sampling.max-new-tokens", "8", "--optim.max-steps", str(steps),
              "--optim.lr", "1e-3",
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
    for part in parts:
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
def test_two_process_torchrun_matches_one_process(tmp_path, reward_model, one_and_two_processes):
    """2 processes sampling 4 prompts each equal 1 process sampling 8: 2 minibatches (each spread over both
    processes), 2 passes, the adaptive β (steered by the step's KL over both processes), whitening over both
    processes' tokens, and the held-out scores over both shares."""
    common = ["--ppo.reward-model", str(reward_model), "--ppo.kl-target", "0.5", "--ppo.gold-rater", "correctness",
              "--data.train", TASK, "--data.limit", "64", "--data.eval-prompts", "6", "--rl.prompts-per-step", "8",
              "--rl.micro-batch", "2", "--sampling.max-new-tokens", "8", "--optim.max-steps", "4", "--optim.lr",
              "1e-3", "--run.output-dir", str(tmp_path), "--run.no-progress", "--run.log-every", "1",
              "--run.eval-every", "2"]
    one_and_two_processes("ppo", common)
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
