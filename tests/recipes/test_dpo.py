"""Recipe tier: DPO and its variants on the tiny model — start at log 2, learn the preference, cache the
reference once, accumulate exactly, train LoRA against its own base, and refuse bad settings."""

import json
import logging
import math
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from posttrain.config import ModelConfig, OptimConfig, RunConfig
from posttrain.errors import ConfigError, DataError
from posttrain.models.reference import REFERENCE_CACHE
from posttrain.recipes.dpo import DPOConfig, PreferenceConfig, PreferenceDataConfig, train

LOG2 = math.log(2)


def pairs_file(path: Path, n: int = 40) -> Path:
    """'What is a + b?': chosen the sum, bare or in a sentence; rejected a near miss or rambling text."""
    rng = random.Random(0)
    rows = []
    for i in range(n):
        a, b = rng.randint(0, 50), rng.randint(0, 50)
        rejected = str(a + b + rng.choice([-3, -1, 1, 2, 10])) if i % 2 else "I think it is probably a big number"
        chosen = f"The sum is {a + b}." if i % 3 == 0 else str(a + b)
        rows.append({"prompt": f"What is {a} + {b}?", "chosen": chosen, "rejected": rejected})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def cfg_for(tmp: Path, data: Path, name: str, dpo: PreferenceConfig | None = None, lora_r: int = 0,
            **optim) -> DPOConfig:
    return DPOConfig(
        model=ModelConfig(name="tiny", lora_r=lora_r),
        data=PreferenceDataConfig(train=str(data), max_length=64),
        optim=OptimConfig(**{"lr": 5e-4, "warmup_steps": 1, "max_steps": 3, "batch_size": 8, **optim}),
        run=RunConfig(name=name, output_dir=str(tmp), progress=False, log_every=1),
        dpo=dpo or PreferenceConfig(),
    )


def train_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "train/loss" in r]


def eval_row(run_dir: Path) -> dict:
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if "eval/loss" in x][-1]


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "final" / "model.safetensors"))


