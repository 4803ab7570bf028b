"""Math tier: the built-in arithmetic task's problem space, split, answer texts and options."""

import re

import pytest

from posttrain.data.records import Message, PreferencePair, Prompt, PromptCompletion, parse_record
from posttrain.errors import DataError
from posttrain.rewards.functions import numeric_reward, resolve_reward
from posttrain.tasks.arithmetic import REWARD, ArithmeticSpec, Problem, answer_text, problems, rows, spec_from_options

reward = resolve_reward(REWARD)  # the task's reward: what eval scores with and RL rewards


def row_reward(row: dict, completion: str) -> float:
    """The task's reward for `completion` to a row, read as the Prompt record eval and RL see."""
    return reward(Prompt.from_dict(row), completion)


def triples(ps):
    return {(p.a, p.op, p.b) for p in ps}


@pytest.mark.parametrize(
    "spec, n_train, n_heldout",
    [
        # 90 * 90 = 8100 problems; 10% = 810 held out, capped at 500; 8100 - 500 = 7600 left to train.
        (ArithmeticSpec(ops="+", digits=2), 7600, 500),
        # 0..9: 10 * 10 = 100 problems; 10% = 10 held out; 90 to train.
        (ArithmeticSpec(ops="+", digits=1), 90, 10),
        # 3 ops * 8100 = 24300; 500 held out; 23800 left, capped at 20000.
        (ArithmeticSpec(ops="+-*", digits=2), 20000, 500),
        # 900 * 900 = 810000 problems: sampled, never listed.
        (ArithmeticSpec(ops="*", digits=3), 20000, 500),
        (ArithmeticSpec(ops="+", digits=2, n_train=123, heldout_fraction=0.01), 123, 81),
    ],
)
def test_split_sizes_and_disjointness(spec, n_train, n_heldout):
    train, heldout = problems(spec)
    assert (len(train), len(heldout)) == (n_train, n_heldout)
    assert len(triples(train)) == n_train and len(triples(heldout)) == n_heldout  # no repeats
    assert not triples(train) & triples(heldout)


def test_operands_have_exactly_the_asked_digits_and_ops():
    """2 digits means 10..99 (8100 = 90 * 90 problems, so both 10 and 99 show up in the 7600 train problems)."""
    train, heldout = problems(ArithmeticSpec(ops="+", digits=2))
    operands = {p.a for p in train + heldout} | {p.b for p in train + heldout}
    assert operands == set(range(10, 100))
    mixed, _ = problems(ArithmeticSpec(ops="-*", digits=3, n_train=300))
    assert {p.op for p in mixed} == {"-", "*"}
    assert all(100 <= p.a <= 999 and 100 <= p.b <= 999 for p in mixed)


def test_split_is_deterministic_per_seed_and_differs_across_seeds():
    spec = ArithmeticSpec(ops="+-", digits=2, n_train=1000)
    assert problems(spec) == problems(spec)
    other_train, other_heldout = problems(ArithmeticSpec(ops="+-", digits=2, n_train=1000, seed=1))
    train, heldout = problems(spec)
    assert train != other_train and triples(heldout) != triples(other_heldout)


def test_heldout_does_not_depend_on_n_train_and_smaller_train_is_a_prefix():
    big_train, big_heldout = problems(ArithmeticSpec(digits=2, n_train=2000))
    small_train, small_heldout = problems(ArithmeticSpec(digits=2, n_train=100))
    assert small_heldout == big_heldout
    assert small_train == big_train[:100]


@pytest.mark.parametrize(
    "problem, expected",
    [
        (Problem(23, 45, "+"), "23 + 45: ones 3 + 5 = 8, tens 2 + 4 = 6. #### 68"),
        (Problem(57, 68, "+"), "57 + 68: ones 7 + 8 = 15, tens 5 + 6 + 1 = 12. #### 125"),
        (Problem(43, 25, "-"), "43 - 25: ones 10 + 3 - 5 = 8, tens 4 - 2 - 1 = 1. #### 18"),
        (Problem(23, 45, "-"), "23 - 45 = -(45 - 23): ones 5 - 3 = 2, tens 4 - 2 = 2. #### -22"),
        (Problem(23, 45, "*"), "23 * 45: 23 * 5 = 115, 23 * 40 = 920, 115 + 920 = 1035. #### 1035"),
        (Problem(120, 305, "*"), "120 * 305: 120 * 5 = 600, 120 * 300 = 36000, 600 + 36000 = 36600. #### 36600"),
        (Problem(7, 8, "*"), "7 * 8 = 56. #### 56"),
    ],
)
def test_worked_answer_texts(problem, expected):
    assert answer_text(problem, worked_steps=True) == expected


