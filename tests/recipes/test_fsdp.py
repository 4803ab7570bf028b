"""FSDP2 (--dist.strategy fsdp) on CPU under torchrun (gloo): 2 processes, each holding half of every weight,
train as 1 process does with the same global batch; sharded checkpoints resume exactly; final/ is one model
that plain transformers loads; and a 2-node launch (two torchruns rendezvousing on 127.0.0.1) is the same run
as 1 node of 2 processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from tests.recipes.test_dpo import pairs_file
from tests.recipes.test_grpo import common_args as grpo_args
from tests.recipes.test_sft import chats

pytestmark = pytest.mark.slow

FSDP = ["--dist.strategy", "fsdp"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]


def logged(run_dir: Path, key: str) -> list[float]:
    return [m[key] for m in metrics(run_dir) if key in m]


def torchrun(args: list[str], nproc: int = 2, launch: list[str] = ("--standalone",), **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *launch, "--nproc-per-node", str(nproc),
                             "-m", "posttrain", *args], env=popen.pop("env", ENV), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, **popen)


def finished(p: subprocess.Popen) -> None:
    _, err = p.communicate(timeout=600)
    assert p.returncode == 0, err.decode()[-3000:]
    # a sharded block that returns a view loses FSDP2's pre-backward hook to any in-place op on it; torch warns
    assert "returned a view tensor" not in err.decode(), err.decode()[-3000:]


def sft_args(tmp: Path, steps: int = 4) -> list[str]:
    return ["sft", "--data.train", str(chats(tmp / "chats.jsonl", n=32)), "--data.max-length", "64",
            "--optim.max-steps", str(steps), "--optim.warmup-steps", "1", "--optim.lr", "3e-3", "--run.output-dir",
            str(tmp), "--run.no-progress", "--run.log-every", "1"]


def recipe_args(recipe: str, tmp: Path) -> tuple[list[str], list[str], list[str], dict]:
    """(common args, the 1-process run's, the 2-process run's, extra env) of a short run of `recipe`."""
    if recipe in ("sft", "sft-lora"):
        lora = ["--model.lora-r", "4", "--optim.lr", "1e-2"] if recipe == "sft-lora" else []
        return sft_args(tmp) + lora + ["--data.eval-fraction", "0.25", "--run.eval-every", "2"], \
            ["--optim.batch-size", "8"], ["--optim.batch-size", "4"], {}
    if recipe in ("dpo", "rm"):
        data = pairs_file(tmp / "pairs.jsonl")
        common = [recipe, "--data.train", str(data), "--optim.max-steps", "4", "--optim.warmup-steps", "1",
                  "--optim.lr", "3e-3", "--run.output-dir", str(tmp), "--run.no-progress", "--run.log-every", "1",
                  "--data.eval-fraction", "0.2", "--run.eval-every", "2"]
        if recipe == "dpo":  # the frozen reference copy, sharded like the policy and run in step with it
            common += ["--dpo.reference", "online"]
        return common, ["--optim.batch-size", "8"], ["--optim.batch-size", "4"], {}
    # grpo: zero-variance groups dropped, so that a process can be left with fewer micro-batches than the other
    common = ["grpo", *grpo_args(tmp, 4), "--rl.drop-zero-variance", "--grpo.scale", "batch"]
    return common, [], [], {"PYTHONPATH": str(tmp)}


def final_weights(run_dir: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / name))


@pytest.mark.parametrize("recipe", ["sft", "sft-lora", "dpo", "rm", "grpo"])
def test_two_sharded_processes_match_one_process(tmp_path, recipe):
    """Loss and grad norm of every step, held-out figures and the final weights of a 2-process FSDP2 run equal a
    1-process run's with the same global batch (up to the order in which gradients are summed); each process
    wrote its own shard of the checkpoint; final/ loads with plain transformers."""
    common, one, two, env = recipe_args(recipe, tmp_path)
    env = {**ENV, **env}
    single = subprocess.run([sys.executable, "-m", "posttrain", *common, *one, "--run.name", "one"], env=env,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    finished(torchrun([*common, *two, *FSDP, "--run.name", "two"], env=env))
    step = sorted((tmp_path / "two" / "checkpoints").iterdir())[-1]
    assert sorted(p.name for p in (step / "sharded").glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert not (step / "trainable.safetensors").exists()  # no process gathered the whole model to checkpoint it
    weights = "model.safetensors"
    a, b = final_weights(tmp_path / "one", weights), final_weights(tmp_path / "two", weights)
    assert sorted(a) == sorted(b)
    for name in a:
        # as in test_sft's DDP test: sums in another order, which Adam's normalised step turns into up to ~1e-5
        torch.testing.assert_close(b[name], a[name], atol=5e-5, rtol=1e-4, msg=name)
    keys = [k for k in ("train/loss", "train/grad_norm", "train/reward", "eval/loss", "eval/accuracy")
            if logged(tmp_path / "one", k)]
    assert "train/loss" in keys and "train/grad_norm" in keys and len(keys) >= 3
    for key in keys:
        assert logged(tmp_path / "one", key) == pytest.approx(logged(tmp_path / "two", key), rel=1e-4, abs=1e-6), key
    if recipe != "rm":
        model = AutoModelForCausalLM.from_pretrained(tmp_path / "two" / "final")
        assert torch.equal(model.state_dict()["lm_head.weight"], model.state_dict()["model.embed_tokens.weight"])


def test_sigkill_then_resume_under_fsdp_equals_an_uninterrupted_run(tmp_path):
    """SIGKILL the whole torchrun job after a sharded checkpoint, resume it: the final weights and every step's
    metrics equal the uninterrupted run's exactly."""
    common = [*sft_args(tmp_path, 8), "--optim.batch-size", "4", *FSDP, "--run.save-every", "3"]
    finished(torchrun([*common, "--run.name", "full"]))
    killed = torchrun([*common, "--run.name", "killed"], start_new_session=True)  # its own group: kill every process
    ckpt = tmp_path / "killed" / "checkpoints" / "step-3" / "state.json"
    deadline = time.time() + 300
    while not ckpt.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "final").exists()
    finished(torchrun([*common, "--run.name", "killed", "--run.resume"]))
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for key in ("train/loss", "train/grad_norm"):
        assert logged(tmp_path / "full", key) == logged(tmp_path / "killed", key), key


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_match_one_node(tmp_path):
    """Two torchrun launches of 1 process each (--nnodes 2, --node-rank 0 and 1, c10d rendezvous on 127.0.0.1),
    as on two machines, are the same run as one launch of 2 processes: identical metrics and weights (FSDP2; DDP
    takes the same launch and process-group set-up)."""
    common = [*sft_args(tmp_path), "--optim.batch-size", "4", *FSDP]
    finished(torchrun([*common, "--run.name", "one-node"]))
    rdzv = ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}",
            "--rdzv-id", "two-nodes"]
    nodes = [torchrun([*common, "--run.name", "two-nodes"], nproc=1, launch=[*rdzv, "--node-rank", str(r)])
             for r in (0, 1)]
    for node in nodes:
        finished(node)
    a, b = final_weights(tmp_path / "one-node"), final_weights(tmp_path / "two-nodes")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    for key in ("train/loss", "train/grad_norm"):
        assert logged(tmp_path / "one-node", key) == logged(tmp_path / "two-nodes", key), key