def test_dpo_starts_at_log2_then_learns_the_preference(tmp_path):
    """Step 1: the policy is the reference, so h = 0 for every pair and the loss is -log σ(0) = log 2 with
    zero rewards, and no pair is a win: the cached reference log-probs came from another batch layout, so the
    margins are float noise, which rewards/accuracies counts as ties (it logged 0.25 when it counted margin > 0).
    After 30 steps the chosen answers are preferred on held-out pairs too."""
    run = train(cfg_for(tmp_path, pairs_file(tmp_path / "p.jsonl"), "a", max_steps=30))
    rows = train_rows(run)
    assert rows[0]["train/loss"] == pytest.approx(LOG2, abs=1e-5)
    assert rows[0]["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert rows[0]["rewards/accuracies"] == 0.0
    assert {"rewards/chosen", "rewards/rejected", "rewards/accuracies", "logps/chosen", "logps/rejected",
            "train/grad_norm", "train/lr"} <= rows[0].keys()
    late = rows[-10:]
    assert sum(r["rewards/margins"] for r in late) / len(late) > 0.1
    assert sum(r["train/loss"] for r in late) / len(late) < LOG2 - 0.05
    held_out = eval_row(run)
    assert held_out["eval/rewards/margins"] > 0 and held_out["eval/loss"] < LOG2
    assert held_out["eval/rewards/accuracies"] >= 0.75
    assert (run / REFERENCE_CACHE).is_file() and (run / "final" / "model.safetensors").is_file()


def test_step_1_accuracy_is_0_despite_float_noise(tmp_path):
    """Two rows per pair (no prompt sharing) against reference log-probs cached from length-sorted batches: at
    step 1 the policy is the reference, but its margins are float32 rounding (~1e-7 here), and `margin > 0`
    counted a quarter of them as wins (0.25). With the tie tolerance (losses/preference.py::TIE_RTOL) none is."""
    cfg = cfg_for(tmp_path, pairs_file(tmp_path / "p.jsonl", n=64), "noise", max_steps=1)
    cfg.data.share_prompt = False
    first = train_rows(train(cfg))[0]
    assert first["rewards/margins"] == pytest.approx(0.0, abs=1e-5)
    assert first["rewards/accuracies"] == 0.0


def test_online_reference_is_exactly_the_policy_at_start_and_trains_like_precompute(tmp_path):
    """With a frozen copy run on the same batch, step 1's rewards are exactly 0: loss log 2, and no pair
    counts as correct (a tie is not a win). The same steps with precomputed reference log-probs give the
    same weights (up to float noise: the precompute pass batches the pairs differently)."""
    data = pairs_file(tmp_path / "p.jsonl")
    online = train(cfg_for(tmp_path, data, "online", PreferenceConfig(reference="online")))
    first = train_rows(online)[0]
    assert first["rewards/chosen"] == 0.0 and first["rewards/margins"] == 0.0
    assert first["rewards/accuracies"] == 0.0
    assert first["train/loss"] == pytest.approx(LOG2, abs=1e-7)
    assert not (online / REFERENCE_CACHE).exists()
    pre = final_weights(train(cfg_for(tmp_path, data, "pre")))
    for name, value in final_weights(online).items():
        # Adam turns float noise in a near-zero gradient into up to lr-sized steps: a few 1e-5 differences
        torch.testing.assert_close(value, pre[name], atol=1e-4, rtol=1e-4)


def test_reference_logps_are_computed_once_and_reused_on_resume(tmp_path, caplog):
    """The cache is written before the first step; resuming from step 2 reads it (no second pass, file
    untouched) and ends at the same weights as the uninterrupted run."""
    cfg = cfg_for(tmp_path, pairs_file(tmp_path / "p.jsonl"), "r", max_steps=4)
    cfg.run.save_every = 2
    with caplog.at_level(logging.INFO, logger="posttrain.recipes.dpo"):
        run = train(cfg)
    assert "reference log-probs: computed for 40 pairs" in caplog.text
    cache = run / REFERENCE_CACHE
    stamp, uninterrupted = cache.stat().st_mtime_ns, final_weights(run)
    caplog.clear()
    cfg.run.resume_from = str(run / "checkpoints" / "step-2")
    with caplog.at_level(logging.INFO, logger="posttrain.recipes.dpo"):
        train(cfg)
    assert "reference log-probs: reused" in caplog.text and "computed" not in caplog.text
    assert cache.stat().st_mtime_ns == stamp
    for name, value in final_weights(run).items():
        assert torch.equal(value, uninterrupted[name]), name


@pytest.mark.parametrize(
    "dpo, first_loss",
    [
        # IPO: h = 0 at the start, so the loss is (0 - 1/(2·0.1))² = 5² = 25
        (PreferenceConfig(loss="ipo", beta=0.1), 25.0),
        # cDPO: -(1-ε) log σ(0) - ε log σ(0) = log 2 whatever ε
        (PreferenceConfig(label_smoothing=0.2), LOG2),
        # SimPO depends on the policy's log-probs alone; checked finite only
        (PreferenceConfig(loss="simpo", beta=2.0), None),
        # RPO: log 2 plus the coefficient times the logged per-pair NLL (checked below)
        (PreferenceConfig(nll_coef=0.5), None),
    ],
    ids=["ipo", "cdpo", "simpo", "rpo"],
)
def test_variants_start_where_the_math_says_and_stay_finite(tmp_path, dpo, first_loss):
    run = train(cfg_for(tmp_path, pairs_file(tmp_path / "p.jsonl", n=24), "v", dpo, max_steps=3))
    rows = train_rows(run)
    assert len(rows) == 3 and all(math.isfinite(r["train/loss"]) for r in rows)
    if first_loss is not None:
        assert rows[0]["train/loss"] == pytest.approx(first_loss, rel=1e-5)
    if dpo.nll_coef:
        assert rows[0]["nll_loss"] > 0
        assert rows[0]["train/loss"] == pytest.approx(LOG2 + 0.5 * rows[0]["nll_loss"], rel=1e-5)
    if dpo.loss == "simpo":
        assert not (run / REFERENCE_CACHE).exists()
        assert rows[0]["rewards/chosen"] == pytest.approx(2.0 * rows[0]["logps/chosen"], rel=1e-5)


def test_lora_reference_is_the_base_model_and_final_merges(tmp_path, tiny_dir):
    """With adapters that are not zero, the reference (adapters off) still scores pairs exactly like a
    separately loaded base model, while the adapted policy does not. The run's final/ is a plain model."""
    from posttrain.data.load import load_records
    from posttrain.data.preference import PREFERENCE_KINDS, pair_batch, tokenize_preferences
    from posttrain.models.load import load_model
    from posttrain.models.logprobs import pair_logps
    from posttrain.models.reference import Reference

    data = pairs_file(tmp_path / "p.jsonl", n=8)
    policy, tok = load_model(ModelConfig(name="tiny", lora_r=4))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.1)
    examples = tokenize_preferences(load_records(str(data), accept=PREFERENCE_KINDS), tok,
                                    PreferenceDataConfig(train=str(data)), source="p")
    batch = pair_batch(examples, list(range(8)), tok.pad_token_id, torch.device("cpu"))
    ref_chosen, ref_rejected, _ = Reference(policy, keep_copy=False)(lambda m: pair_logps(m, batch, average=False))
    with torch.no_grad():
        base = AutoModelForCausalLM.from_pretrained(tiny_dir).eval()
        base_chosen, base_rejected, _ = pair_logps(base, batch, average=False)
        lora_chosen, _, _ = pair_logps(policy.eval(), batch, average=False)
    torch.testing.assert_close(ref_chosen, base_chosen)
    torch.testing.assert_close(ref_rejected, base_rejected)
    assert (lora_chosen - base_chosen).abs().max() > 1e-2

    run = train(cfg_for(tmp_path, data, "lora", lora_r=4, lr=5e-3))
    assert train_rows(run)[0]["train/loss"] == pytest.approx(LOG2, abs=1e-5)  # LoRA starts as the base
    merged = AutoModelForCausalLM.from_pretrained(run / "final")
    assert type(merged).__name__ == "LlamaForCausalLM"
    assert not torch.equal(merged.model.layers[0].mlp.up_proj.weight, base.model.layers[0].mlp.up_proj.weight)


