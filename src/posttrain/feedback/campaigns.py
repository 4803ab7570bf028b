"""Making campaigns: reading items from a file, checking them against the task type, storing them.

An item file is JSONL, one prompt per line, in the project's field names:
- `{"prompt": ..., "responses": [...], "models": [...]}`: K responses (strings, message lists, or
  `{"text", "model"}` objects); `models` (optional) names the model of each, kept from raters;
- `{"prompt": ..., "chosen": ..., "rejected": ...}`: a preference record to be judged again (2 responses);
  `chosen_model` / `rejected_model` (optional) name their models;
- `{"prompt": ..., "completion": ..., "model": ...}`: one response per line; lines with the same prompt are
  gathered into one item (what `posttrain generate` writes, once per model).

A response whose model is not named keeps model None: it is judged and exported, and the leaderboard of model
versions leaves its item out (a placeholder such as "chosen" would rank as if it were a model).

Any form may give the item an `id` of the file's own (a string or integer, one item each) and `metadata` (a JSON
object: its source data set, a category): both are kept, never shown to raters, and given back in each exported
record's `feedback` (`item_id`, `metadata`), so that judgments can be joined with the rows they came from. Lines
gathered into one item (the completion form) share its id and metadata: lines of one prompt that give different
ones are refused.

`model_items` makes items from several models' answers to the same prompts (`posttrain feedback generate`, the
demo's campaign of its model versions).
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from posttrain.errors import DataError
from posttrain.feedback.db import Audit, Campaign, Item, utcnow
from posttrain.feedback.tasks import TASK_TYPES, AnswerError, check_campaign
from posttrain.files import jsonl_lines


def _messages(value: Any, where: str, role: str) -> list[dict[str, str]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and all(isinstance(m, dict) and isinstance(m.get("content"), str) for m in value):
        return [{"role": str(m.get("role", role)), "content": m["content"]} for m in value]
    raise DataError(f"{where}: expected a string or a list of {{role, content}} messages")


def _text(value: Any, where: str) -> str:
    """A response as plain text: a string, `{"text"}`, or the assistant turns of a message list."""
    if isinstance(value, dict) and isinstance(value.get("text"), str):
        return value["text"]
    msgs = _messages(value, where, "assistant")
    return "\n".join(m["content"] for m in msgs if m["role"] == "assistant") or "\n".join(m["content"] for m in msgs)


def model_items(prompts: list[list[dict[str, str]]], answers: dict[str, list[str]], task_type: str
                ) -> tuple[list[dict[str, Any]], int]:
    """Items from each model's answer to each prompt (`answers[model][n]` answers `prompts[n]`, a message list),
    and how many prompts were left out because the answers an item would compare are identical.

    Pairwise items show two answers. With more than two models, prompt n compares the n-th pair of models in a
    cycle through every pair (`itertools.combinations` order, then again), so each pair is judged on about
    1/P of the prompts and the Bradley-Terry leaderboard links them all, as Chatbot Arena's battles between
    two models at a time do (arXiv:2403.04132). Every other task type shows every model's answer in each item.
    """
    names = list(answers)
    # one model alone makes one-response items, which check_campaign refuses for pairwise
    groups = (list(itertools.combinations(names, 2)) if task_type == "pairwise" else []) or [tuple(names)]
    items = []
    for n, prompt in enumerate(prompts):
        group = groups[n % len(groups)]
        responses = [{"text": answers[name][n], "model": name} for name in group]
        if len({r["text"] for r in responses}) == len(responses):
            items.append({"prompt": prompt, "responses": responses})
    return items, len(prompts) - len(items)


def _model(name: Any) -> str | None:
    """A response's model version as the file names it, or None when it names none."""
    return None if name is None or name == "" else str(name)


def unnamed_items(items: list[dict[str, Any]]) -> int:
    """How many items have a response whose model is not named (left out of the leaderboard)."""
    return sum(any(r.get("model") is None for r in item["responses"]) for item in items)


