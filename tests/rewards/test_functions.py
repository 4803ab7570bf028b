"""RewardFn: the built-in rewards on Prompt records, `resolve_reward` for every form, and its one-line errors."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from posttrain.data.records import Message, Prompt
from posttrain.errors import ConfigError, DataError
from posttrain.rewards.functions import (
    REWARDS,
    Verifier,
    WeightedSum,
    check_reference_fields,
    exact_reward,
    math_reward,
    numeric_reward,
    required_fields,
    resolve_reward,
    think_format_reward,
)
from posttrain.rewards.score import explain_completions, score_completions

PROMPT = Prompt((Message("user", "What is 23 + 45?"),), {"answer": "68"})
NO_ANSWER = Prompt((Message("user", "Say hello."),), {"source": "chat"})


def shorter_is_better(prompt: Prompt, completion: str) -> float:
    """A user's own reward, as `module:function` names it: 1 / (1 + characters)."""
    return 1.0 / (1.0 + len(completion))


NOT_A_FUNCTION = 3


def trl_style(completions, **kwargs):  # noqa: ANN001, ANN003, ANN201
    """TRL's reward-function signature, which posttrain's is not."""
    return [0.0 for _ in completions]


def with_defaults(prompt, completion, scale=1.0):  # noqa: ANN001, ANN201
    return scale


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


def test_contains_reward_says_where_it_looked():
    from posttrain.rewards.functions import REWARDS

    paris = Prompt(PROMPT.prompt, {"answer": "Paris"})
    assert REWARDS["contains"](paris, "The capital of France is Paris.") == 1.0
    assert REWARDS["contains"].explain(paris, "Lyon, I think") == (0.0, "'Paris' not found in 'Lyon, I think'")


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
    assert resolve_reward(f"{__name__}:with_defaults") is with_defaults  # extra parameters with defaults are fine


def test_a_reward_file_that_does_not_parse_or_raises_on_import_is_one_line(tmp_path, monkeypatch):
    """A syntax error in one's own reward file ended in a 59-line traceback, exit 1 (newcomer trial 8)."""
    (tmp_path / "broken_reward.py").write_text("def r(prompt, completion)\n    return 1.0\n")
    (tmp_path / "raising_reward.py").write_text("import json\nVALUE = 1 / 0\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"module 'broken_reward' does not parse: .*broken_reward.py:1: "):
        resolve_reward("broken_reward:r")
    with pytest.raises(ConfigError, match="importing module 'raising_reward' raised ZeroDivisionError"):
        resolve_reward("raising_reward:r")


@pytest.mark.parametrize("spec, words", [
    ("numerik", ["reward='numerik'", "unknown reward 'numerik' (did you mean numeric?)"]),
    ("gym", ["unknown reward 'gym' (did you mean reasoning_gym?)"]),
    (":shorter_is_better", ["reward=':shorter_is_better'", "is not module:function"]),
    ("os.path:", ["reward='os.path:'", "is not module:function"]),
    ("no_such_module_here:f", ["cannot import module 'no_such_module_here'", "No module named"]),
    ("math:no_such_function", ["module 'math' has no attribute 'no_such_function'"]),
    (f"{__name__}:NOT_A_FUNCTION", ["'NOT_A_FUNCTION' is a int, not a function"]),
    (f"{__name__}:trl_style", [f"{__name__}:trl_style takes (completions, kwargs), but a reward is called as "
                               "f(prompt, completion)"]),
    ("numeric+", ["an empty term"]),
    ("numeric+0.2*", ["an empty term"]),
    ("numeric+0.2*thinkformat", ["term 'thinkformat'", "did you mean think_format?"]),
    ("numeric+0.2*no_such_module_here:f", ["term 'no_such_module_here:f'", "cannot import"]),
    ("format", ["format needs pattern=...", "usage: format(pattern=PATTERN)"]),
    ("format(x=1)", ["format takes no argument 'x'"]),
    ("code(walls=1)", ["code takes no argument 'walls' (did you mean wall_s?)"]),
    ("rewards/no_such_file.py:f", ["'rewards/no_such_file.py' is a file name", "no_such_file:f"]),
    ("format(pattern='(')", ["is not a regular expression"]),
    ("format(pattern='a'", ["unclosed ("]),
    ("format(pattern='a)", ["unclosed '"]),
    ("numeric)", ["a ')' closes no '('"]),
    ("numeric(x=1)", ["numeric takes no arguments"]),
    ("length(target=ten)", ["target='ten' is not a whole number", "usage: length(target=INT,zero_at=INT)"]),
    ("code(cpu_s=0.2)", ["cpu_s='0.2' is not a whole number", "cpu_s=INT"]),
    ("1e-3*code", ["the weight '1e-3' is not a plain decimal", "0.001*code"]),
    ("code(wall_s=1e9)", ["wall_s must be at most 86400"]),  # was an OverflowError once the first job ran
    ("code(wall_s=nan)", ["wall_s='nan' is not a finite number"]),  # nan passed every range check
    ("code(wall_s=inf)", ["wall_s='inf' is not a finite number"]),
    ("length(target=10,zero_at=5)", ["target_chars < zero_at_chars"]),
    ("length(target=10,target=20)", ["argument 'target' is given twice"]),
    ("length(10)", ["argument '10' should be written key=value"]),
    ("overlong(max=10,cache=4)", ["counts tokens with the policy's tokenizer", "--tokenizer"]),
    ("overlong(max=10,cache=4,tokenizer=x)", ["takes no argument 'tokenizer'"]),
    ("rm:", ["rm: needs the reward model's folder"]),
])
def test_resolve_reward_errors_are_one_line_and_say_what_to_write(spec, words):
    with pytest.raises(ConfigError) as info:
        resolve_reward(spec)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"reward={spec!r}: ")
    # a wrong argument gets the reward's usage; anything else the list of every form a spec may take
    about_arguments = "(usage: " in message or "takes no arguments" in message
    lists_forms = message.endswith("rm:PATH, module:function, or a weighted sum such as numeric+0.2*think_format "
                                   "(docs/rewards.md)")
    assert about_arguments != lists_forms, message
    for word in words:
        assert word in message, message


