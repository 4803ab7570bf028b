"""The sampler against transformers' own `generate` and against teacher-forced log-probs.

The tiny model at random init only ever repeats its last token under greedy decoding, which
a sampler with wrong positions or masks would reproduce just as well. The tests therefore
re-draw its weights with a larger scale (`scrambled`): greedy outputs then vary with every
token of context, and distributions are peaked enough (top log-prob around -1) that argmax
ties do not occur.
"""

from __future__ import annotations

import math

import pytest
import torch

from posttrain.data.records import Message
from posttrain.errors import ConfigError, DataError
from posttrain.sampling import sampler as sampler_module
from posttrain.sampling.sampler import (
    MIN_SHARED_PREFIX,
    ModelSampler,
    SamplingParams,
    choose_tokens,
    filter_logits,
    left_pad,
    sample_messages,
    shared_prefix_length,
)

PROMPTS = ["What is 12 + 7?", "hello", "The capital of france is paris. Yes it is", "1"]
SYSTEM = "You are a careful assistant. Answer in one line. "  # a prefix every prompt shares, as a system prompt


def scrambled(model_dir):
    """The tiny model with weights re-drawn: embeddings N(0, 0.3), other matrices N(0, 0.1)."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=generator) * (0.3 if "embed" in name else 0.1))
    return model.eval()


def greedy(max_new_tokens=12, **kw):
    return SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0, **kw)


def hf_generate(model, tokenizer, prompts, max_new_tokens):
    """transformers' greedy completions, each cut after its first eos (generate pads finished rows)."""
    input_ids, attention_mask = left_pad(prompts, tokenizer.pad_token_id, torch.device("cpu"))
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, do_sample=False, max_new_tokens=max_new_tokens
    )
    eos = model.generation_config.eos_token_id
    completions = []
    for row in out[:, input_ids.shape[1] :].tolist():
        completions.append(row[: row.index(eos) + 1] if eos in row else row)
    return completions


def cut_after(ids, token):
    return ids[: ids.index(token) + 1] if token in ids else ids


# ---------------------------------------------------------------------------------------------
# Math tier: parameters, filtering, token choice.


@pytest.mark.parametrize(
    "kw", [{"max_new_tokens": 0}, {"temperature": -0.1}, {"top_p": 0.0}, {"top_p": 1.5}, {"top_k": -1}, {"stop": ("",)}]
)
def test_sampling_params_reject_bad_values(kw):
    with pytest.raises(ConfigError, match=next(iter(kw))):
        SamplingParams(**kw)


def test_sampling_params_stop_list_becomes_tuple():
    assert SamplingParams(stop=["\n", "###"]).stop == ("\n", "###")


def test_filter_logits_top_k_and_top_p():
    """probs [.5, .3, .15, .05]. top_k=3 drops token 3. top_p=0.7: mass before each token is
    [0, .5, .8, .95], kept while < 0.7 -> tokens {0, 1}. top_p=0.85 -> {0, 1, 2}. top_k=2 then
    top_p=0.9: renormalized [.625, .375], mass before [0, .625] -> both kept."""
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = lambda **kw: torch.isfinite(filter_logits(logits, **kw))[0].tolist()  # noqa: E731
    assert kept(top_k=3) == [True, True, True, False]
    assert kept(top_k=1) == [True, False, False, False]
    assert kept(top_p=0.7) == [True, True, False, False]
    assert kept(top_p=0.85) == [True, True, True, False]
    assert kept(top_k=2, top_p=0.9) == [True, True, False, False]
    assert kept(top_p=0.01) == [True, False, False, False]
    assert kept() == [True] * 4