def read_items(path: str | Path) -> list[dict[str, Any]]:
    """Items `[{"prompt": messages, "responses": [{"text", "model"}], "source": "FILE:LINE"}]` from a JSONL file
    (formats above)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{path}: no such file (an item file is JSONL with prompt and responses)")
    return parse_items(p.read_text(encoding="utf-8"), str(path))


def parse_items(text: str, source: str) -> list[dict[str, Any]]:
    """Items from the text of a JSONL item file; `source` names the file in error messages (FILE:LINE: field)."""
    rows = []
    for n, line in enumerate(jsonl_lines(text), 1):
        if not line.strip():
            continue
        where = f"{source}:{n}"
        try:
            rows.append((where, json.loads(line)))
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not JSON ({e.msg})") from None
    items = items_from_rows(rows)
    if not items:
        raise DataError(f"{source}: has no items")
    return items


def items_from_rows(rows: list[tuple[str, Any]]) -> list[dict[str, Any]]:
    """Items from rows in the item file's forms (module docstring), each with where it came from (`FILE:LINE`,
    or `items[N]` in the API's request), which errors and the item's `source` name."""
    items: list[dict[str, Any]] = []
    gathered: dict[str, dict[str, Any]] = {}
    for where, row in rows:
        if not isinstance(row, dict) or "prompt" not in row:
            raise DataError(f"{where}: prompt: missing (a line needs a prompt and responses, or chosen/rejected, "
                            "or completion)")
        prompt = _messages(row["prompt"], f"{where}: prompt", "user")
        if "responses" in row:
            raw, models = row["responses"], row.get("models") or [None] * len(row["responses"])
            if not isinstance(raw, list) or len(models) != len(raw):
                raise DataError(f"{where}: responses must be a list, and models (if given) as long")
            responses = [{"text": _text(r, f"{where}: responses[{i}]"),
                          "model": _model((r.get("model") if isinstance(r, dict) else None) or models[i])}
                         for i, r in enumerate(raw)]
            items.append({"prompt": prompt, "responses": responses, "source": where, **_identity(row, where)})
        elif "chosen" in row and "rejected" in row:
            items.append({"prompt": prompt, "responses": [
                {"text": _text(row["chosen"], f"{where}: chosen"), "model": _model(row.get("chosen_model"))},
                {"text": _text(row["rejected"], f"{where}: rejected"), "model": _model(row.get("rejected_model"))},
            ], "source": where, **_identity(row, where)})
        elif "completion" in row:
            key = json.dumps(prompt, sort_keys=True)
            item = gathered.get(key)
            identity = _identity(row, where)
            if item is None:
                item = gathered[key] = {"prompt": prompt, "responses": [], "source": where, **identity}
                items.append(item)
            elif clash := [k for k, v in identity.items() if v is not None and item[k] is not None and v != item[k]]:
                field = clash[0]
                raise DataError(f"{where}: {'id' if field == 'external_id' else field}: differs from that of "
                                f"{item['source']}, a line of the same prompt (lines of one prompt are one item: "
                                "give them the same one, or give it on one line only)")
            else:
                item.update({k: v for k, v in identity.items() if v is not None})
            item["responses"].append({"text": _text(row["completion"], f"{where}: completion"),
                                      "model": _model(row.get("model"))})
        else:
            raise DataError(f"{where}: responses: missing (a line needs responses, chosen and rejected, "
                            "or completion)")
    named: dict[str, str] = {}
    for item in items:
        if (key := item["external_id"]) is not None:
            if key in named:
                raise DataError(f"{item['source']}: id: {key!r} is also the id of {named[key]} (an id names one "
                                "item)")
            named[key] = item["source"]
    return items


MAX_ID_LENGTH = 200  # items.external_id's width


def _identity(row: dict[str, Any], where: str) -> dict[str, Any]:
    """The line's own `id` (as a string) and `metadata`, None where it gives none."""
    key, metadata = row.get("id"), row.get("metadata")
    if key is not None:
        if isinstance(key, bool) or not isinstance(key, (str, int)) or not str(key).strip():
            raise DataError(f"{where}: id: expected a string or an integer, got {json.dumps(key)[:40]}")
        if len(str(key)) > MAX_ID_LENGTH:
            raise DataError(f"{where}: id: {len(str(key))} characters, at most {MAX_ID_LENGTH}")
    if metadata is not None and not isinstance(metadata, dict):
        raise DataError(f"{where}: metadata: expected a JSON object ({{\"source\": ...}}), got "
                        f"{type(metadata).__name__}")
    return {"external_id": None if key is None else str(key), "metadata": metadata}


