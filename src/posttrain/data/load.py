"""Load records from files, `datasets` folders and built-in tasks: the one way rows enter posttrain.

A source is one of:
- a file: `.jsonl` (one JSON object a line), `.json` (a JSON array of objects), `.csv` (a header
  row; a cell starting with `[` or `{` is read as JSON, so a message list fits in a cell) or
  `.parquet`;
- a folder written by `datasets.Dataset.save_to_disk`, or by `DatasetDict.save_to_disk` (its
  "train" split, or the split named after `#`: `data/hh#test`);
  parquet files and these folders need the `datasets` extra (pyarrow, datasets);
- a built-in task: `builtin:NAME`, `builtin:NAME/SPLIT`, `builtin:NAME/SPLIT?key=value&key=value`;
- a source a higher layer registers with `register_source(prefix, ...)`: `feedback:DB_URL#CAMPAIGN`, a
  feedback campaign's judgments (registered by `posttrain.feedback.source`, which the `posttrain` command
  imports; data/ cannot import feedback/, which sits above it), and `reasoning_gym:NAME?size=N&seed=S`, a
  reasoning-gym generator's problems (registered by `posttrain.rewards.gym`, the `gym` extra).

Every row goes through `records.parse_record`, and the whole source is checked before anything is
returned. Each problem is a `DataError` whose first line names the place: `file:LINE` for JSONL and
CSV (1-based, blank lines counted), `SOURCE row N` (0-based, as in `dataset[N]`) for JSON arrays,
parquet, `datasets` folders and built-in tasks. A null field counts as absent, as `datasets` and
pandas write missing values.
"""

from __future__ import annotations

import csv
import difflib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import unquote

from posttrain.data.records import Record, RecordError, json_type, parse_record
from posttrain.errors import ConfigError, DataError
from posttrain.extras import require
from posttrain.tasks import TASKS

log = logging.getLogger(__name__)
BUILTIN_PREFIX = "builtin:"
SHOWN_ERRORS = 3  # row errors quoted when several rows are invalid

# (where, read): read() returns the raw row or raises ValueError when the row cannot be read.
Rows = Iterator[tuple[str, Callable[[], Any]]]


@dataclass(frozen=True)
class SourceReader:
    """A kind of source named by a prefix (`feedback:`), read by a layer above data/: its rows and lineage entry."""

    rows: Callable[[str], Rows]
    describe: Callable[[str], dict[str, Any]]
    """`{"source", "sha256", "rows", ...}` for lineage.json."""


SOURCE_READERS: dict[str, SourceReader] = {}
UNREGISTERED = {"feedback:": "posttrain.feedback.source (the `posttrain` command imports it; pip install "
                             "'posttrain[feedback]')",
                "reasoning_gym:": "posttrain.rewards.gym (the `posttrain` command imports it; pip install "
                                  "'posttrain[gym]')"}


def register_source(prefix: str, reader: SourceReader) -> None:
    """Read sources starting with `prefix` with `reader` (the same reader again is a no-op)."""
    SOURCE_READERS[prefix] = reader


def _registered(source: str) -> SourceReader | None:
    for prefix, reader in SOURCE_READERS.items():
        if source.startswith(prefix):
            return reader
    for prefix, where in UNREGISTERED.items():
        if source.startswith(prefix):
            raise DataError(f"{source}: {prefix} sources are read by {where}, which is not loaded")
    return None


@dataclass(frozen=True)
class LoadReport:
    """What a load read: rows seen (blank lines not counted), rows dropped as invalid, the first errors."""

    source: str
    n_rows: int
    n_skipped: int
    first_errors: tuple[str, ...]


def load_records(
    source: str, accept: tuple[type, ...] | None = None, *, limit: int | None = None, skip_invalid: bool = False
) -> list[Record]:
    """The records of `source`, checked; `accept` limits the record kinds, `limit` stops after that many."""
    return load_records_with_report(source, accept, limit=limit, skip_invalid=skip_invalid)[0]