def test_choose_tokens_frequencies_and_raw_logps():
    """probs p = [.5, .3, .15, .05]. temperature 0.5 samples from p^2 / sum(p^2) =
    [.25, .09, .0225, .0025] / .365 = [.685, .247, .062, .007]; top_k=2 at temperature 1 from
    [.625, .375, 0, 0]. The returned logps are always log p (temperature 1, unfiltered)."""
    p = torch.tensor([0.5, 0.3, 0.15, 0.05])
    logits = p.log().expand(40_000, 4)
    generator = torch.Generator().manual_seed(0)
    for params, expected in [
        (SamplingParams(temperature=0.5), [0.685, 0.247, 0.062, 0.007]),
        (SamplingParams(top_k=2), [0.625, 0.375, 0.0, 0.0]),
    ]:
        tokens, logps = choose_tokens(logits, params, generator)
        freq = torch.bincount(tokens, minlength=4).float() / len(tokens)
        assert torch.allclose(freq, torch.tensor(expected), atol=0.01), freq
        assert torch.allclose(logps, p.log()[tokens])


def test_left_pad():
    input_ids, attention_mask = left_pad([[5, 6, 7], [8]], pad_token_id=0, device=torch.device("cpu"))
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


# ---------------------------------------------------------------------------------------------
# Recipe tier: the tiny model.


def test_greedy_matches_generate(model, tokenizer, prompts):
    assert len({len(p) for p in prompts}) == len(prompts)  # different lengths: left padding is exercised
    rollout = ModelSampler(model, tokenizer).sample(prompts, 1, greedy(12))
    assert rollout.completion_ids == hf_generate(model, tokenizer, prompts, 12)
    assert all(len(ids) == 12 for ids in rollout.completion_ids)  # eos is never the greedy choice here
    assert rollout.finish_reasons == ["length"] * len(prompts)
    assert len({tuple(ids) for ids in rollout.completion_ids}) == len(prompts)
    assert rollout.texts == tokenizer.batch_decode(rollout.completion_ids, skip_special_tokens=True)


@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=10, seed=1), greedy(10), SamplingParams(
    max_new_tokens=10, temperature=0.7, top_k=20, top_p=0.9, seed=2)])
@pytest.mark.parametrize("system", ["", SYSTEM])
def test_logps_equal_teacher_forcing(model, tokenizer, prompts, params, system):
    """Whatever the sampling settings, logps[t] = log_softmax(logits at temperature 1)[token t], with prompts
    that share a prefix (encoded once) or not: RL takes them as the old policy's log-probs."""
    if system:
        prompts = [tokenizer(system + p)["input_ids"] for p in PROMPTS]
        assert shared_prefix_length(prompts) >= MIN_SHARED_PREFIX
    rollout = ModelSampler(model, tokenizer).sample(prompts, 2, params)
    for prompt, completion, logps in zip(rollout.prompt_ids, rollout.completion_ids, rollout.logps):
        assert logps.shape == (len(completion),) and logps.dtype == torch.float32
        with torch.no_grad():
            logits = model(torch.tensor([prompt + completion])).logits[0]  # (T, V)
        positions = torch.arange(len(prompt) - 1, len(prompt) + len(completion) - 1)
        expected = torch.log_softmax(logits.float(), -1)[positions, torch.tensor(completion)]
        torch.testing.assert_close(logps, expected, atol=1e-4, rtol=0)


def test_seeded_sampling_is_reproducible(model, tokenizer, prompts):
    sampler = ModelSampler(model, tokenizer)
    params = SamplingParams(max_new_tokens=10, seed=7)
    torch.manual_seed(1)
    first = sampler.sample(prompts, 2, params)
    torch.manual_seed(2)  # the global generator does not matter when a seed is set
    again = sampler.sample(prompts, 2, params)
    other = sampler.sample(prompts, 2, SamplingParams(max_new_tokens=10, seed=8))
    assert first.completion_ids == again.completion_ids
    assert first.completion_ids != other.completion_ids
    torch.manual_seed(3)
    unseeded = sampler.sample(prompts, 2, SamplingParams(max_new_tokens=10))
    torch.manual_seed(3)
    assert sampler.sample(prompts, 2, SamplingParams(max_new_tokens=10)).completion_ids == unseeded.completion_ids


