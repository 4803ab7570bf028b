"""The vLLM sampler against the built-in one on the scrambled tiny model (tests/sampling/test_sampler.py's: greedy
outputs that depend on every token of context, no argmax ties), one engine for the module.

Run by scripts/test-vllm.sh in .venv-vllm (vLLM's CPU build); skipped where vLLM is not installed. At float32 on
CPU greedy completions are equal token for token and log-probs agree within LOGP_TOL (seen: ~2e-6)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: scripts/test-vllm.sh runs this tier in .venv-vllm")

from posttrain.config import ModelConfig  # noqa: E402
from posttrain.errors import DataError  # noqa: E402
from posttrain.models.lora import apply_lora  # noqa: E402
from posttrain.sampling.sampler import ModelSampler, SamplingParams  # noqa: E402
from posttrain.sampling.vllm_sampler import VLLMSampler  # noqa: E402

LOGP_TOL = 1e-4
PROMPTS = ["What is 12 + 7?", "hello", "The capital of france is paris. Yes it is", "1", "abc abc abc"]


def scrambled(model_dir, seed: int = 0):
    """The tiny model with weights re-drawn: embeddings N(0, 0.3), other matrices N(0, 0.1)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * (0.3 if "embed" in name else 0.1))
    return model.eval()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from posttrain.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def model(model_dir):
    return scrambled(model_dir)


@pytest.fixture(scope="module")
def engine(model_dir, tokenizer, model):
    """One engine for the module, started on the unscrambled directory: every test pushes the weights it needs."""
    return VLLMSampler(model_dir, tokenizer, "float32", max_model_len=128)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


def greedy(max_new_tokens=16, **kw):
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, **kw)


def assert_same_rollout(a, b):
    assert a.completion_ids == b.completion_ids
    assert a.texts == b.texts and a.finish_reasons == b.finish_reasons
    assert a.prompt_ids == b.prompt_ids and a.group == b.group
    for x, y in zip(a.logps, b.logps):
        assert x.dtype == torch.float32 and x.shape == y.shape
        torch.testing.assert_close(x, y, atol=LOGP_TOL, rtol=0)


