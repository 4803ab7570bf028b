"""RewardFn: the built-in rewards on Prompt records, `resolve_reward` for every form, and its one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.data.records import Message, Prompt
from posttrain.errors import ConfigError, DataError
from posttrain.rewards.functions import REWARDS, exact_reward, numeric_reward, resolve_reward

PROMPT = Prompt((Message("user", "What is 23 + 45?"),), {"answer": "68"})
NO_ANSWER = Prompt((Message("user", "Say hello."),), {"source": "chat"})


def shorter_is_better(prompt: Prompt, completion: str) -> float:
    """A user's own reward, as `module:function` names it: 1 / (1 + characters)."""
    return 1.0 / (1.0 + len(completion))


NOT_A_FUNCTION = 3


def test_numeric_reward_reads_the_final_number():
    assert numeric_reward(PROMPT, "23 + 45: ones 3 + 5 = 8, tens 2 + 4 = 6. #### 68") == 1.0
    assert numeric_reward(PROMPT, "The answer is 68.") == 1.0
    assert numeric_reward(PROMPT, "68, or maybe 67") == 0.0  # the last number counts
    assert numeric_reward(PROMPT, "no idea") == 0.0
    assert numeric_reward(Prompt(PROMPT.prompt, {"answer": 68}), "68") == 1.0  # a JSON number works too


def test_exact_reward_compares_the_whole_text():
    assert exact_reward(PROMPT, "  68\n") == 1.0
    assert exact_reward(PROMPT, "The answer is 68.") == 0.0
    assert exact_reward(Prompt(PROMPT.prompt, {"answer": "Paris"}), "paris") == 1.0
    assert exact_reward(Prompt(PROMPT.prompt, {"answer": 68}), "68") == 1.0


@pytest.mark.parametrize("reward, name", [(numeric_reward, "numeric"), (exact_reward, "exact")])
def test_a_prompt_without_its_answer_is_a_data_error_naming_the_field(reward, name):
    with pytest.raises(DataError) as info:
        reward(NO_ANSWER, "hello")
    message = str(info.value)
    assert 'no "answer" field' in message and f"the {name} reward" in message and "'Say hello.'" in message
    assert "\n" not in message


def test_resolve_reward_names_and_module_function():
    assert resolve_reward("numeric") is numeric_reward is REWARDS["numeric"]
    assert resolve_reward("exact") is exact_reward is REWARDS["exact"]
    mine = resolve_reward(f"{__name__}:shorter_is_better")
    assert mine is shorter_is_better
    assert mine(PROMPT, "68") == pytest.approx(1 / 3)  # 1 / (1 + 2 characters)
    assert resolve_reward("posttrain.rewards.functions:numeric_reward") is numeric_reward


@pytest.mark.parametrize("spec, words", [
    ("numerik", ["reward='numerik'", "unknown"]),
    (":shorter_is_better", ["reward=':shorter_is_better'", "unknown"]),
    ("math:", ["reward='math:'", "unknown"]),
    ("no_such_module_here:f", ["cannot import module 'no_such_module_here'", "No module named"]),
    ("math:no_such_function", ["module 'math' has no attribute 'no_such_function'"]),
    (f"{__name__}:NOT_A_FUNCTION", ["'NOT_A_FUNCTION' is a int, not a function"]),
])
def test_resolve_reward_errors_are_one_line_and_say_what_to_write(spec, words):
    with pytest.raises(ConfigError) as info:
        resolve_reward(spec)
    message = str(info.value)
    assert "\n" not in message
    assert "write numeric, exact, or module:function (a function taking (prompt_record, completion) -> float)" \
        in message
    for word in words:
        assert word in message, message


def test_the_rewards_package_stays_light():
    """`import posttrain.rewards` (RewardFn and the verifier rewards) pulls in neither torch nor transformers."""
    src = Path(__file__).resolve().parents[2] / "src"
    code = ("import sys, posttrain.rewards; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
