"""The schema's history: a database made by the first migration upgrades to the newest with its rows intact,
and the models in db.py describe exactly what the migrations build."""

from sqlalchemy import text

from posttrain.feedback import migrate
from posttrain.feedback.db import Base, make_engine

from .conftest import login, password_hash


def test_first_revision_upgrades_to_head_keeping_rows(tmp_path):
    url = f"sqlite:///{tmp_path}/old.db"
    engine = make_engine(url)
    migrate.upgrade(engine, "0001")
    assert migrate.current(engine) == "0001"
    now = "2026-01-01 00:00:00"
    with engine.begin() as c:
        c.execute(text("INSERT INTO users VALUES (1, 'rater1', :h, 'rater', 1, :t)"), {"h": password_hash(), "t": now})
        c.execute(text("INSERT INTO campaigns VALUES (1, 'old', 'pairwise', 1, '', '[]', 900, :t)"), {"t": now})
        c.execute(text("INSERT INTO items VALUES (1, 1, 0, :p, :r)"),
                  {"p": '[{"role": "user", "content": "q"}]', "r": '[{"text": "a", "model": "m"}, {"text": "b", '
                                                                     '"model": "n"}]'})
        c.execute(text("INSERT INTO leases VALUES (1, 1, 1, 0, 1, '[1, 0]', :t, :t, 1)"), {"t": now})
        c.execute(text("INSERT INTO judgments VALUES (1, 'c-1', 1, 1, 1, 0, 1, 0, NULL, '[1, 0]', :p, :t)"),
                  {"p": '{"choice": "A", "winner": 1, "flags": [], "comment": ""}', "t": now})
    migrate.upgrade(engine)
    assert migrate.current(engine) == migrate.head() != "0001"
    with engine.connect() as c:
        row = c.execute(text("SELECT client_id, payload, seconds FROM judgments")).one()
        assert row[0] == "c-1" and '"winner": 1' in row[1] and row[2] is None
        assert c.execute(text("SELECT count(*) FROM api_tokens")).scalar() == 0
    # the upgraded database serves: the old user logs in and the old judgment exports
    from fastapi.testclient import TestClient

    from posttrain.feedback.app import Settings, create_app

    app = create_app(Settings(db=url))
    client = TestClient(app)
    login(client, "rater1")
    from posttrain.feedback.export import export_rows

    with app.state.db() as s:
        rows, _ = export_rows(s, "old")
    assert rows[0]["chosen"] == [{"role": "assistant", "content": "b"}]
    assert rows[0]["feedback"]["item_id"] is None and rows[0]["feedback"]["metadata"] is None  # 0005's columns


def test_models_match_the_head_migration(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    engine = make_engine(f"sqlite:///{tmp_path}/head.db")
    migrate.upgrade(engine)
    with engine.connect() as c:
        diff = compare_metadata(MigrationContext.configure(c), Base.metadata)
    assert diff == [], f"db.py and the migrations differ; add a migration: {diff}"
