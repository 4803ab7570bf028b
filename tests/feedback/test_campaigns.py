"""Items from several models' answers (`model_items`): pairwise items take the pairs of models in turn."""

import itertools
import json

from posttrain.feedback.campaigns import model_items
from posttrain.feedback.tasks import check_campaign


def _prompts(n):
    return [[{"role": "user", "content": f"q{i}"}] for i in range(n)]


def test_pairwise_items_cycle_through_every_pair_of_models():
    models = ["a", "b", "c", "d"]
    answers = {m: [f"{m}{i}" for i in range(12)] for m in models}
    items, identical = model_items(_prompts(12), answers, "pairwise")
    assert identical == 0 and len(items) == 12
    pairs = [tuple(r["model"] for r in item["responses"]) for item in items]
    # prompt n compares the n-th pair of the cycle: all 6 pairs once, then again
    assert pairs == list(itertools.combinations(models, 2)) * 2
    for n, item in enumerate(items):
        assert item["prompt"] == [{"role": "user", "content": f"q{n}"}]
        assert [r["text"] for r in item["responses"]] == [f"{m}{n}" for m in pairs[n]]
        check_campaign("pairwise", len(item["responses"]), [])


def test_two_models_compare_on_every_prompt_and_identical_answers_are_left_out():
    answers = {"a": ["1", "2", "3"], "b": ["1", "x", "y"]}
    items, identical = model_items(_prompts(3), answers, "pairwise")
    assert identical == 1
    assert [[r["text"] for r in item["responses"]] for item in items] == [["2", "x"], ["3", "y"]]
    assert [item["prompt"][0]["content"] for item in items] == ["q1", "q2"]


def test_other_task_types_show_every_models_answer():
    answers = {"a": ["1", "2"], "b": ["3", "4"], "c": ["5", "2"]}
    items, identical = model_items(_prompts(2), answers, "ranking")
    assert identical == 1  # prompt 1: a and c answered alike
    assert [(r["model"], r["text"]) for r in items[0]["responses"]] == [("a", "1"), ("b", "3"), ("c", "5")]


def test_an_item_file_keeps_responses_holding_unicode_line_separators_whole():
    """Model output holds U+2028 and U+0085, which JSON leaves raw and str.splitlines() took for line breaks
    (the item was cut in two and refused as 'not JSON')."""
    import json

    from posttrain.feedback.campaigns import parse_items

    text = json.dumps({"prompt": "hi", "responses": ["a\u2028b", "c\x85d"]}, ensure_ascii=False) + "\n"
    assert [r["text"] for r in parse_items(text, "items.jsonl")[0]["responses"]] == ["a\u2028b", "c\x85d"]


def test_items_that_repeat_an_earlier_one_are_found_whatever_the_order_of_their_responses():
    from posttrain.feedback.campaigns import parse_items, repeated_items

    lines = [{"prompt": "a", "responses": ["x", "y"]}, {"prompt": "b", "responses": ["x", "y"]},
             {"prompt": "a", "responses": ["y", "x"]}, {"prompt": "a", "chosen": "x", "rejected": "y"}]
    items = parse_items("".join(json.dumps(row) + "\n" for row in lines), "items.jsonl")
    assert repeated_items(items) == [("items.jsonl:3", "items.jsonl:1"), ("items.jsonl:4", "items.jsonl:1")]