def load_records_with_report(
    source: str, accept: tuple[type, ...] | None = None, *, limit: int | None = None, skip_invalid: bool = False,
    hint: str = "",
) -> tuple[list[Record], LoadReport]:
    """Like `load_records`, plus a report; with `skip_invalid` bad rows are dropped and counted, not raised.
    `hint` (how to drop them, `--data.invalid skip`) is said in a refusal of rows that could have been skipped."""
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1, got {limit}")
    source = str(source)
    records: list[Record] = []
    errors: list[str] = []
    n_rows = n_bad = 0
    for where, read in _rows(source):
        n_rows += 1
        try:
            row = read()
            records.append(parse_record(_without_nulls(row), accept))
        except RecordError as e:
            n_bad += 1
            if len(errors) < SHOWN_ERRORS:
                errors.append(row_error(where, _said_null(e, row)))
        except ValueError as e:
            n_bad += 1
            if len(errors) < SHOWN_ERRORS:
                errors.append(row_error(where, e))
        if limit is not None and len(records) == limit:
            break
    if n_bad and (not skip_invalid or not records):  # nothing valid is left: refused even when skipping
        said = f" ({hint})" if hint and not skip_invalid else ""
        if n_bad == 1:
            raise DataError(errors[0] + said)
        head = f"{source}: {n_bad} of {n_rows} rows are invalid{said}; first {len(errors)}:"
        raise DataError("\n".join([head, *(f"  {m}" for m in errors)]))
    return records, LoadReport(source, n_rows, n_bad, tuple(errors))


def load_rows(source: str) -> list[tuple[str, dict[str, Any]]]:
    """Every row of `source` as the plain object it is (nulls kept), with its place (`file:LINE`, `SOURCE row N`),
    for a command that writes rows back with fields added (`posttrain score`). A row that cannot be read, or is
    not an object, is a DataError naming its place."""
    rows = []
    for where, read in _rows(str(source)):
        try:
            row = read()
        except ValueError as e:
            raise DataError(row_error(where, e)) from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: row is {json_type(row)}, expected an object with named fields")
        rows.append((where, row))
    return rows


def row_location(source: str, row: int) -> str:
    """Where the `row`-th row (1-based, in reading order) of `source` is: `file.jsonl:LINE`, `file.csv:LINE`,
    `file.parquet row N`, ... as the loader names it, for errors found after loading (tokenization).
    Reads the source again up to that row; only called on the error path."""
    return row_locations(source, [row])[0]


def row_locations(source: str, rows: list[int]) -> list[str]:
    """`row_location` of each of `rows`, reading the source once."""
    wanted, found = set(rows), {}
    try:
        for i, (where, _) in enumerate(_rows(source), start=1):
            if i in wanted:
                found[i] = where
                if len(found) == len(wanted):
                    break
    except DataError:
        pass
    return [found.get(r, f"{source}: row {r}") for r in rows]


def _without_nulls(row: Any) -> Any:
    """The row without its null fields: a column a Parquet or datasets row lacks reads as null, and counts as absent."""
    return {k: v for k, v in row.items() if v is not None} if isinstance(row, dict) else row


def _said_null(e: RecordError, row: Any) -> RecordError:
    """`e`, saying that a field it calls missing is there but null (which `_without_nulls` counted as absent)."""
    nulls = [k for k, v in row.items() if v is None] if isinstance(row, dict) else []
    if e.field in nulls:
        return RecordError(e.field, "is null; give it a value")
    if e.field == "(row)" and nulls:
        fields = ", ".join(f'"{k}"' for k in nulls)
        return RecordError(e.field, f"{e.message}; its null fields ({fields}) count as absent: give them values")
    return e


def row_error(where: str, e: ValueError) -> str:
    """The one-line message for a row that cannot be read or parsed (a RecordError, bad JSON, bad UTF-8)."""
    if isinstance(e, RecordError):
        subject = "row" if e.field == "(row)" else f'field "{e.field}"'
        return f"{where}: {subject} {e.message}"
    if isinstance(e, json.JSONDecodeError):
        return f"{where}: invalid JSON: {e.msg} (column {e.colno})"
    if isinstance(e, UnicodeDecodeError):
        return f"{where}: is not valid UTF-8 (byte 0x{e.object[e.start]:02x}); save the file as UTF-8"
    return f"{where}: {e}"


