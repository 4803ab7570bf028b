"""Closing the loop: a campaign judged by simulated raters through the HTTP API becomes training data, by an
export file or directly (`--data.train feedback:DB#CAMPAIGN`), and the trained run's lineage names the export.

The campaign is one a tiny reward model can learn: each arithmetic prompt has its correct answer in worked form
(`#### N`) against a wrong one (a negated, off-by-one `#### -M`, or a ramble with no number), and the raters judge
by correctness (`tasks.arithmetic_raters`), one of them with 10% random answers. The model versions ("v1", "v2")
take turns writing the correct answer, so they do not give it away.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from posttrain.cli import main
from posttrain.data.load import describe_source, load_records
from posttrain.data.records import PreferencePair, Prompt
from posttrain.feedback.simulate import SimulatedHttpRater, add_raters, client_for, reference_index, serve_in_thread
from posttrain.feedback.source import public_url
from posttrain.tasks.arithmetic_raters import make_rater

from .conftest import add_campaign

WORDS = "the a is of and so then because good bad yes no hello thanks".split()


def items_for(prompts: list[Prompt]) -> list[dict]:
    rng = random.Random(0)
    items = []
    for i, p in enumerate(prompts):
        answer = int(p.reference["answer"])
        wrong = f"#### -{answer + 1}" if i % 2 else " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
        models = ("v1", "v2") if i % 4 < 2 else ("v2", "v1")
        items.append({"prompt": [m.to_dict() for m in p.prompt],
                      "responses": [{"text": f"#### {answer}", "model": models[0]},
                                    {"text": wrong, "model": models[1]}]})
    return items


def new_db(path: Path):  # noqa: ANN201
    from sqlalchemy.orm import sessionmaker

    from posttrain.feedback import migrate
    from posttrain.feedback.db import make_engine

    url = f"sqlite:///{path}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    return url, sessionmaker(engine)


@pytest.fixture(scope="module")
def judged(tmp_path_factory) -> str:
    """200 items, overlap 2, judged over real HTTP by two simulated raters (noise 0 and 0.1): 400 judgments."""
    root = tmp_path_factory.mktemp("loop")
    prompts = load_records("builtin:arithmetic", accept=(Prompt,), limit=200)
    url, db = new_db(root / "feedback.db")
    add_campaign(db, "arith", items=items_for(prompts), overlap=2)
    tokens = add_raters(url, ["careful", "hasty"])
    with serve_in_thread(url) as base, client_for(base) as client:
        for (name, token), noise in zip(tokens.items(), (0.0, 0.1)):
            counts = SimulatedHttpRater(make_rater("correctness"), token, noise=noise, seed=7,
                                        references=reference_index(prompts)).judge(client, "arith")
            assert sum(counts.values()) == 200, (name, counts)
    return url


def rm_args(train: str, out: Path, name: str) -> list[str]:
    return ["rm", "--data.train", train, "--model.name", "tiny", "--data.max-length", "48",
            "--data.eval-fraction", "0.2", "--optim.lr", "1e-3", "--optim.warmup-steps", "1",
            "--optim.max-steps", "20", "--optim.batch-size", "16", "--run.name", name, "--run.output-dir",
            str(out), "--run.no-progress", "--run.log-every", "1"]


def held_out_accuracy(run: Path) -> float:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["eval/accuracy"] for r in rows if "eval/accuracy" in r][-1]


def test_the_feedback_source_reads_what_the_export_writes_and_describes_the_export(judged, tmp_path, capsys):
    out = tmp_path / "pairs.jsonl"
    assert main(["feedback", "export", "--db", judged, "--campaign", "arith", "-o", str(out)]) == 0
    err = capsys.readouterr().err
    exported = [json.loads(x) for x in out.read_text().splitlines()]
    export_id = exported[0]["feedback"]["export"]
    assert f"export {export_id}: wrote {len(exported)} records of 400 judgments" in err
    assert {r["feedback"]["export"] for r in exported} == {export_id}
    assert {r["feedback"]["rater"] for r in exported} == {"careful", "hasty"}
    direct = load_records(f"feedback:{judged}#arith")
    assert direct == load_records(str(out)) and all(isinstance(r, PreferencePair) for r in direct)
    lineage = describe_source(f"feedback:{judged}#arith")
    assert lineage["export_id"] == export_id and lineage["rows"] == len(exported)
    assert lineage["feedback"]["judgments"] == 400 and lineage["feedback"]["db"] == judged
    assert lineage["feedback"]["last_judgment"].endswith("Z")
    assert main(["feedback", "export", "--db", judged, "--campaign", "arith", "-o", str(tmp_path / "again.jsonl"),
                 "--ties", str(tmp_path / "ties.jsonl")]) == 0
    assert export_id in capsys.readouterr().err  # the same judgments: the same id
    assert (tmp_path / "again.jsonl").read_text() == out.read_text()
    assert (tmp_path / "ties.jsonl").read_text() == ""  # correctness always tells these apart


def test_a_file_joining_two_exports_of_one_campaign_is_warned_about(judged, tmp_path, caplog):
    """An export appended to a file that holds an earlier export of the same campaign (a trial did so after
    excluding a rater): every judgment would train twice; the lineage says which rows repeat. One export alone,
    and two campaigns' exports joined, say nothing."""
    out = tmp_path / "pairs.jsonl"
    assert main(["feedback", "export", "--db", judged, "--campaign", "arith", "-o", str(out)]) == 0
    rows = out.read_text().splitlines()
    caplog.clear()
    describe_source(str(out))
    assert "repeat a judgment" not in caplog.text
    again = [json.loads(r) for r in rows[:30]]
    for r in again:  # the same judgments under a later export's id, as after an exclusion
        r["feedback"]["export"] = "fb-0000000000000000"
    joined = tmp_path / "joined.jsonl"
    joined.write_text("\n".join(rows) + "\n" + "".join(json.dumps(r) + "\n" for r in again))
    describe_source(str(joined))
    assert f"{joined}: 30 rows repeat a judgment of an earlier row (campaign arith: exports " in caplog.text
    other = [json.loads(r) for r in rows[:30]]
    for r in other:
        r["feedback"]["campaign"] = "another"
    caplog.clear()
    joined.write_text("\n".join(rows) + "\n" + "".join(json.dumps(r) + "\n" for r in other))
    describe_source(str(joined))
    assert "repeat a judgment" not in caplog.text


