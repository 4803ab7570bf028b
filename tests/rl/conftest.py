"""Fixtures of the rl tests."""

import pytest
import torch


@pytest.fixture(scope="module")
def model(tiny_dir):
    """The tiny model with weights that make every position's distribution depend on its context (its own
    initialisation is near uniform), in eval mode."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(tiny_dir, attn_implementation="sdpa")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) * (0.3 if "embed" in name else 0.1))
    return m.eval()