def _rows(source: str) -> Rows:
    if source.startswith(BUILTIN_PREFIX):
        return _builtin_rows(source)
    reader = _registered(source)
    if reader is not None:
        return reader.rows(source)
    path, split = _path_and_split(source)
    if path.is_dir():
        return _dataset_rows(source, path, split)
    if not path.exists():
        raise DataError(_not_found(source))
    if split is not None:
        raise DataError(f"{source}: '#{split}' picks a split of a datasets folder, but {path} is a file")
    readers = {".jsonl": _jsonl_rows, ".json": _json_rows, ".csv": _csv_rows, ".parquet": _parquet_rows}
    reader = readers.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"{source}: unsupported file type {path.suffix or '(none)'!r} "
            f"(expected {', '.join(readers)}, a datasets folder, or builtin:NAME)"
        )
    if path.stat().st_size == 0:
        raise DataError(f"{source}: is empty (0 bytes, no rows)")
    return reader(source, path)


def _path_and_split(source: str) -> tuple[Path, str | None]:
    """`folder#split` names a split of a DatasetDict folder; a path that exists as written wins."""
    if "#" in source and not os.path.exists(source):
        path, _, split = source.rpartition("#")
        return Path(path), split
    return Path(source), None


def _not_found(source: str) -> str:
    head = source.replace("\\", "/").split("/")[0].split(":")[0].lower()
    message = f"{source}: no such file or folder"
    if head in TASKS:
        return f"{message} (did you mean builtin:{source}?)"
    if difflib.get_close_matches(head, ["builtin", *TASKS], n=1):
        return f"{message} (built-in tasks are written builtin:NAME; known: {', '.join(sorted(TASKS))})"
    return message


def _jsonl_rows(source: str, path: Path) -> Rows:
    n = 0
    with open(path, "rb") as f:  # bytes, so a bad encoding is reported on its own line
        for lineno, raw in enumerate(f, 1):
            if raw.strip():
                n += 1
                yield f"{source}:{lineno}", partial(_json_line, raw, lineno == 1)
    if n == 0:
        raise DataError(f"{source}: has only blank lines (no rows)")


def _json_line(raw: bytes, first: bool) -> Any:
    return json.loads(raw.decode("utf-8-sig" if first else "utf-8").strip())


def _json_rows(source: str, path: Path) -> Rows:
    data = path.read_bytes()
    try:
        rows = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as e:
        lineno = data[: e.start].count(b"\n") + 1
        raise DataError(row_error(f"{source}:{lineno}", e)) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{source}:{e.lineno}: invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(rows, list):
        kind = "an object" if isinstance(rows, dict) else f"a {type(rows).__name__}"
        raise DataError(f"{source}: the top level is {kind}, expected an array of rows (or use .jsonl, one row a line)")
    if not rows:
        raise DataError(f"{source}: is an empty JSON array (no rows)")
    yield from _listed_rows(source, rows)


def _listed_rows(source: str, rows: Any) -> Rows:
    for i, row in enumerate(rows, start=1):  # row 1 is the first, as line 1 of a JSONL file
        yield f"{source} row {i}", partial(_same, row)


def _same(row: Any) -> Any:
    return row


def _decoded_lines(source: str, path: Path) -> Iterator[str]:
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                yield raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as e:
                raise DataError(row_error(f"{source}:{lineno}", e)) from None


def _csv_rows(source: str, path: Path) -> Rows:
    # strict: a quote left open would otherwise swallow the rest of the file into one cell, without a word
    reader = csv.reader(_decoded_lines(source, path), strict=True)
    records = _csv_records(source, reader)
    header = next((cells for _, cells in records if _has_text(cells)), None)
    if header is None:
        raise DataError(f"{source}: has only blank lines (no header, no rows)")
    n = 0
    for line, cells in records:
        if _has_text(cells):
            n += 1
            yield f"{source}:{line}", partial(_csv_row, header, cells)
    if n == 0:
        raise DataError(f"{source}: has a header row but no data rows")


def _csv_records(source: str, reader: Any) -> Iterator[tuple[int, list[str]]]:
    """(the line a record starts on, its cells) for each CSV record; a DataError naming the line for bad CSV."""
    start = 1
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            if "end of data" in str(e):
                raise DataError(f"{source}:{start}: a quoted cell opens on this line and is never closed (the file "
                                "ends inside it); close the quote, and double a quote inside a cell (\"\")") from None
            raise DataError(f"{source}:{reader.line_num}: is not valid CSV ({e}); a cell holding a quote or a comma "
                            "must be quoted whole, its quotes doubled: \"say \"\"hi\"\", then go\"") from None
        yield start, cells
        start = reader.line_num + 1