def test_the_database_password_never_reaches_the_lineage():
    assert public_url("postgresql://rater:s3cret@db.example.org:5432/feedback") == \
        "postgresql://rater@db.example.org:5432/feedback"
    assert public_url("sqlite:///feedback.db") == "sqlite:///feedback.db"


@pytest.mark.slow
def test_round_trip_export_then_rm_reaches_85_percent_held_out(judged, tmp_path, capsys):
    """Export -> `posttrain rm` on the file; held-out accuracy is over the campaign's own judgments (20% of its
    prompts, never trained on), labels from both raters, the noisy one's random answers included."""
    out = tmp_path / "pairs.jsonl"
    assert main(["feedback", "export", "--db", judged, "--campaign", "arith", "-o", str(out)]) == 0
    export_id = json.loads(out.read_text().splitlines()[0])["feedback"]["export"]
    assert main(rm_args(str(out), tmp_path, "from-file")) == 0
    assert held_out_accuracy(tmp_path / "from-file") >= 0.85
    lineage = json.loads((tmp_path / "from-file" / "lineage.json").read_text())
    (entry,) = [d for d in lineage["data"] if d["source"] == str(out)]
    assert entry["export_ids"] == [export_id]  # read from the rows' feedback field


@pytest.mark.slow
def test_round_trip_through_a_feedback_source_without_an_export_file(judged, tmp_path):
    """The same through `--data.train feedback:...`: the lineage names the export id and the campaign's state."""
    from sqlalchemy.orm import Session

    from posttrain.feedback.db import make_engine
    from posttrain.feedback.export import export_campaign

    with Session(make_engine(judged)) as s:
        expected = export_campaign(s, "arith")
    assert main(rm_args(f"feedback:{judged}#arith", tmp_path, "direct")) == 0
    assert held_out_accuracy(tmp_path / "direct") >= 0.85
    (entry,) = [d for d in json.loads((tmp_path / "direct" / "lineage.json").read_text())["data"]
                if d["source"].startswith("feedback:")]
    assert entry["export_id"] == expected.export_id
    assert entry["feedback"]["judgments"] == 400 and entry["feedback"]["last_judgment"] == expected.last_judgment
    assert entry["feedback"]["db"] == judged


