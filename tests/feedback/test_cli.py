"""`posttrain feedback init|import|export` end to end, in-process, and their one-line errors."""

import datetime as dt
import html
import json

from sqlalchemy.orm import sessionmaker

from posttrain.cli import main
from posttrain.data.load import load_records
from posttrain.data.preference import PREFERENCE_KINDS
from posttrain.feedback import assign
from posttrain.feedback.db import Campaign, User, make_engine
from posttrain.feedback.simulate import free_port


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
    assert "(replacing the file that was there)" not in capsys.readouterr().err
    assert main(["feedback", "export", "--db", db, "--campaign", "sums", "-o", str(out)]) == 0
    assert f"to {out} (replacing the file that was there)" in capsys.readouterr().err  # never without a word
    assert main(["feedback", "export", "--db", db, "--campaign", "sums", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "output" in err and "is a folder" in err and "\n" not in err.strip()  # before the database is read
    monkeypatch.chdir(tmp_path)
    assert main(["feedback", "export", "--db", db, "--campaign", "sums"]) == 0  # unset: named by the campaign
    assert (tmp_path / "sums.jsonl").read_text() == out.read_text()
    capsys.readouterr()
    assert main(["feedback", "close", "--db", db, "--campaign", "sums"]) == 0
    assert "campaign 'sums': closed" in capsys.readouterr().err
    with s() as x:
        assert x.query(Campaign).filter_by(name="sums").one().closed_at is not None
    assert main(["feedback", "close", "--db", db, "--campaign", "sums", "--reopen"]) == 0
    with s() as x:
        assert x.query(Campaign).filter_by(name="sums").one().closed_at is None
    assert main(["feedback", "close", "--db", db, "--campaign", "nope"]) == 2


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


def test_reading_commands_refuse_a_missing_sqlite_file_and_create_nothing(tmp_path, monkeypatch, capsys):
    """A typo in the path (feedbak.db) is an error naming the URL and `feedback init`, not a new empty database
    that then has no campaign (or, served, no user to log in as): stats, export, serve, token and the feedback:
    data source alike; the directory stays empty."""
    from posttrain.errors import ConfigError

    monkeypatch.chdir(tmp_path)
    expect = "sqlite:///feedbak.db: no such database file; create one with posttrain feedback init --db sqlite:///"
    for action, args in (("stats", ["--campaign", "versions"]), ("export", ["--campaign", "versions"]),
                         ("serve", ["--port", str(free_port())]), ("token", ["--user", "alice"])):
        assert main(["feedback", action, "--db", "sqlite:///feedbak.db", *args]) == 2, action
        err = capsys.readouterr().err.strip()
        assert expect in err and "\n" not in err, err
    try:
        load_records("feedback:sqlite:///feedbak.db#versions", accept=PREFERENCE_KINDS)
        raise AssertionError("read a database that does not exist")
    except ConfigError as e:
        assert expect in str(e)
    assert list(tmp_path.iterdir()) == []


def test_three_slashes_for_a_path_from_the_root_get_the_four_slash_url(tmp_path, monkeypatch, capsys):
    """sqlite:///tmp/x/fb.db is a path from the current folder; when the file is at /tmp/x/fb.db, say so (trial 12:
    the typo a newcomer makes most was answered only 'no such database file')."""
    monkeypatch.setenv("POSTTRAIN_ADMIN_PASSWORD", "s3cret-password")
    db = tmp_path / "fb.db"
    assert main(["feedback", "init", "--db", f"sqlite:///{db}", "--admin", "alice"]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    assert main(["feedback", "stats", "--db", f"sqlite://{db}", "--campaign", "x"]) == 2  # three slashes
    err = capsys.readouterr().err.strip()
    assert f"four slashes: sqlite:///{db}" in err and "\n" not in err, err


def test_import_into_a_new_database_says_it_made_one_without_users(tmp_path, capsys):
    items = tmp_path / "items.jsonl"
    items.write_text('{"prompt": "2+2?", "responses": ["4", "5"]}\n')
    db = f"sqlite:///{tmp_path}/new.db"
    assert main(["feedback", "import", "--db", db, "--campaign", "a", "--items", str(items)]) == 0
    assert (f"created the database {db}; it has no users yet: posttrain feedback init --db {db} makes the first "
            "admin") in capsys.readouterr().err
    assert main(["feedback", "import", "--db", db, "--campaign", "b", "--items", str(items)]) == 0
    assert "created the database" not in capsys.readouterr().err  # the second time it was there


def test_init_says_whether_it_created_the_schema_and_a_refused_init_leaves_no_file(tmp_path, monkeypatch, capsys):
    db_file = tmp_path / "fb.db"
    db = f"sqlite:///{db_file}"
    monkeypatch.delenv("POSTTRAIN_ADMIN_PASSWORD", raising=False)
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 2  # no password, no terminal to ask on
    assert "POSTTRAIN_ADMIN_PASSWORD" in capsys.readouterr().err
    monkeypatch.setenv("POSTTRAIN_ADMIN_PASSWORD", "short")
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 2
    assert "8 characters" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setenv("POSTTRAIN_ADMIN_PASSWORD", "s3cret-password")
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 0
    assert "created the schema; created admin 'boss'" in capsys.readouterr().err
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 0
    assert "schema is up to date; user 'boss' exists" in capsys.readouterr().err


def test_serve_on_a_port_in_use_is_one_line_and_creates_nothing(tmp_path, monkeypatch, capsys):
    import socket

    monkeypatch.chdir(tmp_path)
    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        assert main(["feedback", "serve", "--db", "sqlite:///f.db", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot listen on 127.0.0.1:{port} (Address already in use)" in err and err.count("\n") == 1
    assert not (tmp_path / "f.db").exists()


def test_token_makes_an_api_token_for_a_user_from_the_command_line(tmp_path, monkeypatch, capsys):
    """For curl and scripts without the /tokens page: the printed token authenticates on the API."""
    from fastapi.testclient import TestClient

    from posttrain.feedback.app import Settings, create_app

    db = f"sqlite:///{tmp_path}/fb.db"
    monkeypatch.setenv("POSTTRAIN_ADMIN_PASSWORD", "s3cret-password")
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 0
    capsys.readouterr()
    assert main(["feedback", "token", "--db", db, "--user", "boss", "--name", "curl"]) == 0
    out = capsys.readouterr()
    token = out.out.strip()
    assert token.startswith("pt_") and "Authorization: Bearer" in out.err
    api = TestClient(create_app(Settings(db=db)))
    assert api.get("/api/me", headers={"Authorization": f"Bearer {token}"}).json()["username"] == "boss"
    assert api.get("/api/me", headers={"Authorization": "Bearer pt_wrong"}).status_code == 401
    assert main(["feedback", "token", "--db", db, "--user", "nobody"]) == 2
    assert "user 'nobody': no such user" in capsys.readouterr().err


def test_repeated_model_options_add_up():
    from posttrain.feedback.cli import merge_repeated

    assert merge_repeated(["--campaign", "c", "--model", "a", "--model=b", "--limit", "3", "--model", "c", "d"],
                          "--model") == ["--campaign", "c", "--model", "a", "b", "c", "d", "--limit", "3"]
    assert merge_repeated(["--model", "a", "b", "--db", "x"], "--model") == ["--model", "a", "b", "--db", "x"]
    assert merge_repeated(["--db", "x"], "--model") == ["--db", "x"]


def test_generate_with_two_models_makes_a_campaign_of_both_with_identities_hidden(tmp_path, tiny_dir, capsys):
    """Two tiny models (the built-in one, and a copy with its weights nudged) sample greedily for 6 prompts; each
    item holds one response of each, in --model order, and a rater sees the texts but no model name."""
    import shutil

    import torch
    from fastapi.testclient import TestClient
    from transformers import AutoModelForCausalLM

    from posttrain.feedback.app import Settings, create_app
    from posttrain.feedback.db import Item

    from .conftest import add_users, login

    model_a, model_b = tmp_path / "runs" / "a" / "final", tmp_path / "runs" / "b" / "final"
    shutil.copytree(tiny_dir, model_a)
    shutil.copytree(tiny_dir, model_b)
    nudged = AutoModelForCausalLM.from_pretrained(model_b)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in nudged.parameters():
            p.add_(0.5 * p.std().nan_to_num(0.02) * torch.randn_like(p))
    nudged.save_pretrained(model_b)
    db = f"sqlite:///{tmp_path}/fb.db"
    (tmp_path / "guide.md").write_text("Prefer the **correct** sum.\n")
    assert main(["feedback", "generate", "--db", db, "--campaign", "ab", "--model", str(model_a), "--model",
                 str(model_b), "--prompts", "builtin:arithmetic/heldout", "--limit", "6",
                 "--sampling.temperature", "0", "--sampling.max-new-tokens", "12", "--device", "cpu",
                 "--guidelines", str(tmp_path / "guide.md"), "--lease-seconds", "120"]) == 0
    err = capsys.readouterr().err
    assert "campaign 'ab' (id 1)" in err and "answers greedy (posttrain eval is greedy unless" in err
    s = sessionmaker(make_engine(db))
    with s() as x:
        campaign = x.query(Campaign).filter_by(name="ab").one()
        items = x.query(Item).filter_by(campaign_id=campaign.id).all()
    assert campaign.task_type == "pairwise" and 1 <= len(items) <= 6
    assert (campaign.guidelines, campaign.lease_seconds) == ("Prefer the **correct** sum.\n", 120)
    for item in items:
        assert [r["model"] for r in item.responses] == ["a", "b"]  # runs/a/final by its run's name, as eval does
        assert item.responses[0]["text"] != item.responses[1]["text"]
    app = create_app(Settings(db=db))
    add_users(app.state.db, {"rater1": "rater"})
    c = TestClient(app)
    csrf = login(c, "rater1")
    page = c.get(f"/c/{campaign.id}/next").text
    task = c.post(f"/api/campaigns/{campaign.id}/next", headers={"X-CSRF-Token": csrf}).json()
    item = next(i for i in items if i.prompt == task["prompt"])  # the page's lease: the one the API returns
    assert sorted(task["responses"]) == sorted(r["text"] for r in item.responses)
    assert all(r["text"] in html.unescape(page) for r in item.responses)
    for text in (page, json.dumps(task)):
        assert str(tmp_path) not in text and "runs/a" not in text and "runs/b" not in text


def test_generate_pairwise_with_three_models_compares_the_pairs_in_turn(tmp_path, tiny_dir, capsys):
    """Three models, pairwise: each item holds two of them, the three pairs taken in turn over the prompts (a
    prompt whose two answers are identical is left out); the same model twice is refused in one line."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM

    from posttrain.feedback.db import Item

    dirs = []
    for n in range(3):
        path = tmp_path / f"m{n}"
        shutil.copytree(tiny_dir, path)
        model = AutoModelForCausalLM.from_pretrained(path)
        torch.manual_seed(n)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.5 * n * p.std().nan_to_num(0.02) * torch.randn_like(p))
        model.save_pretrained(path)
        dirs.append(str(path))
    db = f"sqlite:///{tmp_path}/fb.db"
    assert main(["feedback", "generate", "--db", db, "--campaign", "abc", "--model", *dirs, "--limit", "9",
                 "--sampling.temperature", "1", "--sampling.seed", "0", "--sampling.max-new-tokens", "12",
                 "--device", "cpu"]) == 0
    s = sessionmaker(make_engine(db))
    with s() as x:
        campaign = x.query(Campaign).filter_by(name="abc").one()
        items = x.query(Item).filter_by(campaign_id=campaign.id).order_by(Item.id).all()
    cycle = [("m0", "m1"), ("m0", "m2"), ("m1", "m2")]  # a directory that is not a run's final/: its own name
    prompts = [r.prompt[-1].content for r in load_records("builtin:arithmetic/heldout", limit=9)]
    assert len(items) >= 7
    for item in items:
        n = next(i for i, p in enumerate(prompts) if item.prompt[-1]["content"] == p)
        assert tuple(r["model"] for r in item.responses) == cycle[n % 3]
    assert {tuple(r["model"] for r in item.responses) for item in items} == set(cycle)
    capsys.readouterr()
    assert main(["feedback", "generate", "--db", db, "--campaign", "aa", "--model", dirs[0], dirs[0]]) == 2
    assert "needs two or more different models" in capsys.readouterr().err
    assert main(["feedback", "generate", "--db", db, "--campaign", "ab", "--model", *dirs[:2], "--labels", "v1"]) == 2
    assert "needs one label per model (2)" in capsys.readouterr().err
    twins = [str(tmp_path / "x" / "final"), str(tmp_path / "y" / "x")]  # both would be named x
    assert main(["feedback", "generate", "--db", db, "--campaign", "xx", "--model", *twins]) == 2
    assert "two models would have the same name; name them with --labels" in capsys.readouterr().err


def test_generate_rubric_takes_the_scales_and_raters_score_on_them(tmp_path, tiny_dir, capsys):
    """`generate --task rubric --rubric JSON` with one tiny model: each item holds its one response, the campaign
    has the scales, a rater scores through the API and the export gives rating records on those scales. Without
    --rubric it stops in one line before any model is loaded."""
    from fastapi.testclient import TestClient

    from posttrain.feedback.app import Settings, create_app
    from posttrain.feedback.db import Item

    from .conftest import add_users, login

    db = f"sqlite:///{tmp_path}/fb.db"
    args = ["feedback", "generate", "--db", db, "--campaign", "rated", "--task", "rubric", "--model", str(tiny_dir),
            "--limit", "3", "--sampling.temperature", "0", "--sampling.max-new-tokens", "8", "--device", "cpu"]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "a rubric campaign needs scales" in err and "\n" not in err
    assert main([*args, "--rubric", '[{"name": "helpful", "min": 1, "max": 5}]']) == 0
    assert "campaign 'rated' (id 1): 3 items, rubric" in capsys.readouterr().err
    s = sessionmaker(make_engine(db))
    with s() as x:
        campaign = x.query(Campaign).filter_by(name="rated").one()
        items = x.query(Item).filter_by(campaign_id=campaign.id).all()
    assert campaign.rubric == [{"name": "helpful", "min": 1, "max": 5}]
    assert len(items) == 3 and all(len(i.responses) == 1 for i in items)
    app = create_app(Settings(db=db))
    add_users(app.state.db, {"rater1": "rater"})
    c = TestClient(app)
    csrf = login(c, "rater1")
    while (task := c.post(f"/api/campaigns/{campaign.id}/next", headers={"X-CSRF-Token": csrf}).json()) is not None:
        r = c.post(f"/api/leases/{task['lease_id']}/judgment", headers={"X-CSRF-Token": csrf},
                   json={"client_id": f"vote-{task['lease_id']:04d}", "answer": {"scores": [{"helpful": 4}]}})
        assert r.status_code == 200, r.text
    out = tmp_path / "ratings.jsonl"
    assert main(["feedback", "export", "--db", db, "--campaign", "rated", "-o", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 3 and all(r["scores"] == {"helpful": 4} and r["scales"] == {"helpful": [1, 5]} for r in rows)


def test_user_adds_raters_from_the_command_line_all_or_nothing(tmp_path, monkeypatch, capsys):
    """Several names: each a random password, printed once as NAME<tab>PASSWORD, that logs in; one name with
    POSTTRAIN_USER_PASSWORD: that password. A taken or bad name adds no one; a missing --name is one line."""
    from fastapi.testclient import TestClient

    from posttrain.feedback.app import Settings, create_app

    db = f"sqlite:///{tmp_path}/fb.db"
    monkeypatch.setenv("POSTTRAIN_ADMIN_PASSWORD", "s3cret-password")
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 0
    capsys.readouterr()
    assert main(["feedback", "user", "--db", db, "--name", "t1", "t2", "--name", "t3"]) == 0
    out, err = capsys.readouterr()
    lines = [line.split("\t") for line in out.splitlines()]
    assert [n for n, _ in lines] == ["t1", "t2", "t3"] and all(len(p) >= 16 for _, p in lines)
    assert f"added 3 raters to {db}; hand each their password" in err
    monkeypatch.setenv("POSTTRAIN_USER_PASSWORD", "their-own-password")
    assert main(["feedback", "user", "--db", db, "--name", "lead", "--role", "manager"]) == 0
    assert capsys.readouterr().out == ""  # the password given is not printed
    c = TestClient(create_app(Settings(db=db)))
    for name, password in [*lines, ("lead", "their-own-password")]:
        r = c.post("/login", data={"username": name, "password": password}, follow_redirects=False)
        assert r.status_code == 303, name
        c.post("/logout", headers={"Origin": "http://testserver"})
    for argv, why in ((["--name", "t4", "t1"], "user 't1' exists already; pick another name"),
                      (["--name", "t4", "bad name"], "user name 'bad name': use 1 to 64 letters"),
                      (["--name", "t4", "t4"], "--name: t4 given twice"),
                      ([], "missing required option --name; see posttrain feedback user --help")):
        assert main(["feedback", "user", "--db", db, *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert why in err and "\n" not in err, err
    with sessionmaker(make_engine(db))() as s:
        assert sorted(u.username for u in s.query(User)) == ["boss", "lead", "t1", "t2", "t3"]
        assert s.query(User).filter_by(username="lead").one().role == "manager"


def test_a_forgotten_password_is_reset_from_the_command_line(tmp_path, monkeypatch, capsys):
    """--reset-password: a new password (random, printed once; or the variable's), the old one and the user's
    sessions stop working, audited; an unknown name changes no one's."""
    from fastapi.testclient import TestClient

    from posttrain.feedback.app import Settings, create_app
    from posttrain.feedback.db import Audit

    db = f"sqlite:///{tmp_path}/fb.db"
    monkeypatch.setenv("POSTTRAIN_ADMIN_PASSWORD", "s3cret-password")
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 0
    monkeypatch.setenv("POSTTRAIN_USER_PASSWORD", "first-password")
    assert main(["feedback", "user", "--db", db, "--name", "ann"]) == 0
    c = TestClient(create_app(Settings(db=db)))
    assert c.post("/login", data={"username": "ann", "password": "first-password"}, follow_redirects=False
                  ).status_code == 303
    monkeypatch.delenv("POSTTRAIN_USER_PASSWORD")
    capsys.readouterr()
    assert main(["feedback", "user", "--db", db, "--name", "ann", "--reset-password"]) == 0
    out, err = capsys.readouterr()
    name, new = out.strip().split("\t")
    assert name == "ann" and "new password for ann" in err and "their sessions ended" in err
    c.app.state.principals.drop()  # what the running server's cache does within its few seconds
    assert c.get("/", follow_redirects=False).headers["location"] == "/login"  # the old session ended
    fresh = TestClient(c.app)
    assert fresh.post("/login", data={"username": "ann", "password": "first-password"}).status_code == 401
    assert fresh.post("/login", data={"username": "ann", "password": new}, follow_redirects=False).status_code == 303
    assert main(["feedback", "user", "--db", db, "--name", "nobody", "--reset-password"]) == 2
    assert "user 'nobody': no such user" in capsys.readouterr().err
    monkeypatch.setenv("POSTTRAIN_ADMIN_PASSWORD", "another-password")
    assert main(["feedback", "init", "--db", db, "--admin", "boss"]) == 0
    assert "its password unchanged (a new one: posttrain feedback user --name boss --reset-password)" in \
        capsys.readouterr().err
    with sessionmaker(make_engine(db))() as s:
        assert s.query(Audit).filter_by(action="user.password_reset", target="user:ann").count() == 1
