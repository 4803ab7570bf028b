"""Verifiers: pure functions that score a completion string against a reference.

Each takes strings (and plain numbers) and returns a float (most in [0, 1]), so a task's evaluation and its RL
reward are the same function. A reward function in posttrain has the signature
`reward(prompt_record, completion) -> float` (`rewards.functions.RewardFn`); it reads the reference out of the
record and calls one of these.

- `answer_tag`            the text of the last `<answer>...</answer>`, if any
- `extract_final_number`  the answer a completion commits to, as a string ("1000", "-2.5", "1/2")
- `parse_number`          such a string (or a reference answer) as an exact Fraction
- `numeric_match`         1.0 when that number equals the reference number
- `math_match`            1.0 when math-verify finds the completion's answer equivalent to a LaTeX/symbolic one
- `exact_match`           1.0 when the whole completion equals the reference text
- `regex_format`          1.0 when the whole completion has the required shape
- `think_answer_format`   1.0 for `<think>...</think><answer>...</answer>` (DeepSeek-R1, arXiv:2501.12948)
- `length_penalty`        1.0 up to a target length, falling linearly to 0.0
- `overlong_penalty`      DAPO's soft overlong punishment, 0 down to -1 (arXiv:2503.14476 eq. 13)
"""

from __future__ import annotations

import re
import threading
from fractions import Fraction

# A number: optional minus, then digits grouped by commas ("1,234,567"), plain digits, or a bare decimal
# (".5"), then an optional decimal part. A minus counts only when no letter or digit stands right before
# it, so "5-3" reads as 5 and 3, and "x-1" as 1. A fraction is a number, "/" and digits with no spaces ("3/4").
_NUMBER = r"(?:(?<!\w)-)?(?:(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|(?<![\w.])\.\d+)"
_VALUE = _NUMBER + r"(?:/\d+(?!\d|\.\d))?"
_VALUE_RE = re.compile(_VALUE)
# GSM8K marks the final answer with "#### 42" (Cobbe et al., arXiv:2110.14168).
_HASHES_RE = re.compile(r"####\s*\$?\s*(" + _VALUE + ")")
# LaTeX answers (MATH-style): the inside of \boxed{...}, one level of nested braces allowed (\boxed{\frac{1}{2}}).
_BOXED_RE = re.compile(r"\\boxed\s*\{((?:[^{}]|\{[^{}]*\})*)\}")
_FRAC_RE = re.compile(r"\\[dt]?frac\s*\{\s*(" + _NUMBER + r")\s*\}\s*\{\s*(\d+)\s*\}")
# "The answer is 42", "answer is: 42", "final answer: 42", "Answer = 42" (any case); "$", "(", "**" (Markdown
# bold) may open the number.
_ANSWER_IS_RE = re.compile(r"answer\s*(?:is\s*:?|:|=)\s*[$\\({*]*\s*(" + _VALUE + ")", re.IGNORECASE)
_ANSWER_TAG_RE = re.compile(r"<answer>(.*?)</answer>", re.DOTALL)
# DeepSeek-R1's template (arXiv:2501.12948 table 1): reasoning in <think>, then the answer in <answer>, nothing
# else around them, and neither tag repeated inside the other's text.
_THINK_ANSWER_RE = re.compile(r"<think>((?:(?!</?think>).)*)</think>\s*<answer>((?:(?!</?answer>).)*)</answer>",
                              re.DOTALL)


def answer_tag(text: str) -> str | None:
    """The stripped text of the last `<answer>...</answer>` in `text`, or None when it has none."""
    found = _ANSWER_TAG_RE.findall(text)
    return found[-1].strip() if found else None


def _clean(number: str) -> str:
    return number.replace(",", "")


