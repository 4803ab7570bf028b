"""Loading records from JSONL, JSON, CSV, parquet, `datasets` folders and built-in tasks, and the errors users see."""

import hashlib
import json

import pytest

from posttrain.data import load
from posttrain.data.load import describe_source, file_sha256, load_records, load_records_with_report
from posttrain.data.records import Conversation, Message, PreferencePair, Prompt, PromptCompletion, Text
from posttrain.errors import DataError
from posttrain.tasks import TASKS, Task

SFT_KINDS = (Text, Conversation, PromptCompletion)
CHAT = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
PAIR = {"prompt": "Sky?", "chosen": "Blue.", "rejected": "Green."}


def write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return str(path)


def error_of(source, **kwargs) -> str:
    """The DataError message of loading `source`; its first line must name the source."""
    with pytest.raises(DataError) as info:
        load_records(str(source), **kwargs)
    message = str(info.value)
    assert message.splitlines()[0].startswith(str(source).split("?")[0].split("#")[0])
    return message


# --- files that load ---------------------------------------------------------------------------


def test_jsonl_keeps_line_numbers_across_blank_lines(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, "", "   ", {"messages": CHAT}, {"text": 3}])
    assert error_of(source) == f'{source}:5: field "text" expected a string, got a number'
    rows = load_records(source, limit=2)
    assert rows == [Text("a"), Conversation((Message("user", "Hi"), Message("assistant", "Hello")))]


def test_jsonl_with_byte_order_mark(tmp_path):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"text": "a"}).encode() + b"\n")
    assert load_records(str(path)) == [Text("a")]


def test_limit_stops_reading(tmp_path):
    """Rows after the limit are never read, so a bad one there does not fail the load."""
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, {"text": "b"}, "not json"])
    assert load_records(source, limit=2) == [Text("a"), Text("b")]


def test_json_array(tmp_path):
    path = tmp_path / "d.json"
    path.write_text(json.dumps([PAIR, {**PAIR, "margin": None}]))
    records = load_records(str(path), (PreferencePair,))
    assert len(records) == 2 and records[1].margin is None


