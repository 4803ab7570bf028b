"""reasoning-gym (the `gym` extra, installed by `make test`): a generator as a data source and its own scorer as
the `reasoning_gym` reward, deterministic by seed, and one-line errors for a bad source or a missing package."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import posttrain.rewards.gym  # noqa: F401  registers reasoning_gym:, as the posttrain command does
from posttrain.data.load import describe_source, load_records
from posttrain.data.records import Prompt
from posttrain.errors import ConfigError
from posttrain.rewards.functions import required_fields, resolve_reward
from posttrain.rewards.score import explain_completions

SOURCE = "reasoning_gym:basic_arithmetic?size=6&seed=3"


def test_a_generator_is_a_source_of_prompt_records_with_answer_and_metadata():
    prompts = load_records(SOURCE)
    assert len(prompts) == 6 and all(isinstance(p, Prompt) for p in prompts)
    import reasoning_gym

    entries = list(reasoning_gym.create_dataset("basic_arithmetic", size=6, seed=3))
    assert [p.text for p in prompts] == [e["question"] for e in entries]
    assert [p.reference["answer"] for p in prompts] == [e["answer"] for e in entries]
    first = prompts[0]
    assert {"answer", "metadata", "gym_config"} <= set(first.reference)
    assert first.reference["metadata"]["source_dataset"] == "basic_arithmetic"
    assert first.reference["gym_config"] == {"name": "basic_arithmetic", "options": {"size": 6, "seed": 3}}
    assert [p.text for p in load_records(SOURCE)] == [p.text for p in prompts]  # the seed fixes the problems
    other = load_records("reasoning_gym:basic_arithmetic?size=6&seed=4")
    assert [p.text for p in other] != [p.text for p in prompts]


def test_the_reward_is_the_generators_own_scorer():
    prompts = load_records(SOURCE)
    reward = resolve_reward("reasoning_gym")
    assert required_fields(reward) == {"answer", "metadata"}
    right = [str(p.reference["answer"]) for p in prompts]
    assert [reward(p, a) for p, a in zip(prompts, right)] == [1.0] * 6
    tagged = [f"<think>working</think><answer>{a}</answer>" for a in right]
    assert [reward(p, c) for p, c in zip(prompts, tagged)] == [1.0] * 6  # the <answer> text is scored
    wrong = [str(int(a) + 1) for a in right]
    assert all(reward(p, c) < 1.0 for p, c in zip(prompts, wrong))
    _, reasons = explain_completions(reward, prompts[:1], [right[0]])
    assert reasons[0].startswith(f"basic_arithmetic.score_answer({right[0]!r}) = 1, expected")


def test_rows_written_to_jsonl_and_read_back_score_the_same(tmp_path):
    """What a user does with posttrain score: the generator's rows saved as a file (tuples become lists)."""
    prompts = load_records("reasoning_gym:gsm_symbolic?size=3&seed=0")
    path = tmp_path / "gym.jsonl"
    path.write_text("".join(json.dumps({"prompt": p.text, **p.reference}) + "\n" for p in prompts))
    again = load_records(str(path))
    reward = resolve_reward("reasoning_gym")
    assert [reward(p, str(p.reference["answer"])) for p in again] == [1.0, 1.0, 1.0]


def test_lineage_names_the_generator_options_and_version():
    entry = describe_source(SOURCE)
    assert entry["rows"] == 6 and entry["sha256"] is None
    assert entry["reasoning_gym"]["name"] == "basic_arithmetic"
    assert entry["reasoning_gym"]["options"] == {"size": 6, "seed": 3} and entry["reasoning_gym"]["version"]


@pytest.mark.parametrize("source, words", [
    ("reasoning_gym:basic_arithmetc?size=3", ["has no generator 'basic_arithmetc'", "did you mean basic_arithmetic"]),
    ("reasoning_gym:basic_arithmetic?size=3&bogus=1", ["refuses these options", "bogus"]),
    ("reasoning_gym:", ["write a reasoning-gym source as reasoning_gym:NAME?size=N&seed=S"]),
])
def test_a_bad_source_is_one_line(source, words):
    with pytest.raises(ConfigError) as info:
        load_records(source)
    message = str(info.value)
    assert "\n" not in message and message.startswith(source)
    for word in words:
        assert word in message, message


def test_without_reasoning_gym_the_error_names_the_extra():
    """A fresh interpreter where `import reasoning_gym` fails as it does when the package is not installed."""
    src = Path(__file__).resolve().parents[2] / "src"
    code = ("import sys; sys.modules['reasoning_gym'] = None\n"
            "import posttrain.rewards.gym\n"
            "from posttrain.errors import MissingExtra\n"
            "from posttrain.rewards.functions import resolve_reward\n"
            "from posttrain.data.load import load_records\n"
            "for attempt in (lambda: resolve_reward('reasoning_gym'), lambda: load_records('reasoning_gym:chain_sum')):\n"
            "    try:\n        attempt()\n    except MissingExtra as e:\n        print(e)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "the reasoning_gym reward needs reasoning_gym, which posttrain installs with its \"gym\" extra: "
        "pip install 'posttrain[gym]'",
        "reading reasoning_gym:chain_sum needs reasoning_gym, which posttrain installs with its \"gym\" extra: "
        "pip install 'posttrain[gym]'"]
