"""The built-in arithmetic task: "What is 23 + 45?" answered "68".

Small enough for the tiny model to learn in minutes on a CPU, and checkable
exactly, so the same task serves SFT (prompt + completion), evaluation and RL
(prompt + reference answer, scored by the task's reward, `REWARD`).

The problem space is every `a op b` whose operands have exactly `digits` digits
(10..99 for 2 digits; 0..9 for 1 digit). A seeded random order over that space
gives the held-out problems first and the training problems after them, so the
two never share a problem, and the held-out set does not change with `n_train`.

With `worked_steps` (a share of the rows, 0 to 1) the answer shows short column-by-column
working before the final answer in GSM8K style (arXiv:2110.14168), e.g.
"57 + 68: ones 7 + 8 = 15, tens 5 + 6 + 1 = 12. #### 125".
With the tiny model's tokenizer a 2-digit prompt plus worked answer is at most
~70 tokens; 6-digit multiplication reaches ~290, past the tiny model's 256 positions.

`preference_rows` makes preference pairs from the same problems (`builtin:arithmetic-pairs`, the embedded
default of `posttrain dpo` and `posttrain rm`): chosen is the row's answer, rejected is a wrong number or the
right one followed by chatty filler, so a pair teaches both correctness and concision.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from itertools import islice
from typing import Iterator

OPS = "+-*"
MAX_TRAIN = 20_000  # training problems when `n_train` is None
SPLITS = ("train", "heldout")
REWARD = "numeric"
"""The task's reward (`rewards.functions.numeric_reward`): 1.0 when a completion's final number equals the
row's "answer"."""
PLACES = ("ones", "tens", "hundreds", "thousands", "ten-thousands", "hundred-thousands")


@dataclass(frozen=True)
class ArithmeticSpec:
    """Which arithmetic problems to make and how to split them."""

    ops: str = "+"
    """Operations to mix, any of "+-*" (e.g. "+-")."""
    digits: int = 2
    """Digits in each operand, 1 to 6 (2 means 10..99)."""
    worked_steps: float = 0.0
    """Share of the rows (0 to 1) whose answer shows short column-by-column working before "#### <answer>";
    the others answer with the bare number. Which rows is a fixed, seeded choice per problem. A mix
    (e.g. 0.2) gives a policy whose samples differ in format, which a rater can then prefer."""
    padded: float = 0.0
    """Share of the rows (0 to 1) whose answer is followed by chatty filler ("68. I hope this helps!"), as
    verbose demonstrations often are; the final number is unchanged. A policy
    that learned from such data pads its answers, which a rater that prefers concise answers can then
    train away (the demo's DPO stage)."""
    n_train: int | None = None
    """Training problems; None takes every problem not held out, at most 20000."""
    heldout_fraction: float = 0.1
    """Share of the problem space held out for evaluation..."""
    heldout_size: int = 500
    """...but never more than this many problems."""
    seed: int = 0
    """Seed of the random order that decides the split."""
    instruct: bool = False
    """Append INSTRUCTION to every question ("What is 86 + 87? Give only the final number."): for chat models,
    which otherwise explain at length (SmolLM2-135M-Instruct gets 8% of 2-digit sums within 48 tokens as
    asked plainly, 13% with the instruction; the GRPO docs' SmolLM2 task)."""

    def __post_init__(self) -> None:
        if not self.ops or any(op not in OPS for op in self.ops) or len(set(self.ops)) != len(self.ops):
            raise ValueError(f'ops must be distinct characters from "{OPS}" (e.g. "+-"), got {self.ops!r}')
        if not 1 <= self.digits <= len(PLACES):
            raise ValueError(f"digits must be between 1 and {len(PLACES)}, got {self.digits}")
        if self.n_train is not None and self.n_train < 1:
            raise ValueError(f"n_train must be at least 1 (or None for all), got {self.n_train}")
        if not 0.0 <= self.heldout_fraction < 1.0:
            raise ValueError(f"heldout_fraction must be in [0, 1), got {self.heldout_fraction}")
        if not 0.0 <= float(self.padded) <= 1.0:
            raise ValueError(f"padded must be a share between 0 and 1, got {self.padded}")
        if not 0.0 <= float(self.worked_steps) <= 1.0:
            raise ValueError(f"worked_steps must be a share between 0 and 1, got {self.worked_steps}")
        if self.heldout_size < 0:
            raise ValueError(f"heldout_size must be at least 0, got {self.heldout_size}")


@dataclass(frozen=True)
class Problem:
    """One problem `a op b`; its answer and question text follow from it."""

    a: int
    b: int
    op: str

    @property
    def answer(self) -> int:
        if self.op == "+":
            return self.a + self.b
        if self.op == "-":
            return self.a - self.b
        return self.a * self.b

    @property
    def question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"


