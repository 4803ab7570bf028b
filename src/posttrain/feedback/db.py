"""The feedback app's tables (SQLAlchemy 2 declarative models) and the engine that opens them.

Owns: the schema as Python classes, and `make_engine`, which opens SQLite in WAL mode with writes that take the
database lock up front (`BEGIN IMMEDIATE`), or PostgreSQL through psycopg 3. The schema itself is created and
upgraded only by the Alembic migrations in `migrations/` (`migrate.upgrade`); these classes must match the head
revision (tests/feedback/test_migrations.py checks it).

The rules that keep the data honest are constraints here, not only code in `assign.py`:
- a lease holds one of an item's `overlap` slots: UNIQUE(item, slot) with CHECK(0 <= slot < overlap), so an item
  can never be handed to more than k raters at once, and UNIQUE(item, rater), so never twice to one rater;
- a judgment's first revision takes the same slot: UNIQUE(item, slot, revision) and UNIQUE(item, rater, revision),
  so no item ever has more than k original judgments, and no rater judges an item twice;
- judgments are append-only: an edit is a new row with `revision + 1` that names the row it supersedes
  (UNIQUE(supersedes_id): a judgment is superseded at most once, so the history is a chain);
- UNIQUE(client_id): a vote sent twice (double click, retried request) is stored once.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

try:
    import fcntl
except ImportError:  # Windows: no flock; see WriterLock
    fcntl = None

ROLES = ("rater", "manager", "admin")  # each role may do what the ones before it may


def utcnow() -> dt.datetime:
    """Naive UTC (SQLite has no time zones; both backends store the same value)."""
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(80), unique=True)
    password_hash: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (CheckConstraint("role IN ('rater', 'manager', 'admin')", name="ck_users_role"),)


class Session(Base):
    """A login: the cookie holds a random token, the table only its sha256 (a leaked table logs no one in)."""

    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime)


class ApiToken(Base):
    """A token for scripts (`Authorization: Bearer ...`); stored hashed, revoked by setting `revoked_at`."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)


class Campaign(Base):
    __tablename__ = "campaigns"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(120), unique=True)
    task_type: Mapped[str] = mapped_column(String(16))
    overlap: Mapped[int] = mapped_column(Integer)
    guidelines: Mapped[str] = mapped_column(Text, default="")
    rubric: Mapped[list[Any]] = mapped_column(JSON, default=list)  # [{"name", "min", "max", "help"}]
    lease_seconds: Mapped[int] = mapped_column(Integer, default=900)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # closed: raters get no new task (a task already held can still be answered); judgments stay and export
    closed_at: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    __table_args__ = (CheckConstraint("overlap >= 1", name="ck_campaigns_overlap"),)


class Item(Base):
    """One prompt and its K responses; `responses` is `[{"text", "model"}]` (the model is never shown to raters)."""

    __tablename__ = "items"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)
    prompt: Mapped[list[Any]] = mapped_column(JSON)  # messages [{"role", "content"}]
    responses: Mapped[list[Any]] = mapped_column(JSON)
    # the item file's own `id` and `metadata` (never shown to raters), given back with each exported record
    external_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    item_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    __table_args__ = (UniqueConstraint("campaign_id", "position", name="uq_items_position"),)


class Lease(Base):
    """An item handed to a rater until `expires_at`; once judged (`judged`), the slot is kept for good."""

    __tablename__ = "leases"
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    slot: Mapped[int] = mapped_column(Integer)
    overlap: Mapped[int] = mapped_column(Integer)  # the campaign's k, copied so the CHECK can see it
    presentation: Mapped[list[Any]] = mapped_column(JSON)  # response indices in the order shown
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime, index=True)
    judged: Mapped[bool] = mapped_column(Boolean, default=False)
    __table_args__ = (
        UniqueConstraint("item_id", "slot", name="uq_leases_slot"),
        UniqueConstraint("item_id", "rater_id", name="uq_leases_rater"),
        CheckConstraint("slot >= 0 AND slot < overlap", name="ck_leases_slot"),
        {"sqlite_autoincrement": True},  # a reclaimed lease's id is never reused: a stale tab cannot hit a new one
    )


