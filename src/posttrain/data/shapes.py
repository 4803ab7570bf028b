"""Rows in the shapes public data sets use, read as the project's records: `parse_record` calls `as_record_row`
first, so every command that reads records reads them.

- ShareGPT: `{"conversations": [{"from": "human", "value": ...}, {"from": "gpt", "value": ...}]}` (Vicuna,
  OpenHermes, SlimOrca): a conversation, `from` mapped to a role (human/user -> user, gpt/assistant/chatgpt/bing/
  bard -> assistant, system -> system, tool/function/observation -> tool).
- Alpaca: `{"instruction", "input", "output"}` (Stanford Alpaca, Dolly-style copies): a prompt-completion record
  whose prompt is the instruction, then a blank line and the input when there is one.
- Anthropic HH: `chosen` and `rejected` as transcripts, `"\n\nHuman: ...\n\nAssistant: ..."` (hh-rlhf): each
  split into user and assistant turns, so that the pair is an implicit-prompt preference pair (the shared
  leading turns are its prompt).

A row that already has the project's fields (`messages`, `prompt`, ...) is left as it is; only the shapes'
own fields are read, and the row's other fields stay.
"""

from __future__ import annotations

import re
from typing import Any

from posttrain.data.records import RecordError

SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bing": "assistant", "bard": "assistant", "system": "system",
                  "tool": "tool", "function": "tool", "observation": "tool"}
_HH_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant): ")


def as_record_row(d: dict[str, Any]) -> dict[str, Any]:
    """`d` with a known public shape's fields turned into the project's (module docstring); else `d`."""
    if "conversations" in d and "messages" not in d:
        return {**{k: v for k, v in d.items() if k != "conversations"}, "messages": _sharegpt(d["conversations"])}
    if "instruction" in d and "output" in d and "prompt" not in d and "completion" not in d:
        return {**d, "prompt": _alpaca_prompt(d), "completion": d["output"]}
    if "prompt" not in d and _is_hh(d.get("chosen")) and _is_hh(d.get("rejected")):
        return {**d, "chosen": _hh_turns(d["chosen"], "chosen"), "rejected": _hh_turns(d["rejected"], "rejected")}
    return d


def _sharegpt(turns: Any) -> list[dict[str, str]]:
    if not isinstance(turns, list):
        raise RecordError("conversations", "expected a list of {from, value} turns (ShareGPT)")
    out = []
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or "from" not in t or "value" not in t:
            raise RecordError(f"conversations[{i}]", "expected a {from, value} turn (ShareGPT)")
        role = SHAREGPT_ROLES.get(str(t["from"]).lower())
        if role is None:
            raise RecordError(f"conversations[{i}].from", f"unknown speaker {t['from']!r} (ShareGPT: expected one of "
                              f"{', '.join(SHAREGPT_ROLES)})")
        out.append({"role": role, "content": t["value"]})
    return out


def _alpaca_prompt(d: dict[str, Any]) -> Any:
    instruction, extra = d["instruction"], d.get("input")
    if isinstance(instruction, str) and isinstance(extra, str) and extra.strip():
        return f"{instruction}\n\n{extra}"
    return instruction  # not a string: the prompt's own check says so


def _is_hh(value: Any) -> bool:
    return isinstance(value, str) and value.lstrip().startswith("Human: ") and "\n\nAssistant: " in value


def _hh_turns(text: str, field: str) -> list[dict[str, str]]:
    """`"\n\nHuman: a\n\nAssistant: b"` -> [user a, assistant b]."""
    text = text.lstrip()
    marks = list(_HH_TURN.finditer(text))
    turns = [{"role": "user" if m.group(1) == "Human" else "assistant",
              "content": text[m.end(): marks[i + 1].start() if i + 1 < len(marks) else len(text)].strip()}
             for i, m in enumerate(marks)]
    if not turns or turns[-1]["role"] != "assistant":
        raise RecordError(field, "an Anthropic HH transcript must end with an \"Assistant: \" turn")
    return turns