def extract_final_number(text: str) -> str | None:
    """The number a completion gives as its answer, without thousands commas; None if it has none.

    Inside the last `<answer>...</answer>` when there is one, else in the whole text, looked for in this order,
    the last occurrence of each form winning:
    1. after "####" (GSM8K), e.g. "... #### 1,234" -> "1234";
    2. inside "\\boxed{...}", e.g. "\\boxed{-7}" -> "-7", "\\boxed{\\frac{1}{2}}" -> "1/2";
    3. after "answer is" / "answer:" / "answer =", e.g. "The answer is 12. Check: 3*4" -> "12";
    4. the last number anywhere, e.g. "3 apples and 5 pears." -> "5".
    Decimals are kept as written ("2.50", ".5"); a fraction stays one ("3/4"); a trailing full stop is not part
    of a number. `\\frac{a}{b}` is read as a/b.
    """
    tagged = answer_tag(text)
    if tagged is not None:
        text = tagged
    text = _FRAC_RE.sub(r"\1/\2", text)
    for pattern in (_HASHES_RE, _BOXED_RE, _ANSWER_IS_RE):
        for found in reversed(pattern.findall(text)):
            numbers = _VALUE_RE.findall(found)
            if numbers:
                return _clean(numbers[-1])
    numbers = _VALUE_RE.findall(text)
    return _clean(numbers[-1]) if numbers else None


def parse_number(text: str | float) -> Fraction:
    """A number written as "1,000", "0.50", ".5", "-3", "1/2" (or an int/float) as an exact Fraction.

    ValueError for anything else (words, "1/0", an expression)."""
    if isinstance(text, bool):
        raise ValueError(f"{text!r} is not a number")
    if isinstance(text, (int, float)):
        return Fraction(text)
    cleaned = _clean(str(text).strip())
    try:
        return Fraction(cleaned)
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"{text!r} is not a number (expected e.g. 42, -3.5, 1,234 or 1/2)") from None


def numeric_match(completion: str, answer: str | float, tol: float = 1e-6) -> float:
    """1.0 when the completion's final number (`extract_final_number`) equals `answer` within `tol`, else 0.0.

    `tol` is both an absolute and a relative tolerance (as `math.isclose`, in exact arithmetic), so "1035"
    matches 1035.0, "0.50" matches "1/2", and a completion with no number, or one that is not a value ("1/0"),
    scores 0.0, as does a number too long for a float. A reference that is not a number is a ValueError.
    """
    expected = parse_number(answer)
    predicted = extract_final_number(completion)
    if predicted is None:
        return 0.0
    try:
        got = parse_number(predicted)
    except ValueError:  # the model wrote "x/0": a wrong answer, not a broken reward
        return 0.0
    bound = Fraction(str(tol)) * max(abs(got), abs(expected), 1)  # max(rel * max(|a|, |b|), abs), tol as written
    return float(abs(got - expected) <= bound)


def _math_timeout() -> int | None:
    # math-verify bounds parsing with signal.alarm, which only the main thread may set
    return 5 if threading.current_thread() is threading.main_thread() else None


def parse_math(text: str, *, gold: bool = False) -> list:
    """math-verify's reading of `text` (an empty list when it finds no answer).

    A completion is read as math-verify reads model output (the last `\\boxed{}`, "the answer is ...", else the
    last expression), inside its last `<answer>...</answer>` when it has one. A gold answer (`gold=True`) written
    without `$` or `\\boxed` is read as one LaTeX expression (`2\\pi`, `x^2+1`, `1,000`).
    """
    from math_verify import parse

    timeout = _math_timeout()
    if gold:
        if "$" not in text and "\\boxed" not in text:
            text = f"${text}$"
        return parse(text, parsing_timeout=timeout)
    tagged = answer_tag(text)
    return parse(text if tagged is None else tagged, parsing_timeout=timeout)


def math_match(completion: str, gold: list) -> float:
    """1.0 when math-verify's `verify` finds the completion's answer equal to `gold` (`parse_math(..., gold=True)`)
    as numbers, sets, intervals, equations or symbolic expressions (1/2 = 0.5 = \\frac{1}{2}, 1+x^2 = x^2+1)."""
    from math_verify import verify

    predicted = parse_math(completion)
    return float(bool(predicted) and verify(gold, predicted, timeout_seconds=_math_timeout()))


