"""Rows shaped as public data sets ship them (ShareGPT, Alpaca, Anthropic HH) read as the project's records, and
rows that would train the wrong thing (a tool call dropped, an empty assistant turn) refused by their field."""

import json

import pytest

from posttrain.data.load import load_records
from posttrain.data.records import Conversation, Message, PreferencePair, PromptCompletion, RecordError, parse_record
from posttrain.errors import DataError

SFT = (Conversation, PromptCompletion)


def test_a_sharegpt_row_is_a_conversation_with_its_speakers_as_roles():
    row = {"id": "x1", "conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "2+2?"},
                                         {"from": "gpt", "value": "4"}]}
    assert parse_record(row, accept=SFT) == Conversation((Message("system", "Be brief."), Message("user", "2+2?"),
                                                          Message("assistant", "4")))
    with pytest.raises(RecordError, match=r"conversations\[1\].from.*unknown speaker 'narrator'"):
        parse_record({"conversations": [{"from": "human", "value": "a"}, {"from": "narrator", "value": "b"}]}, SFT)


def test_an_alpaca_row_is_a_prompt_completion_whose_prompt_holds_the_input():
    with_input = parse_record({"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}, accept=SFT)
    assert with_input == PromptCompletion((Message("user", "Add the numbers.\n\n2 and 3"),),
                                          (Message("assistant", "5"),), plain=True)
    assert parse_record({"instruction": "Say hi.", "input": "", "output": "hi"}, SFT).prompt[0].content == "Say hi."


def test_an_anthropic_hh_pair_splits_into_turns_and_its_shared_turns_are_the_prompt():
    base = "\n\nHuman: What is 2+2?\n\nAssistant: 4\n\nHuman: And 3+3?\n\nAssistant: "
    pair = parse_record({"chosen": base + "6", "rejected": base + "7"}, accept=(PreferencePair,))
    assert [m.role for m in pair.prompt] == ["user", "assistant", "user"] and pair.prompt[1].content == "4"
    assert pair.chosen == (Message("assistant", "6"),) and pair.rejected == (Message("assistant", "7"),)
    with pytest.raises(RecordError, match="must end with an \"Assistant: \" turn"):
        parse_record({"chosen": "\n\nHuman: a\n\nAssistant: b\n\nHuman: c", "rejected": base + "7"},
                     accept=(PreferencePair,))


def test_the_projects_own_fields_win_over_a_shapes(tmp_path):
    """A row with `messages` and a `conversations` column keeps its messages; one with `prompt` and `completion`
    beside `instruction`/`output` keeps its own."""
    row = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
           "conversations": [{"from": "human", "value": "other"}, {"from": "gpt", "value": "other"}]}
    assert parse_record(row, SFT).messages[0].content == "a"
    row = {"prompt": "p", "completion": "c", "instruction": "i", "output": "o"}
    assert parse_record(row, SFT).prompt[0].content == "p"


@pytest.mark.parametrize("message, error", [
    ({"role": "assistant", "content": "", "tool_calls": [{"type": "function", "function": {"name": "weather"}}]},
     'field "messages[1].tool_calls" tool calls are not trained yet'),
    ({"role": "assistant", "content": "  "}, 'field "messages[1].content" is an empty assistant turn'),
])
def test_a_turn_that_would_train_the_wrong_thing_is_refused_by_its_line(tmp_path, message, error):
    """A tool call that the record (and SmolLM2's template) would drop trained an empty answer without a word."""
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Weather in Paris?"}, message]}) + "\n")
    with pytest.raises(DataError) as e:
        load_records(str(path), accept=SFT)
    assert f"chat.jsonl:1: {error}" in str(e.value)


def test_an_empty_completion_is_still_a_completion_to_score():
    """A model's output may be empty (`posttrain score` scores it 0): only a demonstration's turn must not be."""
    row = {"prompt": "2+2?", "completion": [{"role": "assistant", "content": ""}]}
    assert parse_record(row, accept=(PromptCompletion,)).completion[0].content == ""
