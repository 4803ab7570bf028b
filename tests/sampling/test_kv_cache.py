"""The preallocated KV cache (sampling/kv_cache.py): against DynamicCache tensor by tensor, and the sampler with it
against the sampler with the dynamic cache and against transformers' `generate`.

Exactness is the bar: the same tokens, and log-probs equal to 1e-5, with prompts of different lengths in one chunk,
n > 1 samples per prompt, rows finishing at different steps (eos, stop strings, max_new_tokens) and both kinds of
randomness (one generator per call, one per sample). The model is the scrambled tiny model of test_sampler.py,
whose greedy outputs depend on every token of context.
"""

from __future__ import annotations

import pytest
import torch
from test_sampler import cut_after, greedy, hf_generate
from transformers.cache_utils import DynamicCache

from posttrain.errors import ConfigError
from posttrain.sampling.kv_cache import PreallocatedCache, use_preallocated_cache
from posttrain.sampling.sampler import ModelSampler, SamplingParams, batch_after_finishing


def sample_both(model, tokenizer, prompts, n, params, seeds=None, eos=None):
    """The same call with each cache; `eos` replaces the model's end-of-sequence ids."""
    rollouts = []
    for kind in ("dynamic", "preallocated"):
        sampler = ModelSampler(model, tokenizer)
        if eos is not None:
            sampler.eos_token_ids = eos
        rollouts.append(sampler.sample(prompts, n, SamplingParams(**{**vars(params), "kv_cache": kind}), seeds=seeds))
    return rollouts


def assert_same(dynamic, preallocated):
    assert preallocated.completion_ids == dynamic.completion_ids
    assert preallocated.finish_reasons == dynamic.finish_reasons
    assert preallocated.texts == dynamic.texts
    for a, b in zip(preallocated.logps, dynamic.logps):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def early_eos(model, tokenizer, prompts, n=1, params=None, seeds=None):
    """Tokens that, as eos, end the rows of the first three prompts at different steps (from about 3, 6 and 9 on)
    and leave the last prompt's rows running to max_new_tokens: taken from a run without eos (greedy(12) unless
    `params`), where the row first emits them."""
    plain = ModelSampler(model, tokenizer).sample(prompts, n, params or greedy(12), seeds=seeds).completion_ids
    last = {t for ids in plain[3 * n :] for t in ids}
    eos = []
    for row, start in zip(plain[: 3 * n : n], (2, 5, 8)):
        eos.append(next(t for k, t in enumerate(row) if k >= start and row.index(t) == k and t not in last))
    return eos


def finish_steps(rollout):
    return sorted({len(ids) for ids in rollout.completion_ids})


# ---------------------------------------------------------------------------------------------
# Math tier: the cache and the row bookkeeping on their own.


def test_batch_after_finishing_moves_only_rows_into_finished_places():
    """Batch of 6, rows 1 and 3 finished: live [0, 2, 4, 5], 4 rows go on. Rows 0 and 2 stay; live rows 4 and 5
    (beyond the first 4) move into the places of the finished rows 1 and 3: new batch [0, 4, 2, 5], and the live
    rows 0, 2, 4, 5 are now at 0, 2, 1, 3. Without refill the live rows keep their order."""
    live = torch.tensor([0, 2, 4, 5])
    rows, new_rows = batch_after_finishing(live, 6, refill=True)
    assert rows.tolist() == [0, 4, 2, 5] and new_rows.tolist() == [0, 2, 1, 3]
    rows, new_rows = batch_after_finishing(live, 6, refill=False)
    assert rows.tolist() == [0, 2, 4, 5] and new_rows.tolist() == [0, 1, 2, 3]
    rows, new_rows = batch_after_finishing(torch.tensor([5, 1, 0]), 6, refill=True)  # live rows in sample order
    assert rows.tolist() == [0, 1, 5] and new_rows.tolist() == [2, 1, 0]


