"""bench/eval.py: the model-work counter behind its "bound on posttrain ÷ lm-eval" column."""

import sys
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

from eval import counting_work  # noqa: E402


def _llama(tied: bool) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=tied)
    return LlamaForCausalLM(config).eval()


@pytest.mark.parametrize("tied", [True, False])
def test_counts_every_slot_of_the_body_and_head_and_their_weights(tied):
    """Forward of (2, 5) ids with logits for the last position only: 10 body slots, 2 head slots. Weights per
    slot: the body's 2 layers x (q 16x16, k and v 16x8, o 16x16: 768; gate, up and down 16x32: 1,536) =
    2 x 2,304; the head 40 x 16 = 640, tied or not."""
    model = _llama(tied)
    with counting_work() as work, torch.no_grad():
        model(input_ids=torch.zeros(2, 5, dtype=torch.long), logits_to_keep=1)
    assert (work.body_slots, work.head_slots) == (10, 2)
    assert (work.body_params, work.head_params) == (2 * 2304, 640)
    assert work.gflop == pytest.approx(2 * (10 * 4608 + 2 * 640) / 1e9)


def test_counts_each_decode_step_of_generate_and_stops_counting_after():
    """Greedy generate of 3 new tokens for 2 rows of 5: a (2, 5) prefill, then two (2, 1) steps."""
    model = _llama(tied=True)
    ids = torch.ones(2, 5, dtype=torch.long)
    with counting_work() as work, torch.no_grad():
        model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=3, min_new_tokens=3,
                       do_sample=False, pad_token_id=0)
    assert (work.body_slots, work.head_slots) == (10 + 2 * 2, 2 + 2 * 2)
    with torch.no_grad():
        model(input_ids=ids)
    assert work.body_slots == 14  # the hook is gone once the block ends
