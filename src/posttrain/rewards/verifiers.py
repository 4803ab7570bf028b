"""Verifiers: pure functions that score a completion string against a reference.

Each takes strings (and plain numbers) and returns a float in [0, 1], so a
task's evaluation and its RL reward are the same function. A reward function in
posttrain has the signature `reward(prompt_record, completion) -> float`
(`rewards.functions.RewardFn`); it reads the reference out of the record and
calls one of these.

- `extract_final_number`  the answer a completion commits to, as a string
- `numeric_match`         1.0 when that number equals the reference number
- `exact_match`           1.0 when the whole completion equals the reference text
- `regex_format`          1.0 when the whole completion has the required shape
- `length_penalty`        1.0 up to a target length, falling linearly to 0.0
"""

from __future__ import annotations

import math
import re

# A number: optional minus, then either digits grouped by commas ("1,234,567") or
# plain digits, then an optional decimal part. A minus counts only when no letter
# or digit stands right before it, so "5-3" reads as 5 and 3, and "x-1" as 1.
_NUMBER = r"(?:(?<!\w)-)?(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?"
_NUMBER_RE = re.compile(_NUMBER)
# GSM8K marks the final answer with "#### 42" (Cobbe et al., arXiv:2110.14168).
_HASHES_RE = re.compile(r"####\s*\$?\s*(" + _NUMBER + ")")
# LaTeX answers (MATH-style): the number inside the last \boxed{...}.
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def _clean(number: str) -> str:
    return number.replace(",", "")


def extract_final_number(text: str) -> str | None:
    """The number a completion gives as its answer, without thousands commas; None if it has none.

    Looked for in this order, the last occurrence of each form winning:
    1. after "####" (GSM8K), e.g. "... #### 1,234" -> "1234";
    2. inside "\\boxed{...}", e.g. "\\boxed{-7}" -> "-7";
    3. the last number anywhere, e.g. "3 apples and 5 pears." -> "5".
    Decimals are kept as written ("2.50"); a trailing full stop is not part of a number.
    """
    hashes = _HASHES_RE.findall(text)
    if hashes:
        return _clean(hashes[-1])
    for boxed in reversed(_BOXED_RE.findall(text)):
        numbers = _NUMBER_RE.findall(boxed)
        if numbers:
            return _clean(numbers[-1])
    numbers = _NUMBER_RE.findall(text)
    return _clean(numbers[-1]) if numbers else None


def _as_float(answer: str | float) -> float:
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return float(answer)
    try:
        return float(_clean(str(answer).strip()))
    except ValueError:
        raise ValueError(
            f"reference answer {answer!r} is not a number (expected e.g. 42, -3.5 or 1,234)"
        ) from None


def numeric_match(completion: str, answer: str | float, tol: float = 1e-6) -> float:
    """1.0 when the completion's final number equals `answer` within `tol`, else 0.0.

    `tol` is both an absolute and a relative tolerance (`math.isclose`), so "1035"
    matches 1035.0 and a completion with no number scores 0.0.
    """
    predicted = extract_final_number(completion)
    if predicted is None:
        return 0.0
    return float(math.isclose(float(predicted), _as_float(answer), rel_tol=tol, abs_tol=tol))


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


def regex_format(completion: str, pattern: str | re.Pattern[str]) -> float:
    """1.0 when the whole stripped completion matches `pattern` (`re.fullmatch`), else 0.0.

    The whole text must match, as in format rewards that require a completion to
    be nothing but e.g. "<think>...</think><answer>...</answer>" (DeepSeek-R1,
    arXiv:2501.12948). A string pattern is compiled with re.DOTALL so "." spans lines.
    """
    compiled = re.compile(pattern, re.DOTALL) if isinstance(pattern, str) else pattern
    return float(compiled.fullmatch(completion.strip()) is not None)


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