def _normalized(text: str) -> str:
    return " ".join(text.split()).casefold()


def exact_match(completion: str, answer: str, *, normalize: bool = True) -> float:
    """1.0 when the completion equals `answer`, else 0.0.

    With `normalize` both sides are stripped, case-folded and have runs of
    whitespace collapsed to one space first ("  Paris\\n" equals "paris").
    """
    if normalize:
        return float(_normalized(completion) == _normalized(answer))
    return float(completion == answer)


def contains_answer(completion: str, answer: str) -> float:
    """1.0 when `answer` appears in the completion as whole words, both sides case-folded with whitespace
    collapsed ("The capital is Paris." contains "paris"; "14" does not contain "4"), else 0.0. Lenient, as
    short-answer evaluation of chat models needs; a completion that lists several answers gets the credit, so
    for RL prefer `exact` or `numeric`."""
    needle = _normalized(answer)
    if not needle:
        return 0.0
    return float(re.search(rf"(?<!\w){re.escape(needle)}(?!\w)", _normalized(completion)) is not None)


def regex_format(completion: str, pattern: str | re.Pattern[str]) -> float:
    """1.0 when the whole stripped completion matches `pattern` (`re.fullmatch`), else 0.0.

    The whole text must match, as in format rewards that require a completion to
    be nothing but e.g. "<think>...</think><answer>...</answer>" (DeepSeek-R1,
    arXiv:2501.12948). A string pattern is compiled with re.DOTALL so "." spans lines.
    """
    compiled = re.compile(pattern, re.DOTALL) if isinstance(pattern, str) else pattern
    return float(compiled.fullmatch(completion.strip()) is not None)


def think_answer_format(completion: str) -> float:
    """1.0 when the stripped completion is exactly `<think>...</think>` then `<answer>...</answer>` (whitespace
    between them allowed, each tag once), else 0.0: DeepSeek-R1's format reward (arXiv:2501.12948 sec. 2.2.2)."""
    return regex_format(completion, _THINK_ANSWER_RE)


def length_penalty(completion: str, target_chars: int, *, zero_at_chars: int | None = None) -> float:
    """1.0 for completions of at most `target_chars` characters, then linearly down to 0.0.

    The score reaches 0.0 at `zero_at_chars` (default twice the target) and stays
    there. E.g. target 100: 100 chars -> 1.0, 150 -> 0.5, 200 and more -> 0.0.
    """
    zero_at = 2 * target_chars if zero_at_chars is None else zero_at_chars
    if target_chars < 0 or zero_at <= target_chars:
        raise ValueError(
            f"length_penalty needs 0 <= target_chars < zero_at_chars, got {target_chars} and {zero_at}"
        )
    excess = len(completion) - target_chars
    return min(1.0, max(0.0, 1.0 - excess / (zero_at - target_chars)))


def overlong_penalty(num_tokens: int, max_tokens: int, cache_tokens: int) -> float:
    """DAPO's soft overlong punishment (arXiv:2503.14476 eq. 13) of a completion `num_tokens` long:

        0                                      when |y| <= L_max - L_cache
        ((L_max - L_cache) - |y|) / L_cache    when L_max - L_cache < |y| <= L_max
        -1                                     when |y| > L_max

    with L_max = `max_tokens` and L_cache = `cache_tokens` (the paper: 20480 and 4096). Added to the task
    reward, it grows more negative as a completion runs into the last `cache_tokens` before the limit.
    """
    if not 0 < cache_tokens <= max_tokens:
        raise ValueError(f"overlong_penalty needs 0 < cache_tokens <= max_tokens, got {cache_tokens} and {max_tokens}")
    expected = max_tokens - cache_tokens
    if num_tokens <= expected:
        return 0.0
    if num_tokens <= max_tokens:
        return (expected - num_tokens) / cache_tokens
    return -1.0
