"""Where the old policy's log-probs come from (RLConfig.old_logps): the sampler's own at float32, where they equal a
teacher-forced forward within 1e-4, and a forward for a lower-precision policy whose samples are reused."""

import pytest
import torch

from posttrain.config import SamplingParams
from posttrain.models.attention import pair_layout
from posttrain.rl.engine import Layout, make_groups, prepare_update
from posttrain.rl.setup import RLConfig
from posttrain.sampling.sampler import ModelSampler


@pytest.fixture(scope="module")
def model_and_tokenizer(model, tiny_dir):
    from transformers import AutoTokenizer

    return model, AutoTokenizer.from_pretrained(tiny_dir)


def prepared_old_logps(model, tokenizer, old_logps: str, passes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(the old log-probs the update would use, the sampler's), each (C, L) over the step's micro-batches."""
    prompts = [tokenizer("one two three")["input_ids"], tokenizer("seven")["input_ids"]]
    rollout = ModelSampler(model, tokenizer).sample(prompts, 2, SamplingParams(max_new_tokens=8, seed=3))
    groups = make_groups(rollout, torch.zeros(len(rollout)), 2, [0, 1])
    pairs = pair_layout(model, True)
    layout = Layout(pairs.share_prompt, pairs.mask_dtype, pairs.trim_logits, tokenizer.pad_token_id, torch.device("cpu"))
    rl = RLConfig(group_size=2, prompts_per_step=2, micro_batch=2, updates_per_batch=passes, old_logps=old_logps)
    parts, _ = prepare_update(groups, rl, layout, 8, None, model)
    (batch,) = parts[0]
    sampled = torch.zeros_like(batch.old_logps)
    for row, i in enumerate(batch.completions):
        sampled[row, : len(rollout.logps[i])] = rollout.logps[i]
    return torch.where(batch.mask, batch.old_logps, 0.0), torch.where(batch.mask, sampled, 0.0)


def test_float32_reuses_the_sampler_log_probs_and_a_forward_agrees(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    auto, sampled = prepared_old_logps(model, tokenizer, "auto", passes=4)
    assert torch.equal(auto, sampled)  # no forward: the sampler's own numbers
    forward, _ = prepared_old_logps(model, tokenizer, "forward", passes=4)
    assert not torch.equal(forward, sampled)  # a forward really ran (it rounds differently) ...
    torch.testing.assert_close(forward, sampled, atol=1e-4, rtol=0)  # ... and gives the same log-probs


def test_lower_precision_recomputes_when_samples_are_reused(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    half = type(model).from_pretrained(model.name_or_path, attn_implementation="sdpa", dtype=torch.bfloat16)
    half.load_state_dict({k: v.to(torch.bfloat16) for k, v in model.state_dict().items()})
    half.eval()
    reused, sampled = prepared_old_logps(half, tokenizer, "auto", passes=4)
    assert not torch.equal(reused, sampled)
    once, sampled_once = prepared_old_logps(half, tokenizer, "auto", passes=1)  # trained on once: the sampler's
    assert torch.equal(once, sampled_once)
    kept, sampled_kept = prepared_old_logps(half, tokenizer, "sampler", passes=4)
    assert torch.equal(kept, sampled_kept)
