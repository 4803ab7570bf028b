"""Recipe tier: SFT on the tiny model — learns, saves a loadable model, accumulates and resumes exactly."""

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
from transformers import AutoModelForCausalLM

from posttrain.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from posttrain.recipes.sft import SFTConfig, SFTDataConfig, train

ROOT = Path(__file__).resolve().parents[2]


def chats(path: Path, n: int = 24) -> Path:
    """A chat file whose conversations have different lengths (1 or 2 assistant turns)."""
    rows = []
    for i in range(n):
        msgs = [{"role": "user", "content": f"What is {i} + {i}?"}, {"role": "assistant", "content": str(2 * i)}]
        if i % 3 == 0:
            msgs += [{"role": "user", "content": "And times two?"}, {"role": "assistant", "content": f"It is {4 * i}."}]
        rows.append({"messages": msgs})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(tmp: Path, data: Path, name: str, **optim) -> SFTConfig:
    return SFTConfig(
        model=ModelConfig(name="tiny"),
        data=SFTDataConfig(train=str(data), max_length=64),
        optim=OptimConfig(**{"lr": 3e-3, "warmup_steps": 1, "max_steps": 3, "batch_size": 8, **optim}),
        run=RunConfig(name=name, output_dir=str(tmp), progress=False, log_every=1),
    )


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def metrics(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("perf/", "time/"))} for r in rows]


def test_sft_learns_and_writes_a_loadable_run(tmp_path, tiny_dir):
    data = chats(tmp_path / "chats.jsonl")
    run = train(cfg_for(tmp_path, data, "a", max_steps=12))
    logged = [m for m in metrics(run) if "train/loss" in m]
    assert all(torch.isfinite(torch.tensor(m["train/loss"])) for m in logged)
    assert logged[-1]["train/loss"] < logged[0]["train/loss"]
    model = AutoModelForCausalLM.from_pretrained(run / "final")
    base = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert not torch.equal(model.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)
    lineage = json.loads((run / "lineage.json").read_text())
    assert lineage["data"][0]["sha256"] and lineage["base_model"]["name"] == "tiny"
    assert json.loads((run / "config.json").read_text())["optim"]["max_steps"] == 12


def test_gradient_accumulation_gives_the_same_update(tmp_path):
    """1 micro-batch of 8 and 4 micro-batches of 2 see the same 8 examples per step and, with the
    loss normalised by the step's trained tokens, produce the same weights."""
    data = chats(tmp_path / "chats.jsonl")
    one = final_weights(train(cfg_for(tmp_path, data, "one", batch_size=8, grad_accum=1)))
    four = final_weights(train(cfg_for(tmp_path, data, "four", batch_size=2, grad_accum=4)))
    for name in one:
        torch.testing.assert_close(four[name], one[name], atol=2e-5, rtol=1e-4)


