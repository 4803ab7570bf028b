"""`feedback:DB_URL#CAMPAIGN` as a data source: training commands read a campaign's judgments directly.

`--data.train feedback:sqlite:///feedback.db#arith` (or `feedback:postgresql://user@host/db#arith`) gives the
records `posttrain feedback export` would write to its main output (pairs, rankings, ratings, or corrections as
prompt-completion records; `export.py`), through the same code, raters excluded from exports left out. Its
lineage entry names the export id and the campaign's state (judgments, the last judgment's time) and the
database URL without its password, so a trained model names the judgments it learned from.

Why a registered reader: data/ (layer 3) resolves every source but must not import feedback/ (layer 7), so this
module registers `feedback:` with `data.load.register_source` when it is imported, and the `posttrain` command
(layer 8) imports it before running any command. Nothing here imports SQLAlchemy until a source is read.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from posttrain.data.load import Rows, SourceReader, register_source
from posttrain.errors import ConfigError, DataError
from posttrain.extras import require

PREFIX = "feedback:"
_READ: dict[str, Any] = {}  # source -> the Export its rows came from, until describe() names it in the lineage


def parse(source: str) -> tuple[str, str]:
    """`feedback:URL#CAMPAIGN` -> (URL, CAMPAIGN); ConfigError when either part is missing."""
    rest = source[len(PREFIX):]
    url, sep, campaign = rest.partition("#")
    if not sep or not url or not campaign:
        raise ConfigError(f"{source}: write a feedback source as feedback:DB_URL#CAMPAIGN, e.g. "
                          "feedback:sqlite:///feedback.db#my-campaign")
    return url, campaign


def public_url(url: str) -> str:
    """The database URL without its password, for lineage and messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{host}" if parts.username else host))


def sqlite_file(url: str) -> Path | None:
    """The file a `sqlite:///PATH` URL names (None: another database, or SQLite in memory)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return None if not path or path == ":memory:" else Path(path)


def open_database(url: str, *, must_exist: bool = False):  # noqa: ANN201
    """An engine on `url` with the schema at the newest migration; a URL that cannot be opened or reached is a
    one-line ConfigError. `must_exist`: a SQLite file that is not there is an error, and nothing is created (a
    typo in the path must not read as a new, empty database). The engine's `schema_was` is the revision the
    database was at before (None: the schema was created now)."""
    for module in ("sqlalchemy", "alembic"):
        require(module, "feedback", "feedback databases")
    from posttrain.feedback import migrate
    from posttrain.feedback.db import make_engine

    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else None
    if scheme is None:  # a bare path: the first guess of many
        raise ConfigError(f"{url}: a database is named by a URL, not a path: sqlite:///{Path(url).resolve()} (a SQLite "
                          "file) or postgresql://user@host/dbname")
    if scheme not in ("sqlite", "postgresql", "postgres"):
        raise ConfigError(f"{public_url(url)}: a {scheme} database is not supported; use SQLite (sqlite:///FILE) or "
                          "PostgreSQL (postgresql://user@host/dbname)")
    path = sqlite_file(url)
    if must_exist and path is not None and not path.is_file():
        rooted = Path("/") / path
        if not path.is_absolute() and rooted.is_file():  # sqlite:///tmp/x.db is tmp/x.db, from here
            raise ConfigError(f"{url}: no such database file here ({path}); sqlite:/// takes a path from the "
                              f"current folder, and one from / has four slashes: sqlite:///{rooted}")
        raise ConfigError(f"{url}: no such database file; create one with posttrain feedback init --db {url}")
    try:
        engine = make_engine(url)
        engine.schema_was = migrate.current(engine)  # type: ignore[attr-defined]
        migrate.upgrade(engine)
    except Exception as e:  # a bad URL or an unreachable server: one line, not a traceback
        if "sqlalchemy" not in type(e).__module__ and not isinstance(e, ValueError):
            raise
        raise ConfigError(f"{public_url(url)}: cannot open the database: {str(e).splitlines()[0]}") from None
    return engine


def read_campaign(url: str, campaign: str, *, must_exist: bool = True):  # noqa: ANN201
    """The campaign's `export.Export`; DataError when it has no judgments to export (after exclusions)."""
    from sqlalchemy.orm import Session

    from posttrain.feedback.export import export_campaign

    engine = open_database(url, must_exist=must_exist)
    try:
        with Session(engine) as s:
            exported = export_campaign(s, campaign)
    finally:
        engine.dispose()
    if exported.judgments == 0:
        excluded = f" (raters excluded from exports: {', '.join(exported.excluded_raters)})" \
            if exported.excluded_raters else ""
        raise DataError(f"campaign {campaign!r} has no judgments to export yet{excluded}; let raters judge it first")
    return exported


def _rows(source: str) -> Rows:
    url, campaign = parse(source)
    exported = _READ[source] = read_campaign(url, campaign)
    if not exported.rows:  # every judgment a tie, say: as an empty file is, one line before any run is made
        word = "judgment" if exported.judgments == 1 else "judgments"
        raise DataError(f"{source}: campaign {campaign!r} has {exported.judgments} {word} and no record to train on "
                        f"(left out: {exported.left_out()}); let raters judge more of it")
    for i, row in enumerate(exported.rows, start=1):  # counted from 1, as every source's rows
        yield f"{source} row {i}", (lambda row=row: row)


def describe(source: str) -> dict[str, Any]:
    """The lineage entry: the source (password left out), the export's rows and id, the campaign's state; of the
    export the rows were last read from (a judgment stored since then is not in the trained data)."""
    url, campaign = parse(source)
    exported = _READ.pop(source, None) or read_campaign(url, campaign)
    return {"source": f"{PREFIX}{public_url(url)}#{campaign}", "sha256": None, "rows": len(exported.rows),
            "export_id": exported.export_id, "feedback": {**exported.state(), "db": public_url(url)}}


register_source(PREFIX, SourceReader(_rows, describe))
