"""Writing files and folders so that readers never see half of one: a temporary sibling, then a rename.

Every output posttrain writes goes through these: JSON and JSONL results, cached tensors, model folders.
(Checkpoints, written by several processes at once, do the same dance in `training/checkpoint.py`.)
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def write_file_atomic(path: str | Path, write: Callable[[Path], object]) -> Path:
    """Run `write(tmp_path)` on a temporary file beside `path`, then rename it onto `path`."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)  # mkstemp makes the file private; outputs are meant to be shared
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write `text` (UTF-8) to `path` atomically."""
    return write_file_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_json_atomic(path: str | Path, data: Any) -> Path:
    """Write `data` as indented JSON atomically."""
    return write_text_atomic(path, json.dumps(data, indent=2, default=str) + "\n")


def jsonl_lines(text: str) -> list[str]:
    """The lines of a JSONL text: split at "\n" only (JSON escapes it inside strings), and never at the other
    boundaries `str.splitlines()` knows (U+2028, U+0085, \x1c, ...), which JSON leaves raw inside strings, as
    `write_jsonl` writes them (model outputs hold such characters). A Windows line's "\r" is dropped."""
    return [line.removesuffix("\r") for line in text.split("\n")]


def is_same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name one existing file (`runs/../p.jsonl` and `p.jsonl`, a link and its target): an
    output written there would replace the input it was made from."""
    try:
        return Path(a).is_file() and Path(b).is_file() and Path(a).samefile(b)
    except OSError:
        return False


def _file_in_the_way(folder: Path) -> Path | None:
    """The nearest of `folder` and its parents that exists, when it is a file (no folder can be made there)."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    return existing if existing is not None and not existing.is_dir() else None


def output_file_problem(path: str | Path) -> str | None:
    """Why a file cannot be written at `path` (it is a folder; a folder on its way is a file), checked before any
    work whose result would go there; None when it can be."""
    target = Path(path)
    if target.is_dir():
        return f"is a folder; name a file in it, e.g. {target / 'out.jsonl'}"
    blocking = _file_in_the_way(target.parent)
    return f"{blocking} is a file, not a folder" if blocking else None


def replacing(path: str | Path) -> str:
    """" (replacing the file that was there)" for an output about to be written over a file, else "": said on the
    line that names what was written, so that a file replaced is never replaced without a word."""
    return " (replacing the file that was there)" if Path(path).is_file() else ""


def output_dir_problem(path: str | Path) -> str | None:
    """Why a folder cannot be made or filled at `path` (it, or a folder on its way, is a file); None when it
    can be."""
    blocking = _file_in_the_way(Path(path))
    if blocking is None:
        return None
    return "is a file; name a folder" if blocking == Path(path) else f"{blocking} is a file, not a folder"


def write_jsonl(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write one JSON object a line, atomically."""
    return write_text_atomic(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def write_dir_atomic(target: Path, write: Callable[[Path], object]) -> Path:
    """Run `write(tmp_dir)` and rename the result onto `target`, so readers never see a half-written folder.

    An existing `target` is first renamed aside and deleted afterwards (a folder cannot be renamed onto
    a non-empty one), so there is a moment where `target` is missing, but never one where it is partial.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{target.name}.tmp-"))
    try:
        write(tmp)
        os.chmod(tmp, 0o755)  # mkdtemp makes the folder private; a model folder is meant to be shared
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(dir=target.parent, prefix=f"{target.name}.old-"))
            os.replace(target, old)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target
