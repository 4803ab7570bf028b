"""Optional dependencies, imported where they are used: `require` says which extra installs a missing one.

The core install stays light; heavy packages needed by one feature live in pyproject.toml's extras
(`datasets`: pyarrow and datasets, for parquet files and `save_to_disk` folders; `gguf`: GGUF files and
the built-in `smollm2`; `wandb` and `trackio`: the trackers of `--run.trackers`; `gym`: reasoning-gym's
generators and scorers). Imports only the standard
library and `posttrain.errors`.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from posttrain.errors import MissingExtra


def require(module: str, extra: str, needed_for: str) -> ModuleType:
    """Import and return `module`; if it is not installed, raise MissingExtra naming `extra` and its install command.

    `needed_for` starts the one-line message: `reading data/x.parquet` -> "reading data/x.parquet needs pyarrow, ...".
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError:
        raise MissingExtra(
            f"{needed_for} needs {module}, which posttrain installs with its \"{extra}\" extra: "
            f"pip install 'posttrain[{extra}]'"
        ) from None
