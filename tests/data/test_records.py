"""Records parse TRL's standard dataset formats as they are, and check themselves."""

import pytest

from posttrain.data.records import (
    Conversation,
    Message,
    PreferencePair,
    Prompt,
    PromptCompletion,
    Ranking,
    RecordError,
    Text,
    parse_record,
    to_dict,
)

U, A = "user", "assistant"


def msgs(*pairs):
    return tuple(Message(role, content) for role, content in pairs)


def chat(*pairs):
    return [{"role": role, "content": content} for role, content in pairs]


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"text": "The sky is blue."}, Text("The sky is blue.")),
        ({"messages": chat((U, "Hi"), (A, "Hello"))}, Conversation(msgs((U, "Hi"), (A, "Hello")))),
        ({"prompt": "The sky is"}, Prompt(msgs((U, "The sky is")), {})),
        ({"prompt": chat((U, "Sky colour?"))}, Prompt(msgs((U, "Sky colour?")), {})),
        (
            {"prompt": "The sky is", "completion": " blue."},
            PromptCompletion(msgs((U, "The sky is")), msgs((A, " blue."))),
        ),
        (
            {"prompt": chat((U, "Sky?")), "completion": chat((A, "Blue."))},
            PromptCompletion(msgs((U, "Sky?")), msgs((A, "Blue."))),
        ),
        (
            {"prompt": "The sky is", "chosen": " blue.", "rejected": " green."},
            PreferencePair(msgs((U, "The sky is")), msgs((A, " blue.")), msgs((A, " green."))),
        ),
        (
            {"prompt": chat((U, "Sky?")), "chosen": chat((A, "Blue.")), "rejected": chat((A, "Green."))},
            PreferencePair(msgs((U, "Sky?")), msgs((A, "Blue.")), msgs((A, "Green."))),
        ),
        (  # implicit prompt: the shared leading turns become the prompt
            {"chosen": chat((U, "Sky?"), (A, "Blue.")), "rejected": chat((U, "Sky?"), (A, "Green."))},
            PreferencePair(msgs((U, "Sky?")), msgs((A, "Blue.")), msgs((A, "Green."))),
        ),
    ],
    ids=[
        "language-modeling",
        "conversational",
        "prompt-only",
        "prompt-only-conversational",
        "prompt-completion",
        "prompt-completion-conversational",
        "preference",
        "preference-conversational",
        "preference-implicit-prompt",
    ],
)
def test_trl_standard_formats_parse(row, expected):
    record = parse_record(row)
    assert record == expected
    assert parse_record(to_dict(record)) == record


def test_implicit_prompt_needs_whole_conversations():
    """TRL's string form without a prompt has no turns to split off; the error says what is expected."""
    with pytest.raises(RecordError, match="list of messages"):
        parse_record({"chosen": "The sky is blue.", "rejected": "The sky is green."})


def test_ranking_pairs_follow_order_best_first():
    """order [2, 0, 1] over A, B, C ranks C > A > B, so the pairs are (C>A), (C>B), (A>B)."""
    ranking = parse_record({"prompt": "q", "responses": ["A", "B", "C"], "order": [2, 0, 1]})
    assert isinstance(ranking, Ranking)
    got = [(p.chosen[0].content, p.rejected[0].content) for p in ranking.pairs()]
    assert got == [("C", "A"), ("C", "B"), ("A", "B")]


def test_margin_must_be_a_number_not_a_bool():
    """JSON `true` is a Python int subclass; it must not pass as a margin of 1.0."""
    row = {"prompt": "q", "chosen": "a", "rejected": "b"}
    assert parse_record({**row, "margin": 2}).margin == 2.0
    with pytest.raises(RecordError, match='"margin"'):
        parse_record({**row, "margin": True})
