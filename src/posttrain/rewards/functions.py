"""Reward functions: the one signature that RL, evaluation and a user's own scorer share, and the `--reward` spec.

    RewardFn = Callable[[Prompt, str], float]
    reward(prompt_record, completion) -> float     # higher is better

The prompt record carries the reference fields a reward reads (e.g. `answer`, in `prompt.reference`);
the completion is the response text. Verifiers (`rewards.verifiers`), a trained reward model
(`rewards.model.RewardFunction`), the sandboxed code reward (`rewards.sandbox`), reasoning-gym's scorers
(`rewards.gym`) and `module:function` given on the command line all fit it.

A built-in reward is a `Verifier`: calling it gives the score; `explain(prompt, completion)` gives the score and
a reason ("extracted 41, expected 42") that `posttrain score` writes beside it; `reference_fields` names the
fields it reads, so a run can refuse prompts without them before sampling (`required_fields`,
`check_reference_fields`).

`resolve_reward(spec)` reads the `--reward` grammar (docs/rewards.md):

    spec  := term ("+" term)*                     a weighted sum when more than one term (or a weight) is given
    term  := [WEIGHT "*"] atom                    WEIGHT a decimal, e.g. 0.2 or -1
    atom  := NAME                                 a key of REWARDS, or of FACTORIES whose arguments all have defaults
           | NAME "(" key=value ("," key=value)* ")"   a key of FACTORIES with arguments; quote values with ' or "
           | "rm:" PATH                           a trained reward model (posttrain rm's final/)
           | MODULE ":" FUNCTION                  a user's function, imported (the module on sys.path)
"""

from __future__ import annotations

import difflib
import functools
import importlib
import inspect
import math
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from posttrain.data.records import Prompt
from posttrain.errors import ConfigError, DataError
from posttrain.rewards import verifiers

RewardFn = Callable[[Prompt, str], float]
"""`reward(prompt_record, completion) -> float`: the Prompt record (with its `reference` dict) and the
completion text; higher is better."""

Explain = Callable[[Prompt, str], "tuple[float, str]"]


def reference_field(prompt: Prompt, name: str, reward: str) -> Any:
    """`prompt.reference[name]`, or a DataError naming the missing field and the reward that needs it."""
    if name not in prompt.reference:
        raise DataError(
            f'prompt {prompt.text[:40]!r}: has no "{name}" field, which the {reward} reward compares the completion '
            f'with (rows like builtin:arithmetic carry one; else pick another reward)'
        )
    return prompt.reference[name]


@dataclass(frozen=True)
class Verifier:
    """A built-in reward: `reward(prompt, completion) -> float` is `explain(prompt, completion)[0]`."""

    name: str
    explain: Explain
    """(prompt, completion) -> (score, reason): the reason says what was read and compared."""
    reference_fields: frozenset[str] = frozenset()
    """The fields of `prompt.reference` it reads."""
    check_reference: Callable[[Prompt], Any] | None = None
    """prompt -> a DataError when the value of a field it reads cannot be used (an answer that is not a number):
    `check_reference_fields` runs it on every row before sampling, naming the row's file:line."""

    def __call__(self, prompt: Prompt, completion: str) -> float:
        return self.explain(prompt, completion)[0]


