"""Optional dependencies: `require` names the extra that installs a missing one."""

import json
import subprocess
import sys

import pytest

from posttrain.errors import MissingExtra, UserError
from posttrain.extras import require


def test_require_returns_an_installed_module():
    assert require("json", "datasets", "reading x.json") is json


def test_a_missing_module_names_what_needs_it_and_the_install_command():
    with pytest.raises(MissingExtra) as info:
        require("posttrain_no_such_module", "datasets", "reading data/x.parquet")
    assert isinstance(info.value, UserError)  # so the CLI prints it as one line and exits 2
    assert str(info.value) == (
        "reading data/x.parquet needs posttrain_no_such_module, which posttrain installs with its \"datasets\" "
        "extra: pip install 'posttrain[datasets]'"
    )


def test_the_core_imports_leave_the_extras_unimported():
    """A fresh interpreter importing the loaders, the recipes and the CLI has not imported any extra."""
    modules = ["posttrain.data.load", "posttrain.models.load", "posttrain.recipes.sft", "posttrain.recipes.dpo",
               "posttrain.recipes.reward_model", "posttrain.cli", "posttrain.rewards.gym", "posttrain.rewards.cli"]
    code = "; ".join([*(f"import {m}" for m in modules), "import sys",
                      "print(sorted(m for m in ('datasets', 'pyarrow', 'gguf', 'reasoning_gym') if m in sys.modules))"])
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
