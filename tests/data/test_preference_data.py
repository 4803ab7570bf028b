"""Preference pairs to token ids and batches."""

import logging

import pytest

from posttrain.config import DataConfig
from posttrain.data.preference import collate_pairs, tokenize_pair, tokenize_preferences
from posttrain.data.records import PreferencePair, Ranking, parse_record
from posttrain.data.tokenize import tokenize_prompt
from posttrain.errors import DataError


@pytest.fixture(scope="module")
def tok(tiny_dir):
    from posttrain.models.load import load_tokenizer

    return load_tokenizer("tiny")


def pair(prompt: str = "What is 2 + 3?", chosen: str = "5", rejected: str = "I think it is 7") -> PreferencePair:
    return parse_record({"prompt": prompt, "chosen": chosen, "rejected": rejected})


def test_pair_tokens_are_the_tokenized_conversations(tok):
    """prompt_ids + chosen_ids is exactly the chat template's tokenization of prompt + chosen, and
    prompt_ids is what a sampler would continue (the prompt with the assistant header)."""
    p = pair()
    e = tokenize_pair(p, tok, row=1, max_length=128)
    for completion, ids in ((p.chosen, e.chosen_ids), (p.rejected, e.rejected_ids)):
        whole = tok.apply_chat_template([m.to_dict() for m in p.prompt + completion], tokenize=False)
        assert list(e.prompt_ids + ids) == tok(whole, add_special_tokens=False)["input_ids"]
    assert list(e.prompt_ids) == tokenize_prompt(p.prompt, tok)
    assert tok.decode(e.chosen_ids) == "5<|im_end|>\n"
    assert len(e) == len(e.prompt_ids) + len(e.rejected_ids)  # the longer side
    assert e.chosen.loss_mask == [False] * len(e.prompt_ids) + [True] * len(e.chosen_ids)


def test_a_ranking_becomes_all_its_pairs_with_its_row(tok):
    """Order [2, 0, 1] ranks r2 > r0 > r1, so the C(3,2) = 3 pairs are (r2,r0), (r2,r1), (r0,r1)."""
    ranking = parse_record({"prompt": "Pick", "responses": ["a", "b", "c"], "order": [2, 0, 1]})
    assert isinstance(ranking, Ranking)
    examples = tokenize_preferences([pair(), ranking], tok, DataConfig(max_length=64), source="r.jsonl")
    assert [e.row for e in examples] == [1, 2, 2, 2]
    got = [(tok.decode(e.chosen_ids)[0], tok.decode(e.rejected_ids)[0]) for e in examples[1:]]
    assert got == [("c", "a"), ("c", "b"), ("a", "b")]


def test_too_long_pairs_error_with_source_and_row_or_are_skipped_and_counted(tok, caplog):
    rows = [pair(), pair(prompt="What is " + " + ".join(["1"] * 40) + "?"), pair()]
    with pytest.raises(DataError, match=r"^p\.jsonl: row 2: \d+ tokens, more than data.max_length=40"):
        tokenize_preferences(rows, tok, DataConfig(max_length=40), source="p.jsonl")
    with caplog.at_level(logging.WARNING, logger="posttrain.data.tokenize"):
        kept = tokenize_preferences(rows, tok, DataConfig(max_length=40, truncation="skip"), source="p.jsonl")
    assert [e.row for e in kept] == [1, 3]
    assert "dropped 1 of 3 pairs" in caplog.text
    with pytest.raises(DataError, match="every pair was dropped"):
        tokenize_preferences(rows[1:2], tok, DataConfig(max_length=40, truncation="skip"), source="p.jsonl")


def test_truncate_keeps_the_first_tokens_of_each_side_and_drops_pairs_left_equal(tok):
    full = tokenize_pair(pair(rejected="5 or maybe 6"), tok, row=1, max_length=256)
    width = len(full.prompt_ids) + 2
    cut = tokenize_pair(pair(rejected="5 or maybe 6"), tok, row=1, max_length=width, truncation="truncate")
    assert cut.chosen_ids == full.chosen_ids[:2] and cut.rejected_ids == full.rejected_ids[:2]
    # "5" + <|im_end|> against "5" + " or": still different after 2 tokens; after 1 both are "5"
    assert cut.chosen_ids != cut.rejected_ids
    assert tokenize_pair(pair(rejected="5 or maybe 6"), tok, row=1, max_length=width - 1, truncation="truncate") is None
    assert tokenize_pair(pair(), tok, row=1, max_length=len(full.prompt_ids), truncation="truncate") is None


def test_collate_puts_chosen_then_rejected_and_masks_only_response_tokens(tok):
    examples = [tokenize_pair(pair(chosen=str(i), rejected="no idea " * i), tok, row=i, max_length=128) for i in (1, 3)]
    b = collate_pairs(examples, tok.pad_token_id)
    assert b["input_ids"].shape[0] == 4 and b["completion_mask"].shape == (4, b["input_ids"].shape[1] - 1)
    sides = [e.chosen_ids for e in examples] + [e.rejected_ids for e in examples]
    for row, ids in enumerate(sides):
        predicted = b["input_ids"][row, 1:][b["completion_mask"][row]]  # tokens the logps score
        assert predicted.tolist() == list(ids)
    assert int(b["attention_mask"].sum()) == sum(len(e.prompt_ids) * 2 + len(e.chosen_ids) + len(e.rejected_ids)
                                                 for e in examples)