def _short(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def expected_number(prompt: Prompt) -> Any:
    """The prompt's `answer` as the numeric reward reads it (an exact Fraction), or a DataError saying why not."""
    answer = reference_field(prompt, "answer", "numeric")
    try:
        return verifiers.parse_number(answer)
    except ValueError as e:
        raise DataError(f'field "answer" {e}; the numeric reward needs a number (use the math reward for LaTeX '
                        f'or expressions, exact for text)') from None


def explain_numeric(prompt: Prompt, completion: str) -> tuple[float, str]:
    """`verifiers.numeric_match` against `answer`, with what was extracted."""
    answer = reference_field(prompt, "answer", "numeric")
    try:
        expected = expected_number(prompt)
    except DataError as e:  # a row not checked first (check_reference_fields names its file:line)
        raise DataError(f"prompt {prompt.text[:40]!r}: {e}") from None
    got = verifiers.extract_final_number(completion)
    score = verifiers.numeric_match(completion, answer)
    shown = answer if isinstance(answer, str) else f"{answer:g}"
    if got is None:
        return score, f"no number found, expected {shown}"
    try:
        verifiers.parse_number(got)
    except ValueError:
        return score, f"extracted {got}, not a value, expected {shown}"
    return score, f"extracted {got}, expected {shown}" + ("" if str(expected) == shown else f" (= {expected})")


def explain_exact(prompt: Prompt, completion: str) -> tuple[float, str]:
    """`verifiers.exact_match` against `answer` (case and whitespace folded)."""
    answer = str(reference_field(prompt, "answer", "exact"))
    score = verifiers.exact_match(completion, answer)
    verdict = "equals" if score else "differs from"
    return score, f"{_short(completion.strip())} {verdict} {_short(answer)} (case and spaces folded)"


def explain_contains(prompt: Prompt, completion: str) -> tuple[float, str]:
    """`verifiers.contains_answer`: `answer` anywhere in the completion, as whole words (case, spaces folded)."""
    answer = str(reference_field(prompt, "answer", "contains"))
    score = verifiers.contains_answer(completion, answer)
    return score, f"{_short(answer)} {'found' if score else 'not found'} in {_short(completion.strip())}"


@functools.lru_cache(maxsize=4096)
def _gold_math(answer: str) -> tuple:
    return tuple(verifiers.parse_math(answer, gold=True))


def expected_math(prompt: Prompt) -> list:
    """The prompt's `answer` as math-verify reads it, or a DataError when it reads nothing there."""
    answer = str(reference_field(prompt, "answer", "math"))
    gold = list(_gold_math(answer))
    if not gold:
        raise DataError(f'field "answer" {answer!r} is not an expression math-verify can read; write it as LaTeX '
                        f'(e.g. \\frac{{1}}{{2}}, 2\\pi, x^2+1)')
    return gold


def explain_math(prompt: Prompt, completion: str) -> tuple[float, str]:
    """`verifiers.math_match` against `answer` read by math-verify as LaTeX (numbers, fractions, sets, symbols)."""
    try:
        gold = expected_math(prompt)
    except DataError as e:  # a row not checked first (check_reference_fields names its file:line)
        raise DataError(f"prompt {prompt.text[:40]!r}: {e}") from None
    predicted = verifiers.parse_math(completion)
    if not predicted:
        return 0.0, f"no answer found, expected {gold[-1]}"
    score = verifiers.math_match(completion, gold)
    return score, f"read {predicted[-1]}, expected {gold[-1]}: {'equivalent' if score else 'not equivalent'}"


def explain_think_format(prompt: Prompt, completion: str) -> tuple[float, str]:
    """`verifiers.think_answer_format`, saying which part of the shape is missing."""
    if verifiers.think_answer_format(completion):
        return 1.0, "<think>...</think><answer>...</answer>"
    text = completion.strip()
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        if text.count(tag) != 1:
            return 0.0, f"{tag} appears {text.count(tag)} times, not once"
    if not text.startswith("<think>") or not text.endswith("</answer>"):
        return 0.0, "text outside <think>...</think><answer>...</answer>"
    return 0.0, "tags out of order or text between </think> and <answer>"


def explain_format(prompt: Prompt, completion: str, pattern: re.Pattern[str]) -> tuple[float, str]:
    """`verifiers.regex_format`: the whole stripped completion must match `pattern`."""
    score = verifiers.regex_format(completion, pattern)
    return score, f"{'matches' if score else 'does not match'} /{pattern.pattern}/ as a whole"


def explain_length(prompt: Prompt, completion: str, target: int, zero_at: int | None) -> tuple[float, str]:
    """`verifiers.length_penalty` in characters."""
    score = verifiers.length_penalty(completion, target, zero_at_chars=zero_at)
    return score, f"{len(completion)} characters (1 up to {target}, 0 from {2 * target if zero_at is None else zero_at})"


def explain_overlong(prompt: Prompt, completion: str, max_tokens: int, cache_tokens: int,
                     tokenizer: Any) -> tuple[float, str]:
    """`verifiers.overlong_penalty` on the completion's length in the policy tokenizer's tokens."""
    n = len(tokenizer.encode(completion, add_special_tokens=False))
    score = verifiers.overlong_penalty(n, max_tokens, cache_tokens)
    return score, f"{n} tokens (0 up to {max_tokens - cache_tokens}, -1 past {max_tokens})"


numeric_reward = Verifier("numeric", explain_numeric, frozenset({"answer"}), expected_number)
"""1.0 when the completion's final number equals the prompt's `answer` (`verifiers.numeric_match`), else 0.0."""
exact_reward = Verifier("exact", explain_exact, frozenset({"answer"}))
"""1.0 when the completion equals the prompt's `answer` up to case and whitespace (`verifiers.exact_match`)."""
contains_reward = Verifier("contains", explain_contains, frozenset({"answer"}))
"""1.0 when the prompt's `answer` appears in the completion as whole words (`verifiers.contains_answer`)."""
math_reward = Verifier("math", explain_math, frozenset({"answer"}))  # no check_reference: math-verify takes
# ~3 ms per answer, 20 s before a GSM8K-sized run; an unreadable answer is named by its prompt when scored
"""1.0 when math-verify finds the completion's answer equivalent to the prompt's LaTeX `answer`."""
think_format_reward = Verifier("think_format", explain_think_format)
"""1.0 for exactly `<think>...</think><answer>...</answer>` (DeepSeek-R1, arXiv:2501.12948)."""

REWARDS: dict[str, RewardFn] = {"numeric": numeric_reward, "exact": exact_reward, "contains": contains_reward,
                                "math": math_reward, "think_format": think_format_reward}
"""The built-in rewards that take no arguments, by the name a spec uses."""


def format_reward(pattern: str) -> Verifier:
    """`format(pattern=REGEX)`: 1.0 when the whole stripped completion matches REGEX (re.DOTALL)."""
    try:
        compiled = re.compile(pattern, re.DOTALL)
    except re.error as e:
        raise ValueError(f"pattern {pattern!r} is not a regular expression ({e})") from None
    return Verifier(f"format(pattern={pattern!r})", functools.partial(explain_format, pattern=compiled))


def length_reward(target: int, zero_at: int | None = None) -> Verifier:
    """`length(target=N, zero_at=M)`: 1.0 up to N characters, linearly down to 0.0 at M (default 2N)."""
    verifiers.length_penalty("", target, zero_at_chars=zero_at)  # checks target < zero_at now, not mid-run
    return Verifier(f"length(target={target},zero_at={zero_at})",
                    functools.partial(explain_length, target=target, zero_at=zero_at))


def overlong_reward(max: int, cache: int, tokenizer: Any) -> Verifier:  # `max` shadows the builtin: the spec's word
    """`overlong(max=L_MAX, cache=L_CACHE)`: DAPO's soft overlong penalty in [-1, 0], in the policy's tokens."""
    verifiers.overlong_penalty(0, max, cache)  # checks 0 < cache <= max now
    return Verifier(f"overlong(max={max},cache={cache})",
                    functools.partial(explain_overlong, max_tokens=max, cache_tokens=cache, tokenizer=tokenizer))


def code_reward(fraction: bool = False, workers: int = 4, wall_s: float = 5.0, cpu_s: int = 2,
                memory_mb: int = 512) -> RewardFn:
    """`code` / `code(fraction=true,wall_s=10,...)`: the completion's code run against the prompt's `tests` in
    the sandbox (`rewards.sandbox.CodeReward`; the limits are `SandboxLimits`', docs/sandbox.md)."""
    from posttrain.rewards.sandbox import CodeReward, SandboxLimits

    limits = SandboxLimits(wall_s=wall_s, cpu_s=cpu_s, memory_mb=memory_mb)
    reward = CodeReward(limits, workers=workers, fraction=fraction)
    if not hasattr(reward, "reference_fields"):
        reward.reference_fields = frozenset({"tests"})  # what sandbox.tests_of reads (`setup` is optional)
    return reward


def reasoning_gym_reward() -> RewardFn:
    """`reasoning_gym`: the generator's own `score_answer` on rows of a `reasoning_gym:NAME` source."""
    from posttrain.rewards.gym import gym_reward

    return gym_reward()


FACTORIES: dict[str, Callable[..., RewardFn]] = {"format": format_reward, "length": length_reward,
                                                  "overlong": overlong_reward, "code": code_reward,
                                                  "reasoning_gym": reasoning_gym_reward}
"""The built-in rewards made from arguments (`overlong(max=256,cache=64)`), by name. A `tokenizer` parameter is
filled with the policy's tokenizer (resolve_reward's keyword), never from the spec."""



class ArgumentError(ValueError):
    """A built-in reward's arguments do not fit it; the message gives its usage (no list of every form)."""


def _forms() -> str:
    """What a spec may name, for the error messages: every key of REWARDS and FACTORIES (with the arguments that
    have no default, `_usage`), so a new built-in is listed the moment it is registered."""
    built_in = [*REWARDS, *(_usage(name, factory, required_only=True) for name, factory in FACTORIES.items())]
    return (f"write a built-in name ({', '.join(built_in)}), rm:PATH, module:function, or a weighted sum such as "
            "numeric+0.2*think_format (docs/rewards.md)")


@dataclass(eq=False)
class WeightedSum:
    """`sum(weight * reward(prompt, completion))` over `parts`; `rewards.score` scores and logs each part."""

    name: str
    parts: list[tuple[str, float, RewardFn]] = field(default_factory=list)
    """(name as written in the spec, weight, reward), in spec order."""

    def __call__(self, prompt: Prompt, completion: str) -> float:
        return sum(weight * reward(prompt, completion) for _, weight, reward in self.parts)


def _split(text: str, sep: str) -> list[str]:
    """`text` split at each `sep` outside quotes and parentheses; ValueError when they are unbalanced."""
    parts, depth, quote, start = [], 0, None, 0
    for i, ch in enumerate(text):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "()":
            depth += 1 if ch == "(" else -1
            if depth < 0:
                raise ValueError("a ')' closes no '('")
        elif ch == sep and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if quote or depth:
        raise ValueError(f"unclosed {quote or '('}")
    return [*parts, text[start:]]


_WEIGHTED = re.compile(r"\s*(-?(?:\d+(?:\.\d*)?|\.\d+))\s*\*(.*)", re.DOTALL)
_CALL = re.compile(r"\s*([A-Za-z_]\w*)\s*\((.*)\)\s*", re.DOTALL)


def resolve_reward(spec: str, *, tokenizer: Any = None, device: str = "auto", option: str = "reward") -> RewardFn:
    """The reward `spec` names (the grammar in the module docstring); a one-line ConfigError naming the option
    (`option`, as the command spells it: `rl.reward`) with the spec and the forms otherwise. `tokenizer`: the
    policy's, for token-length rewards (`overlong`); `device`: where an `rm:PATH` model runs (`auto`: CUDA when
    available)."""
    try:
        terms = _split(spec, "+")
    except ValueError as e:
        raise ConfigError(f"{option}={spec!r}: {e}; {_forms()}") from None
    parts = []
    for term in terms:
        weighted = _WEIGHTED.fullmatch(term)
        weight, atom = (float(weighted[1]), weighted[2].strip()) if weighted else (1.0, term.strip())
        if not weighted and "*" in atom and not _CALL.fullmatch(atom):  # 1e-3*code, 1/2*code: not read as a weight
            raise ConfigError(f"{option}={spec!r}: the weight {atom.partition('*')[0].strip()!r} is not a plain "
                              f"decimal (write 0.001*code, not 1e-3*code); {_forms()}")
        if not atom:
            raise ConfigError(f"{option}={spec!r}: an empty term; {_forms()}")
        try:
            parts.append((atom, weight, _resolve_atom(atom, tokenizer, device)))
        except ValueError as e:
            where = f" term {atom!r}:" if len(terms) > 1 else ""
            forms = "" if isinstance(e, ArgumentError) else f"; {_forms()}"  # its usage is in the message
            raise ConfigError(f"{option}={spec!r}:{where} {e}{forms}") from None
    if len(parts) == 1 and parts[0][1] == 1.0:
        return parts[0][2]
    names = [name for name, _, _ in parts]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ConfigError(f"{option}={spec!r}: {', '.join(twice)} appears twice; give each reward one weight")
    return WeightedSum(spec, parts)


def _resolve_atom(atom: str, tokenizer: Any, device: str) -> RewardFn:
    """One term's reward; ValueError with the reason (resolve_reward adds the spec and the forms)."""
    if atom.startswith("rm:"):
        return _reward_model(atom[3:].strip(), device)
    call = _CALL.fullmatch(atom)
    name, args = (call[1], _arguments(call[2])) if call else (atom, None)
    if name in REWARDS:
        if args is not None:
            raise ArgumentError(f"{name} takes no arguments")
        return REWARDS[name]
    if name in FACTORIES:
        return _build(name, FACTORIES[name], args or {}, tokenizer)
    if ":" in atom:
        return _user_function(atom)
    known = [*REWARDS, *FACTORIES]
    close = difflib.get_close_matches(name, known, n=1) or [k for k in known if name and name in k][:1]  # gym
    raise ValueError(f"unknown reward {name!r}" + (f" (did you mean {close[0]}?)" if close else ""))


def _arguments(text: str) -> dict[str, str]:
    args = {}
    for item in filter(str.strip, _split(text, ",")):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key.isidentifier():
            raise ValueError(f"argument {item.strip()!r} should be written key=value")
        if key in args:
            raise ValueError(f"argument {key!r} is given twice")
        args[key] = value[1:-1] if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"" else value
    return args


_INTS = (int, int | None)  # the parameter types a spec value must be a whole number for


def _usage(name: str, factory: Callable[..., RewardFn], required_only: bool = False) -> str:
    """`overlong(max=INT,cache=INT)`: the spec form of a factory, from its typed parameters (`required_only`: those
    without a default)."""
    params = [p for p in inspect.signature(factory, eval_str=True).parameters.values() if p.name != "tokenizer"
              and not (required_only and p.default is not p.empty)]
    shown = [f"{p.name}=" + ("INT" if p.annotation in _INTS else "N" if p.annotation is float
                              else "BOOL" if p.annotation is bool else p.name.upper()) for p in params]
    return f"{name}({','.join(shown)})" if params else name


def _convert(kind: Any, value: str) -> Any:
    """A spec argument as its parameter's type: int, float, bool (`true`/`false`) or str; ValueError if not."""
    if kind in _INTS:
        return int(value)
    if kind is float:
        number = float(value)
        if not math.isfinite(number):  # nan passes every range check (nan < 0 and nan >= 1 are both False)
            raise ValueError(value)
        return number
    if kind is bool:
        if value.lower() not in ("true", "false"):
            raise ValueError(value)
        return value.lower() == "true"
    return value


def _build(name: str, factory: Callable[..., RewardFn], args: dict[str, str], tokenizer: Any) -> RewardFn:
    """`factory(**args)` with each value converted to its parameter's type, and the tokenizer where it takes one."""
    params = inspect.signature(factory, eval_str=True).parameters
    usage = f"(usage: {_usage(name, factory)})"
    unknown = sorted(key for key in args if key not in params or key == "tokenizer")
    if unknown:
        close = difflib.get_close_matches(unknown[0], [k for k in params if k != "tokenizer"], n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ArgumentError(f"{name} takes no argument {unknown[0]!r}{hint} {usage}")
    missing = [p for p in params.values() if p.default is p.empty and p.name not in args and p.name != "tokenizer"]
    if missing:
        raise ArgumentError(f"{name} needs {missing[0].name}=... {usage}")
    kwargs: dict[str, Any] = {}
    for key, value in args.items():
        kind = params[key].annotation
        try:
            kwargs[key] = _convert(kind, value)
        except ValueError:
            what = "true or false" if kind is bool else "a whole number" if kind in _INTS else "a finite number"
            raise ArgumentError(f"{name}: {key}={value!r} is not {what} {usage}") from None
    if "tokenizer" in params:
        if tokenizer is None:
            raise ValueError(f"{name} counts tokens with the policy's tokenizer, and none was given "
                             "(posttrain score: --tokenizer MODEL)")
        kwargs["tokenizer"] = tokenizer
    try:
        return factory(**kwargs)
    except ValueError as e:
        raise ArgumentError(f"{name}: {e} {usage}") from None


def _reward_model(path: str, device: str) -> RewardFn:
    if not path:
        raise ValueError("rm: needs the reward model's folder, e.g. rm:runs/rm/final")
    from posttrain.models.load import resolve_device
    from posttrain.rewards.model import RewardFunction

    return RewardFunction.load(path, device=resolve_device(device), name=f"rm:{path}")


def _import_here_too(module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        here = os.getcwd()
        if e.name != module_name.split(".")[0] or here in sys.path or "" in sys.path:
            raise
        sys.path.append(here)  # kept, for the later imports of the module's own imports and of spawned workers
        try:
            return importlib.import_module(module_name)
        except ImportError:
            sys.path.remove(here)
            raise


def _user_function(spec: str) -> RewardFn:
    """`module:function`, imported: the module on sys.path, or else in the current directory (as `python -m` and
    TRL's scripts find a `my_rewards.py` next to the command), which is searched after sys.path so that a file
    there never shadows an installed module."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"{spec!r} is not module:function")
    try:
        module = _import_here_too(module_name)
    except ImportError as e:
        if module_name.endswith(".py"):  # a file name where the module's name goes
            stem = os.path.splitext(os.path.basename(module_name))[0]
            raise ValueError(f"{module_name!r} is a file name: give the module's name, {stem}:{attr}, and run from "
                             "the folder that holds it (or put that folder on PYTHONPATH)") from None
        raise ValueError(f"cannot import module {module_name!r} ({e}; looked on sys.path and in "
                         f"{os.getcwd()})") from None
    except SyntaxError as e:  # the user's own file: where, not the import machinery's traceback
        raise ValueError(f"module {module_name!r} does not parse: {e.filename}:{e.lineno}: {e.msg}; fix the "
                         "file") from None
    except Exception as e:  # noqa: BLE001  code at the module's top level raised while importing it
        raise ValueError(f"importing module {module_name!r} raised {type(e).__name__}: {e}") from None
    if not hasattr(module, attr):
        raise ValueError(f"module {module_name!r} has no attribute {attr!r}")
    function = getattr(module, attr)
    if not callable(function):
        raise ValueError(f"{attr!r} is a {type(function).__name__}, not a function")
    if inspect.isfunction(function) and not hasattr(function, "score_batch"):  # before any model loads or samples
        try:
            inspect.signature(function).bind(None, None)
        except TypeError:
            raise ValueError(f"{spec} takes ({', '.join(inspect.signature(function).parameters)}), but a reward is "
                             "called as f(prompt, completion)") from None
    return function


def reward_leaves(reward: Any) -> list[Any]:
    """The rewards a spec is made of: each part of a weighted sum, or the reward itself."""
    parts = getattr(reward, "parts", None)
    return [leaf for _, _, part in parts for leaf in reward_leaves(part)] if parts else [reward]


def required_fields(reward: Any) -> set[str]:
    """The reference fields `reward` reads (`answer` for numeric, exact and math; `tests` for code; ...): its
    `reference_fields`, over every part of a weighted sum. A user's function may declare its own attribute."""
    return set().union(*(getattr(leaf, "reference_fields", ()) for leaf in reward_leaves(reward)))


def check_reference_fields(reward: Any, prompts: Sequence[Prompt], source: str) -> None:
    """A DataError naming the first prompt that lacks a field `reward` reads, by its place in `source`
    (`file.jsonl:LINE`, `SOURCE row N`; the prompts in the source's order) and the field. Call it before
    sampling or scoring."""
    from posttrain.data.load import row_location
    from posttrain.rewards.score import reward_name

    fields = sorted(required_fields(reward))
    checks = [check for check in (getattr(leaf, "check_reference", None) for leaf in reward_leaves(reward)) if check]
    for i, prompt in enumerate(prompts):
        for name in fields:
            if name not in prompt.reference:
                raise DataError(f'{row_location(source, i + 1)}: has no "{name}" field, which the reward '
                                f'{reward_name(reward)} reads; add it to every row or pick another reward')
        for check in checks:  # a reward's own rule for its fields' values (the code reward's tests)
            try:
                check(prompt)
            except DataError as e:
                raise DataError(f"{row_location(source, i + 1)}: {e}") from None