def one_line_error(capsys, *words: str) -> None:  # noqa: ANN001
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err, err
    for w in words:
        assert w in err, (w, err)


def test_bad_input_is_one_line_exit_2(tmp_path, capsys):
    """An unknown campaign, a campaign with no judgments, a database that cannot be reached: from `feedback
    export` and from a training command's `feedback:` source alike, and no run directory left behind."""
    url, db = new_db(tmp_path / "feedback.db")
    add_campaign(db, "empty", items=items_for(load_records("builtin:arithmetic", accept=(Prompt,), limit=2)))
    runs = tmp_path / "runs"
    assert main(["feedback", "export", "--db", url, "--campaign", "nope"]) == 2
    one_line_error(capsys, "no campaign named 'nope'", "empty")
    assert main(rm_args(f"feedback:{url}#nope", runs, "x")) == 2
    one_line_error(capsys, "posttrain rm: error:", "no campaign named 'nope'")
    assert main(["feedback", "export", "--db", url, "--campaign", "empty"]) == 2
    one_line_error(capsys, "campaign 'empty' has no judgments")
    assert main(rm_args(f"feedback:{url}#empty", runs, "x")) == 2
    one_line_error(capsys, "posttrain rm: error:", "campaign 'empty' has no judgments")
    for bad, says in ((str(tmp_path / "feedback.db"), f"is named by a URL, not a path: sqlite:///{tmp_path}/feedback.db"),
                      ("mysql://u@h/fb", "a mysql database is not supported; use SQLite")):
        assert main(["feedback", "stats", "--db", bad, "--campaign", "empty"]) == 2
        one_line_error(capsys, "posttrain feedback: error:", says)
        assert main(rm_args(f"feedback:{bad}#empty", runs, "x")) == 2
        one_line_error(capsys, "posttrain rm: error:", says)
    for bad in ("postgresql://nobody:pw@127.0.0.1:1/feedback", f"sqlite:///{tmp_path}/no/such/dir/f.db"):
        assert main(["feedback", "export", "--db", bad, "--campaign", "x"]) == 2
        one_line_error(capsys, "posttrain feedback: error:")
        assert main(rm_args(f"feedback:{bad}#x", runs, "x")) == 2
        one_line_error(capsys, "posttrain rm: error:")
    assert main(rm_args(f"feedback:{url}", runs, "x")) == 2
    one_line_error(capsys, "feedback:DB_URL#CAMPAIGN")
    assert not (runs / "x").exists()


def test_a_campaign_with_judgments_but_no_record_to_train_on_is_one_line(tmp_path, capsys):
    """Every judgment a tie: `rm` and `dpo` from the campaign say so in one line (it was a ZeroDivisionError in
    the first step, with a half-made run directory left behind), as an empty file is."""
    import datetime as dt

    from posttrain.feedback import assign

    from .conftest import add_users

    url, db = new_db(tmp_path / "feedback.db")
    cid = add_campaign(db, "ties", items=items_for(load_records("builtin:arithmetic", accept=(Prompt,), limit=2)))
    uid = add_users(db, {"r": "rater"})["r"]
    now = dt.datetime(2026, 1, 1)
    assign.submit(db, assign.next_lease(db, cid, uid, now), uid, "tie-1", {"choice": "tie"}, now)
    runs = tmp_path / "runs"
    for cmd in ("rm", "dpo"):
        assert main(short_run(cmd, f"feedback:{url}#ties", runs, cmd)) == 2
        one_line_error(capsys, f"posttrain {cmd}: error:", "campaign 'ties' has 1 judgment and no record to train "
                       "on (left out: 1 tie)")
        assert not (runs / cmd).exists()