def test_ppo_with_two_sharded_processes_matches_one_process(tmp_path):
    """PPO's policy and value model sharded together, the frozen reference sharded too: as 1 process."""
    from tests.recipes.test_ppo import TASK, make_reward_model

    rm = make_reward_model(tmp_path / "rm")
    common = ["ppo", "--ppo.reward-model", str(rm), "--ppo.kl-target", "0.5", "--data.train", TASK, "--data.limit",
              "64", "--data.eval-prompts", "6", "--rl.prompts-per-step", "8", "--rl.micro-batch", "2",
              "--sampling.max-new-tokens", "8", "--optim.max-steps", "3", "--optim.lr", "1e-3", "--run.output-dir",
              str(tmp_path), "--run.no-progress", "--run.log-every", "1", "--run.eval-every", "2"]
    single = subprocess.run([sys.executable, "-m", "posttrain", *common, "--run.name", "one"], env=ENV,
                            capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    finished(torchrun([*common, *FSDP, "--run.name", "two"]))
    for part in ("model.safetensors", "value_model/model.safetensors"):
        a, b = final_weights(tmp_path / "one", part), final_weights(tmp_path / "two", part)
        for name in a:
            torch.testing.assert_close(b[name], a[name], atol=5e-5, rtol=1e-4, msg=f"{part} {name}")
    for key in ("train/loss", "train/value_loss", "train/grad_norm", "ppo/kl", "eval/proxy_score", "eval/kl"):
        one, two = logged(tmp_path / "one", key), logged(tmp_path / "two", key)
        assert one and one == pytest.approx(two, rel=1e-4, abs=1e-6), key


def test_bf16_mixed_precision_computes_in_bf16_and_keeps_float32_weights(tmp_path):
    """--dist.mixed-precision bf16: the losses follow the float32 run's to bfloat16's precision (not exactly: the
    forward really ran in bfloat16), and the weights, trained and saved, stay float32."""
    common = [*sft_args(tmp_path), "--optim.batch-size", "4", *FSDP]
    finished(torchrun([*common, "--run.name", "fp32"]))
    finished(torchrun([*common, "--dist.mixed-precision", "bf16", "--run.name", "bf16"]))
    fp32, bf16 = logged(tmp_path / "fp32", "train/loss"), logged(tmp_path / "bf16", "train/loss")
    assert bf16 == pytest.approx(fp32, rel=3e-2) and bf16 != fp32
    assert {w.dtype for w in final_weights(tmp_path / "bf16").values()} == {torch.float32}
