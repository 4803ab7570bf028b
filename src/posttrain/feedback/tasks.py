"""Task types: what a rater's answer looks like, how it is checked, and the order responses are shown in.

Pure functions, no database. A rater answers in *display positions* (A is the first response on their screen);
`read_answer` checks the answer against the campaign and turns it into *response indices* (positions in the
item's stored list) with the presentation order, so a stored judgment means the same thing whatever order its
rater saw. Every task type also takes `flags` (a subset of FLAGS) and a free-text `comment`.

| task       | answer (display positions)                 | stored (response indices)                       |
|------------|--------------------------------------------|-------------------------------------------------|
| pairwise   | `{"choice": "A" / "B" / "tie" / "both_bad"}` | `{"choice": ..., "winner": i or None}`         |
| ranking    | `{"order": [2, 0, 1]}` best first            | `{"order": [...]}` best first                  |
| rubric     | `{"scores": [{"helpful": 4, ...}, ...]}`     | `{"scores": [...]}` one dict per response      |
| correction | `{"response": 0, "text": "fixed answer"}`    | `{"response": i, "text": ...}`                  |
"""

from __future__ import annotations

import hashlib
import random
from typing import Any

TASK_TYPES = ("pairwise", "ranking", "rubric", "correction")
FLAGS = ("unsafe", "wrong", "off_topic")
CHOICES = ("A", "B", "tie", "both_bad")
MAX_COMMENT = 4000
MAX_CORRECTION = 20000


class AnswerError(ValueError):
    """A rater's answer does not fit the task; the message says what is wrong (shown to them, 422 in the API)."""


def presentation_order(k: int, campaign_id: int, item_id: int, rater_id: int) -> list[int]:
    """Response indices in the order this rater sees them: a shuffle seeded by (campaign, item, rater), so a
    reload shows the same order and two raters usually see different ones (position bias averages out)."""
    seed = hashlib.sha256(f"{campaign_id}:{item_id}:{rater_id}".encode()).digest()
    order = list(range(k))
    random.Random(seed).shuffle(order)
    return order


def check_campaign(task_type: str, n_responses: int, rubric: list[dict[str, Any]]) -> None:
    """Raise AnswerError when a campaign's task type cannot work with its items' response count or rubric."""
    if task_type not in TASK_TYPES:
        raise AnswerError(f"task type {task_type!r} is not one of {', '.join(TASK_TYPES)}")
    if task_type == "pairwise" and n_responses != 2:
        raise AnswerError(f"pairwise items need exactly 2 responses, got {n_responses}")
    if task_type == "ranking" and n_responses < 2:
        raise AnswerError(f"ranking items need at least 2 responses, got {n_responses}")
    if task_type in ("rubric", "correction") and n_responses < 1:
        raise AnswerError("items need at least 1 response")
    if task_type == "rubric":
        if not rubric:
            raise AnswerError("a rubric campaign needs scales, e.g. [{\"name\": \"helpful\", \"min\": 1, \"max\": 5}]")
        for s in rubric:
            if not isinstance(s.get("name"), str) or not isinstance(s.get("min"), int) or \
                    not isinstance(s.get("max"), int) or s["min"] >= s["max"]:
                raise AnswerError(f"rubric scale {s!r} needs a name and integer min < max")


def read_answer(task_type: str, answer: dict[str, Any], presentation: list[int],
                rubric: list[dict[str, Any]]) -> dict[str, Any]:
    """The stored payload for `answer` (display positions) given the order shown; AnswerError when it is wrong."""
    if not isinstance(answer, dict):
        raise AnswerError("the answer must be a JSON object")
    k = len(presentation)
    out: dict[str, Any] = {}
    if task_type == "pairwise":
        choice = answer.get("choice")
        if choice not in CHOICES:
            raise AnswerError(f"choice must be one of {', '.join(CHOICES)} (got {choice!r})")
        out = {"choice": choice, "winner": presentation["AB".index(choice)] if choice in ("A", "B") else None}
    elif task_type == "ranking":
        order = answer.get("order")
        if not isinstance(order, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in order) or \
                sorted(order) != list(range(k)):  # ints first: sorted() of [0, "2"] raises TypeError
            raise AnswerError(f"order must list each of the {k} positions 0..{k - 1} once, best first (got {order!r})")
        out = {"order": [presentation[i] for i in order]}
    elif task_type == "rubric":
        scores = answer.get("scores")
        if not isinstance(scores, list) or len(scores) != k:
            raise AnswerError(f"scores must hold one object per response ({k})")
        stored: list[dict[str, int] | None] = [None] * k
        names = [s["name"] for s in rubric]
        for pos, given in enumerate(scores):
            where = f"response {chr(ord('A') + pos)} (scores[{pos}])"  # as the page labels it, and as the API counts
            if not isinstance(given, dict):
                raise AnswerError(f"{where} must be an object of scale: value")
            unknown = [name for name in given if name not in names]
            if unknown:
                raise AnswerError(f"{where}: {unknown[0]!r} is not a scale of this campaign ({', '.join(names)})")
            row = {}
            for s in rubric:
                v = given.get(s["name"])
                if isinstance(v, bool) or not isinstance(v, int) or not s["min"] <= v <= s["max"]:
                    raise AnswerError(f"{where}: {s['name']} must be an integer {s['min']}..{s['max']}")
                row[s["name"]] = v
            stored[presentation[pos]] = row
        out = {"scores": stored}
    elif task_type == "correction":
        pos, text = answer.get("response", 0), answer.get("text")
        if isinstance(pos, bool) or not isinstance(pos, int) or not 0 <= pos < k:
            raise AnswerError(f"response must be a position 0..{k - 1}")
        if not isinstance(text, str) or not text.strip() or len(text) > MAX_CORRECTION:
            raise AnswerError(f"text must be the corrected response (1..{MAX_CORRECTION} characters)")
        out = {"response": presentation[pos], "text": text}
    else:
        raise AnswerError(f"unknown task type {task_type!r}")
    flags = answer.get("flags", [])
    if not isinstance(flags, list) or any(f not in FLAGS for f in flags):
        raise AnswerError(f"flags must be a list of {', '.join(FLAGS)}")
    comment = answer.get("comment", "")
    if not isinstance(comment, str) or len(comment) > MAX_COMMENT:
        raise AnswerError(f"comment must be text of at most {MAX_COMMENT} characters")
    out["flags"] = sorted(set(flags))
    out["comment"] = comment
    return out