def short_run(cmd: str, train: str, out: Path, name: str) -> list[str]:
    return [cmd, "--data.train", train, "--model.name", "tiny", "--data.max-length", "48", "--data.eval-fraction",
            "0", "--optim.max-steps", "2", "--optim.batch-size", "4", "--optim.warmup-steps", "1", "--run.name", name,
            "--run.output-dir", str(out), "--run.no-progress"]


def feedback_lineage(run: Path) -> dict:
    (entry,) = [d for d in json.loads((run / "lineage.json").read_text())["data"] if d["source"].startswith("feedback:")]
    return entry


def test_dpo_and_sft_read_campaigns_directly(judged, tmp_path):
    """`posttrain dpo` on the judged pairwise campaign, `posttrain sft` on a correction campaign (its corrections
    as prompt-completion records): a couple of steps each, the export id in both runs' lineage."""
    from sqlalchemy.orm import sessionmaker

    from posttrain.feedback import assign
    from posttrain.feedback.db import User, make_engine, utcnow

    assert main(short_run("dpo", f"feedback:{judged}#arith", tmp_path, "dpo")) == 0
    export_id = feedback_lineage(tmp_path / "dpo")["export_id"]
    assert export_id.startswith("fb-")
    assert f"feedback export `{export_id}`" in (tmp_path / "dpo" / "final" / "README.md").read_text()  # not `?`
    url, db = new_db(tmp_path / "fix.db")
    cid = add_campaign(db, "fix", task="correction", items=[
        {"prompt": [{"role": "user", "content": f"What is {i} + 1?"}], "responses": [{"text": "0", "model": "v1"}]}
        for i in range(4)])
    add_raters(url, ["editor"])
    s = sessionmaker(make_engine(url))
    with s() as x:
        uid = x.query(User).filter_by(username="editor").one().id
    for i in range(4):
        lease = assign.next_lease(s, cid, uid, utcnow())
        assign.submit(s, lease, uid, f"fix-{i}", {"response": 0, "text": f"#### {i + 1}"}, utcnow())
    assert main(short_run("sft", f"feedback:{url}#fix", tmp_path, "sft")) == 0
    entry = feedback_lineage(tmp_path / "sft")
    assert entry["rows"] == 4 and entry["feedback"]["judgments"] == 4 and entry["feedback"]["task_type"] == "correction"


def test_a_postgresql_campaign_is_a_source_too(pg_server, tmp_path):
    """The same reader on PostgreSQL: records, export id and the URL (password left out) in the lineage entry."""
    from sqlalchemy.orm import sessionmaker

    import posttrain.feedback.source  # noqa: F401  registers feedback: (the posttrain command does it too)
    from posttrain.feedback import migrate
    from posttrain.feedback.db import make_engine

    url = pg_server()
    engine = make_engine(url)
    migrate.upgrade(engine)
    db = sessionmaker(engine)
    prompts = load_records("builtin:arithmetic", accept=(Prompt,), limit=4)
    add_campaign(db, "pg", items=items_for(prompts))
    token = add_raters(url, ["r"])["r"]
    from posttrain.feedback.app import Settings, create_app

    app = create_app(Settings(db=url))
    with client_for(app) as client:
        SimulatedHttpRater(make_rater("correctness"), token, references=reference_index(prompts)).judge(client, "pg")
    app.state.engine.dispose()
    records = load_records(f"feedback:{url}#pg")
    assert len(records) == 4 and all(r.chosen[0].content.startswith("#### ") for r in records)
    entry = describe_source(f"feedback:{url}#pg")
    assert entry["feedback"]["db"] == url and entry["feedback"]["judgments"] == 4
    assert entry["export_id"].startswith("fb-")
    engine.dispose()