def repeated_items(items: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(where, where it came before) for each item with the same prompt and responses as an earlier one: each is
    judged, by its own raters (twice the cost), which an import says."""
    first: dict[str, str] = {}
    repeats = []
    for i, item in enumerate(items):
        key = json.dumps([item["prompt"], sorted(r["text"] for r in item["responses"])], sort_keys=True)
        where = item.get("source") or f"item {i + 1}"
        if key in first:
            repeats.append((where, first[key]))
        else:
            first[key] = where
    return repeats


def set_closed(s: Session, campaign: Campaign, closed: bool, user_id: int | None) -> None:
    """Close a campaign (raters get no new task from it, its judgments stay, export and count) or reopen it, in
    the caller's transaction, audited; closing a closed campaign keeps the time it was first closed."""
    if closed and campaign.closed_at is None:
        campaign.closed_at = utcnow()
    elif not closed:
        campaign.closed_at = None
    s.add(Audit(user_id=user_id, action="campaign.close" if closed else "campaign.reopen",
                target=f"campaign:{campaign.name}", detail={}))


def create_campaign(s: Session, name: str, task_type: str, items: list[dict[str, Any]], *, overlap: int = 1,
                    guidelines: str = "", rubric: list[dict[str, Any]] | None = None, lease_seconds: int = 900,
                    user_id: int | None = None) -> Campaign:
    """Store a campaign and its items (in the caller's transaction); DataError names what does not fit (the
    item's `source`, FILE:LINE, when it came from a file)."""
    rubric = rubric or []
    if not name.strip():
        raise DataError("a campaign needs a name")
    if not items:
        raise DataError("items: a campaign needs at least one item")
    if overlap < 1 or lease_seconds < 1:
        raise DataError(f"overlap and lease seconds must be >= 1 (got {overlap}, {lease_seconds})")
    if s.query(Campaign).filter_by(name=name).first() is not None:
        raise DataError(f"a campaign named {name!r} exists already; pick another name")
    if task_type not in TASK_TYPES:
        raise DataError(f"task: {task_type!r} is not one of {', '.join(TASK_TYPES)}")
    if task_type == "rubric":  # the scales first: an error in them is not about any one item
        try:
            check_campaign(task_type, 1, rubric)
        except AnswerError as e:
            raise DataError(f"rubric: {e}") from None
    for i, item in enumerate(items):
        where = item.get("source") or f"item {i + 1}"
        try:
            check_campaign(task_type, len(item["responses"]), rubric)
        except AnswerError as e:
            raise DataError(f"{where}: responses: {e}") from None
        if len({r["text"] for r in item["responses"]}) != len(item["responses"]) and task_type != "correction":
            raise DataError(f"{where}: responses: two are identical (there is nothing to compare)")
    c = Campaign(name=name, task_type=task_type, overlap=overlap, guidelines=guidelines, rubric=rubric,
                 lease_seconds=lease_seconds)
    s.add(c)
    s.flush()
    s.add_all(Item(campaign_id=c.id, position=i, prompt=item["prompt"], responses=item["responses"],
                   external_id=item.get("external_id"), item_metadata=item.get("metadata"))
              for i, item in enumerate(items))
    s.add(Audit(user_id=user_id, action="campaign.create", target=f"campaign:{name}",
                detail={"items": len(items), "task_type": task_type, "overlap": overlap}))
    return c
