"""Layers point down only: a module imports from its own layer or the ones below it, never above.

The layers are written once, in `posttrain/__init__.py`'s docstring, and read from there, so the docs and this
check cannot drift apart. Every import counts, at module level and inside functions alike (a lazy import is
still a dependency), and so does every import under `if TYPE_CHECKING:`.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import posttrain

SRC = Path(posttrain.__file__).resolve().parent


def layers() -> list[list[str]]:
    """The numbered list in the package docstring: `N. name, name, ...` (each name a module or package)."""
    found = re.findall(r"^\s*(\d+)\.\s+`([^`]+)`", posttrain.__doc__ or "", flags=re.M)
    assert found, "posttrain/__init__.py's docstring lists no layers"
    return [[n.strip() for n in names.split(",")] for _, names in found]


def layer_of(module: str, table: list[list[str]]) -> int:
    """The layer of the most specific name that `module` is or lies under (`posttrain.` left off)."""
    name = module.removeprefix("posttrain").lstrip(".") or "__init__"
    best, best_len = None, -1
    for rank, names in enumerate(table):
        for prefix in names:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = rank, len(prefix)
    assert best is not None, f"posttrain.{name} is in no layer of posttrain/__init__.py's docstring; add it there"
    return best


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported posttrain module) for every import in the file, wherever it stands."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "posttrain"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "posttrain":
            # `from posttrain.data import records` imports the module posttrain.data.records
            for a in node.names:
                candidate = f"{node.module}.{a.name}"
                is_module = (SRC.parent / candidate.replace(".", "/")).with_suffix(".py").exists() or (
                    SRC.parent / candidate.replace(".", "/") / "__init__.py").exists()
                out.append((node.lineno, candidate if is_module else node.module))
    return out


def test_every_module_is_in_a_layer():
    table = layers()
    for path in SRC.rglob("*.py"):
        layer_of(module_name(path), table)


def test_no_module_imports_a_layer_above_its_own():
    table = layers()
    upward = []
    for path in sorted(SRC.rglob("*.py")):
        here = module_name(path)
        for line, target in imports(path):
            if layer_of(target, table) > layer_of(here, table):
                upward.append(f"{path.relative_to(SRC.parent)}:{line}: {here} (layer {layer_of(here, table) + 1}) "
                              f"imports {target} (layer {layer_of(target, table) + 1})")
    assert not upward, "imports that point up:\n" + "\n".join(upward)


def test_the_check_catches_an_upward_import(tmp_path):
    """The checker itself: a data module importing a recipe is reported."""
    table = layers()
    assert layer_of("posttrain.recipes.sft", table) > layer_of("posttrain.data.load", table)
    fake = tmp_path / "m.py"
    fake.write_text("def f():\n    from posttrain.recipes.sft import train\n")
    assert imports(fake) == [(2, "posttrain.recipes.sft")]
