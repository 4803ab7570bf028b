"""Fixtures for the feedback app: a fresh app on a SQLite file, users of every role, a live HTTP server, and a
throwaway PostgreSQL cluster (installed with apt when missing; never skipped)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from posttrain.feedback.simulate import free_port

PASSWORD = "correct horse battery"
USERS = {"admin": "admin", "manager": "manager", "rater1": "rater", "rater2": "rater"}
PG_BIN = Path("/usr/lib/postgresql/15/bin")


@functools.lru_cache(maxsize=None)
def password_hash() -> str:
    """One argon2 hash shared by every test user (hashing is deliberately slow)."""
    from posttrain.feedback.security import hash_password

    return hash_password(PASSWORD)


def add_users(db, names=USERS) -> dict[str, int]:  # noqa: ANN001
    from posttrain.feedback.db import User

    with db() as s, s.begin():
        users = [User(username=n, password_hash=password_hash(), role=r, active=True) for n, r in names.items()]
        s.add_all(users)
        s.flush()
        return {u.username: u.id for u in users}


def pairwise_items(n: int, payload: str | None = None) -> list[dict]:
    return [{"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
             "responses": [{"text": payload or f"{2 * i}", "model": "model-a"},
                           {"text": f"{2 * i + 1}", "model": "model-b"}]} for i in range(n)]


def add_campaign(db, name="c1", task="pairwise", items=None, **kw) -> int:  # noqa: ANN001
    from posttrain.feedback.campaigns import create_campaign

    with db() as s, s.begin():
        return create_campaign(s, name, task, items if items is not None else pairwise_items(3), **kw).id


@dataclass
class Fixture:
    app: object
    db: object
    users: dict[str, int]
    url: str


@pytest.fixture
def fb(tmp_path) -> Fixture:
    """An app on a fresh SQLite file with the four users and a 3-item pairwise campaign (overlap 2)."""
    from posttrain.feedback.app import Settings, create_app

    url = f"sqlite:///{tmp_path}/feedback.db"
    app = create_app(Settings(db=url))
    users = add_users(app.state.db)
    add_campaign(app.state.db, overlap=2, guidelines="Prefer **correct** answers.")
    return Fixture(app, app.state.db, users, url)


def login(client, username: str, password: str = PASSWORD) -> str:  # noqa: ANN001
    """Log `client` in; returns the session's CSRF token (read from a page, as a browser would)."""
    r = client.post("/login", data={"username": username, "password": password}, follow_redirects=False)
    assert r.status_code == 303, r.text
    return csrf_of(client.get("/tokens").text)


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


class LiveServer:
    """`posttrain feedback serve` in a subprocess on a free port (a real HTTP server, its own process)."""

    def __init__(self, db_url: str, cwd: Path, workers: int = 1):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
        self.proc = subprocess.Popen([sys.executable, "-m", "posttrain", "feedback", "serve", "--db", db_url,
                                      "--port", str(self.port), "--workers", str(workers)], cwd=cwd, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        import httpx

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("server exited: " + self.proc.stdout.read().decode())
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError("server did not start in 30 s")

    def stop(self) -> str:
        """Stop the server; returns what it printed (tracebacks of 500s among it)."""
        self.proc.terminate()
        try:
            out, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
        return out.decode(errors="replace")


class ThreadServer:
    """uvicorn serving an app object in a thread of this process (for the browser tests)."""

    def __init__(self, app):  # noqa: ANN001
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.server.started, "uvicorn did not start"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def _as_postgres(args: list[str]) -> list[str]:
    """Run a PostgreSQL binary as the `postgres` user when we are root (the server refuses to run as root)."""
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


def _ensure_postgres() -> None:
    if (PG_BIN / "initdb").exists():
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.fail("PostgreSQL 15 is not installed and cannot be installed here: apt-get install postgresql")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", "install", "-y", "-q", "postgresql"], check=True, env=env, capture_output=True)


@pytest.fixture(scope="session")
def pg_server():
    """A throwaway PostgreSQL cluster on a free port, stopped at the end of the session. Yields a URL maker."""
    _ensure_postgres()
    root = Path(tempfile.mkdtemp(prefix="posttrain-pg-"))  # not under pytest's 0700 tmp: postgres must enter it
    data = root / "data"
    data.mkdir()
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(data, "postgres")
        os.chmod(root, 0o755)
    port = free_port()
    subprocess.run(_as_postgres([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
                                 "--no-locale", "-E", "UTF8"]), check=True, capture_output=True)
    opts = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=off"
    subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", opts,
                                 "-w", "start"]), check=True, capture_output=True)
    counter = iter(range(10_000))

    def new_database() -> str:
        import psycopg

        name = f"feedback_{next(counter)}"
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f"CREATE DATABASE {name}")
        return f"postgresql://postgres@127.0.0.1:{port}/{name}"

    try:
        yield new_database
    finally:
        subprocess.run(_as_postgres([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"]),
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def prepare(url: str, raters: int, items: int, overlap: int) -> list[str]:
    """A database at `url` with `raters` raters, each with an API token (returned), and one pairwise campaign."""
    from sqlalchemy.orm import sessionmaker

    from posttrain.feedback import migrate
    from posttrain.feedback.db import ApiToken, make_engine
    from posttrain.feedback.security import token_hash

    engine = make_engine(url)
    migrate.upgrade(engine)
    db = sessionmaker(engine)
    ids = add_users(db, {f"r{i}": "rater" for i in range(raters)})
    tokens = [f"pt_test_{i:03d}_{'x' * 20}" for i in range(raters)]
    with db() as s, s.begin():
        s.add_all(ApiToken(user_id=ids[f"r{i}"], name="load", token_hash=token_hash(t)) for i, t in enumerate(tokens))
    add_campaign(db, "load", items=pairwise_items(items), overlap=overlap)
    engine.dispose()
    return tokens