def test_a_reward_named_twice_in_a_sum_is_refused():
    with pytest.raises(ConfigError, match="numeric appears twice; give each reward one weight"):
        resolve_reward("numeric + 0.5*numeric")


def test_the_rewards_package_stays_light():
    """`import posttrain.rewards` (RewardFn and the verifier rewards) pulls in neither torch nor transformers."""
    src = Path(__file__).resolve().parents[2] / "src"
    code = ("import sys, posttrain.rewards; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers'}))")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(src), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_a_weighted_sum_has_parts_in_spec_order_and_is_itself_a_reward():
    """numeric+0.2*think_format on a right, well-formed answer: 1 + 0.2 * 1 = 1.2; a right bare answer: 1.0."""
    reward = resolve_reward("numeric + 0.2*think_format")
    assert isinstance(reward, WeightedSum)
    assert reward.parts == [("numeric", 1.0, numeric_reward), ("think_format", 0.2, think_format_reward)]
    assert reward(PROMPT, "<think>3+5=8, 2+4=6</think><answer>68</answer>") == pytest.approx(1.2)
    assert reward(PROMPT, "68") == 1.0
    scores = score_completions(reward, [PROMPT, PROMPT], ["<think>x</think><answer>68</answer>", "67"])
    assert scores.total == pytest.approx([1.2, 0.0])
    assert scores.parts == {"numeric": [1.0, 0.0], "think_format": [1.0, 0.0]}


def test_weights_may_be_negative_or_bare_decimals_and_a_single_weighted_term_is_a_sum():
    """2*exact on "68": 2 * 1 = 2; -1*exact + .5*numeric on "67": -0 + 0 = 0, on "68": -1 + 0.5 = -0.5."""
    doubled = resolve_reward("2*exact")
    assert isinstance(doubled, WeightedSum) and doubled(PROMPT, "68") == 2.0
    mixed = resolve_reward("-1*exact+.5*numeric")
    assert [w for _, w, _ in mixed.parts] == [-1.0, 0.5]
    assert mixed(PROMPT, "68") == pytest.approx(-0.5) and mixed(PROMPT, "67") == 0.0


