"""Judgments -> the project's records, for `posttrain sft`, `posttrain rm`, `posttrain dpo` and evaluation.

One record per current judgment (the latest revision of each rater's judgment of an item; superseded rows stay
in the database but are not exported), so an item judged by k raters gives up to k records and agreement shows
as repeated pairs. What each task type gives (`Export.rows`, the main output):
- pairwise: a preference record (prompt, chosen = the winner, rejected = the other). Ties and "both bad" carry no
  preference: they are never in the pairs (DPO and the reward model read pairs, and a tie is no pair), but go to
  `Export.ties`, rows `{"prompt", "responses": [a, b], "choice": "tie" | "both_bad"}` for a Bradley-Terry fit
  that counts a tie as half a win each (`posttrain feedback export --ties FILE`);
- ranking: a ranking record (prompt, responses, order best first), which `posttrain rm` reads as all its pairs;
- correction: a prompt-completion record (the prompt and the rater's corrected text) for `posttrain sft`; and in
  `Export.correction_pairs` a preference record with the corrected text as chosen and the response it corrects
  as rejected (an edit is a preference for the edit; `--correction-pairs FILE`). A correction that leaves the
  text unchanged is an approval: an SFT record, but no pair;
- rubric: a rating record per response (prompt, completion, scores, and the campaign's scales as [min, max];
  `posttrain.data.records.Rating`).

Every row has a `feedback` field for lineage (the loaders ignore fields they do not know): campaign, export id,
item (its place in the campaign), item_id and metadata (the item file's own, or null), rater (user name) and
rater_id, judgment id, the model versions behind the responses (`models`: for a pair
`{"chosen", "rejected"}`, for a ranking one per response, for a rating or correction `model`), and flags.

Raters an admin has excluded from the campaign's exports (`export_exclusions`) are left out of every output.
The export id is `fb-` + the first 16 hex digits of sha256 over the campaign name and the sorted ids of the
judgments exported, so exporting the same judgments again gives the same id, and any new, edited or excluded
judgment gives another.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from posttrain.data.records import Message, PreferencePair, PromptCompletion, Ranking, Rating, to_dict
from posttrain.errors import DataError
from posttrain.feedback.assign import current_judgments
from posttrain.feedback.db import Audit, Campaign, ExportExclusion, Item, Judgment, User


def _msgs(messages: list[dict[str, str]]) -> tuple[Message, ...]:
    return tuple(Message(m["role"], m["content"]) for m in messages)


def _answer(text: str) -> tuple[Message, ...]:
    return (Message("assistant", text),)


def export_id(campaign: str, judgment_ids: list[int]) -> str:
    """`fb-` + 16 hex digits of sha256([campaign, sorted judgment ids]): the same judgments, the same id."""
    digest = hashlib.sha256(json.dumps([campaign, sorted(judgment_ids)]).encode()).hexdigest()
    return "fb-" + digest[:16]


@dataclass
class Export:
    """A campaign's exported records and what they came from."""

    campaign: str
    task_type: str
    export_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    """The main records: pairs, rankings, ratings or (corrections) prompt-completion records."""
    ties: list[dict[str, Any]] = field(default_factory=list)
    """Pairwise ties and "both bad" answers (not records the trainers read; for Bradley-Terry)."""
    correction_pairs: list[dict[str, Any]] = field(default_factory=list)
    """Corrected text > the response it corrects, as preference records."""
    counts: Counter = field(default_factory=Counter)
    """records written, and what was left out of the main output, by reason."""
    judgments: int = 0
    """Current judgments exported (after exclusions)."""
    last_judgment: str | None = None
    """When the newest of them was stored (ISO 8601, UTC)."""
    excluded_raters: list[str] = field(default_factory=list)
    excluded_judgments: int = 0
    """Current judgments of the excluded raters: not exported, and not among `judgments`."""

    def left_out(self) -> str:
        """What of the judgments counted is not in the main output, by reason: "4 both_bad, 35 tie" (or "")."""
        return ", ".join(f"{n} {k}" for k, n in sorted(self.counts.items()) if k != "records")

    def excluded(self) -> str:
        """"31 judgments of excluded rater cho not exported", or "" when no rater is excluded."""
        if not self.excluded_raters:
            return ""
        word = "judgment" if self.excluded_judgments == 1 else "judgments"
        raters = ("rater " if len(self.excluded_raters) == 1 else "raters ") + ", ".join(self.excluded_raters)
        return f"{self.excluded_judgments} {word} of excluded {raters} not exported"

    def state(self) -> dict[str, Any]:
        """The campaign's state for lineage.json: export id, judgment count, last judgment time, exclusions."""
        return {"campaign": self.campaign, "task_type": self.task_type, "export_id": self.export_id,
                "judgments": self.judgments, "last_judgment": self.last_judgment,
                "excluded_raters": self.excluded_raters, "records": len(self.rows)}


def find_campaign(s: Session, campaign_name: str) -> Campaign:
    """The campaign called `campaign_name`; DataError listing the campaigns there are when none is."""
    campaign = s.query(Campaign).filter_by(name=campaign_name).first()
    if campaign is None:
        names = ", ".join(c.name for c in s.query(Campaign).order_by(Campaign.name)) or "none yet"
        raise DataError(f"no campaign named {campaign_name!r} (campaigns: {names})")
    return campaign