def test_preallocated_cache_holds_what_the_dynamic_cache_holds():
    """Prefill 2 prompts, repeat each 3 times, then append keys step by step and drop rows (a refill order and an
    arbitrary permutation): after every operation the filled views equal DynamicCache's tensors exactly."""
    generator = torch.Generator().manual_seed(0)
    keys = lambda rows, q: torch.randn(rows, 2, q, 4, generator=generator)  # noqa: E731  (B, H, q, D)
    dynamic = DynamicCache()
    for layer in range(2):
        dynamic.update(keys(2, 5), keys(2, 5), layer)
    preallocated = PreallocatedCache.from_prefill(dynamic, repeats=3, capacity=9)
    dynamic.reorder_cache(torch.arange(2).repeat_interleave(3))

    def check():
        assert preallocated.get_seq_length() == dynamic.get_seq_length()
        for ours, theirs in zip(preallocated.layers, dynamic.layers):
            filled = slice(0, ours.length)
            assert torch.equal(ours.keys[:, :, filled], theirs.keys) and torch.equal(ours.values[:, :, filled], theirs.values)

    check()
    for rows in (None, torch.tensor([0, 5, 2, 3, 4]), None, torch.tensor([3, 1, 0]), None):
        if rows is None:
            batch = dynamic.layers[0].keys.shape[0]
            new = [(keys(batch, 1), keys(batch, 1)) for _ in range(2)]
            for layer, (k, v) in enumerate(new):
                returned = preallocated.update(k, v, layer)
                assert torch.equal(returned[0], dynamic.update(k, v, layer)[0])
        else:
            preallocated.reorder_cache(rows)
            dynamic.reorder_cache(rows)
        check()
    assert preallocated.get_mask_sizes(1, 0) == (9, 0)  # 8 filled + 1 new
    with pytest.raises(ValueError, match="holds 9 positions"):
        preallocated.update(keys(3, 2), keys(3, 2), 0)


def test_sliding_window_layers_are_not_preallocated():
    from transformers import MistralConfig

    config = MistralConfig(num_hidden_layers=2, sliding_window=4, num_attention_heads=2, num_key_value_heads=2,
                           hidden_size=8)
    sliding = DynamicCache(config=config)
    full = DynamicCache()
    for cache in (sliding, full):
        for layer in range(2):
            cache.update(torch.zeros(1, 2, 3, 4), torch.zeros(1, 2, 3, 4), layer)
    assert not PreallocatedCache.supports(sliding) and PreallocatedCache.supports(full)


def test_kv_cache_option_is_checked():
    with pytest.raises(ConfigError, match="kv_cache"):
        SamplingParams(kv_cache="static")


# ---------------------------------------------------------------------------------------------
# Recipe tier: the sampler with each cache, on the tiny model.


def test_greedy_with_rows_finishing_at_different_steps(model, tokenizer, prompts):
    """Prompts of 4 lengths x 3 samples; three eos tokens end rows at different steps, the last prompt runs to 12:
    the same completions, finish reasons and log-probs with each cache, and those of `generate`."""
    assert len({len(p) for p in prompts}) == len(prompts)
    eos = early_eos(model, tokenizer, prompts)
    dynamic, preallocated = sample_both(model, tokenizer, prompts, 3, greedy(12), eos=eos)
    assert_same(dynamic, preallocated)
    assert len(finish_steps(preallocated)) >= 3 and finish_steps(preallocated)[-1] == 12
    model.generation_config.eos_token_id = eos
    try:
        expected = [cut_after_any(ids, eos) for ids in hf_generate_any(model, tokenizer, prompts, 12)]
    finally:
        model.generation_config.eos_token_id = tokenizer.eos_token_id
    assert preallocated.completion_ids[::3] == expected


def cut_after_any(ids, tokens):
    ends = [i for i, t in enumerate(ids) if t in tokens]
    return ids[: ends[0] + 1] if ends else ids