def test_arguments_are_typed_and_quoted_values_keep_plus_commas_and_parentheses():
    """A regex with '+', ',' and ')' inside quotes is one argument; length's target is an int."""
    reward = resolve_reward("numeric+format(pattern='(\\d+, )+#### \\d+')")
    fmt = reward.parts[1][2]
    assert fmt(PROMPT, "1, 2, #### 68") == 1.0 and fmt(PROMPT, "#### 68 ok") == 0.0
    length = resolve_reward('length(target=4, zero_at="8")')
    assert length(PROMPT, "x" * 6) == 0.5  # 1 - (6 - 4) / (8 - 4)


def test_module_function_works_inside_a_sum():
    reward = resolve_reward(f"numeric+0.5*{__name__}:shorter_is_better")
    assert reward.parts[1][0] == f"{__name__}:shorter_is_better"
    assert reward(PROMPT, "68") == pytest.approx(1 + 0.5 / 3)


class CharTokenizer:
    """A stand-in for the policy tokenizer: one token per character."""

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) for c in text]


def test_overlong_counts_the_given_tokenizers_tokens():
    """max 10, cache 4: 6 tokens -> 0; 8 -> (6 - 8) / 4 = -0.5; 11 -> -1."""
    reward = resolve_reward("overlong(max=10,cache=4)", tokenizer=CharTokenizer())
    assert [reward(PROMPT, "x" * n) for n in (6, 8, 11)] == [0.0, -0.5, -1.0]
    assert reward.explain(PROMPT, "x" * 8)[1] == "8 tokens (0 up to 6, -1 past 10)"


def test_required_fields_name_what_each_reward_reads():
    assert required_fields(resolve_reward("numeric")) == {"answer"}
    assert required_fields(resolve_reward("think_format")) == set()
    assert required_fields(resolve_reward("think_format+0.5*math")) == {"answer"}
    assert required_fields(shorter_is_better) == set()  # a user's function reads what it declares: nothing here
    assert required_fields(Verifier("mine", lambda p, c: (1.0, ""), frozenset({"tests"}))) == {"tests"}


def test_check_reference_fields_names_the_row_and_the_field(tmp_path):
    data = tmp_path / "prompts.jsonl"
    data.write_text('{"prompt": "2+2?", "answer": 4}\n\n{"prompt": "Say hi."}\n')
    prompts = [Prompt.from_dict({"prompt": "2+2?", "answer": 4}), Prompt.from_dict({"prompt": "Say hi."})]
    check_reference_fields(resolve_reward("think_format"), prompts, str(data))  # reads no field: fine
    with pytest.raises(DataError) as info:
        check_reference_fields(resolve_reward("think_format+numeric"), prompts, str(data))
    assert str(info.value) == (f'{data}:3: has no "answer" field, which the reward think_format+numeric reads; '
                               "add it to every row or pick another reward")