class Skip(Base):
    """A rater passed on an item; it is not offered to them again."""

    __tablename__ = "skips"
    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    # the lease it gave back (deleted then), so that the same skip sent again is answered as the first was
    lease_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    __table_args__ = (UniqueConstraint("item_id", "rater_id", name="uq_skips"),)


class Judgment(Base):
    """Append-only: never updated, never deleted. An edit inserts `revision + 1` with `supersedes_id` set."""

    __tablename__ = "judgments"
    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64), unique=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    slot: Mapped[int] = mapped_column(Integer)
    overlap: Mapped[int] = mapped_column(Integer)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    supersedes_id: Mapped[int | None] = mapped_column(ForeignKey("judgments.id"), nullable=True, unique=True)
    presentation: Mapped[list[Any]] = mapped_column(JSON)  # response indices in the order the rater saw them
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)  # the answer, in response indices (tasks.py)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)  # time on the page, from the client
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (
        UniqueConstraint("item_id", "slot", "revision", name="uq_judgments_slot"),
        UniqueConstraint("item_id", "rater_id", "revision", name="uq_judgments_rater"),
        CheckConstraint("slot >= 0 AND slot < overlap", name="ck_judgments_slot"),
    )


class ExportExclusion(Base):
    """A rater whose judgments an admin leaves out of a campaign's exports (audited; deleting the row undoes it)."""

    __tablename__ = "export_exclusions"
    id: Mapped[int] = mapped_column(primary_key=True)
    campaign_id: Mapped[int] = mapped_column(ForeignKey("campaigns.id", ondelete="CASCADE"), index=True)
    rater_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    reason: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow)
    __table_args__ = (UniqueConstraint("campaign_id", "rater_id", name="uq_export_exclusions"),)


class Audit(Base):
    """Who did what: logins, users and tokens made or revoked, campaigns imported, judgments and edits."""

    __tablename__ = "audit_log"
    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime, default=utcnow, index=True)
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), nullable=True)
    action: Mapped[str] = mapped_column(String(40))
    target: Mapped[str] = mapped_column(String(200), default="")
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


def make_engine(url: str, *, write: bool = True) -> Engine:
    """An engine for `url`: `sqlite:///feedback.db` (WAL, busy timeout) or `postgresql+psycopg://user@host/db`
    (a bare `postgresql://` is read as psycopg 3).

    On SQLite, a `write` engine starts every transaction with BEGIN IMMEDIATE (the write lock up front: a
    read-then-write transaction that upgrades later can deadlock with another and fail with "database is
    locked") and carries `write_lock` (a `WriterLock`), which `assign` holds around its transactions so that
    writers queue on it, waking at once, instead of on SQLite's busy handler, which sleeps and retries. A
    read engine (`write=False`) never blocks: in WAL mode readers see the last commit while a writer works."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    if not url.startswith("sqlite"):
        return create_engine(url, pool_size=20, max_overflow=20, pool_pre_ping=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=20,
                           max_overflow=20)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):  # noqa: ANN001
        dbapi_conn.isolation_level = None  # let SQLAlchemy's begin event below issue BEGIN
        cur = dbapi_conn.cursor()
        if ":memory:" not in url:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across app crashes, fast commits
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

    if write:
        database = engine.url.database
        engine.write_lock = WriterLock(  # type: ignore[attr-defined]
            None if not database or database == ":memory:" else database + ".write-lock")
    return engine


class WriterLock:
    """The writers' queue of one SQLite database: a thread lock for the threads of this process, then an
    exclusive `flock` on `path` (a file beside the database) for the other processes serving it (`feedback serve
    --workers N`). Both wake the next writer as soon as the holder is done; SQLite's own busy handler sleeps for
    growing intervals (1, 2, 5, ... 100 ms) between tries, which with two workers put 0.7 s into the slowest
    percent of judgments. Without `path` (in-memory database) or without fcntl (Windows) it is the thread lock
    alone, and processes fall back to SQLite's busy handler: slower under contention, just as correct."""

    def __init__(self, path: str | None):
        self._threads = threading.Lock()
        self._path = path if fcntl is not None else None
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self._threads.acquire()
        try:
            if self._path is not None:
                if self._fd is None:
                    self._fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._fd, fcntl.LOCK_EX)
        except BaseException:
            self._threads.release()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._fd is not None:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            self._threads.release()