def export_campaign(s: Session, campaign_name: str) -> Export:
    """Every output of a campaign's current judgments, raters excluded from its exports left out."""
    campaign = find_campaign(s, campaign_name)
    items = {i.id: i for i in s.query(Item).filter_by(campaign_id=campaign.id)}
    excluded = set(s.scalars(select(ExportExclusion.rater_id).where(ExportExclusion.campaign_id == campaign.id)))
    names = dict(s.execute(select(User.id, User.username)).tuples().all())
    current = current_judgments(s, campaign.id)
    judgments = [j for j in current if j.rater_id not in excluded]
    out = Export(campaign.name, campaign.task_type, export_id(campaign.name, [j.id for j in judgments]),
                 judgments=len(judgments), excluded_raters=sorted(names[r] for r in excluded))
    if judgments:
        out.last_judgment = max(j.created_at for j in judgments).isoformat() + "Z"
    for j in judgments:
        item = items[j.item_id]
        prompt, p = _msgs(item.prompt), j.payload
        texts, models = [r["text"] for r in item.responses], [r.get("model") for r in item.responses]
        meta = {"campaign": campaign.name, "export": out.export_id, "item": item.position,
                "item_id": item.external_id, "metadata": item.item_metadata,  # the item file's own, or None
                "rater": names.get(j.rater_id), "rater_id": j.rater_id, "judgment": j.id,
                "flags": p.get("flags", [])}
        if campaign.task_type == "pairwise":
            if p["winner"] is None:
                out.counts[p["choice"]] += 1
                out.ties.append({"prompt": [m.to_dict() for m in prompt],
                                 "responses": [[m.to_dict() for m in _answer(t)] for t in texts],
                                 "choice": p["choice"], "feedback": {**meta, "models": models}})
                continue
            w, lose = p["winner"], 1 - p["winner"]
            record = PreferencePair(prompt, _answer(texts[w]), _answer(texts[lose]))
            out.rows.append({**to_dict(record), "feedback": {**meta, "models": {"chosen": models[w],
                                                                                 "rejected": models[lose]}}})
        elif campaign.task_type == "ranking":
            record = Ranking(prompt, tuple(_answer(t) for t in texts), tuple(p["order"]))
            out.rows.append({**to_dict(record), "feedback": {**meta, "models": models}})
        elif campaign.task_type == "correction":
            original, fixed = texts[p["response"]], p["text"]
            row_meta = {**meta, "model": models[p["response"]], "response": p["response"]}
            out.rows.append({**to_dict(PromptCompletion(prompt, _answer(fixed))), "feedback": row_meta})
            if fixed.strip() == original.strip():
                out.counts["unchanged"] += 1  # an approval: no preference for the edit
            else:
                record = PreferencePair(prompt, _answer(fixed), _answer(original))
                out.correction_pairs.append({**to_dict(record), "feedback": row_meta})
        else:  # rubric
            scales = tuple((sc["name"], float(sc["min"]), float(sc["max"])) for sc in campaign.rubric)
            for i, scores in enumerate(p["scores"]):
                record = Rating(prompt, _answer(texts[i]), tuple((k, float(v)) for k, v in scores.items()), scales)
                out.rows.append({**to_dict(record), "feedback": {**meta, "response": i, "model": models[i]}})
    if out.rows:
        out.counts["records"] = len(out.rows)
    out.excluded_judgments = len(current) - len(judgments)  # "48 records of 48 judgments" is not the whole 72
    return out


def excluded_raters(s: Session, campaign_id: int) -> list[str]:
    """User names of the raters left out of a campaign's exports, sorted."""
    return list(s.scalars(select(User.username).join(ExportExclusion, ExportExclusion.rater_id == User.id)
                          .where(ExportExclusion.campaign_id == campaign_id).order_by(User.username)))


def set_exclusion(s: Session, campaign: Campaign, username: str, excluded: bool, reason: str,
                  by_user_id: int | None) -> list[str]:
    """Exclude `username` from (or put them back into) the campaign's exports, audited, in the caller's
    transaction; LookupError when there is no such user, or (excluding) when they judged nothing in the campaign:
    a typo that names another real user must not pass unnoticed. Returns the user names excluded now."""
    user = s.scalar(select(User).where(User.username == username))
    if user is None:
        raise LookupError(f"no user named {username!r}")
    judged = s.scalar(select(Judgment.id).where(Judgment.campaign_id == campaign.id, Judgment.rater_id == user.id)
                      .limit(1))
    if excluded and judged is None:
        raters = s.scalars(select(User.username).join(Judgment, Judgment.rater_id == User.id)
                           .where(Judgment.campaign_id == campaign.id).distinct().order_by(User.username)).all()
        raise LookupError(f"{username!r} has judged nothing in campaign {campaign.name!r} (its raters: "
                          f"{', '.join(raters) or 'none yet'})")
    row = s.scalar(select(ExportExclusion).where(ExportExclusion.campaign_id == campaign.id,
                                                  ExportExclusion.rater_id == user.id))
    if excluded and row is None:
        s.add(ExportExclusion(campaign_id=campaign.id, rater_id=user.id, reason=reason))
    elif not excluded and row is not None:
        s.delete(row)
    s.add(Audit(user_id=by_user_id, action="export.exclude" if excluded else "export.include",
                target=f"campaign:{campaign.name}", detail={"rater": user.username, "reason": reason}))
    s.flush()
    return excluded_raters(s, campaign.id)


def export_rows(s: Session, campaign_name: str) -> tuple[list[dict[str, Any]], Counter]:
    """The main records of a campaign's judgments as JSON rows, and a count of what was written and left out."""
    e = export_campaign(s, campaign_name)
    return e.rows, e.counts


def audited_export(s: Session, campaign_name: str, user_id: int, via: str) -> list[dict[str, Any]]:
    """`export_rows`' records, with an audit entry saying who took them, which export (its id) and how (`via`:
    the page or the API), in the caller's transaction: the judgments are a company's data."""
    e = export_campaign(s, campaign_name)
    s.add(Audit(user_id=user_id, action="export", target=f"campaign:{campaign_name}",
                detail={"export_id": e.export_id, "records": len(e.rows), "via": via}))
    return e.rows
