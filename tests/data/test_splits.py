"""The one held-out policy: an eval file, else a built-in task's held-out split, else a seeded fraction by key."""

import json

from posttrain.config import DataConfig
from posttrain.data.splits import split_by_key, train_and_heldout


def test_fraction_split_is_by_key_seeded_and_keeps_every_item():
    """20 keys of which keys 1-5 hold 2 items each: 10% of 20 keys = 2 held-out keys, never split."""
    items = [(k, i) for i, k in enumerate(list(range(1, 21)) + list(range(1, 6)))]
    keys = [k for k, _ in items]
    train, held = split_by_key(items, keys, 0.1, seed=0)
    assert len({k for k, _ in held}) == 2 and not {k for k, _ in held} & {k for k, _ in train}
    assert sorted(train + held) == sorted(items)
    assert split_by_key(items, keys, 0.1, seed=0) == (train, held)
    assert split_by_key(items, keys, 0.1, seed=1)[1] != held
    assert split_by_key(items, keys, 0.0, seed=0) == (items, [])
    assert split_by_key(items[:1], keys[:1], 0.9, seed=0) == (items[:1], [])  # one key: it trains
    assert len({k for k, _ in split_by_key(items, keys, 0.01, seed=0)[1]}) == 1  # a fraction > 0 holds one out


def tokens(records, source):
    return [(source, r.text) for r in records]


def test_eval_file_then_builtin_split_then_fraction(tmp_path):
    train_file, eval_file = tmp_path / "t.jsonl", tmp_path / "e.jsonl"
    train_file.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(10)))
    eval_file.write_text(json.dumps({"text": "held"}) + "\n")
    from posttrain.data.records import Text

    train, held, lineage = train_and_heldout(DataConfig(train=str(train_file), eval=str(eval_file)), (Text,),
                                             tokens, key=lambda x: x[1], seed=0)
    assert len(train) == 10 and held == [(str(eval_file), "held")] and len(lineage) == 2
    train, held, lineage = train_and_heldout(DataConfig(train=str(train_file), eval_fraction=0.2), (Text,),
                                             tokens, key=lambda x: x[1], seed=0)
    assert len(train) == 8 and len(held) == 2 and len(lineage) == 1
    train, held, _ = train_and_heldout(DataConfig(train=str(train_file), eval_fraction=0.0), (Text,), tokens,
                                       key=lambda x: x[1], seed=0)
    assert len(train) == 10 and held == []


def test_a_builtin_task_holds_out_its_own_split():
    from posttrain.data.records import Prompt, PromptCompletion

    data = DataConfig(train="builtin:arithmetic?ops=+&digits=1", eval_fraction=0.5)
    train, held, lineage = train_and_heldout(data, (PromptCompletion, Prompt),
                                             lambda rs, src: [(src, r.prompt) for r in rs], key=lambda x: x[1], seed=0)
    assert {src for src, _ in held} == {"builtin:arithmetic/heldout?ops=+&digits=1"}
    assert not {p for _, p in held} & {p for _, p in train}  # the task's split never shares a problem
    assert [entry["source"] for entry in lineage] == [data.train, "builtin:arithmetic/heldout?ops=+&digits=1"]


def test_a_tiny_held_out_split_is_warned_about(tmp_path, caplog):
    from posttrain.data.records import Text

    small, large = tmp_path / "small.jsonl", tmp_path / "large.jsonl"
    small.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(10)))
    large.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(200)))
    train_and_heldout(DataConfig(train=str(small)), (Text,), tokens, key=lambda x: x[1], seed=0)
    assert f"{small} gives only 1 held-out example (data.eval_fraction=0.1)" in caplog.text
    caplog.clear()
    train_and_heldout(DataConfig(train=str(large)), (Text,), tokens, key=lambda x: x[1], seed=0)  # 20 held out
    assert caplog.text == ""


def test_held_out_rows_that_are_training_rows_are_warned_about(tmp_path, caplog):
    """--data.eval naming the training data itself (a trial's "evaluate on the campaign"), or a file cut from it:
    the warning counts the held-out records that are training records too; disjoint files say nothing."""
    from posttrain.data.records import Text

    train_file, part, other = tmp_path / "t.jsonl", tmp_path / "part.jsonl", tmp_path / "other.jsonl"
    train_file.write_text("".join(json.dumps({"text": f"row {i}"}) + "\n" for i in range(10)))
    part.write_text("".join(json.dumps({"text": t}) + "\n" for t in ("row 3", "row 4", "new")))
    other.write_text(json.dumps({"text": "held"}) + "\n")
    train_and_heldout(DataConfig(train=str(train_file), eval=str(train_file)), (Text,), tokens, lambda x: x[1], 0)
    assert f"10 of 10 held-out records of {train_file} are training records of {train_file} too (the same data)" \
        in caplog.text
    caplog.clear()
    train_and_heldout(DataConfig(train=str(train_file), eval=str(part)), (Text,), tokens, lambda x: x[1], 0)
    assert f"2 of 3 held-out records of {part} are training records" in caplog.text and "the same" not in caplog.text
    caplog.clear()
    train_and_heldout(DataConfig(train=str(train_file), eval=str(other)), (Text,), tokens, lambda x: x[1], 0)
    assert caplog.text == ""


def test_data_invalid_skip_drops_bad_rows_says_so_and_still_stops_on_a_file_of_them(tmp_path, caplog):
    """One identical chosen/rejected pair refused a whole preference dump (as public ones hold); with
    --data.invalid skip it is dropped and named, and a file with no valid row still stops."""
    import pytest

    from posttrain.data.preference import PREFERENCE_KINDS
    from posttrain.errors import DataError

    rows = [{"prompt": f"q{i}", "chosen": "a", "rejected": "b"} for i in range(5)]
    rows[2]["rejected"] = "a"  # identical to chosen: no preference
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    keep = lambda records, source: list(records)  # noqa: E731
    with pytest.raises(DataError, match="pairs.jsonl:3: field \"rejected\" is identical to chosen"):
        train_and_heldout(DataConfig(train=str(path), eval_fraction=0), PREFERENCE_KINDS, keep, id, 0)
    train, _, _ = train_and_heldout(DataConfig(train=str(path), eval_fraction=0, invalid="skip"), PREFERENCE_KINDS,
                                    keep, id, 0)
    assert len(train) == 4
    assert f"{path}: dropped 1 of 5 rows that are not valid records (data.invalid=skip); first: {path}:3:" \
        in caplog.text
    path.write_text(json.dumps(rows[2]) + "\n")
    with pytest.raises(DataError, match="pairs.jsonl:1: field \"rejected\" is identical to chosen"):
        train_and_heldout(DataConfig(train=str(path), eval_fraction=0, invalid="skip"), PREFERENCE_KINDS, keep, id, 0)