def hf_generate_any(model, tokenizer, prompts, max_new_tokens):
    """`generate`'s completions, uncut (hf_generate cuts at one eos id only)."""
    from posttrain.sampling.sampler import left_pad

    input_ids, attention_mask = left_pad(prompts, tokenizer.pad_token_id, torch.device("cpu"))
    out = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=False,
                         max_new_tokens=max_new_tokens)
    return out[:, input_ids.shape[1] :].tolist()


def test_greedy_matches_generate(model, tokenizer, prompts):
    rollout = ModelSampler(model, tokenizer).sample(prompts, 1, greedy(12, kv_cache="preallocated"))
    assert rollout.completion_ids == hf_generate(model, tokenizer, prompts, 12)
    assert [cut_after(ids, tokenizer.eos_token_id) for ids in rollout.completion_ids] == rollout.completion_ids


def test_stop_strings(model, tokenizer, prompts):
    """A stop string taken from one greedy text ends some rows early; the others run to the end."""
    plain = ModelSampler(model, tokenizer).sample(prompts, 2, greedy(12))
    params = greedy(12, stop=(plain.texts[0][4:6], plain.texts[4][6:8]))
    dynamic, preallocated = sample_both(model, tokenizer, prompts, 2, params)
    assert_same(dynamic, preallocated)
    assert "stop" in preallocated.finish_reasons and "length" in preallocated.finish_reasons


@pytest.mark.parametrize("seeds", [None, [5, 6, 7, 8]])
def test_sampled_tokens_with_either_randomness(model, tokenizer, prompts, seeds):
    """Sampling at temperature 1 with top-k: one generator for the call (tokens are drawn in sample order whatever
    the batch order) or one per sample (`seeds`). Early eos tokens reorder the preallocated batch."""
    params = SamplingParams(max_new_tokens=14, temperature=1.0, top_k=8, seed=3)
    eos = early_eos(model, tokenizer, prompts, 3, params, seeds)
    dynamic, preallocated = sample_both(model, tokenizer, prompts, 3, params, seeds=seeds, eos=eos)
    assert_same(dynamic, preallocated)
    assert len(finish_steps(preallocated)) > 2  # rows finished at several steps


def test_chunks_and_batch_sizes(model, tokenizer, prompts):
    """Finished rows leave the batch with the preallocated cache too: each decode forward runs only the rows
    still going. batch_size=6 with n=3 makes two chunks of two prompts."""
    eos = early_eos(model, tokenizer, prompts, n=3)
    batch_sizes = []
    hook = model.register_forward_pre_hook(lambda m, args, kw: batch_sizes.append(kw["input_ids"].shape[0]),
                                           with_kwargs=True)
    try:
        sampler = ModelSampler(model, tokenizer, batch_size=6)
        sampler.eos_token_ids = eos
        rollout = sampler.sample(prompts, 3, greedy(12, kv_cache="preallocated"))
    finally:
        hook.remove()
    lengths = [len(ids) for ids in rollout.completion_ids]
    expected = []
    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    for chunk in (order[:2], order[2:]):
        chunk_lengths = [lengths[3 * i + j] for i in chunk for j in range(3)]
        expected += [2] + [sum(n > k for n in chunk_lengths) for k in range(1, 12) if any(n > k for n in chunk_lengths)]
    assert batch_sizes == expected
    dynamic = ModelSampler(model, tokenizer, batch_size=64)
    dynamic.eos_token_ids = eos
    assert dynamic.sample(prompts, 3, greedy(12, kv_cache="dynamic")).completion_ids == rollout.completion_ids


def test_auto_preallocates_from_a_layer_size(model):
    """The tiny model: 4 kv heads x 32 dims x 4 bytes (float32) x 2 (keys and values) = 1 KiB per row and position,
    so one layer of a chunk reaches PREALLOCATE_FROM_BYTES = 10 MiB at rows x capacity = 10240: 256 rows x 40."""
    assert use_preallocated_cache("auto", model, 256, 40) and not use_preallocated_cache("auto", model, 256, 39)
    assert use_preallocated_cache("preallocated", model, 1, 2) and not use_preallocated_cache("dynamic", model, 256, 400)