def test_check_reference_fields_runs_a_rewards_own_rule_on_every_row(tmp_path):
    """The code reward's tests must be non-empty strings: a row with `"tests": []` is refused with its place before
    sampling (it used to stop a run at the step that first drew it), also inside a sum."""
    data = tmp_path / "code.jsonl"
    rows = [{"prompt": "Write add.", "tests": ["assert add(1, 2) == 3"]}, {"prompt": "Write sub.", "tests": []}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = [Prompt.from_dict(r) for r in rows]
    check_reference_fields(resolve_reward("code"), prompts[:1], str(data))
    for spec in ("code", "code+0.1*think_format"):
        with pytest.raises(DataError, match=rf'^{re.escape(str(data))}:2: prompt \'Write sub.\': "tests" must be'):
            check_reference_fields(resolve_reward(spec), prompts, str(data))


@pytest.mark.parametrize("reward, completion, score, reason", [
    (numeric_reward, "so #### 68", 1.0, "extracted 68, expected 68"),
    (numeric_reward, "67", 0.0, "extracted 67, expected 68"),
    (numeric_reward, "no idea", 0.0, "no number found, expected 68"),
    (exact_reward, "68.", 0.0, "'68.' differs from '68' (case and spaces folded)"),
    (math_reward, "$\\boxed{68}$", 1.0, "read 68, expected 68: equivalent"),
    (math_reward, "$\\boxed{67}$", 0.0, "read 67, expected 68: not equivalent"),
    (think_format_reward, "<answer>68</answer>", 0.0, "<think> appears 0 times, not once"),
    (think_format_reward, "<think>a</think> and <answer>68</answer>", 0.0,
     "tags out of order or text between </think> and <answer>"),
])
def test_each_built_in_explains_its_score(reward, completion, score, reason):
    assert reward.explain(PROMPT, completion) == (score, reason)
    assert reward(PROMPT, completion) == score


def test_numeric_reason_shows_the_normalised_reference_when_it_is_written_otherwise():
    prompt = Prompt(PROMPT.prompt, {"answer": "1,000"})
    assert numeric_reward.explain(prompt, "999") == (0.0, "extracted 999, expected 1,000 (= 1000)")


def test_a_reference_the_reward_cannot_read_is_a_data_error():
    with pytest.raises(DataError, match='field "answer" .* is not a number .*; the numeric reward needs a number'):
        numeric_reward(Prompt(PROMPT.prompt, {"answer": "forty"}), "40")
    with pytest.raises(DataError, match="is not an expression math-verify can read"):
        math_reward(Prompt(PROMPT.prompt, {"answer": " "}), "40")


def test_a_numeric_reference_that_is_no_number_is_named_by_its_row_before_sampling(tmp_path):
    source = tmp_path / "tasks.jsonl"
    source.write_text('{"prompt": "2 + 2?", "answer": "4"}\n{"prompt": "3 + 3?", "answer": "six"}\n')
    rows = [Prompt("2 + 2?", {"answer": "4"}), Prompt("3 + 3?", {"answer": "six"})]
    with pytest.raises(DataError, match=f'^{source}:2: field "answer" \'six\' is not a number'):
        check_reference_fields(resolve_reward("numeric+0.2*think_format"), rows, str(source))


def test_explained_sum_lists_each_part_with_its_value_and_reason():
    reward = resolve_reward("numeric+0.2*think_format")
    scores, reasons = explain_completions(reward, [PROMPT], ["#### 68"])
    assert scores.total == [1.0] and scores.parts == {"numeric": [1.0], "think_format": [0.0]}
    assert reasons == ["numeric=1 (extracted 68, expected 68); think_format=0 (<think> appears 0 times, not once)"]


def test_code_resolves_to_the_sandbox_with_its_limits_and_needs_tests():
    from posttrain.rewards.sandbox import CodeReward

    plain = resolve_reward("code")
    assert isinstance(plain, CodeReward) and required_fields(plain) == {"tests"}
    tuned = resolve_reward("code(fraction=true, wall_s=2.5, memory_mb=256)")
    assert tuned.fraction is True and tuned.sandbox.limits.wall_s == 2.5 and tuned.sandbox.limits.memory_mb == 256
    with pytest.raises(ConfigError, match="fraction='yes' is not true or false"):
        resolve_reward("code(fraction=yes)")
    with pytest.raises(ConfigError, match="SandboxLimits.wall_s must be > 0"):
        resolve_reward("code(wall_s=0)")


def test_code_reasons_come_from_the_sandbox(tmp_path):
    prompt = Prompt((Message("user", "Write double(x)."),), {"tests": ["assert double(2) == 4"]})
    scores, reasons = explain_completions(resolve_reward("code"), [prompt, prompt],
                                          ["```python\ndef double(x):\n    return 2 * x\n```",
                                           "```python\ndef double(x):\n    return x\n```"])
    assert scores.total == [1.0, 0.0]
    assert reasons[0] == "passed" and reasons[1].startswith("failed: AssertionError")