def test_top_k_one_and_tiny_top_p_equal_greedy(model, tokenizer, prompts):
    sampler = ModelSampler(model, tokenizer)
    expected = sampler.sample(prompts, 1, greedy(10)).completion_ids
    assert sampler.sample(prompts, 1, SamplingParams(max_new_tokens=10, top_k=1, seed=0)).completion_ids == expected
    assert sampler.sample(prompts, 1, SamplingParams(max_new_tokens=10, top_p=1e-6, seed=0)).completion_ids == expected


def test_eos_ends_rows_and_pad_equal_to_eos(model_dir, prompts):
    """Make a token the greedy run emits at step 4 of prompt 0 both eos and pad (as in SmolLM2),
    and put it inside a prompt too. Each completion is then the unforced greedy completion cut
    after that token's first occurrence, finishing "eos" where it occurs and "length" elsewhere."""
    from transformers import AutoTokenizer

    model, tokenizer = scrambled(model_dir), AutoTokenizer.from_pretrained(model_dir)
    plain = ModelSampler(model, tokenizer).sample(prompts, 1, greedy(12)).completion_ids
    eos = plain[0][3]
    tokenizer.pad_token = tokenizer.convert_ids_to_tokens(eos)
    model.generation_config.eos_token_id = model.generation_config.pad_token_id = eos
    prompts = prompts[:-1] + [[eos] + prompts[-1]]  # a real prompt token equal to pad must not be masked
    plain = ModelSampler(model, tokenizer).sample(prompts, 1, greedy(12)).completion_ids
    rollout = ModelSampler(model, tokenizer).sample(prompts, 1, greedy(12))
    assert rollout.completion_ids == [cut_after(ids, eos) for ids in plain]
    assert rollout.finish_reasons == ["eos" if eos in ids else "length" for ids in plain]
    assert rollout.finish_reasons[0] == "eos" and "length" in rollout.finish_reasons
    assert rollout.completion_ids == hf_generate(model, tokenizer, prompts, 12)
    assert all(math.isfinite(v) for logps in rollout.logps for v in logps.tolist())


def test_finished_rows_leave_the_batch(model_dir, prompts):
    """Decode forward k runs only the rows still going: those whose completion is longer than k."""
    from transformers import AutoTokenizer

    model, tokenizer = scrambled(model_dir), AutoTokenizer.from_pretrained(model_dir)
    model.generation_config.eos_token_id = ModelSampler(model, tokenizer).sample(prompts, 1, greedy(12)).completion_ids[1][2]
    batch_sizes = []
    model.register_forward_pre_hook(lambda m, args, kw: batch_sizes.append(kw["input_ids"].shape[0]), with_kwargs=True)
    rollout = ModelSampler(model, tokenizer).sample(prompts, 2, greedy(12))
    lengths = [len(ids) for ids in rollout.completion_ids]
    still_going = [sum(n > k for n in lengths) for k in range(1, 12)]
    assert batch_sizes == [len(prompts)] + [b for b in still_going if b > 0]  # one prefill per prompt, not per sample
    assert min(lengths) < max(lengths) == 12


def test_stop_strings(model, tokenizer, prompts):
    """The completion ends at the first token whose prefix decodes to text containing the stop
    string; the text is cut before the stop string."""
    sampler = ModelSampler(model, tokenizer)
    plain = sampler.sample(prompts, 1, greedy(12))
    stop = plain.texts[0][4:6]
    rollout = sampler.sample(prompts, 1, greedy(12, stop=(stop, "never-appears")))
    for ids, text, completion, reason in zip(plain.completion_ids, plain.texts, rollout.completion_ids, rollout.finish_reasons):
        prefixes = [ids[:k] for k in range(1, len(ids) + 1) if stop in tokenizer.decode(ids[:k], skip_special_tokens=True)]
        assert completion == (prefixes[0] if prefixes else ids)
        assert reason == ("stop" if prefixes else "length")
    assert rollout.finish_reasons[0] == "stop"
    assert rollout.texts[0] == plain.texts[0][: plain.texts[0].index(stop)]
    assert len(rollout.completion_ids[0]) < 12