def test_csv_reads_json_cells_and_names_lines(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text(
        "prompt,completion\n"
        '"[{""role"": ""user"", ""content"": ""Hi""}]",Hello\n'
        "\n"
        "2+2?,4\n"
        '"[{""role"": ""user""",oops\n'
    )
    message = error_of(path)
    expected = ("column \"prompt\" starts with \"[\" but is not valid JSON (Expecting ',' delimiter at character 17); "
                "fix the JSON, or use a JSONL file for structured rows")
    assert message == f"{path}:5: {expected}"
    records = load_records(str(path), limit=2)
    assert records[0] == PromptCompletion((Message("user", "Hi"),), (Message("assistant", "Hello"),))
    assert records[1].completion == (Message("assistant", "4"),)


def test_csv_row_with_missing_cells(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("prompt,completion\nHi\n")
    assert error_of(path) == (f"{path}:2: has 1 cell but the header has 2 columns (give every column a cell, an "
                              "empty one as nothing between its commas: a,,c)")
    path.write_text("prompt,completion\nHi, there,Hello\n")
    assert error_of(path) == (f"{path}:2: has 3 cells but the header has 2 columns (a cell holding a comma must be "
                              'quoted: "a, b")')


def test_csv_quote_left_open_is_refused_where_it_opens(tmp_path):
    """A quote never closed swallowed every later row into one cell, and the file trained on 1 row of 4."""
    path = tmp_path / "d.csv"
    path.write_text('prompt,completion\nWhat is 2+3?,"5\nWhat is 1+1?,2\nWhat is 3+3?,6\nWhat is 4+4?,8\n')
    assert error_of(path).startswith(f"{path}:2: a quoted cell opens on this line and is never closed")
    path.write_text('prompt,completion\n"a ""quoted""\nsecond line",x\n"What is" 1+1?,2\n')  # rows on lines 2, 4
    assert error_of(path).startswith(f"{path}:4: is not valid CSV")
    path.write_text('prompt,completion\n"a ""quoted""\nsecond line",x\n"What is 1+1?",2\n')
    assert [r.completion[0].content for r in load_records(str(path))] == ["x", "2"]


def test_csv_text_starting_with_a_bracket_stays_text(tmp_path):
    """Only a cell meant as JSON ([{, [", [[, {" or a JSON-only column) must parse; '[1] Intro' is text."""
    path = tmp_path / "d.csv"
    path.write_text('text\n"[1] Introduction"\n"{name} is a placeholder"\n')
    assert load_records(str(path)) == [Text("[1] Introduction"), Text("{name} is a placeholder")]
    path.write_text('messages\n"[oops"\n')
    assert error_of(path).startswith(f'{path}:2: column "messages" starts with "[" but is not valid JSON')


def test_parquet_with_nested_messages_and_nulls(tmp_path):
    """Arrow unifies the schema, so the text row gets messages=None; a null counts as absent."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pydict({"messages": [CHAT, None], "text": [None, "plain"]}), path)
    records = load_records(str(path))
    assert isinstance(records[0], Conversation) and records[1] == Text("plain")
    pq.write_table(pa.Table.from_pylist([{"text": "a"}, {"text": ""}]), path)
    assert error_of(path) == f'{path} row 2: field "text" is empty'


def test_datasets_folders_and_splits(tmp_path):
    import datasets
    one = datasets.Dataset.from_list([{"text": "a"}, {"text": "b"}])
    one.save_to_disk(str(tmp_path / "one"))
    assert load_records(str(tmp_path / "one")) == [Text("a"), Text("b")]
    assert "without splits" in error_of(f"{tmp_path / 'one'}#test")

    bad = datasets.Dataset.from_list([{"messages": CHAT}, {"messages": []}])
    datasets.DatasetDict({"train": one, "test": bad}).save_to_disk(str(tmp_path / "dict"))
    assert load_records(str(tmp_path / "dict")) == [Text("a"), Text("b")]
    message = error_of(f"{tmp_path / 'dict'}#test")
    assert message.startswith(f'{tmp_path / "dict"}#test row 2: field "messages" is an empty list')
    assert "has no split 'dev' (splits: train, test" in error_of(f"{tmp_path / 'dict'}#dev")


# --- built-in tasks -----------------------------------------------------------------------------


def toy_rows(split="train", **options):
    """A stand-in task: the options come back in the rows, so the test sees how they were parsed."""
    if split not in ("train", "heldout"):
        raise ValueError(f"unknown split {split!r}")
    if "bad" in options:
        raise ValueError("option bad must not be given")
    return [{"prompt": f"{split} {key}={value}"} for key, value in sorted(options.items())] or [{"prompt": split}]


def test_builtin_name_split_and_options(monkeypatch):
    monkeypatch.setitem(TASKS, "toy", Task(toy_rows, None, "a stand-in"))
    assert load_records("builtin:toy") == [Prompt((Message("user", "train"),), {})]
    records = load_records("builtin:toy/heldout?ops=+-&sep=%26")
    assert [r.text for r in records] == ["heldout ops=+-", "heldout sep=&"]
    assert describe_source("builtin:toy?a=1&b=2") == {"source": "builtin:toy?a=1&b=2", "sha256": None, "rows": 2}


def test_builtin_errors(monkeypatch):
    monkeypatch.setitem(TASKS, "toy", Task(toy_rows, None, "a stand-in"))
    assert error_of("builtin:toy?bad=1") == "builtin:toy?bad=1: option bad must not be given"
    assert error_of("builtin:toy/dev") == "builtin:toy/dev: unknown split 'dev'"
    assert error_of("builtin:toy?digits") == "builtin:toy?digits: option 'digits' should be written key=value"
    message = error_of("builtin:tyo")
    assert message.startswith("builtin:tyo: unknown built-in task 'tyo' (did you mean 'toy'? known: ")
    assert "arithmetic" in message


def test_builtin_arithmetic_is_registered():
    records = load_records("builtin:arithmetic/heldout?ops=+-&digits=2", limit=5)
    assert len(records) == 5 and all(r.prompt[-1].content.startswith("What is") for r in records)
    assert "ops" in error_of("builtin:arithmetic?ops=x")


# --- errors -------------------------------------------------------------------------------------


def test_nonexistent_paths(tmp_path):
    assert error_of(tmp_path / "no.jsonl") == f"{tmp_path / 'no.jsonl'}: no such file or folder"
    assert "did you mean builtin:arithmetic?" in error_of("arithmetic")
    assert "built-in tasks are written builtin:NAME; known:" in error_of("builtins:arithmetic")


def test_folder_that_is_not_a_dataset(tmp_path):
    assert "not one written by datasets' save_to_disk" in error_of(tmp_path)


def test_unsupported_extension(tmp_path):
    (tmp_path / "d.txt").write_text("hello\n")
    assert "unsupported file type '.txt'" in error_of(tmp_path / "d.txt")


@pytest.mark.parametrize("name", ["d.jsonl", "d.json", "d.csv", "d.parquet"])
def test_empty_file(tmp_path, name):
    (tmp_path / name).write_bytes(b"")
    assert error_of(tmp_path / name).endswith("is empty (0 bytes, no rows)")


@pytest.mark.parametrize("name", ["d.jsonl", "d.csv"])
def test_only_blank_lines(tmp_path, name):
    (tmp_path / name).write_text("\n  \n\n")
    assert "has only blank lines" in error_of(tmp_path / name)


def test_bad_json_line(tmp_path):
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": "a"}, '{"text": "b"'])
    assert error_of(source) == f"{source}:2: invalid JSON: Expecting ',' delimiter (column 13)"


def test_non_utf8_bytes_name_the_line(tmp_path):
    for name in ("d.jsonl", "d.csv", "d.json"):
        head = b'[{"text": "a"},\n' if name == "d.json" else (b"text\n" if name == "d.csv" else b'{"text": "a"}\n')
        (tmp_path / name).write_bytes(head + b'{"text": "caf\xe9"}\n')
        message = error_of(tmp_path / name)
        assert message.startswith(f"{tmp_path / name}:2: is not valid UTF-8 (byte 0xe9)"), message


@pytest.mark.parametrize(
    "row, expected",
    [
        ([1, 2], "row expected a JSON object, got a list"),
        ({"prompt": "q", "rejected": "b"}, 'field "chosen" is missing (preference records need prompt, chosen'),
        ({"messages": [{"role": "user", "content": 3}]}, 'field "messages[0].content" expected a string, got a number'),
        ({"messages": []}, 'field "messages" is an empty list'),
        ({"messages": [{"role": "bot", "content": "x"}]}, "field \"messages[0].role\" unknown role 'bot'"),
        ({**PAIR, "rejected": "Blue."}, 'field "rejected" is identical to chosen'),
        (
            {"prompt": "q", "responses": ["a", "b", "c"], "order": [0, 0, 1]},
            'field "order" must be a permutation of 0..2: response indices given twice [0]; response indices missing [2]',
        ),
        ({"label": 1}, "row keys ['label'] match no record kind"),
        ({"prompt": "q", "chosen": "a", "rejected": None}, 'field "rejected" is null; give it a value'),
        ({"messages": [{"role": "user", "content": None}]}, 'field "messages[0].content" expected a string, got null'),
    ],
    ids=["not-object", "missing", "wrong-type", "empty-messages", "role", "same", "ranking", "unknown-kind",
         "null-field", "null-content"],
)
def test_bad_rows_name_file_line_and_field(tmp_path, row, expected):
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": "ok"}, row])
    assert error_of(source).startswith(f"{source}:2: {expected}")


def test_a_row_of_null_fields_says_they_count_as_absent(tmp_path):
    """{"text": null} was 'row keys [] match no record kind', naming none of the keys the user sees in the row."""
    source = write_jsonl(tmp_path / "d.jsonl", [{"text": None}])
    assert error_of(source).endswith('; its null fields ("text") count as absent: give them values')


def test_kind_the_consumer_does_not_accept(tmp_path):
    source = write_jsonl(tmp_path / "pairs.jsonl", [PAIR])
    message = error_of(source, accept=SFT_KINDS)
    needs = "text, conversation, prompt-completion"
    assert message == f"{source}:1: row is a preference record (read by dpo and rm), but this command needs: {needs}"


def test_json_top_level_must_be_an_array(tmp_path):
    (tmp_path / "d.json").write_text(json.dumps({"data": [PAIR]}))
    assert "the top level is an object, expected an array of rows" in error_of(tmp_path / "d.json")
    (tmp_path / "d.json").write_text('[{"text": "a"},\n{"text": }]')
    assert error_of(tmp_path / "d.json") == f"{tmp_path / 'd.json'}:2: invalid JSON: Expecting value (column 10)"


def test_unreadable_parquet(tmp_path):
    (tmp_path / "d.parquet").write_bytes(b"this is not parquet at all")
    assert "cannot be read as parquet" in error_of(tmp_path / "d.parquet")


# --- many bad rows --------------------------------------------------------------------------------


def mixed_file(tmp_path):
    """10 rows: lines 2, 4, 6, 8, 10 are bad (5 of 10)."""
    rows = [{"text": f"row {i}"} if i % 2 else {"text": ""} for i in range(1, 11)]
    return write_jsonl(tmp_path / "mixed.jsonl", rows)


def test_many_bad_rows_are_summarized(tmp_path):
    source = mixed_file(tmp_path)
    lines = error_of(source).splitlines()
    assert lines[0] == f"{source}: 5 of 10 rows are invalid; first 3:"
    assert lines[1:] == [f'  {source}:{n}: field "text" is empty' for n in (2, 4, 6)]


def test_skip_invalid_reports_what_it_dropped(tmp_path):
    source = mixed_file(tmp_path)
    records, report = load_records_with_report(source, skip_invalid=True)
    assert [r.text for r in records] == ["row 1", "row 3", "row 5", "row 7", "row 9"]
    assert (report.n_rows, report.n_skipped, len(report.first_errors)) == (10, 5, 3)
    only_bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": ""}])
    assert error_of(only_bad, skip_invalid=True).endswith('bad.jsonl:1: field "text" is empty')  # one line, as unskipped


# --- hashing and lineage ----------------------------------------------------------------------------


def test_file_sha256_known_value_and_chunking(tmp_path):
    """sha256("abc") is the FIPS 180-2 test vector; a 3 MiB file spans several 1 MiB chunks."""
    (tmp_path / "abc").write_bytes(b"abc")
    assert file_sha256(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    big = bytes(range(256)) * (3 * 4096 + 7)
    (tmp_path / "big").write_bytes(big)
    assert file_sha256(tmp_path / "big") == hashlib.sha256(big).hexdigest()


def test_describe_source_for_file_and_folder(tmp_path):
    source = mixed_file(tmp_path)
    assert describe_source(source) == {"source": source, "sha256": file_sha256(source), "rows": 5}
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "dataset_info.json").write_bytes(b"b")
    (folder / "a.arrow").write_bytes(b"a")
    assert load.source_sha256(str(folder)) == hashlib.sha256(b"ab").hexdigest()  # a.arrow before dataset_info.json
