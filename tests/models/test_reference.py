"""The reference model: the frozen starting policy (adapters off, a frozen copy, or the model before training),
and the cache of reference log-probs with its fingerprint."""

import copy
import logging

import pytest
import torch
from transformers import AutoModelForCausalLM

from posttrain.models.reference import REFERENCE_CACHE, Reference, fingerprint, load_logps, precompute_logps, save_logps


def ids(n: int) -> list[tuple[int, ...]]:
    return [(1, 2), (3,), (4, n)]


def test_reference_cache_round_trips_and_refuses_other_data(tmp_path, caplog):
    splits = {"train": [ids(1), ids(2)], "eval": [ids(3)]}
    key = fingerprint(splits, model="tiny", average="False")
    logps = {"train.chosen": torch.tensor([-1.5, -2.25]), "train.rejected": torch.tensor([-3.0, -4.0]),
             "eval.chosen": torch.tensor([-0.5]), "eval.rejected": torch.tensor([-9.0])}
    path = tmp_path / REFERENCE_CACHE
    save_logps(path, logps, key)
    loaded = load_logps(path, key)
    assert loaded.keys() == logps.keys() and all(torch.equal(loaded[k], logps[k]) for k in logps)
    assert [p.name for p in tmp_path.iterdir()] == [REFERENCE_CACHE]  # no temporary file left
    other = fingerprint({"train": [ids(1), ids(5)], "eval": [ids(3)]}, model="tiny", average="False")
    assert other != key and fingerprint(splits, model="tiny", average="True") != key
    with caplog.at_level(logging.WARNING, logger="posttrain.models.reference"):
        assert load_logps(path, other) is None
    assert "other data or another model" in caplog.text
    assert load_logps(tmp_path / "missing.safetensors", key) is None


def test_precompute_places_each_batch_at_its_indices():
    """Batches of indices [2, 0] and [1] score (10, 20) and (30,): the split's values land in index order."""
    scores = {(2, 0): torch.tensor([10.0, 20.0]), (1,): torch.tensor([30.0])}

    def batches(split):
        return [([2, 0], (2, 0)), ([1], (1,))]

    out = precompute_logps({"train": 3}, batches, lambda b: (scores[b], -scores[b]), ("chosen", "rejected"))
    assert out["train.chosen"].tolist() == [20.0, 30.0, 10.0] and out["train.rejected"].tolist() == [-20.0, -30.0, -10.0]


@pytest.mark.parametrize("keep_copy", [False, True])
def test_full_model_reference_is_the_starting_weights(tiny_dir, keep_copy):
    """Without LoRA a kept copy stays the starting model after the policy changes; the live model does not."""
    model = AutoModelForCausalLM.from_pretrained(tiny_dir).train()
    start = copy.deepcopy(model).eval()
    reference = Reference(model, keep_copy=keep_copy)
    x = torch.tensor([[1, 2, 3, 4]])
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    got = reference(lambda m: m(x).logits)
    assert model.training  # the policy's mode is left as it was
    with torch.no_grad():
        want = start(x).logits
    assert torch.allclose(got, want) == keep_copy
    assert not got.requires_grad