def _has_text(cells: list[str]) -> bool:
    return any(cell.strip() for cell in cells)


def _csv_row(header: list[str], cells: list[str]) -> dict[str, Any]:
    if len(cells) != len(header):
        hint = ("a cell holding a comma must be quoted: \"a, b\"" if len(cells) > len(header) else
                "give every column a cell, an empty one as nothing between its commas: a,,c")
        raise ValueError(f"has {len(cells)} cell{'s' * (len(cells) != 1)} but the header has {len(header)} columns "
                         f"({hint})")
    return {name: _csv_cell(name, cell) for name, cell in zip(header, cells)}


# Columns whose values are lists or objects only: a cell of theirs that is not valid JSON is an error.
CSV_JSON_COLUMNS = ("messages", "responses", "order", "scores", "scales", "tests")


def _csv_cell(name: str, cell: str) -> Any:
    """A cell as JSON when it is a JSON list or object (messages fit in a cell), else the text as it is. A cell
    that is clearly meant as JSON (it opens with `[{`, `["`, `[[` or `{"`, or its column holds JSON only) and does
    not parse is an error; other text that merely starts with a bracket (`[1] Introduction`, `{name} is...`) is
    text."""
    text = cell.strip()
    if not text.startswith(("[", "{")):
        return cell
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        opening = text[:1] + text[1:].lstrip()[:1]  # the bracket and the character after it
        if name not in CSV_JSON_COLUMNS and opening not in ('[{', '["', "[[", '{"'):
            return cell
        raise ValueError(
            f'column "{name}" starts with "{text[0]}" but is not valid JSON ({e.msg} at character {e.pos + 1}); '
            "fix the JSON, or use a JSONL file for structured rows"
        ) from None


def _parquet_rows(source: str, path: Path) -> Rows:
    pa = require("pyarrow", "datasets", f"reading {source}")
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
        if table.metadata.num_rows == 0:
            raise DataError(f"{source}: has 0 rows")
        yield from _listed_rows(source, (row for batch in table.iter_batches() for row in batch.to_pylist()))
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{source}: cannot be read as parquet ({str(e).splitlines()[0]})") from None


def _dataset_rows(source: str, path: Path, split: str | None) -> Rows:
    is_dict = (path / "dataset_dict.json").exists()
    if not is_dict and not (path / "dataset_info.json").exists():
        raise DataError(
            f"{source}: is a folder but not one written by datasets' save_to_disk "
            "(no dataset_info.json or dataset_dict.json); pass a .jsonl, .json, .csv or .parquet file"
        )
    datasets = require("datasets", "datasets", f"reading {source}")
    ds = datasets.load_from_disk(str(path))
    if is_dict:
        split = split or "train"
        if split not in ds:
            raise DataError(f"{source}: has no split {split!r} (splits: {', '.join(ds)}; pick one with {path}#SPLIT)")
        ds = ds[split]
    elif split is not None:
        raise DataError(f"{source}: is a single dataset without splits; drop '#{split}'")
    if len(ds) == 0:
        raise DataError(f"{source}: has 0 rows")
    yield from _listed_rows(source, ds)


