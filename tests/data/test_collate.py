"""Padding, packing (attention and loss never cross documents) and length-grouped batch orders."""

import random

import pytest
import torch
import torch.nn.functional as F

from posttrain.data.collate import IGNORE_INDEX as X
from posttrain.data.collate import collate_packed, length_batches, pack_lengths, pad_batch
from posttrain.data.tokenize import Example

PAD = 0
A = Example([5, 6, 7, 8], [False, False, True, True])
B = Example([9, 10], [True, True])


def test_pad_batch_right_and_left():
    """Labels are input_ids where trained, -100 elsewhere and at each sequence's first token (B's 9)."""
    right = pad_batch([A, B], PAD)
    assert right["input_ids"].tolist() == [[5, 6, 7, 8], [9, 10, PAD, PAD]]
    assert right["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert right["labels"].tolist() == [[X, X, 7, 8], [X, 10, X, X]]
    left = pad_batch([A, B], PAD, side="left")
    assert left["input_ids"].tolist() == [[5, 6, 7, 8], [PAD, PAD, 9, 10]]
    assert left["attention_mask"].tolist() == [[1, 1, 1, 1], [0, 0, 1, 1]]
    assert left["labels"].tolist() == [[X, X, 7, 8], [X, X, X, 10]]


def test_pack_lengths_first_fit_decreasing():
    """Lengths [5, 3, 4, 2, 6], rows of 8, placed longest first: 6 opens row 0 (2 left), 5 opens row 1
    (3 left), 4 opens row 2 (4 left), 3 fits row 1 first, 2 fits row 0 first."""
    assert pack_lengths([5, 3, 4, 2, 6], 8) == [[4, 3], [0, 1], [2]]
    with pytest.raises(ValueError, match="cannot fit"):
        pack_lengths([9], 8)


def test_collate_packed_positions_and_boundary_labels():
    """Row 0 = A then B: positions restart at B, and B's first token (9) gets -100 so that it is not
    predicted from A's last token. Row 1 = B, padded by 4 tokens that count positions from 0."""
    batch = collate_packed([[A, B], [B]], PAD)
    assert batch.keys() == {"input_ids", "labels", "position_ids"}  # no attention_mask: it would disable packing
    assert batch["input_ids"].tolist() == [[5, 6, 7, 8, 9, 10], [9, 10, PAD, PAD, PAD, PAD]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1], [0, 1, 0, 1, 2, 3]]
    assert batch["labels"].tolist() == [[X, X, 7, 8, X, 10], [X, 10, X, X, X, X]]


def test_packed_rows_fit_and_cover_everything():
    rng = random.Random(0)
    examples = [Example(list(range(1, n + 1)), [True] * n) for n in (rng.randint(1, 30) for _ in range(40))]
    rows = [collate_packed([[examples[i] for i in row]], PAD) for row in pack_lengths([len(e) for e in examples], 64)]
    assert all(r["input_ids"].shape[0] == 1 and r["input_ids"].shape[1] <= 64 for r in rows)
    assert sum(int((r["position_ids"] == 0).sum()) for r in rows) == len(examples)  # no padding in (1, T) rows
    assert sum(r["input_ids"].numel() for r in rows) == sum(len(e) for e in examples)


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    from posttrain.models.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny"))


def summed_nll(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token NLL summed over labelled positions: logits[:, t-1] predict labels[:, t]."""
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=X, reduction="sum")


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_rows_match_each_document_alone(tiny_model_dir, attn):
    """Two packed rows (batch of 2, the second padded): the logits of every document equal those of the
    document run alone, and the packed loss equals the sum of the per-document losses."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation=attn).eval()
    g = torch.Generator().manual_seed(0)
    docs = [Example(torch.randint(3, 300, (n,), generator=g).tolist(), [i == 1] * 2 + [True] * (n - 2))
            for i, n in enumerate((7, 5, 9))]
    rows = [[docs[0], docs[1]], [docs[2]]]
    batch = collate_packed(rows, PAD)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        packed_loss = summed_nll(packed, batch["labels"])
        alone_loss = 0.0
        for b, row in enumerate(rows):
            start = 0
            for doc in row:
                alone = pad_batch([doc], PAD)
                logits = model(input_ids=alone["input_ids"]).logits  # (1, n, V)
                torch.testing.assert_close(packed[b, start : start + len(doc)], logits[0], atol=1e-5, rtol=0)
                alone_loss += summed_nll(logits, alone["labels"])
                start += len(doc)
    torch.testing.assert_close(packed_loss, alone_loss, atol=1e-4, rtol=1e-6)


def test_length_batches_cover_every_index_once_and_are_deterministic():
    lengths = [random.Random(1).randint(1, 500) for _ in range(1003)]
    for bucket in (False, True):
        batches = length_batches(lengths, 8, shuffle=True, seed=3, bucket=bucket)
        assert sorted(i for b in batches for i in b) == list(range(1003))
        assert all(len(b) == 8 for b in batches if len(b) != 1003 % 8) and len(batches) == 126
        assert batches == length_batches(lengths, 8, shuffle=True, seed=3, bucket=bucket)
        assert batches != length_batches(lengths, 8, shuffle=True, seed=4, bucket=bucket)
    assert length_batches(lengths[:5], 2, shuffle=False, seed=0, bucket=False) == [[0, 1], [2, 3], [4]]


def test_bucketing_reduces_padding():
    """Padding of a batch = batch size * its longest length - its total length; with uniform random
    lengths, sorting within chunks of 50 batches cuts it several-fold."""
    rng = random.Random(0)
    lengths = [rng.randint(10, 1000) for _ in range(4000)]

    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    plain = padding(length_batches(lengths, 16, shuffle=True, seed=0, bucket=False))
    bucketed = padding(length_batches(lengths, 16, shuffle=True, seed=0, bucket=True))
    assert bucketed * 5 < plain
