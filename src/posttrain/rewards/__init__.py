"""Rewards: `RewardFn` and the built-in rewards (`functions`) over pure verifiers of completion strings
(`verifiers`). The reward model as a reward lives in `rewards.model` (imports torch; not imported here)."""

from posttrain.rewards.functions import REWARDS, RewardFn, exact_reward, numeric_reward, resolve_reward
from posttrain.rewards.verifiers import exact_match, extract_final_number, length_penalty, numeric_match, regex_format

__all__ = ["REWARDS", "RewardFn", "exact_match", "exact_reward", "extract_final_number", "length_penalty",
           "numeric_match", "numeric_reward", "regex_format", "resolve_reward"]
