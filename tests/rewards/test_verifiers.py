"""Math tier: the string verifiers, on hand-written completions."""

import re
from fractions import Fraction

import pytest

from posttrain.rewards.verifiers import (
    answer_tag,
    contains_answer,
    exact_match,
    extract_final_number,
    length_penalty,
    math_match,
    numeric_match,
    overlong_penalty,
    parse_math,
    parse_number,
    regex_format,
    think_answer_format,
)


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
        # "the answer is" beats a later plain number, but not #### or \boxed
        ("The answer is 12. Check: 3 * 4 = 12, and 5 more", "12"),
        ("so the final answer: 1,000 (from 10 * 100)", "1000"),
        ("Answer = -3, since 2 - 5", "-3"),
        ("the answer is 4, #### 5", "5"),
        ("the answer is $7$ dollars, about 8 euros", "7"),
        ("The answer is: **15**, not 16", "15"),
        ("the answer isn't 5, it's 6", "6"),
        # fractions and bare decimals stay one number
        ("It is 3/4 of the cake.", "3/4"),
        ("The answer is 1/2.", "1/2"),
        ("\\boxed{\\frac{1}{2}}", "1/2"),  # one level of nested braces inside \boxed
        ("$\\dfrac{-3}{4}$", "-3/4"),
        ("about .5 of it", ".5"),
        ("-.25 degrees", "-.25"),
        ("1/2.5", "2.5"),  # a decimal denominator is not a fraction: the last number is 2.5
        # <answer> tags are read first, with the same rules inside
        ("<think>3 + 4 = 7, maybe 8</think><answer>7</answer>", "7"),
        ("<answer>The answer is 9. (not 10)</answer> 11", "9"),
        ("<answer>first 1</answer> <answer>#### 2</answer>", "2"),
        ("<answer>none</answer> but 5", None),  # a tag without a number is the answer: none
        ("#### $1,200", "1200"),
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


def test_numeric_match_on_a_number_that_is_no_value_or_too_long_for_a_float_is_zero_not_an_error():
    """A weak policy writes "1/0" or 400 nines: a wrong answer, which must not stop an RL run."""
    assert numeric_match("1/0", "2") == 0.0
    assert numeric_match("9" * 400, "2") == 0.0
    assert numeric_match("9" * 400, "9" * 400) == 1.0  # exact arithmetic: no float overflow either way
    assert numeric_match("1000001", "1000000") == 1.0  # relative 1e-6, as math.isclose(rel_tol=1e-6)
    assert numeric_match("0.000002", "0") == 0.0 and numeric_match("0.000001", "0") == 1.0  # absolute 1e-6


def test_numeric_match_rejects_a_reference_that_is_not_a_number():
    with pytest.raises(ValueError, match="not a number"):
        numeric_match("42", "forty-two")


def test_exact_match_normalizes_case_and_whitespace():
    assert exact_match("  The  capital is\nParis ", "the capital is paris") == 1.0
    assert exact_match("Paris", "paris", normalize=False) == 0.0
    assert exact_match("Paris", "Paris", normalize=False) == 1.0
    assert exact_match("Paris.", "Paris") == 0.0


@pytest.mark.parametrize("completion, answer, expected", [
    ("The capital of France is Paris.", "Paris", 1.0),
    ("the capital is  PARIS", "paris", 1.0),          # case and spaces folded
    ("It is 14.", "4", 0.0),                          # whole words: 4 is not in 14
    ("4, since 2 + 2 = 4", "4", 1.0),
    ("New  York City", "new york", 1.0),              # a phrase, its spaces folded
    ("Parisian food", "Paris", 0.0),
    ("1+1 = 2 (mod 3)", "(mod 3)", 1.0),              # the answer is a literal, not a pattern
    ("anything", "  ", 0.0),                          # an empty answer is never found
])
def test_contains_answer_finds_the_answer_as_whole_words(completion, answer, expected):
    assert contains_answer(completion, answer) == expected


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


@pytest.mark.parametrize("text, value", [
    ("1,000", Fraction(1000)), ("1000", Fraction(1000)), ("0.50", Fraction(1, 2)), (".5", Fraction(1, 2)),
    ("1/2", Fraction(1, 2)), ("-3/4", Fraction(-3, 4)), (" 42 ", Fraction(42)), (2.5, Fraction(5, 2)), (7, Fraction(7)),
])
def test_parse_number_reads_every_written_form_exactly(text, value):
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["forty-two", "1/0", "2+3", "", True])
def test_parse_number_refuses_what_is_not_a_number(text):
    with pytest.raises(ValueError, match="not a number"):
        parse_number(text)


