"""`posttrain feedback init|import|export` end to end, in-process, and their one-line errors."""

import datetime as dt
import json

from sqlalchemy.orm import sessionmaker

from posttrain.cli import main
from posttrain.data.load import load_records
from posttrain.data.preference import PREFERENCE_KINDS
from posttrain.feedback import assign
from posttrain.feedback.db import Campaign, User, make_engine


def test_init_import_judge_export(tmp_path, monkeypatch, capsys):
    db = f"sqlite:///{tmp_path}/fb.db"
    monkeypatch.setenv("POSTTRAIN_ADMIN_PASSWORD", "s3cret-password")
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 0
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 0  # again: upgrade only, user kept
    items = tmp_path / "items.jsonl"
    items.write_text("\n".join(json.dumps(r) for r in [
        {"prompt": "2+2?", "responses": ["4", "5"], "models": ["v2", "v1"]},
        {"prompt": "3+3?", "chosen": "6", "rejected": "7"},
    ]) + "\n")
    guide = tmp_path / "guide.md"
    guide.write_text("Pick the right sum.")
    assert main(["feedback", "import", "--db", db, "--campaign", "sums", "--items", str(items), "--overlap", "1",
                 "--guidelines", str(guide)]) == 0
    s = sessionmaker(make_engine(db))
    with s() as x:
        boss = x.query(User).filter_by(username="boss").one()
        campaign = x.query(Campaign).filter_by(name="sums").one()
        assert boss.role == "admin" and campaign.guidelines == "Pick the right sum."
    now = dt.datetime(2026, 1, 1)
    while (lease := assign.next_lease(s, campaign.id, boss.id, now)) is not None:
        with s() as x:
            from posttrain.feedback.db import Item, Lease

            le = x.get(Lease, lease)
            texts = [r["text"] for r in x.get(Item, le.item_id).responses]
        right = "AB"[le.presentation.index(0)]  # the first response of each item is the right one
        assign.submit(s, lease, boss.id, f"c{lease}", {"choice": right}, now)
    out = tmp_path / "pairs.jsonl"
    assert main(["feedback", "export", "--db", db, "--campaign", "sums", "-o", str(out)]) == 0
    records = load_records(str(out), accept=PREFERENCE_KINDS)
    assert sorted(r.chosen[0].content for r in records) == ["4", "6"] and texts


def test_bad_input_is_one_line(tmp_path, capsys):
    db = f"sqlite:///{tmp_path}/fb.db"
    assert main(["feedback", "import", "--db", db, "--campaign", "x", "--items", str(tmp_path / "none.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert "no such file" in err and "\n" not in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "responses": ["a", "b", "c"]}\n')
    assert main(["feedback", "import", "--db", db, "--campaign", "x", "--items", str(bad)]) == 2
    assert f"{bad}:1: responses: pairwise items need exactly 2 responses" in capsys.readouterr().err
    assert main(["feedback", "export", "--db", db, "--campaign", "nope"]) == 2
    assert "no campaign named 'nope'" in capsys.readouterr().err
    assert main(["feedback", "frobnicate"]) == 2