def test_length_finish_reason(model, tokenizer, prompts):
    rollout = ModelSampler(model, tokenizer).sample(prompts, 2, SamplingParams(max_new_tokens=5, seed=0))
    assert [len(ids) for ids in rollout.completion_ids] == [5] * 8
    assert rollout.finish_reasons == ["length"] * 8


def test_groups_share_their_prompt(model, tokenizer, prompts):
    sampler = ModelSampler(model, tokenizer)
    rollout = sampler.sample(prompts, 3, greedy(8))
    assert len(rollout) == 12 and rollout.group == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert rollout.prompt_ids == [prompts[g] for g in rollout.group]
    for g in range(4):
        assert len({tuple(rollout.completion_ids[i]) for i in range(3 * g, 3 * g + 3)}) == 1
    sampled = sampler.sample(prompts, 3, SamplingParams(max_new_tokens=8, seed=0))
    for g in range(4):
        assert len({tuple(sampled.completion_ids[i]) for i in range(3 * g, 3 * g + 3)}) > 1


def test_chunking_does_not_change_greedy_results(model, tokenizer, prompts):
    """batch_size=2 with n=3 puts one prompt per chunk (a chunk holds whole groups)."""
    whole = ModelSampler(model, tokenizer, batch_size=64).sample(prompts, 3, greedy(8))
    chunked = ModelSampler(model, tokenizer, batch_size=2, progress=True).sample(prompts, 3, greedy(8))
    assert chunked.completion_ids == whole.completion_ids and chunked.group == whole.group
    for a, b in zip(chunked.logps, whole.logps):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=0)


def test_shared_prefix_length():
    prefix = list(range(10))
    assert shared_prefix_length([prefix + [50, 51], prefix + [60], prefix + [70, 71, 72]]) == 10
    assert shared_prefix_length([prefix + [50]]) == 0  # one prompt: nothing to share
    assert shared_prefix_length([prefix[:7] + [50], prefix[:7] + [60]]) == 0  # under MIN_SHARED_PREFIX
    assert shared_prefix_length([prefix, prefix + [60]]) == 9  # the first is all prefix: it keeps its last token
    assert shared_prefix_length([prefix, list(prefix)]) == 9
    assert shared_prefix_length([prefix + [50], [99] + prefix]) == 0


def forward_shapes(model, monkeypatch) -> list[tuple[int, ...]]:
    """The input_ids shape of every forward of `model` from now on."""
    shapes, forward = [], model.forward

    def spy(*args, **kwargs):
        shapes.append(tuple(kwargs["input_ids"].shape))
        return forward(*args, **kwargs)

    monkeypatch.setattr(model, "forward", spy)
    return shapes


