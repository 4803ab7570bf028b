"""Rewards: `RewardFn`, the built-in rewards and the `--reward` spec (`functions`) over pure verifiers of
completion strings (`verifiers`), and the batched scorer (`score`). The reward model as a reward lives in
`rewards.model` (imports torch), reasoning-gym's generators and scorers in `rewards.gym` (the `gym` extra), and
`posttrain score` in `rewards.cli`; none is imported here."""

from posttrain.rewards.functions import (
    REWARDS,
    RewardFn,
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
from posttrain.rewards.verifiers import (
    exact_match,
    extract_final_number,
    length_penalty,
    math_match,
    numeric_match,
    overlong_penalty,
    parse_number,
    regex_format,
    think_answer_format,
)

__all__ = ["REWARDS", "RewardFn", "Verifier", "WeightedSum", "check_reference_fields", "exact_match", "exact_reward",
           "extract_final_number", "length_penalty", "math_match", "math_reward", "numeric_match", "numeric_reward",
           "overlong_penalty", "parse_number", "regex_format", "required_fields", "resolve_reward",
           "think_answer_format", "think_format_reward"]