def _operand_range(digits: int) -> range:
    return range(0 if digits == 1 else 10 ** (digits - 1), 10**digits)


def _space_size(spec: ArithmeticSpec) -> int:
    return len(spec.ops) * len(_operand_range(spec.digits)) ** 2


def _problem_at(index: int, spec: ArithmeticSpec) -> Problem:
    """Problem number `index` of the space, ordered by op, then a, then b."""
    operands = _operand_range(spec.digits)
    per_op = len(operands) ** 2
    op_index, rest = divmod(index, per_op)
    a, b = divmod(rest, len(operands))
    return Problem(operands[a], operands[b], spec.ops[op_index])


def _distinct_indices(rng: random.Random, size: int) -> Iterator[int]:
    """Distinct uniform draws from range(size), without listing the range: any prefix is a uniform sample."""
    seen: set[int] = set()
    while len(seen) < size:
        i = rng.randrange(size)
        if i not in seen:
            seen.add(i)
            yield i


def heldout_count(spec: ArithmeticSpec) -> int:
    """Held-out problems: `heldout_fraction` of the space, capped at `heldout_size`."""
    return min(spec.heldout_size, round(_space_size(spec) * spec.heldout_fraction))


def problems(spec: ArithmeticSpec) -> tuple[list[Problem], list[Problem]]:
    """(train, heldout) problems: disjoint, in a random order fixed by `spec.seed`."""
    size, n_heldout = _space_size(spec), heldout_count(spec)
    available = size - n_heldout
    n_train = min(available, MAX_TRAIN) if spec.n_train is None else spec.n_train
    if not 1 <= n_train <= available:
        raise ValueError(
            f"only {available} problems are left for training (n_train={spec.n_train}): "
            f"{spec.digits}-digit ops {spec.ops!r} make {size} problems and {n_heldout} are held out"
        )
    order = _distinct_indices(random.Random(spec.seed), size)
    heldout = [_problem_at(i, spec) for i in islice(order, n_heldout)]
    train = [_problem_at(i, spec) for i in islice(order, n_train)]
    return train, heldout