def test_accumulated_gradient_equals_the_full_batch_gradient(tmp_path, tiny_dir):
    """The engine's gradient for one step is the same whether the 8 examples come as 1x8 or 4x2;
    a per-micro-batch mean (the classic accumulation bug) gives a different gradient on the same data."""
    from posttrain.data.batches import sft_batch
    from posttrain.data.load import load_records
    from posttrain.data.tokenize import tokenize_dataset
    from posttrain.models.load import load_tokenizer
    from posttrain.recipes.sft import SFT_KINDS, sft_step_loss
    from posttrain.training.distributed import Dist
    from posttrain.training.loop import DataOrder, accumulate

    tok = load_tokenizer("tiny")
    ex = tokenize_dataset(load_records(str(chats(tmp_path / "c.jsonl")), accept=SFT_KINDS), tok,
                          DataConfig(max_length=64), source="c")
    d = Dist(0, 1, 0, torch.device("cpu"))
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)

    def grads(micro_size: int, accum: int, per_micro_mean: bool = False) -> torch.Tensor:
        model.zero_grad()
        step = DataOrder([len(e) for e in ex], micro_size, accum, seed=0, bucket=False).step_batches(0)
        micro = []
        for b in step:
            micro.append(sft_batch(ex, b, tok.pad_token_id, False, d.device))
        if per_micro_mean:
            for m in micro:
                loss, _ = sft_step_loss(model, m)
                (loss / m.count / len(micro)).backward()
        else:
            accumulate(model, micro, sft_step_loss, d)
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    full = grads(8, 1)
    torch.testing.assert_close(grads(2, 4), full, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(grads(2, 4, per_micro_mean=True), full, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("packing", [False, True])
def test_trimmed_logits_give_the_same_loss_and_gradient(tmp_path, tiny_dir, packing):
    """With trim_logits the LM head runs only from the position before the batch's first trained token
    (logits_to_keep): the summed loss, the trained-token count and the gradient are those of the full
    logits, padded or packed, and the logits really are fewer."""
    from posttrain.data.batches import sft_batch
    from posttrain.data.load import load_records
    from posttrain.data.tokenize import tokenize_dataset
    from posttrain.models.load import load_tokenizer
    from posttrain.models.logprobs import accepts_logits_to_keep
    from posttrain.recipes.sft import SFT_KINDS, sft_step_loss

    tok = load_tokenizer("tiny")
    ex = tokenize_dataset(load_records(str(chats(tmp_path / "c.jsonl")), accept=SFT_KINDS), tok,
                          DataConfig(max_length=64), source="c")
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    assert accepts_logits_to_keep(model)

    def loss_and_grad(trim: bool) -> tuple[torch.Tensor, int, torch.Tensor, int]:
        model.zero_grad()
        m = sft_batch(ex, list(range(6)), tok.pad_token_id, packing, torch.device("cpu"), 128, trim)
        loss, _ = sft_step_loss(model, m)
        loss.backward()
        return (loss.detach(), m.count, torch.cat([p.grad.flatten() for p in model.parameters()]),
                m.labels.numel())

    full, trimmed = loss_and_grad(False), loss_and_grad(True)
    torch.testing.assert_close(trimmed[0], full[0], atol=1e-4, rtol=1e-5)
    assert trimmed[1] == full[1]
    torch.testing.assert_close(trimmed[2], full[2], atol=1e-6, rtol=1e-5)
    assert trimmed[3] < full[3]


def run_cli(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **(env_extra or {})}
    return subprocess.Popen([sys.executable, "-m", "posttrain", "sft", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@pytest.mark.slow
def test_sigkill_then_resume_equals_an_uninterrupted_run(tmp_path):
    data = chats(tmp_path / "chats.jsonl", n=48)
    common = ["--data.train", str(data), "--data.max-length", "64", "--optim.max-steps", "150",
              "--optim.batch-size", "4", "--optim.warmup-steps", "5", "--run.output-dir", str(tmp_path),
              "--run.save-every", "5", "--run.keep-checkpoints", "100", "--run.no-progress", "--run.log-every", "1",
              "--run.eval-every", "25", "--data.eval", str(data)]
    full = run_cli([*common, "--run.name", "full"])
    assert full.wait(timeout=600) == 0, full.stderr.read().decode()

    killed = run_cli([*common, "--run.name", "killed"])
    ckpt = tmp_path / "killed" / "checkpoints" / "step-10" / "state.json"
    deadline = time.time() + 300
    while not ckpt.exists() and killed.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    assert killed.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (tmp_path / "killed" / "final").exists()

    resumed = run_cli([*common, "--run.name", "killed", "--run.resume"])
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read().decode()
    a, b = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert metrics(tmp_path / "killed") == metrics(tmp_path / "full")


@pytest.mark.slow
def test_two_process_torchrun_matches_one_process(tmp_path, one_and_two_processes):
    """DDP on CPU (gloo): 2 processes x 4 examples equal 1 process x 8 within float tolerance."""
    data = chats(tmp_path / "chats.jsonl", n=32)
    common = ["--data.train", str(data), "--data.max-length", "64", "--optim.max-steps", "4",
              "--optim.warmup-steps", "1", "--optim.lr", "3e-3", "--run.output-dir", str(tmp_path), "--run.no-progress",
              "--run.log-every", "1"]
    one_and_two_processes("sft", common, ["--optim.batch-size", "8"], ["--optim.batch-size", "4"])
    a, b = final_weights(tmp_path / "one"), final_weights(tmp_path / "two")
    for name in a:
        # the two runs sum gradients in a different order; where a gradient is ~0 that rounding noise is all Adam
        # sees, and its normalised step turns it into up to ~1e-5 after 4 steps (measured 1.25e-5). Unsynchronised
        # gradients move weights by ~lr = 3e-3 (measured 0.016 with DDP left out).
        torch.testing.assert_close(b[name], a[name], atol=5e-5, rtol=1e-4)
    for key, rel in (("train/loss", 1e-5), ("train/grad_norm", 1e-4)):
        # Adam and clipping hide the gradient's scale from the weights; the logged norm (before clipping) shows it
        one_run = [m[key] for m in metrics(tmp_path / "one") if key in m]
        two_runs = [m[key] for m in metrics(tmp_path / "two") if key in m]
        assert len(one_run) == 4 and one_run == pytest.approx(two_runs, rel=rel), key


def test_nan_guard_stops_with_a_clear_message_and_keeps_the_last_checkpoint(tmp_path):
    """A huge learning rate blows the weights up; the run stops before applying a non-finite update,
    names the last good checkpoint, and that checkpoint is still complete on disk."""
    from posttrain.errors import TrainingDiverged

    data = chats(tmp_path / "chats.jsonl")
    cfg = cfg_for(tmp_path, data, "nan", lr=1e6, max_steps=30, max_grad_norm=0.0, batch_size=4)
    cfg.run.save_every = 1
    with pytest.raises(TrainingDiverged, match=r"no update was applied.*last good checkpoint is .*step-\d+") as e:
        train(cfg)
    step_dir = Path(str(e.value).split("last good checkpoint is ")[1].split(";")[0])
    assert (step_dir / "trainable.safetensors").is_file() and (step_dir / "state.json").is_file()
    assert not (tmp_path / "nan" / "final").exists()


def test_lora_adapter_save_writes_only_the_adapter_and_loads_by_its_path(tmp_path):
    """--model.lora-save adapter: final/ is peft's adapter (tens of KB for tiny, not the merged MB), a later
    command loads it by its path, and rm refuses the option up front (it saves its head merged)."""
    from posttrain.errors import ConfigError
    from posttrain.models.load import load_model
    from posttrain.recipes.reward_model import RewardModelConfig

    cfg = cfg_for(tmp_path, chats(tmp_path / "d.jsonl"), "adapter", max_steps=2)
    cfg.model = ModelConfig(name="tiny", lora_r=4, lora_save="adapter")
    final = train(cfg) / "final"
    sizes = {p.name: p.stat().st_size for p in final.iterdir()}
    assert "adapter_model.safetensors" in sizes and "model.safetensors" not in sizes
    merged_bytes = sum(p.numel() * 4 for p in load_model(ModelConfig(name="tiny"))[0].parameters())
    assert sizes["adapter_model.safetensors"] < merged_bytes / 10
    model, _ = load_model(ModelConfig(name=str(final)))
    assert model.config.model_type == "llama"
    with pytest.raises(ConfigError, match="lora_save='adapter'"):
        RewardModelConfig(model=ModelConfig(name="tiny", lora_r=4, lora_save="adapter"))