@pytest.mark.parametrize("kv_cache", ["dynamic", "preallocated"])
@pytest.mark.parametrize("params", [greedy(10), SamplingParams(max_new_tokens=10, seed=3)])
def test_a_shared_prefix_is_encoded_once_with_the_same_results(model, tokenizer, monkeypatch, kv_cache, params):
    """Prompts that start alike (a system prompt) share one encoding of their common prefix; the rests have
    different lengths, so padding sits between prefix and rest. Completions and log-probs are those of the
    prefill over whole prompts, and of `generate`."""
    prompts = [tokenizer(SYSTEM + p)["input_ids"] for p in PROMPTS]
    shared = shared_prefix_length(prompts)
    assert shared >= MIN_SHARED_PREFIX and len({len(p) - shared for p in prompts}) > 1
    params = SamplingParams(**{**params.__dict__, "kv_cache": kv_cache})
    shapes = forward_shapes(model, monkeypatch)
    once = ModelSampler(model, tokenizer).sample(prompts, 2, params)
    longest_rest = max(len(p) for p in prompts) - shared
    assert shapes[:2] == [(1, shared), (len(prompts), longest_rest)]  # the prefix once, then the rests
    monkeypatch.setattr(sampler_module, "MIN_SHARED_PREFIX", 10**9)
    shapes.clear()
    whole = ModelSampler(model, tokenizer).sample(prompts, 2, params)
    assert shapes[0] == (len(prompts), max(len(p) for p in prompts))
    assert once.completion_ids == whole.completion_ids and once.finish_reasons == whole.finish_reasons
    for a, b in zip(once.logps, whole.logps):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    if params.temperature == 0.0:
        assert once.completion_ids[::2] == hf_generate(model, tokenizer, prompts, 10)
        assert len({tuple(ids) for ids in once.completion_ids[::2]}) == len(prompts)


def test_a_sliding_window_model_encodes_whole_prompts(tokenizer, monkeypatch):
    """A sliding window counts cache columns, padding included: such a model keeps the prefill over whole
    prompts (after one look at its cache), with the same results as without prefix sharing."""
    from transformers import MistralConfig, MistralForCausalLM

    torch.manual_seed(0)
    config = MistralConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                           num_attention_heads=4, num_key_value_heads=2, sliding_window=6,
                           pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    model = MistralForCausalLM(config).eval()
    prompts = [tokenizer(SYSTEM + p)["input_ids"] for p in PROMPTS]
    shared = shared_prefix_length(prompts)
    assert shared >= MIN_SHARED_PREFIX
    shapes = forward_shapes(model, monkeypatch)
    first = ModelSampler(model, tokenizer).sample(prompts, 1, greedy(8))
    assert shapes[:2] == [(1, shared), (len(prompts), max(len(p) for p in prompts))]
    monkeypatch.setattr(sampler_module, "MIN_SHARED_PREFIX", 10**9)
    assert ModelSampler(model, tokenizer).sample(prompts, 1, greedy(8)).completion_ids == first.completion_ids


def test_training_mode_is_restored(model, tokenizer, prompts):
    model.train()
    try:
        ModelSampler(model, tokenizer).sample(prompts[:1], 1, greedy(2))
        assert model.training
    finally:
        model.eval()


def test_bad_inputs(model, tokenizer, prompts):
    sampler = ModelSampler(model, tokenizer)
    with pytest.raises(DataError, match="prompt 1"):
        sampler.sample([prompts[0], []], 1, greedy(2))
    with pytest.raises(ConfigError, match="n=0"):
        sampler.sample(prompts, 0, greedy(2))
    assert len(sampler.sample([], 2, greedy(2))) == 0


def test_sample_messages_applies_the_chat_template(model, tokenizer):
    prompt = (Message("user", "What is 2 + 2?"),)
    rollout = sample_messages(ModelSampler(model, tokenizer), [prompt], tokenizer, 2, greedy(4))
    expected = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 + 2?"}], tokenize=False, add_generation_prompt=True)
    assert tokenizer.decode(rollout.prompt_ids[0]) == expected
    assert rollout.group == [0, 0]


# ---------------------------------------------------------------------------------------------
# Slow tier: a real model.