def test_bare_answers():
    assert answer_text(Problem(23, 45, "+"), worked_steps=False) == "68"
    assert answer_text(Problem(23, 45, "-"), worked_steps=False) == "-22"
    assert answer_text(Problem(23, 45, "*"), worked_steps=False) == "1035"


def clauses_hold(text: str) -> bool:
    """Every "expression = value" clause of the working is true arithmetic (place names dropped)."""
    working = text.split("####")[0].rstrip(". ")
    for clause in re.split(r", |: ", working):
        if "=" in clause:
            sides = [re.sub(r"[a-z][a-z-]* ", "", side) for side in clause.split(" = ")]
            values = {eval(side) for side in sides}  # only digits, + - * and parentheses remain
            if len(values) != 1:
                return False
    return True


def test_clauses_hold_catches_a_false_step():
    """3 + 5 is 8, not 9; 45 - 23 is 22, so -(45 - 23) is -22, not -21."""
    assert clauses_hold("23 + 45: ones 3 + 5 = 8, tens 2 + 4 = 6. #### 68")
    assert not clauses_hold("23 + 45: ones 3 + 5 = 9, tens 2 + 4 = 6. #### 69")
    assert not clauses_hold("23 - 45 = -21: ones 5 - 3 = 2. #### -22")


@pytest.mark.parametrize("ops", ["+", "-", "*"])
@pytest.mark.parametrize("digits", ["1", "2", "3", "6"])
def test_every_answer_text_verifies_to_its_own_answer(ops, digits):
    """For all rows of each split: the worked text scores 1.0, each step is true, the bare text is the answer."""
    n = {"1": "90", "2": "1000", "3": "300", "6": "50"}[digits]
    for split in ("train", "heldout"):
        worked = rows(split, ops=ops, digits=digits, steps="1", n=n)
        bare = rows(split, ops=ops, digits=digits, steps="0", n=n)
        for w, b in zip(worked, bare, strict=True):
            w_text, b_text = w["completion"][0]["content"], b["completion"][0]["content"]
            a, op, c = re.fullmatch(r"What is (\d+) (.) (\d+)\?", w["prompt"][0]["content"]).groups()
            assert int(w["answer"]) == Problem(int(a), int(c), op).answer
            assert b_text == w["answer"]
            assert w_text.endswith(f"#### {w['answer']}")
            assert row_reward(w, w_text) == 1.0 and row_reward(b, b_text) == 1.0
            assert clauses_hold(w_text), w_text


def test_reward_scores_a_wrong_or_missing_answer_zero():
    assert reward is numeric_reward  # arithmetic is right when its final number is
    prompt = Prompt((Message("user", "What is 23 + 45?"),), {"answer": "68"})
    assert reward(prompt, "23 + 45: ones 3 + 5 = 8, tens 2 + 4 = 6. #### 67") == 0.0
    assert reward(prompt, "I am not sure.") == 0.0
    with pytest.raises(DataError, match='no "answer"'):
        reward(Prompt((Message("user", "What is 23 + 45?"),)), "68")


def test_row_parses_for_sft_and_for_evaluation():
    """The same row is a PromptCompletion for SFT and a Prompt whose reference holds the answer."""
    row = rows("heldout", digits="2", steps="1")[0]
    sft = parse_record(row, accept=(PromptCompletion,))
    assert isinstance(sft, PromptCompletion) and sft.completion[0].role == "assistant"
    prompt = parse_record(row, accept=(Prompt,))
    assert isinstance(prompt, Prompt) and prompt.text.startswith("What is ")
    assert reward(prompt, row["completion"][0]["content"]) == 1.0


def test_options_convert_from_strings():
    spec = spec_from_options(ops="+-", digits="3", steps="true", n="2000", seed="3")
    assert spec == ArithmeticSpec(ops="+-", digits=3, worked_steps=True, n_train=2000, seed=3)
    assert len(rows("train", ops="+-", digits="2", steps="1", n="2000", seed="3")) == 2000


