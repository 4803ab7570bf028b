"""Math-tier tests of token and sequence log-probabilities."""

import math

import pytest
import torch

from posttrain.models import logprobs
from posttrain.models.logprobs import IGNORE_INDEX, average_sequence_logps, sequence_logps, token_logps


def naive_token_logps(logits, labels):
    """The definition: a full log-softmax, then a gather."""
    return logits.float().log_softmax(-1).gather(-1, labels.unsqueeze(-1)).squeeze(-1)


def test_hand_worked_token_logps():
    """V = 2. Logits (log 3, 0): p = (3/4, 1/4), so label 0 gives log 0.75 and label 1 log 0.25.
    Uniform logits (5, 5) give log 0.5 for either label."""
    logits = torch.tensor([[[math.log(3), 0.0], [math.log(3), 0.0], [5.0, 5.0]]])  # (1, 3, 2)
    labels = torch.tensor([[0, 1, 1]])
    expected = [math.log(0.75), math.log(0.25), math.log(0.5)]
    assert token_logps(logits, labels)[0].tolist() == pytest.approx(expected, abs=1e-6)


def test_matches_log_softmax_gather_and_its_gradient():
    torch.manual_seed(0)
    logits = torch.randn(3, 5, 11, requires_grad=True)
    labels = torch.randint(0, 11, (3, 5))
    ours = token_logps(logits, labels)
    (ours_grad,) = torch.autograd.grad(ours.sum(), logits)
    reference = naive_token_logps(logits, labels)
    (reference_grad,) = torch.autograd.grad(reference.sum(), logits)
    torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(ours_grad, reference_grad)


def test_chunked_rows_give_the_same_answer(monkeypatch):
    """A budget of 22 elements with V = 11 processes 2 rows per chunk: 15 rows in 8 chunks."""
    monkeypatch.setattr(logprobs, "_CHUNK_ELEMENTS", 22)
    torch.manual_seed(1)
    logits, labels = torch.randn(3, 5, 11), torch.randint(0, 11, (3, 5))
    torch.testing.assert_close(token_logps(logits, labels), naive_token_logps(logits, labels))


def test_bf16_logits_give_float32_logps():
    """The normalizer is computed in float32, so the result is as close to the float32 answer
    as the bf16 rounding of the logits themselves allows."""
    torch.manual_seed(2)
    logits = torch.randn(2, 4, 50).bfloat16()
    labels = torch.randint(0, 50, (2, 4))
    ours = token_logps(logits, labels)
    assert ours.dtype == torch.float32
    torch.testing.assert_close(ours, naive_token_logps(logits.float(), labels))


def test_ignored_labels_give_zero_without_indexing():
    """-100 must neither index out of range (V = 3) nor leak a value: those positions are 0."""
    logits = torch.zeros(1, 3, 3)
    labels = torch.tensor([[IGNORE_INDEX, 2, IGNORE_INDEX]])
    assert token_logps(logits, labels)[0].tolist() == pytest.approx([0.0, -math.log(3), 0.0])


def test_sequence_sum_and_average_over_the_mask():
    """Row 0 keeps -1, -2 (sum -3, mean -1.5); row 1 keeps -4 (sum -4, mean -4);
    row 2 keeps nothing (sum 0, mean 0 rather than 0/0)."""
    token_values = torch.tensor([[-1.0, -2.0, -9.0], [-9.0, -4.0, -9.0], [-9.0, -9.0, -9.0]])
    mask = torch.tensor([[True, True, False], [False, True, False], [False, False, False]])
    assert sequence_logps(token_values, mask).tolist() == [-3.0, -4.0, 0.0]
    assert average_sequence_logps(token_values, mask).tolist() == [-1.5, -4.0, 0.0]


def test_mismatched_shapes_are_refused():
    with pytest.raises(ValueError, match="disagree"):
        token_logps(torch.zeros(2, 3, 5), torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="disagree"):
        sequence_logps(torch.zeros(2, 3), torch.ones(2, 4))
