"""Math tier: the shipped instruction-following pairs are what the generator makes, every chosen response
follows its instruction and every rejected one does not, and the builtin splits them 4:1."""

import json
from importlib import resources

import pytest

from posttrain.data.load import load_records
from posttrain.data.records import PreferencePair
from posttrain.tasks.smollm2_prefs import INSTRUCTIONS, follows, rows

SHIPPED = resources.files("posttrain.tasks").joinpath("data", "smollm2_prefs.jsonl")


def test_shipped_file_is_the_generator_output():
    """`python -m posttrain.tasks.smollm2_prefs` rewrites the shipped file byte for byte."""
    expected = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows())
    assert SHIPPED.read_text(encoding="utf-8") == expected


def test_chosen_follows_the_instruction_and_rejected_does_not():
    """The pairs differ in instruction following: 8 instructions x 30 pairs + 2 x 26 (three_items and
    under_ten_words have 26 subjects each) = 292 pairs."""
    data = rows()
    assert len(data) == 292 and {r["instruction"] for r in data} == set(INSTRUCTIONS)
    for r in data:
        chosen, rejected = r["chosen"][0]["content"], r["rejected"][0]["content"]
        assert follows(r["instruction"], chosen), r
        assert not follows(r["instruction"], rejected), r
    assert len({r["prompt"][0]["content"] for r in data}) == len(data)  # no prompt twice


@pytest.mark.parametrize("instruction, response, expected", [
    ("one_word", "Paris", True), ("one_word", "It is Paris.", False),
    ("number_only", "42", True), ("number_only", "6 times 7 is 42.", False),
    ("three_items", "oak, pine, birch", True), ("three_items", "Some trees are oak, pine, birch and elm.", False),
    ("yes_no_start", "No. Spiders have eight legs.", True), ("yes_no_start", "Not really.", False),
    ("yes_no_only", "No", True), ("yes_no_only", "No. Spiders have eight legs.", False),
    ("json_answer", '{"answer": "Rome"}', True), ("json_answer", '{"city": "Rome"}', False),
    ("all_caps", "THE NUMBER 7 IS PRIME.", True), ("all_caps", "42", False),
])
def test_follows(instruction, response, expected):
    assert follows(instruction, response) is expected


def test_builtin_holds_out_every_fifth_pair():
    """292 rows: rows 4, 9, ..., 289 are held out (58), the other 234 train."""
    train = load_records("builtin:smollm2-prefs")
    heldout = load_records("builtin:smollm2-prefs/heldout")
    assert (len(train), len(heldout)) == (234, 58)
    assert all(isinstance(r, PreferencePair) for r in train + heldout)
    assert heldout[0].prompt[0].content == rows()[4]["prompt"][0]["content"]