@pytest.mark.parametrize(
    "options, message",
    [
        ({"size": "3"}, r"unknown arithmetic option\(s\) size \(known: ops, digits, steps, pad, n, seed, instruct\)"),
        ({"digits": "two"}, "option digits: expected a whole number, got 'two'"),
        ({"steps": "maybe"}, "option steps: expected a share from 0 to 1"),
        ({"steps": "1.5"}, "option steps: expected a share from 0 to 1"),
        ({"ops": "/"}, 'ops must be distinct characters from "\\+-\\*"'),
        ({"ops": "++"}, "ops must be distinct"),
        ({"ops": ""}, "ops must be distinct"),
        ({"digits": "7"}, "digits must be between 1 and 6, got 7"),
        ({"n": "0"}, "n_train must be at least 1"),
        ({"digits": "1", "n": "91"}, "only 90 problems are left for training"),
    ],
)
def test_option_errors_say_what_to_fix(options, message):
    with pytest.raises(ValueError, match=message):
        rows("train", **options)


def test_unknown_split():
    with pytest.raises(ValueError, match="unknown split 'test' \\(expected one of: train, heldout\\)"):
        rows("test")


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("heldout_fraction", 1.0, r"heldout_fraction must be in \[0, 1\)"),
        ("heldout_size", -1, "heldout_size must be at least 0"),
    ],
)
def test_spec_validation(field, value, message):
    with pytest.raises(ValueError, match=message):
        ArithmeticSpec(**{field: value})


def test_a_share_of_worked_answers_is_stable_per_problem():
    """steps=0.2: about a fifth of the rows are worked; a problem keeps its format when n changes."""
    from posttrain.tasks import arithmetic

    rows = arithmetic.rows("train", steps="0.2")
    worked = {r["prompt"][0]["content"] for r in rows if "####" in r["completion"][0]["content"]}
    assert 0.17 < len(worked) / len(rows) < 0.23
    fewer = arithmetic.rows("train", steps="0.2", n="500")
    assert all(("####" in r["completion"][0]["content"]) == (r["prompt"][0]["content"] in worked) for r in fewer)


def test_padded_answers_keep_their_final_number():
    """pad=0.7: about 70% of answers are followed by filler with no digits, and every row still verifies."""
    from posttrain.tasks import arithmetic

    rows = arithmetic.rows("train", pad="0.7", n="1000")
    padded = [r for r in rows if r["completion"][0]["content"] != r["answer"]]
    assert 0.65 < len(padded) / len(rows) < 0.75
    assert all(row_reward(r, r["completion"][0]["content"]) == 1.0 for r in rows)


def test_instruct_option_appends_the_instruction_and_keeps_the_problems():
    from posttrain.tasks.arithmetic import INSTRUCTION, rows

    plain, asked = rows("heldout", ops="+", digits="2"), rows("heldout", ops="+", digits="2", instruct="1")
    assert [r["answer"] for r in plain] == [r["answer"] for r in asked]
    assert asked[0]["prompt"][0]["content"] == plain[0]["prompt"][0]["content"] + INSTRUCTION
    assert rows("heldout", ops="+", digits="2", instruct="0") == plain
    with pytest.raises(ValueError, match="option instruct: expected 1 or 0"):
        rows("train", instruct="maybe")


def test_preference_pairs_prefer_the_right_concise_answer():
    """builtin:arithmetic-pairs: every chosen answer is right and bare; even rows reject a near-miss number,
    odd rows the right answer with filler; the rows read as preference pairs and as prompts with an answer."""
    from posttrain.data.load import load_records
    from posttrain.tasks.arithmetic import WRONG_OFFSETS, preference_rows

    pairs = preference_rows("train", n="200", ops="+-")
    assert len(pairs) == 200
    for i, pair in enumerate(pairs):
        chosen, rejected = pair["chosen"][0]["content"], pair["rejected"][0]["content"]
        assert chosen == pair["answer"]
        if i % 2 == 0:
            assert int(rejected) - int(pair["answer"]) in WRONG_OFFSETS
        else:
            assert rejected.startswith(pair["answer"] + ".") and row_reward(pair, rejected) == 1.0
    assert [p["prompt"] for p in pairs] == [r["prompt"] for r in rows("train", n="200", ops="+-")]
    assert preference_rows("train", n="50", ops="+-") == pairs[:50]  # a smaller n is a prefix
    held = load_records("builtin:arithmetic-pairs/heldout", accept=(PreferencePair,))
    train_questions = {p["prompt"][0]["content"] for p in preference_rows("train")}
    assert len(held) == 500 and not {r.prompt[0].content for r in held} & train_questions
    assert isinstance(parse_record(pairs[0], accept=(Prompt,)), Prompt)
    with pytest.raises(ValueError, match="option pad: not for pairs"):
        preference_rows("train", pad="1")
