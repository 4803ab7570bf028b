"""Math tier: the string verifiers, on hand-written completions."""

import re

import pytest

from posttrain.rewards.verifiers import exact_match, extract_final_number, length_penalty, numeric_match, regex_format


@pytest.mark.parametrize(
    "text, expected",
    [
        ("The answer is 42", "42"),
        ("#### 72", "72"),  # GSM8K form alone
        ("Natalia sold 48 + 24 = 72 clips.\n#### 72", "72"),
        ("first 3, then 5, finally 8.", "8"),  # last number wins; the full stop is not a decimal point
        ("#### 7 but later I said 9", "7"),  # #### beats a later plain number
        ("\\boxed{12} and then 15", "12"),  # \boxed beats a later plain number
        ("\\boxed{3} ... #### 4", "4"),  # #### beats \boxed
        ("#### 1 ... #### 2", "2"),  # the last #### wins
        ("so \\boxed{x = -7}", "-7"),  # the last number inside the box
        ("\\boxed{x} so 5", "5"),  # a box without a number falls through
        ("It costs 1,234 dollars", "1234"),
        ("#### -1,234,567.5", "-1234567.5"),
        ("about 2.50.", "2.50"),  # decimals kept as written
        ("23 - 45 = -22", "-22"),
        ("(-3)", "-3"),
        ("5-3", "3"),  # a minus right after a digit is an operator, not a sign
        ("####-8", "-8"),
        ("1, 2, 3", "3"),  # a comma and a space separate numbers
        ("no numbers here", None),
        ("", None),
    ],
)
def test_extract_final_number(text, expected):
    assert extract_final_number(text) == expected


def test_numeric_match_accepts_equal_numbers_in_any_form():
    """1035, "1035", "1,035" and 1035.0 are one number; 1035.5 is not (|diff| = 0.5 > 1e-6)."""
    assert numeric_match("23 * 45 = 1,035", "1035") == 1.0
    assert numeric_match("#### 1035", 1035) == 1.0
    assert numeric_match("1035.0", "1,035") == 1.0
    assert numeric_match("1035.5", 1035) == 0.0
    assert numeric_match("-22", "22") == 0.0


def test_numeric_match_tolerance():
    """|0.3333 - 1/3| = 3.3e-5: outside tol 1e-6, inside tol 1e-4."""
    assert numeric_match("0.3333", 1 / 3) == 0.0
    assert numeric_match("0.3333", 1 / 3, tol=1e-4) == 1.0


def test_numeric_match_without_a_number_is_zero():
    assert numeric_match("I do not know", "42") == 0.0


def test_numeric_match_rejects_a_reference_that_is_not_a_number():
    with pytest.raises(ValueError, match="not a number"):
        numeric_match("42", "forty-two")


def test_exact_match_normalizes_case_and_whitespace():
    assert exact_match("  The  capital is\nParis ", "the capital is paris") == 1.0
    assert exact_match("Paris", "paris", normalize=False) == 0.0
    assert exact_match("Paris", "Paris", normalize=False) == 1.0
    assert exact_match("Paris.", "Paris") == 0.0


def test_regex_format_needs_the_whole_stripped_completion_to_match():
    """fullmatch: trailing text after </answer> fails; surrounding whitespace is stripped; "." spans lines."""
    pattern = r"<think>.*</think>\s*<answer>.*</answer>"
    assert regex_format("<think>a\nb</think>\n<answer>4</answer>\n", pattern) == 1.0
    assert regex_format("<think>a</think><answer>4</answer> extra", pattern) == 0.0
    assert regex_format("The answer is <answer>4</answer>", pattern) == 0.0
    assert regex_format("#### 12", re.compile(r"#### -?\d+")) == 1.0


def test_length_penalty_is_linear_between_target_and_zero_point():
    """target 100, zero at 200: 1 - (150 - 100) / (200 - 100) = 0.5; 125 chars -> 0.75; 300 -> 0 (clipped)."""
    assert length_penalty("x" * 50, 100) == 1.0
    assert length_penalty("x" * 100, 100) == 1.0
    assert length_penalty("x" * 125, 100) == 0.75
    assert length_penalty("x" * 150, 100) == 0.5
    assert length_penalty("x" * 200, 100) == 0.0
    assert length_penalty("x" * 300, 100) == 0.0
    assert length_penalty("x" * 110, 100, zero_at_chars=120) == 0.5


def test_length_penalty_rejects_a_zero_point_before_the_target():
    with pytest.raises(ValueError, match="target_chars < zero_at_chars"):
        length_penalty("x", 100, zero_at_chars=50)
