"""The fixtures both sampler test files use: the scrambled tiny model of test_sampler.py (greedy outputs that
depend on every token of context), its tokenizer and the tokenized PROMPTS, built once per test module."""

import pytest
from test_sampler import PROMPTS, scrambled


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from posttrain.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def model(model_dir):
    return scrambled(model_dir)


@pytest.fixture(scope="module")
def tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def prompts(tokenizer):
    return [tokenizer(p)["input_ids"] for p in PROMPTS]
