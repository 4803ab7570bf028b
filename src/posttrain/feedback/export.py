"""Judgments -> the project's records, for `posttrain rm`, `posttrain dpo` and evaluation.

One record per current judgment (the latest revision of each rater's judgment of an item; superseded rows stay
in the database but are not exported), so an item judged by k raters gives up to k records and agreement shows
as repeated pairs:
- pairwise: a preference record (prompt, chosen = the winner, rejected = the other); ties and "both bad" carry no
  preference and are left out (counted in the summary);
- ranking: a ranking record (prompt, responses, order best first), which `posttrain rm` reads as all its pairs;
- correction: a preference record with the rater's corrected text as chosen and the response they corrected as
  rejected (an edit is a preference for the edit); an unchanged "correction" is left out;
- rubric: a rating record per response (prompt, completion, scores, and the campaign's scales as [min, max];
  `posttrain.data.records.Rating`).
Each row also has a `feedback` field (campaign, item, rater id, judgment id, flags) for lineage; the loaders
ignore fields they do not know.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from posttrain.data.records import Message, PreferencePair, Ranking, Rating, to_dict
from posttrain.errors import DataError
from posttrain.feedback.assign import current_judgments
from posttrain.feedback.db import Campaign, Item


def _msgs(messages: list[dict[str, str]]) -> tuple[Message, ...]:
    return tuple(Message(m["role"], m["content"]) for m in messages)


def _answer(text: str) -> tuple[Message, ...]:
    return (Message("assistant", text),)


def export_rows(s: Session, campaign_name: str) -> tuple[list[dict[str, Any]], Counter]:
    """The records of a campaign's judgments as JSON rows, and a count of what was written and left out."""
    campaign = s.query(Campaign).filter_by(name=campaign_name).first()
    if campaign is None:
        names = ", ".join(c.name for c in s.query(Campaign).order_by(Campaign.name)) or "none yet"
        raise DataError(f"no campaign named {campaign_name!r} (campaigns: {names})")
    items = {i.id: i for i in s.query(Item).filter_by(campaign_id=campaign.id)}
    rows: list[dict[str, Any]] = []
    counts: Counter = Counter()
    for j in current_judgments(s, campaign.id):
        item = items[j.item_id]
        prompt, texts, p = _msgs(item.prompt), [r["text"] for r in item.responses], j.payload
        meta = {"campaign": campaign.name, "item": item.position, "rater": j.rater_id, "judgment": j.id,
                "flags": p.get("flags", [])}
        if campaign.task_type == "pairwise":
            if p["winner"] is None:
                counts[p["choice"]] += 1
                continue
            record = PreferencePair(prompt, _answer(texts[p["winner"]]), _answer(texts[1 - p["winner"]]))
            rows.append({**to_dict(record), "feedback": meta})
        elif campaign.task_type == "ranking":
            record = Ranking(prompt, tuple(_answer(t) for t in texts), tuple(p["order"]))
            rows.append({**to_dict(record), "feedback": meta})
        elif campaign.task_type == "correction":
            original = texts[p["response"]]
            if p["text"].strip() == original.strip():
                counts["unchanged"] += 1
                continue
            record = PreferencePair(prompt, _answer(p["text"]), _answer(original))
            rows.append({**to_dict(record), "feedback": meta})
        else:  # rubric
            scales = tuple((sc["name"], float(sc["min"]), float(sc["max"])) for sc in campaign.rubric)
            for i, scores in enumerate(p["scores"]):
                record = Rating(prompt, _answer(texts[i]), tuple((k, float(v)) for k, v in scores.items()), scales)
                rows.append({**to_dict(record), "feedback": {**meta, "response": i}})
        counts["records"] += 1 if campaign.task_type != "rubric" else len(p["scores"])
    return rows, counts