def _builtin_rows(source: str) -> Rows:
    name, split, options = parse_builtin(source)
    task = TASKS.get(name)
    if task is None:
        close = difflib.get_close_matches(name, TASKS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise DataError(f"{source}: unknown built-in task {name!r} ({hint}known: {', '.join(sorted(TASKS))})")
    try:
        rows = task.rows(split, **options)
    except (ValueError, TypeError) as e:  # TypeError: an option the task does not take
        raise DataError(f"{source}: {e}") from None
    if not rows:
        raise DataError(f"{source}: the task made no rows")
    yield from _listed_rows(source, rows)


def parse_builtin(source: str) -> tuple[str, str, dict[str, str]]:
    """`builtin:NAME/SPLIT?k=v&k=v` -> (NAME, SPLIT or "train", {k: v})."""
    return parse_source_options(source, BUILTIN_PREFIX)


def parse_source_options(source: str, prefix: str) -> tuple[str, str, dict[str, str]]:
    """`PREFIXNAME/SPLIT?k=v&k=v` -> (NAME, SPLIT or "train", {k: v}): built-in tasks and registered sources
    such as `reasoning_gym:NAME?size=100` write their options so."""
    spec, _, query = source[len(prefix) :].partition("?")
    name, _, split = spec.partition("/")
    options: dict[str, str] = {}
    for pair in filter(None, query.split("&")):
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise DataError(f"{source}: option {pair!r} should be written key=value")
        if key in options:
            raise DataError(f"{source}: option {key!r} is given twice")
        options[unquote(key)] = unquote(value)  # unquote, not unquote_plus: "ops=+-" keeps its "+"
    return name, split or "train", options


def file_sha256(path: str | Path) -> str:
    """The SHA-256 hex digest of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    _hash_into(digest, Path(path))
    return digest.hexdigest()


def _hash_into(digest: Any, path: Path) -> None:
    with open(path, "rb") as f:
        for chunk in iter(partial(f.read, 1 << 20), b""):
            digest.update(chunk)


def source_sha256(source: str) -> str | None:
    """The digest of a source's bytes (a folder's files in sorted order); None for a built-in task and a
    registered source (which names its content in its own lineage entry)."""
    source = str(source)
    if source.startswith(BUILTIN_PREFIX) or _registered(source) is not None:
        return None
    path, _ = _path_and_split(source)
    if not path.is_dir():
        return file_sha256(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        _hash_into(digest, file)
    return digest.hexdigest()


def describe_source(source: str) -> dict[str, Any]:
    """`{"source", "sha256", "rows"}` for lineage.json; rows counts the valid records; `export_ids` when the
    rows came from `posttrain feedback export`. A registered source describes itself (a feedback campaign adds
    its export id and state)."""
    reader = _registered(str(source))
    if reader is not None:
        return reader.describe(str(source))
    records, _ = load_records_with_report(source, skip_invalid=True)
    entry = {"source": str(source), "sha256": source_sha256(source), "rows": len(records)}
    exports = sorted(_export_ids(str(source)))
    if exports:
        entry["export_ids"] = exports
    return entry


def _export_ids(source: str) -> set[str]:
    """The export ids of a `posttrain feedback export` file (its rows' `feedback.export`), for lineage.json. Warns
    when rows repeat a judgment (two exports of one campaign joined into one file, as when a campaign is exported
    again after an exclusion and appended): each would train twice, and an excluded rater's rows come back."""
    found: set[str] = set()
    judged: set[tuple] = set()
    repeats = 0
    exports_of: dict[str, set[str]] = {}
    for _, read in _rows(source):
        try:
            row = read()
        except ValueError:
            continue
        meta = row.get("feedback") if isinstance(row, dict) else None
        if isinstance(meta, dict) and isinstance(meta.get("export"), str):
            found.add(meta["export"])
            exports_of.setdefault(str(meta.get("campaign")), set()).add(meta["export"])
            # one judgment gives one row of each kind (a rubric judgment one per response)
            key = (meta.get("campaign"), meta.get("judgment"), meta.get("response"), tuple(sorted(set(row) - {"feedback"})))
            repeats += key in judged
            judged.add(key)
    if repeats and os.environ.get("RANK", "0") == "0":
        joined = "; ".join(f"campaign {c}: exports {', '.join(sorted(e))}" for c, e in sorted(exports_of.items())
                           if len(e) > 1)
        log.warning(f"warning: {source}: {repeats} rows repeat a judgment of an earlier row" +
                    (f" ({joined})" if joined else "") + ": each would train twice, and a rater excluded since "
                    "the first export comes back; export each campaign once (a new export replaces the old)")
    return found


def default_heldout(source: str) -> str | None:
    """The held-out split of a built-in task (`builtin:arithmetic?ops=+` -> `builtin:arithmetic/heldout?ops=+`);
    None for files, whose held-out data the user names."""
    if not source.startswith(BUILTIN_PREFIX):
        return None
    name, split, options = parse_builtin(source)
    if split != "train":
        return None
    query = "&".join(f"{k}={v}" for k, v in options.items())
    return f"{BUILTIN_PREFIX}{name}/heldout" + (f"?{query}" if query else "")