@pytest.mark.parametrize("completion, answer, expected", [
    ("#### 1,000", "1000", 1.0),
    ("The answer is 1000.", "1,000", 1.0),
    ("It is 0.50", "1/2", 1.0),
    ("It is .5", "0.50", 1.0),
    ("\\boxed{\\frac{1}{2}}", 0.5, 1.0),
    ("The answer is 1/2.", ".5", 1.0),
    ("3/4", "0.75", 1.0),
    ("3/4", "0.7", 0.0),
    ("<answer>-2</answer>", -2, 1.0),
    ("The answer is 12. 3 * 4 = 12, plus 1 is 13", "12", 1.0),
])
def test_numeric_match_normalises_the_written_form(completion, answer, expected):
    """1,000 = 1000; 0.50 = .5 = 1/2 = \\frac{1}{2}; 3/4 = 0.75 exactly (|0.75 - 0.7| = 0.05 > 1e-6)."""
    assert numeric_match(completion, answer) == expected


def test_answer_tag_is_the_last_one_stripped():
    assert answer_tag("<answer> a </answer><answer>\n b \n</answer>") == "b"
    assert answer_tag("no tags") is None
    assert answer_tag("<answer>unclosed") is None


@pytest.mark.parametrize("completion, gold, expected", [
    ("The answer is $\\boxed{0.5}$", "\\frac{1}{2}", 1.0),
    ("so $\\boxed{\\frac{\\sqrt3}{2}}$", "\\frac{\\sqrt{3}}{2}", 1.0),
    ("$\\boxed{1+x^2}$", "x^2+1", 1.0),
    ("$\\boxed{6.283185}$", "2\\pi", 1.0),  # 2 pi to 6 places (math-verify rounds to 6)
    ("\\boxed{(1,2)}", "(1, 2)", 1.0),  # an open interval
    ("\\boxed{1,000}", "1000", 1.0),
    ("<answer>$x = 3$</answer>", "3", 1.0),
    ("$\\boxed{\\frac{1}{3}}$", "0.5", 0.0),
    ("$\\boxed{x^2-1}$", "x^2+1", 0.0),
    ("I cannot tell", "2", 0.0),
])
def test_math_match_uses_math_verify_equivalence(completion, gold, expected):
    assert math_match(completion, parse_math(gold, gold=True)) == expected


def test_a_gold_answer_without_dollars_is_read_as_one_latex_expression():
    """Read as model output, "2\\pi" would be the number 2; as a gold answer it is 2*pi."""
    assert str(parse_math("2\\pi", gold=True)[0]) == "2*pi"
    assert parse_math("forty two apples") == []


@pytest.mark.parametrize("completion, expected", [
    ("<think>3 + 4</think><answer>7</answer>", 1.0),
    ("  <think>a\nb</think>\n\n<answer>\n7\n</answer>\n", 1.0),  # whitespace around and between
    ("<think></think><answer></answer>", 1.0),
    ("<answer>7</answer>", 0.0),
    ("<think>x</think>", 0.0),
    ("<think>x</think> so <answer>7</answer>", 0.0),  # text between
    ("Sure! <think>x</think><answer>7</answer>", 0.0),  # text before
    ("<think>x</think><answer>7</answer> done", 0.0),  # text after
    ("<answer>7</answer><think>x</think>", 0.0),  # out of order
    ("<think>x</think><answer>7</answer><think>y</think><answer>8</answer>", 0.0),  # repeated
    ("<think>x <think> y</think><answer>7</answer>", 0.0),  # a tag inside another's text
])
def test_think_answer_format(completion, expected):
    assert think_answer_format(completion) == expected


def test_overlong_penalty_follows_dapo_eq_13():
    """L_max = 100, L_cache = 20, so L_max - L_cache = 80: |y| <= 80 -> 0; 90 -> (80 - 90) / 20 = -0.5;
    100 -> (80 - 100) / 20 = -1; 101 -> -1 (past the limit); 81 -> -1/20 = -0.05."""
    assert overlong_penalty(0, 100, 20) == 0.0
    assert overlong_penalty(80, 100, 20) == 0.0
    assert overlong_penalty(81, 100, 20) == pytest.approx(-0.05)
    assert overlong_penalty(90, 100, 20) == pytest.approx(-0.5)
    assert overlong_penalty(100, 100, 20) == pytest.approx(-1.0)
    assert overlong_penalty(101, 100, 20) == -1.0
    assert overlong_penalty(5000, 100, 20) == -1.0


def test_overlong_penalty_is_monotone_and_continuous_at_both_ends():
    values = [overlong_penalty(n, 64, 16) for n in range(0, 80)]
    assert all(a >= b for a, b in zip(values, values[1:]))
    assert values[48] == 0.0 and values[64] == -1.0 and values[65] == -1.0


@pytest.mark.parametrize("cache, max_tokens", [(0, 10), (11, 10), (-1, 10)])
def test_overlong_penalty_refuses_a_cache_outside_the_limit(cache, max_tokens):
    with pytest.raises(ValueError, match="0 < cache_tokens <= max_tokens"):
        overlong_penalty(5, max_tokens, cache)