def _digits_right_to_left(n: int, width: int) -> list[int]:
    return [n // 10**i % 10 for i in range(width)]


def _addition_steps(a: int, b: int) -> str:
    """Column addition; a carry shows up as "+ 1" in the next column."""
    width = max(len(str(a)), len(str(b)))
    steps, carry = [], 0
    for place, x, y in zip(PLACES, _digits_right_to_left(a, width), _digits_right_to_left(b, width)):
        total = x + y + carry
        steps.append(f"{place} {x} + {y}" + (" + 1" if carry else "") + f" = {total}")
        carry = total // 10
    return f"{a} + {b}: " + ", ".join(steps)


def _subtraction_steps(a: int, b: int) -> str:
    """Column subtraction of the smaller from the larger; a borrow shows as "10 + " here and "- 1" next."""
    top, bottom = max(a, b), min(a, b)
    width = len(str(top))
    steps, borrow = [], 0
    for place, x, y in zip(PLACES, _digits_right_to_left(top, width), _digits_right_to_left(bottom, width)):
        lend = 10 if x - y - borrow < 0 else 0
        column = ("10 + " if lend else "") + f"{x} - {y}" + (" - 1" if borrow else "")
        steps.append(f"{place} {column} = {lend + x - y - borrow}")
        borrow = 1 if lend else 0
    head = f"{a} - {b}" if a >= b else f"{a} - {b} = -({b} - {a})"
    return f"{head}: " + ", ".join(steps)


def _multiplication_steps(a: int, b: int) -> str:
    """Long multiplication: one partial product per non-zero digit of b, then their sum."""
    parts = [d * 10**i for i, d in enumerate(_digits_right_to_left(b, len(str(b)))) if d]
    if len(parts) <= 1:
        return f"{a} * {b} = {a * b}"
    products = ", ".join(f"{a} * {p} = {a * p}" for p in parts)
    return f"{a} * {b}: {products}, " + " + ".join(str(a * p) for p in parts) + f" = {a * b}"


def answer_text(problem: Problem, worked_steps: bool) -> str:
    """The answer as the model should write it: the bare number, or working then "#### <answer>"."""
    if not worked_steps:
        return str(problem.answer)
    steps = {"+": _addition_steps, "-": _subtraction_steps, "*": _multiplication_steps}[problem.op]
    return f"{steps(problem.a, problem.b)}. #### {problem.answer}"


def _draw(problem: Problem, share: float, seed: int, what: str) -> bool:
    """A per-problem seeded draw with probability `share`, stable across n_train."""
    if share >= 1.0 or share <= 0.0:
        return share >= 1.0
    return random.Random(f"{seed}:{what}:{problem.a}{problem.op}{problem.b}").random() < share


INSTRUCTION = " Give only the final number."
FILLER = (" I hope this helps!", " Let me know if you have any other questions.", " Thanks for asking!")


def pad_answer(problem: Problem, text: str, seed: int) -> str:
    """Follow an answer with chatty filler without numbers: the answer keeps its place right after the
    prompt (so padding does not make the arithmetic harder to learn) and stays the final number."""
    return f"{text}.{random.Random(f'{seed}:filler:{problem.a}{problem.op}{problem.b}').choice(FILLER)}"


def to_row(problem: Problem, worked_steps: bool, padded: bool = False, seed: int = 0, instruct: bool = False) -> dict:
    """A row that parses as a PromptCompletion (SFT) and as a Prompt with reference answer (eval, RL)."""
    return {
        "prompt": [{"role": "user", "content": problem.question + (INSTRUCTION if instruct else "")}],
        "completion": [{"role": "assistant", "content": answer_text(problem, worked_steps) if not padded
                        else pad_answer(problem, answer_text(problem, worked_steps), seed)}],
        "answer": str(problem.answer),
    }


WRONG_OFFSETS = (-10, -2, -1, 1, 2, 10)
"""How far a rejected wrong answer is from the right one: the near misses a model that cannot yet add makes."""


def preference_rows(split: str = "train", **options: str) -> list[dict]:
    """Preference pairs over the problems of `rows(split, **options)`: the same options but `pad`, which the
    pairs set themselves. Chosen is the row's answer; rejected is, on even rows, a wrong number (the answer
    plus one of WRONG_OFFSETS, drawn in row order from `random.Random(seed)`, so the first k pairs do not
    change with `n`) and, on odd rows, the right answer followed by chatty filler (`pad_answer`). Rows keep
    "answer", so the prompts also serve a reward that checks it."""
    if "pad" in options:
        raise ValueError("option pad: not for pairs (the rejected answers of odd rows carry the filler)")
    plain, chatty = rows(split, **options), rows(split, **options, pad="1")
    rng = random.Random(spec_from_options(**options).seed)
    pairs = []
    for i, (row, padded) in enumerate(zip(plain, chatty)):
        wrong = int(row["answer"]) + rng.choice(WRONG_OFFSETS)
        rejected = [{"role": "assistant", "content": str(wrong)}] if i % 2 == 0 else padded["completion"]
        pairs.append({"prompt": row["prompt"], "chosen": row["completion"], "rejected": rejected,
                      "answer": row["answer"]})
    return pairs


def _parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"option {name}: expected a whole number, got {value!r}") from None


def _parse_flag(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"option {name}: expected 1 or 0 (true or false), got {value!r}")


def _parse_share(name: str, value: str) -> float:
    lowered = value.strip().lower()
    if lowered in ("true", "yes", "on"):
        return 1.0
    if lowered in ("false", "no", "off"):
        return 0.0
    try:
        share = float(lowered)
    except ValueError:
        share = -1.0
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"option {name}: expected a share from 0 to 1 (1 = every answer worked), got {value!r}")
    return share


# Query-string option -> (ArithmeticSpec field, parser).
OPTIONS = {
    "ops": ("ops", lambda name, value: value),
    "digits": ("digits", _parse_int),
    "steps": ("worked_steps", _parse_share),
    "pad": ("padded", _parse_share),
    "n": ("n_train", _parse_int),
    "seed": ("seed", _parse_int),
    "instruct": ("instruct", lambda name, value: _parse_flag(name, value)),
}


def spec_from_options(**options: str) -> ArithmeticSpec:
    """Build a spec from string options such as `ops="+-", digits="2", steps="1", n="2000", seed="3"`."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise ValueError(f"unknown arithmetic option(s) {', '.join(unknown)} (known: {', '.join(OPTIONS)})")
    fields = {OPTIONS[name][0]: OPTIONS[name][1](name, value) for name, value in options.items()}
    return ArithmeticSpec(**fields)


def rows(split: str = "train", **options: str) -> list[dict]:
    """The rows of one split ("train" or "heldout") for string options (see `spec_from_options`)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (expected one of: {', '.join(SPLITS)})")
    spec = spec_from_options(**options)
    train, heldout = problems(spec)
    split_problems = train if split == "train" else heldout
    return [
        to_row(p, _draw(p, spec.worked_steps, spec.seed, "steps"), _draw(p, spec.padded, spec.seed, "pad"), spec.seed,
               spec.instruct)
        for p in split_problems
    ]