def teacher_forced_logps(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    """log_softmax at temperature 1 of the completion's tokens under one full forward: (len(completion),)."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def test_greedy_equals_the_builtin_sampler(engine, model, tokenizer, prompts):
    engine.load_weights(model)
    ours = ModelSampler(model, tokenizer).sample(prompts, 2, greedy())
    theirs = engine.sample(prompts, 2, greedy())
    assert_same_rollout(theirs, ours)
    assert len({tuple(c) for c in theirs.completion_ids}) > 2  # the completions differ by prompt
    assert set(theirs.finish_reasons) == {"length"}


def test_eos_and_stop_strings_end_completions_as_the_builtin_sampler_does(engine, model, tokenizer, prompts):
    """An end token is kept as the last token ("eos"); after a stop string the tokens stay and the text is cut
    ("stop"). The end id is one the greedy completions produce, so both reasons occur."""
    engine.load_weights(model)
    builtin = ModelSampler(model, tokenizer)
    free = builtin.sample(prompts, 1, greedy())
    eos = free.completion_ids[0][3]
    stop = tokenizer.decode(free.completion_ids[1][2:4])
    builtin.eos_token_ids, engine.eos_token_ids = [eos], [eos]
    try:
        params = greedy(stop=(stop,))
        ours, theirs = builtin.sample(prompts, 1, params), engine.sample(prompts, 1, params)
    finally:
        engine.eos_token_ids = builtin.eos_token_ids = [tokenizer.eos_token_id]
    assert_same_rollout(theirs, ours)
    assert {"eos", "stop"} <= set(theirs.finish_reasons)
    assert theirs.completion_ids[0][-1] == eos and stop not in theirs.texts[1]


def test_sampled_log_probs_are_the_raw_softmax_whatever_the_filters(engine, model, prompts):
    """At temperature 0.7 with top-k 5, top-p 0.9 and min-p 0.05, each log-prob is still log_softmax(logits) at
    temperature 1 (the old policy's), and every drawn token is one the filters keep: among the top 5."""
    engine.load_weights(model)
    params = SamplingParams(max_new_tokens=10, temperature=0.7, top_k=5, top_p=0.9, min_p=0.05, seed=3)
    rollout = engine.sample(prompts, 3, params)
    for prompt, completion, logps in zip(rollout.prompt_ids, rollout.completion_ids, rollout.logps):
        torch.testing.assert_close(logps, teacher_forced_logps(model, prompt, completion), atol=LOGP_TOL, rtol=0)
        ids = torch.tensor([prompt + completion])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1]
        kth = logits.topk(5, -1).values[:, -1]
        assert (logits.gather(-1, torch.tensor(completion)[:, None]).squeeze(-1) >= kth).all()


def test_top_k_one_is_greedy(engine, model, prompts):
    engine.load_weights(model)
    assert engine.sample(prompts, 2, SamplingParams(max_new_tokens=8, top_k=1, seed=0)).completion_ids == \
        engine.sample(prompts, 2, greedy(8)).completion_ids


def test_per_prompt_seeds_do_not_depend_on_the_other_prompts(engine, model, prompts):
    """Seeded, a prompt's samples are the same alone, in another order, and again; its n samples differ."""
    engine.load_weights(model)
    params = SamplingParams(max_new_tokens=10, temperature=1.0)
    seeds = [11, 12, 13, 14, 15]
    full = engine.sample(prompts, 3, params, seeds=seeds)
    alone = engine.sample([prompts[2]], 3, params, seeds=[13])
    reordered = engine.sample(prompts[::-1], 3, params, seeds=seeds[::-1])
    assert alone.completion_ids == full.completion_ids[6:9]
    assert reordered.completion_ids[6:9] == full.completion_ids[6:9]
    assert engine.sample(prompts, 3, params, seeds=seeds).completion_ids == full.completion_ids
    assert len({tuple(c) for c in full.completion_ids[:3]}) == 3
    # neighbouring seeds give unrelated streams (vLLM seeds sample j with seed + j: ours are spread apart)
    assert full.completion_ids[3] != full.completion_ids[1]
    with pytest.raises(ValueError, match="one per prompt"):
        engine.sample(prompts, 1, params, seeds=[1])
    with pytest.raises(DataError, match="no tokens"):
        engine.sample([[]], 1, params)


def test_a_seeded_call_past_one_engine_step_of_prompt_tokens_samples(engine, model, prompts):
    """RL's shape: more prompt tokens in one call than the engine schedules in a step (its 4096-token budget), with
    per-prompt seeds. With chunked prefill a prompt split across two steps has its CPU generator rewound, which
    torch's CPU generators refuse (vllm_sampler.py turns chunked prefill off on CPU)."""
    engine.load_weights(model)
    long_prompt = (prompts[2] * 8)[:100]  # 100 tokens
    batch = [long_prompt] * 48  # x 1 sample = 4800 prompt tokens > 4096
    params = SamplingParams(max_new_tokens=2, temperature=1.0)
    rollout = engine.sample(batch, 1, params, seeds=list(range(48)))
    assert len(rollout) == 48 and all(len(c) >= 1 for c in rollout.completion_ids)
    assert engine.sample(batch, 1, params, seeds=list(range(48))).completion_ids == rollout.completion_ids


def test_load_weights_makes_the_engine_sample_the_new_weights(engine, model_dir, tokenizer, prompts):
    """Other weights pushed without a restart: the engine's greedy completions and log-probs are then those of
    the new model, not the old one's (which differ)."""
    other = scrambled(model_dir, seed=1)
    engine.load_weights(other)
    theirs = engine.sample(prompts, 1, greedy())
    assert_same_rollout(theirs, ModelSampler(other, tokenizer).sample(prompts, 1, greedy()))
    assert theirs.completion_ids != ModelSampler(scrambled(model_dir), tokenizer).sample(prompts, 1, greedy()
                                                                                          ).completion_ids


def test_lora_weights_reach_the_engine_merged(engine, model_dir, tokenizer, prompts):
    """A LoRA policy whose adapters are not zero: the engine holds W + (alpha/r) B A, so it samples what the
    adapted policy samples (log-probs within LOGP_TOL: the merged weights round differently)."""
    policy = apply_lora(scrambled(model_dir), ModelConfig(lora_r=4, lora_alpha=8))
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=generator) * 0.2)
    policy.eval()
    engine.load_weights(policy)
    ours = ModelSampler(policy, tokenizer).sample(prompts, 1, greedy())
    assert_same_rollout(engine.sample(prompts, 1, greedy()), ours)
    assert ours.completion_ids != ModelSampler(scrambled(model_dir), tokenizer).sample(prompts, 1, greedy()
                                                                                        ).completion_ids
    assert any("lora_A" in name for name, _ in policy.named_parameters())  # the policy keeps its adapters
