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


# -- plain vs conversational, and rows that could be several kinds ------------------------------------

def test_records_remember_whether_they_were_plain_strings():
    """`plain` (TRL's standard format) is kept, written back as strings, and left out of equality."""
    plain = parse_record({"prompt": "The sky is", "completion": " blue."})
    chat_ = parse_record({"prompt": chat((U, "The sky is")), "completion": chat((A, " blue."))})
    assert plain.plain and not chat_.plain and plain == chat_
    assert to_dict(plain) == {"prompt": "The sky is", "completion": " blue."}
    assert parse_record({"prompt": "Hi", "chosen": "a", "rejected": "b"}).plain
    assert not parse_record({"prompt": "Hi", "chosen": chat((A, "a")), "rejected": chat((A, "b"))}).plain
    assert parse_record({"prompt": "Hi", "answer": 3}).plain
    ranking = parse_record({"prompt": "Hi", "responses": ["a", "b"], "order": [1, 0]})
    assert ranking.plain and all(p.plain for p in ranking.pairs())


def ultrafeedback_row() -> dict:
    """The shape of HuggingFaceH4/ultrafeedback_binarized: prompt a string, chosen and rejected whole
    conversations that repeat it as their first user turn, plus messages, scores and an id."""
    prompt = "Name a blue thing."
    chosen = chat((U, prompt), (A, "The sky."))
    return {"prompt": prompt, "chosen": chosen, "rejected": chat((U, prompt), (A, "Fire.")), "messages": chosen,
            "score_chosen": 8.0, "score_rejected": 3.0, "prompt_id": "abc123"}


def test_a_row_of_several_kinds_is_read_as_the_commands_kind():
    """dpo/rm read it as a pair (the repeated prompt turn stripped), sft as its conversation, eval as a
    prompt; with nothing accepted, detection by keys is unchanged (a conversation)."""
    row = ultrafeedback_row()
    expected = PreferencePair(msgs((U, "Name a blue thing.")), msgs((A, "The sky.")), msgs((A, "Fire.")))
    assert parse_record(row, accept=(PreferencePair, Ranking)) == expected
    assert parse_record(row, accept=(PreferencePair,)) == expected
    assert parse_record(row, accept=(Conversation, PromptCompletion, Text)) == Conversation(
        msgs((U, "Name a blue thing."), (A, "The sky.")))
    assert parse_record(row, accept=(Prompt,)).prompt == msgs((U, "Name a blue thing."))
    assert isinstance(parse_record(row), Conversation)


def test_a_row_fitting_none_of_the_commands_kinds_is_still_refused_by_its_detected_kind():
    with pytest.raises(RecordError, match=r"is a conversation record \(read by sft\), but this command needs: preference"):
        parse_record({"messages": chat((U, "Hi"), (A, "Hello"))}, accept=(PreferencePair,))
    with pytest.raises(RecordError, match='field "rejected": is missing'):
        parse_record({"prompt": "Hi", "chosen": "a", "id": 3}, accept=(PreferencePair,))


def test_responses_repeating_the_prompt_lose_the_repeated_turns():
    """Explicit prompt (two turns) and chosen/rejected that start with both: the prompt is the shared prefix."""
    prompt = chat(("system", "Be brief."), (U, "Sky?"))
    row = {"prompt": prompt, "chosen": prompt + chat((A, "Blue.")), "rejected": prompt + chat((A, "Green."))}
    pair = parse_record(row)
    assert pair.prompt == msgs(("system", "Be brief."), (U, "Sky?"))
    assert (pair.chosen, pair.rejected) == (msgs((A, "Blue.")), msgs((A, "Green.")))
    one_sided = {"prompt": "Sky?", "chosen": chat((U, "Sky?"), (A, "Blue.")), "rejected": chat((A, "Green."))}
    with pytest.raises(RecordError, match='field "rejected": does not repeat the prompt'):
        parse_record(one_sided)


def test_a_rating_record_round_trips_and_checks_its_scores():
    from posttrain.data.records import Rating

    row = {"prompt": "2+2?", "completion": "4", "scores": {"helpful": 5, "correct": 1},
           "scales": {"helpful": [1, 5], "correct": [0, 1]}}
    record = parse_record(row)
    assert record == Rating(msgs((U, "2+2?")), msgs((A, "4")), (("helpful", 5.0), ("correct", 1.0)),
                            (("helpful", 1.0, 5.0), ("correct", 0.0, 1.0)))
    assert to_dict(record) == row and parse_record(to_dict(record)) == record
    assert isinstance(parse_record(row, accept=(PromptCompletion,)), PromptCompletion)  # TRL's names, read as such
    assert isinstance(parse_record({"prompt": "q", "completion": "a", "scores": {"x": 0.5}}), Rating)  # no scales
    for bad, where in (({"scores": {}}, "scores"), ({"scores": {"helpful": "5"}}, "scores.helpful"),
                       ({"scores": {"helpful": True}}, "scores.helpful"), ({"scores": {"helpful": 6}}, "scores.helpful"),
                       ({"scores": {"kind": 3}}, "scores.kind"), ({"scales": {"helpful": [5, 1]}}, "scales.helpful"),
                       ({"scales": [1, 5]}, "scales")):
        with pytest.raises(RecordError) as e:
            parse_record({**row, **bad}, accept=(Rating,))
        assert e.value.field == where, (bad, e.value)


def test_a_messages_row_ending_in_a_user_turn_is_a_prompt_to_a_prompt_reader():
    """`{"messages": [user]}` is what one writes to ask a model something: generate, eval and RL read it as the
    prompt (its other fields the reference); to eval and RL a conversation ending with the assistant is refused;
    to SFT a conversation without an assistant turn is still refused (nothing to train on)."""
    row = {"messages": [{"role": "user", "content": "What is 3+3?"}], "answer": "6"}
    expected = Prompt((Message("user", "What is 3+3?"),), {"answer": "6"})
    assert parse_record(row, accept=(Prompt,)) == expected
    assert parse_record(row, accept=(Prompt, Conversation)) == expected
    answered = {"messages": [*row["messages"], {"role": "assistant", "content": "6"}]}
    with pytest.raises(RecordError, match="ends with an assistant turn, and this command reads prompts"):
        parse_record(answered, accept=(Prompt,))
    assert isinstance(parse_record(answered, accept=(Prompt, Conversation)), Conversation)
    with pytest.raises(RecordError, match="has no assistant turn"):
        parse_record(row, accept=(Conversation,))


def test_a_prompt_row_given_to_sft_names_the_missing_completion():
    with pytest.raises(RecordError, match='"completion".* is missing'):
        parse_record({"prompt": "hi"}, accept=(Text, Conversation, PromptCompletion))
    assert parse_record({"prompt": "hi"}, accept=(PromptCompletion, Prompt)) == Prompt((Message("user", "hi"),), {})