@pytest.mark.slow
def test_smollm2_greedy_matches_generate():
    from posttrain.config import ModelConfig
    from posttrain.data.tokenize import tokenize_prompt
    from posttrain.models.load import load_model

    model, tokenizer = load_model(ModelConfig(name="smollm2"), "cpu")
    questions = ["What is the capital of France?", "Name three colors.", "What is 2 + 3?"]
    prompts = [tokenize_prompt((Message("user", q),), tokenizer) for q in questions]
    rollout = ModelSampler(model, tokenizer).sample(prompts, 1, greedy(24))
    assert rollout.completion_ids == hf_generate(model, tokenizer, prompts, 24)
    assert "Paris" in rollout.texts[0]
    preallocated = ModelSampler(model, tokenizer).sample(prompts, 1, greedy(24, kv_cache="preallocated"))
    assert preallocated.completion_ids == rollout.completion_ids and preallocated.finish_reasons == rollout.finish_reasons
    for a, b in zip(preallocated.logps, rollout.logps):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_per_prompt_seeds_do_not_depend_on_the_other_prompts(model, tokenizer, prompts):
    """With seeds, a prompt's samples are the same alone, in another order and in another batch size: what lets
    each torchrun process sample its share of an RL step's prompts and draw what one process would."""
    params = SamplingParams(max_new_tokens=10, temperature=1.0, top_k=50, seed=0)
    seeds = [11, 22, 33, 44][: len(prompts)]
    together = ModelSampler(model, tokenizer, batch_size=64).sample(prompts, 3, params, seeds=seeds)
    order = list(reversed(range(len(prompts))))
    reordered = ModelSampler(model, tokenizer, batch_size=3).sample([prompts[i] for i in order], 3, params,
                                                                     seeds=[seeds[i] for i in order])
    for k, i in enumerate(order):
        assert reordered.completion_ids[3 * k : 3 * k + 3] == together.completion_ids[3 * i : 3 * i + 3]
        alone = ModelSampler(model, tokenizer).sample([prompts[i]], 3, params, seeds=[seeds[i]])
        assert alone.completion_ids == together.completion_ids[3 * i : 3 * i + 3]
    assert len({tuple(c) for c in together.completion_ids}) > len(prompts)  # the samples of a prompt differ
    other = ModelSampler(model, tokenizer).sample(prompts, 3, params, seeds=[s + 1 for s in seeds])
    assert other.completion_ids != together.completion_ids


def test_per_row_draws_follow_the_distribution():
    """Inverse-CDF draws from per-row generators hit each token at its probability, never a filtered one."""
    from posttrain.sampling.sampler import row_generators

    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2, 0.0]])).repeat(4000, 1)  # (B, V)
    tokens, _ = choose_tokens(logits, SamplingParams(top_k=3), row_generators(range(4000), 1))
    freq = torch.bincount(tokens, minlength=4).float() / 4000
    torch.testing.assert_close(freq, torch.tensor([0.5, 0.3, 0.2, 0.0]), atol=0.03, rtol=0)


def test_min_p_keeps_tokens_within_a_ratio_of_the_most_likely():
    probs = torch.tensor([[0.5, 0.3, 0.12, 0.08]])
    kept = torch.isfinite(filter_logits(probs.log(), min_p=0.2))[0].tolist()  # threshold 0.1
    assert kept == [True, True, True, False]
    assert torch.isfinite(filter_logits(probs.log(), min_p=0.99))[0].tolist() == [True, False, False, False]
    with pytest.raises(ConfigError, match="min_p"):
        SamplingParams(min_p=1.0)


def test_stop_strings_found_late_in_a_long_completion(model, tokenizer, prompts):
    """The stop check decodes a trailing window only; a stop string 30 tokens in is still found where a check
    of the whole text finds it."""
    sampler = ModelSampler(model, tokenizer)
    plain = sampler.sample(prompts[:1], 1, greedy(40))
    text = plain.texts[0]
    stop = text[-6:-3]
    first = text.index(stop)
    rollout = sampler.sample(prompts[:1], 1, greedy(40, stop=(stop,)))
    assert rollout.finish_reasons == ["stop"] and rollout.texts[0] == text[:first]
    ids = rollout.completion_ids[0]
    assert stop in tokenizer.decode(ids, skip_special_tokens=True)
    assert stop not in tokenizer.decode(ids[:-1], skip_special_tokens=True)