def test_accumulated_gradient_equals_the_full_batch_gradient(tmp_path, tiny_dir):
    """One step's gradient is the same for 8 pairs as 1x8 or 4x2, DPO and RPO terms together, because each
    pair's loss is summed and divided by the step's pair count. RPO's NLL as a token mean over each
    micro-batch (the NLL's token mean over the whole micro-batch) would make the gradient depend on the split."""
    from functools import partial

    from posttrain.data.load import load_records
    from posttrain.data.preference import PREFERENCE_KINDS, pair_batch, tokenize_preferences
    from posttrain.models.attention import pair_layout
    from posttrain.models.load import load_tokenizer
    from posttrain.models.logprobs import pair_logps, response_logps
    from posttrain.models.reference import Reference
    from posttrain.recipes.dpo import preference_step_loss
    from posttrain.training.distributed import Dist
    from posttrain.training.loop import DataOrder, accumulate

    data = pairs_file(tmp_path / "p.jsonl", n=16)
    tok = load_tokenizer("tiny")
    examples = tokenize_preferences(load_records(str(data), accept=PREFERENCE_KINDS), tok,
                                    PreferenceDataConfig(train=str(data)), source="p")
    d = Dist(0, 1, 0, torch.device("cpu"))
    pref = PreferenceConfig(nll_coef=1.0)
    model = AutoModelForCausalLM.from_pretrained(tiny_dir)
    reference = Reference(AutoModelForCausalLM.from_pretrained(tiny_dir), keep_copy=False)
    with torch.no_grad():  # move the policy off the reference so that h != 0
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))

    def token_mean_nll_step_loss(model, batch):
        loss_sum, sums = preference_step_loss(PreferenceConfig(), model, batch)
        token_logps, chosen_mask, _ = response_logps(model, batch)  # (B, N)
        token_mean_nll = -(token_logps * chosen_mask).sum() / chosen_mask.sum()  # over the micro-batch's tokens
        return loss_sum + token_mean_nll * batch.count, sums

    def grads(micro_size: int, accum: int, step_loss) -> torch.Tensor:
        model.zero_grad()
        micro = []
        for b in DataOrder([len(e) for e in examples], micro_size, accum, seed=0, bucket=False).step_batches(0):
            m = pair_batch(examples, b, tok.pad_token_id, d.device, pair_layout(model, share_prompt=True))
            m.ref_chosen_logps, m.ref_rejected_logps, _ = reference(lambda r: pair_logps(r, m, average=False))
            micro.append(m)
        accumulate(model, micro, step_loss, d)
        return torch.cat([p.grad.flatten() for p in model.parameters()])

    rpo = partial(preference_step_loss, pref)
    full = grads(8, 1, rpo)
    torch.testing.assert_close(grads(2, 4, rpo), full, atol=1e-6, rtol=1e-5)
    naive_full = grads(8, 1, token_mean_nll_step_loss)
    assert not torch.allclose(grads(2, 4, token_mean_nll_step_loss), naive_full, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"label_smoothing": 0.1, "loss": "ipo"}, "only applies with --dpo.loss dpo"),
        ({"label_smoothing": 0.5}, r"must be in \[0, 0.5\)"),
        ({"loss": "simpo"}, "pass --dpo.beta 2.0"),
        ({"loss": "simpo", "beta": 2.0, "reference": "online"}, "SimPO uses no reference"),
        ({"simpo_gamma_beta_ratio": 1.0}, "only applies with --dpo.loss simpo"),
        ({"beta": 0.0}, "dpo.beta=0.0: must be > 0"),
        ({"nll_coef": -1.0}, "dpo.nll_coef"),
    ],
)
def test_bad_preference_settings_are_refused_with_the_rule(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        PreferenceConfig(**kwargs)


@pytest.mark.parametrize("argv, message", [
    (["--dpo.simpo-gamma-beta-ratio", "0.5"], "dpo.simpo_gamma_beta_ratio: only applies with --dpo.loss simpo (not dpo)"),
    (["--dpo.loss", "ipo", "--dpo.label-smoothing", "0"], "dpo.label_smoothing: only applies with --dpo.loss dpo (not ipo)"),
])
def test_an_option_of_another_loss_is_refused_even_at_its_default(argv, message, tmp_path, capsys):
    """Given on the command line with a loss that does not read it, at its default value too (which the value
    checks cannot see); from Python (no `given`) the value checks alone apply."""
    from posttrain.cli import main

    assert main(["dpo", *argv, "--run.output-dir", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err and not any(tmp_path.iterdir())


def test_bad_data_settings_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="data.packing"):
        PreferenceDataConfig(train="p.jsonl", packing=True)
    with pytest.raises(ConfigError, match="data.train is empty"):
        train(DPOConfig(data=PreferenceDataConfig(train=""), run=RunConfig(output_dir=str(tmp_path), progress=False)))
    rows = [{"prompt": "What is 1 + 1?", "chosen": "2", "rejected": "3"}] * 2
    rows.append({"prompt": "What is " + " + ".join(["1"] * 60) + "?", "chosen": "60", "rejected": "61"})
    data = tmp_path / "long.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]) + "\n" + json.dumps(rows[2]) + "\n")
    # the third row stands on line 4, after a blank line: the error names the line
    with pytest.raises(DataError, match=r"long\.jsonl:4: \d+ tokens, more than data.max_length=64"):
        train(cfg_for(tmp_path, data, "long"))
    assert not (tmp_path / "long").exists() and not (tmp_path / "dpo").exists()


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_shared_prompt_rows_give_the_two_row_log_probs_and_gradients(tmp_path, tiny_dir, attention):
    """Prefix sharing (one row [prompt, chosen, rejected] per pair, arXiv:2410.20305) is exact: per-pair
    log-probs and the gradient of the DPO loss equal those of two padded rows per pair, with prompts of
    different lengths in one batch, for sdpa's bool mask and eager's additive one, with the LM head run
    only from the last prompt token (logits_to_keep) and on every position. A mask that let rejected
    tokens see the chosen ones would change the rejected log-probs."""
    from posttrain.data.load import load_records
    from posttrain.data.preference import PREFERENCE_KINDS, PairLayout, pair_batch, tokenize_preferences
    from posttrain.models.attention import pair_layout
    from posttrain.models.load import load_tokenizer
    from posttrain.models.logprobs import pair_logps

    rows = [{"prompt": "What is 1 + 2?", "chosen": "3", "rejected": "It is surely a rather big number"},
            {"prompt": "Please tell me, what is 12 + 30 in digits?", "chosen": "The sum is 42.", "rejected": "41"},
            {"prompt": "Say hi", "chosen": "hi", "rejected": "no"}]
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tok = load_tokenizer("tiny")
    examples = tokenize_preferences(load_records(str(data), accept=PREFERENCE_KINDS), tok,
                                    PreferenceDataConfig(train=str(data)), source="p")
    model = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation=attention).eval()
    auto = pair_layout(model, share_prompt=True)
    assert auto.share_prompt and auto.trim_logits and (auto.mask_dtype == torch.bool) == (attention == "sdpa")
    assert auto.last_layer and pair_batch(examples, [0, 1], tok.pad_token_id, torch.device("cpu"), auto).positions \
        is not None  # the last decoder layer at the response positions only (models/last_layer.py)
    assert not pair_layout(model, share_prompt=False).share_prompt

    def logps_and_grad(layout: PairLayout) -> tuple[torch.Tensor, ...]:
        model.zero_grad()
        batch = pair_batch(examples, [0, 1, 2], tok.pad_token_id, torch.device("cpu"), layout)
        chosen, rejected, chosen_mean = pair_logps(model, batch, average=False)
        (chosen - 2 * rejected).sum().backward()
        grad = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return chosen.detach(), rejected.detach(), chosen_mean.detach(), grad

    two_rows = logps_and_grad(PairLayout())
    for layout in (auto, PairLayout(True, auto.mask_dtype, True), PairLayout(True, auto.mask_dtype, False),
                   PairLayout(False, torch.bool, True)):
        for got, want in zip(logps_and_grad(layout), two_rows):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    # the shared rows really are shorter: each prompt is in the batch once
    shared = pair_batch(examples, [0, 1, 2], tok.pad_token_id, torch.device("cpu"), auto)
    assert shared.inputs["input_ids"].numel() < pair_batch(
        examples, [0, 1, 2], tok.pad_token_id, torch.device("cpu")).inputs["input_ids"].numel()


def test_the_embedded_default_trains_on_the_builtin_pairs(tmp_path, capsys):
    """`posttrain dpo` with no data option trains on builtin:arithmetic-pairs and holds out its own split."""
    from posttrain.cli import main

    assert main(["dpo", "--optim.max-steps", "3", "--data.limit", "48", "--run.output-dir", str(tmp_path)]) == 0
    lineage = json.loads((tmp_path / "dpo" / "lineage.json").read_text())
    assert json.dumps(lineage).count("builtin:arithmetic-pairs") >= 2  # the training source and its held-out split
    assert "held-out implicit-reward accuracy" in capsys.readouterr().out
