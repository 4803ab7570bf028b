"""Rewards: pure verifiers of completion strings (see `verifiers`)."""

from posttrain.rewards.verifiers import exact_match, extract_final_number, length_penalty, numeric_match, regex_format

__all__ = ["exact_match", "extract_final_number", "length_penalty", "numeric_match", "regex_format"]
