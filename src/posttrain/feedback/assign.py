"""Work distribution and judgment writing: leases, overlap, skips, append-only judgments. The app's core.

Every function here is one short transaction over a `sessionmaker`, takes `now` from its caller (so tests can
move the clock) and returns plain values. Why it is race-free, on SQLite and on PostgreSQL alike:

- The invariants are database constraints (see db.py), not checks in Python: a lease takes one of its item's
  k slots (UNIQUE(item, slot), CHECK(slot < overlap)) and one per rater (UNIQUE(item, rater)); a judgment takes
  its lease's slot (UNIQUE(item, slot, revision)). Two raters that race for the last slot both try to INSERT the
  same (item, slot); the database lets one commit and refuses the other, which then retries with a fresh view.
  However the transactions interleave, no item can hold more than k leases, hence more than k judgments.
- On SQLite every writing transaction starts with BEGIN IMMEDIATE under a process-wide lock (db.make_engine):
  writers queue one by one, so the retry path is never even taken. On PostgreSQL (READ COMMITTED) the loser gets a unique violation and retries.
- A judgment is written in the same transaction that marks its lease judged, with a conditional UPDATE
  (`... WHERE judged = false`): of two concurrent submits for one lease (a double click), the second's UPDATE
  waits for the first's row lock and then matches no row, and it returns the first's judgment (same client id)
  instead of writing a second.
- A lease that has run out still holds its slot until another rater is given that slot: only then is it
  DELETEd, `WHERE judged = false AND expires_at <= now`, in the transaction that inserts the new lease. So a
  late answer is taken whenever nobody needed its slot meanwhile (whatever else other raters asked for), and its
  rater asking for work again gets it back, renewed (an UPDATE with the same conditions). A take-over, a late
  submit and a renewal of one lease cannot both win: each one's conditional statement waits for the other's row
  lock and then matches nothing, or the INSERT into the slot meets UNIQUE(item, slot) and retries.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import random
import weakref
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from sqlalchemy import and_, bindparam, delete, exists, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, aliased, sessionmaker

from posttrain.feedback.db import Audit, Campaign, Item, Judgment, Lease, Skip, utcnow
from posttrain.feedback.tasks import AnswerError, presentation_order, read_answer

T = TypeVar("T")
RETRIES = 20
CANDIDATES = 16  # a rater picks at random among the first few open items, so concurrent raters rarely collide


class Conflict(Exception):
    """The request cannot be honoured as asked (lease gone, already judged, not yours); the message says why."""


GONE = ("this task is no longer yours, or never was (its time ran out and another rater was given its place, or "
        "there is no such lease)")
NOT_STORED = f"{GONE}; your answer was not stored; take the next"  # a submit for such a lease, page or API


class AnsweredOtherwise(Conflict):
    """A resend of a client id with another answer than the one it stored (`judgment_id`), which stays."""

    def __init__(self, judgment_id: int) -> None:
        self.judgment_id = judgment_id
        self.summary = (f"this task was already answered otherwise (judgment {judgment_id}, perhaps from another "
                        "tab); that first answer was kept and this one was not")
        super().__init__(f"{self.summary}: to change it, edit it at /judgments/{judgment_id}/edit")


@dataclass(frozen=True)
class Written:
    judgment_id: int
    created: bool  # False: this client id was already stored (a repeated submit), nothing new was written
    campaign_id: int


class _Raced(Exception):
    """Another transaction changed what this one read (PostgreSQL, READ COMMITTED): start again."""


def _retry(db: sessionmaker, work: Callable[[Session], T]) -> T:
    """Run `work` in a transaction; on a constraint race (another writer took the row first) start again."""
    lock = getattr(db.kw["bind"], "write_lock", None) or contextlib.nullcontext()  # SQLite: see db.make_engine
    for attempt in range(RETRIES):
        with lock, db() as s:
            try:
                with s.begin():
                    return work(s)
            except _Raced:
                if attempt == RETRIES - 1:
                    raise
            except (IntegrityError, OperationalError) as e:
                if attempt == RETRIES - 1 or not _is_race(e):
                    raise
    raise AssertionError("unreachable")


def _is_race(e: Exception) -> bool:
    """A unique violation, serialization failure or deadlock: another transaction won; try again."""
    code = getattr(getattr(e, "orig", None), "sqlstate", None)
    return isinstance(e, IntegrityError) or code in ("40001", "40P01") or "locked" in str(e)


def _live(now: Any):  # noqa: ANN202
    """A lease that holds its slot at `now`: judged, or not yet run out."""
    return or_(Lease.judged.is_(True), Lease.expires_at > now)


def _open_items(campaign_id: Any, overlap: Any, rater_id: Any, now: Any, from_position: Any = 0):  # noqa: ANN202
    """Items of `campaign` with a free slot at `now` (a run-out lease's slot is free) that this rater has neither
    leased nor skipped, in file order from `from_position` (the database walks the (campaign, position) index and
    stops at the LIMIT; raters sweep from the front, so items fill up in order). The arguments are values or
    bound parameters (`_OPEN`)."""
    taken = (select(func.count()).where(Lease.item_id == Item.id, _live(now)).correlate(Item)
             .scalar_subquery())
    leased = select(func.count()).where(Lease.item_id == Item.id).correlate(Item).scalar_subquery()
    return (select(Item.id, func.json_array_length(Item.responses), Item.position, leased < overlap)
            .where(Item.campaign_id == campaign_id, Item.position >= from_position, taken < overlap,
                   ~exists().where(and_(Lease.item_id == Item.id, Lease.rater_id == rater_id)),
                   ~exists().where(and_(Skip.item_id == Item.id, Skip.rater_id == rater_id)))
            .order_by(Item.position))


# The statements of the hot path (a rater asks for work, submits), built once with bound parameters: building a
# statement costs more CPU than running it on SQLite. SQLAlchemy's compiled cache then finds each one by its
# cache key. They run on the session's Connection (Core), which skips the ORM's per-statement bookkeeping.
_p = bindparam
_LEASES, _ITEMS, _JUDGMENTS = Lease.__table__, Item.__table__, Judgment.__table__
_OPEN = _open_items(_p("campaign"), _p("overlap"), _p("rater"), _p("now"), _p("start")).limit(CANDIDATES)
_HELD = (select(Lease.id, Lease.expires_at).join(Item, Item.id == Lease.item_id)
         .where(Item.campaign_id == _p("campaign"), Lease.rater_id == _p("rater"), Lease.judged.is_(False))
         .order_by(Lease.expires_at.desc()).limit(1))  # run out or not: nobody has needed its slot
_RUN_OUT = (Lease.judged.is_(False), Lease.expires_at <= _p("now"))
_RENEW = update(Lease).where(Lease.id == _p("lease"), *_RUN_OUT).values(expires_at=_p("until"))
_SLOTS = select(Lease.slot, _live(_p("now"))).where(Lease.item_id == _p("item"))  # (slot, held)
_TAKE_OVER = delete(Lease).where(Lease.item_id == _p("item"), Lease.slot == _p("slot"), *_RUN_OUT)
_RAN_OUT_SINCE = (select(Lease.id).join(Item, Item.id == Lease.item_id)
                  .where(Item.campaign_id == _p("campaign"), *_RUN_OUT, Lease.expires_at > _p("since")).limit(1))
_NEW_LEASE = insert(_LEASES)
_SAME_CLIENT = (select(Judgment.id, Judgment.rater_id, Judgment.campaign_id, Judgment.payload, Judgment.presentation)
                .where(Judgment.client_id == _p("client")))
_LEASE_TO_JUDGE = (select(Lease.rater_id, Lease.item_id, Lease.slot, Lease.overlap, Lease.presentation,
                          Item.campaign_id).join(Item, Item.id == Lease.item_id).where(Lease.id == _p("lease")))
_CLAIM = (update(Lease).where(Lease.id == _p("lease"), Lease.rater_id == _p("rater"), Lease.judged.is_(False))
          .values(judged=True))
_NEW_JUDGMENT = insert(_JUDGMENTS)
_RULES = (select(Campaign.overlap, Campaign.lease_seconds, Campaign.task_type, Campaign.rubric)
          .where(Campaign.id == _p("campaign")))
_CLOSED = select(Campaign.closed_at).where(Campaign.id == _p("campaign"))  # not in _RULES: those are cached


@dataclass(frozen=True)
class _CampaignRules:
    overlap: int
    lease_seconds: int
    task_type: str
    rubric: list


# Per database (engine), kept only while the engine lives: campaign settings, which never change once made, and
# when each campaign was last looked at for leases that ran out.
_rules: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> {campaign id: _CampaignRules}
_looked: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # engine -> {campaign id: datetime}
# engine -> {(campaign, rater): position}: where the rater's last search found its first open item. Items before
# it were full or the rater's own; only a lease running out can reopen one, so seeing one forgets these. A hint
# only: a search from it that finds nothing searches again from the start before saying "nothing left".
_frontiers: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
LOOK_EVERY = dt.timedelta(seconds=1)


def _campaign_rules(s: Session, campaign_id: int) -> _CampaignRules:
    known = _rules.setdefault(s.get_bind(), {})
    if campaign_id not in known:
        known[campaign_id] = _CampaignRules(*s.connection().execute(_RULES, {"campaign": campaign_id}).one())
    return known[campaign_id]


def _look_for_run_out(s: Session, campaign_id: int, now: dt.datetime) -> None:
    """Forget the search frontiers when a lease of the campaign ran out since the last look (at most once a
    second: the frontiers are a hint, so only how soon a reopened item is offered again depends on it)."""
    times = _looked.setdefault(s.get_bind(), {})
    last = times.get(campaign_id)
    if last is not None and last <= now < last + LOOK_EVERY:
        return
    since = last if last is not None and last <= now else dt.datetime.min
    if s.connection().execute(_RAN_OUT_SINCE, {"campaign": campaign_id, "now": now, "since": since}).first():
        _frontiers.pop(s.get_bind(), None)
    times[campaign_id] = now


def _candidates(s: Session, campaign_id: int, overlap: int, rater_id: int, now: dt.datetime) -> list:
    """Up to CANDIDATES open items for the rater: (id, number of responses, position, has an unleased slot)."""
    marks = _frontiers.setdefault(s.get_bind(), {})
    start = marks.get((campaign_id, rater_id), 0)
    params = {"campaign": campaign_id, "overlap": overlap, "rater": rater_id, "now": now, "start": start}
    rows = s.connection().execute(_OPEN, params).all()
    if not rows and start:
        rows = s.connection().execute(_OPEN, {**params, "start": 0}).all()
    if rows:
        marks[(campaign_id, rater_id)] = rows[0][2]
    return rows


def _lease_work(s: Session, campaign_id: int, rater_id: int, now: dt.datetime, rng: random.Random) -> int | None:
    """next_lease's transaction."""
    conn = s.connection()
    rules = _campaign_rules(s, campaign_id)
    until = now + dt.timedelta(seconds=rules.lease_seconds)
    held = conn.execute(_HELD, {"campaign": campaign_id, "rater": rater_id}).first()
    if held is not None:
        if held.expires_at <= now and conn.execute(_RENEW, {"lease": held.id, "now": now, "until": until}
                                                   ).rowcount != 1:
            raise _Raced()  # another rater took its slot (or it was judged) since it was read
        return held.id
    if conn.execute(_CLOSED, {"campaign": campaign_id}).scalar() is not None:  # closed: no new task
        return None
    _look_for_run_out(s, campaign_id, now)
    candidates = _candidates(s, campaign_id, rules.overlap, rater_id, now)
    if not candidates:
        return None
    # an item with a slot no lease holds first: a lease that ran out keeps its rater's late answer while it can
    item_id, n_responses, _, _ = rng.choice([c for c in candidates if c[3]] or candidates)
    slots = dict(conn.execute(_SLOTS, {"item": item_id, "now": now}).all())  # slot -> held
    free = [x for x in range(rules.overlap) if x not in slots] + [x for x, held in slots.items() if not held]
    if not free:  # taken by others since the candidates were read (each statement sees the latest commits)
        raise _Raced()
    if free[0] in slots:  # a lease that ran out gives its slot up now, unless it was judged or renewed meanwhile
        conn.execute(_TAKE_OVER, {"item": item_id, "slot": free[0], "now": now})
    # The INSERT: a racing rater who took this slot first makes it raise (UNIQUE(item, slot)), and we retry.
    return conn.execute(_NEW_LEASE, {
        "item_id": item_id, "rater_id": rater_id, "slot": free[0], "overlap": rules.overlap,
        "presentation": presentation_order(n_responses, campaign_id, item_id, rater_id), "created_at": now,
        "expires_at": until, "judged": False}).inserted_primary_key[0]


def next_lease(db: sessionmaker, campaign_id: int, rater_id: int, now: dt.datetime,
               rng: random.Random | None = None) -> int | None:
    """The id of a lease for this rater on an item that still needs judgments; their open lease if they hold
    one (renewed for lease_seconds when it ran out: nobody has needed its slot); None when nothing is left for
    them, or the campaign is closed (a lease they hold is still theirs to answer: no answer is lost to a close).
    The slot of another rater's lease that ran out counts as free, and is taken from it."""
    rng = rng or random.Random()
    return _retry(db, lambda s: _lease_work(s, campaign_id, rater_id, now, rng))


def _submit_work(s: Session, lease_id: int, rater_id: int, client_id: str, answer: dict[str, Any],
                 now: dt.datetime, seconds: float | None) -> Written:
    """submit's transaction."""
    conn = s.connection()
    again = _same_client(s, client_id, rater_id, answer)
    if again is not None:
        return again
    lease = conn.execute(_LEASE_TO_JUDGE, {"lease": lease_id}).first()
    if lease is None or lease.rater_id != rater_id:
        raise Conflict(NOT_STORED)
    rules = _campaign_rules(s, lease.campaign_id)
    payload = read_answer(rules.task_type, answer, lease.presentation, rules.rubric)
    claimed = conn.execute(_CLAIM, {"lease": lease_id, "rater": rater_id}).rowcount
    if claimed != 1:  # a concurrent submit for this lease committed first
        again = _same_client(s, client_id, rater_id, answer)
        if again is not None:
            return again
        if conn.execute(_LEASE_TO_JUDGE, {"lease": lease_id}).first() is None:  # its slot was taken meanwhile
            raise Conflict(NOT_STORED)
        raise Conflict("you already judged this item; edit your judgment instead")
    new_id = conn.execute(_NEW_JUDGMENT, {
        "client_id": client_id, "campaign_id": lease.campaign_id, "item_id": lease.item_id, "rater_id": rater_id,
        "slot": lease.slot, "overlap": lease.overlap, "revision": 0, "supersedes_id": None,
        "presentation": lease.presentation, "payload": payload, "seconds": seconds,
        "created_at": now}).inserted_primary_key[0]
    return Written(new_id, True, lease.campaign_id)


def submit(db: sessionmaker, lease_id: int, rater_id: int, client_id: str, answer: dict[str, Any],
           now: dt.datetime, seconds: float | None = None) -> Written:
    """Store a rater's answer for their lease, once: a repeat with the same client id returns the first."""
    return _retry(db, lambda s: _submit_work(s, lease_id, rater_id, client_id, answer, now, seconds))


def submit_and_next(db: sessionmaker, lease_id: int, rater_id: int, client_id: str, answer: dict[str, Any],
                    now: dt.datetime, seconds: float | None = None,
                    rng: random.Random | None = None) -> tuple[Written, int | None]:
    """`submit`, then `next_lease` in the same campaign, in one transaction (one write lock, one commit): the
    API's submit-and-take-the-next round trip. A race in either part retries both (the submit, rolled back
    with it, is simply done again)."""
    rng = rng or random.Random()

    def work(s: Session) -> tuple[Written, int | None]:
        written = _submit_work(s, lease_id, rater_id, client_id, answer, now, seconds)
        return written, _lease_work(s, written.campaign_id, rater_id, now, rng)

    return _retry(db, work)


def _same_client(s: Session, client_id: str, rater_id: int, answer: dict[str, Any]) -> Written | None:
    """The judgment this client id already stored, when `answer` is its resend (a double click, a retried
    request); None when the id is new. The same id with another answer is a Conflict, never a quiet "stored":
    it is the same task answered twice, e.g. in two tabs sharing one draft, and the second answer is not kept."""
    j = s.connection().execute(_SAME_CLIENT, {"client": client_id}).first()
    if j is None:
        return None
    if j.rater_id != rater_id:
        raise Conflict("this client id belongs to another judgment; send a fresh one")
    rules = _campaign_rules(s, j.campaign_id)
    try:
        same = read_answer(rules.task_type, answer, j.presentation, rules.rubric) == j.payload
    except AnswerError:
        same = False
    if not same:
        raise AnsweredOtherwise(j.id)
    return Written(j.id, False, j.campaign_id)


def edit(db: sessionmaker, judgment_id: int, rater_id: int, client_id: str, answer: dict[str, Any],
         now: dt.datetime) -> Written:
    """Supersede the rater's current judgment with a new revision; the old row stays as it was."""

    def work(s: Session) -> Written:
        again = _same_client(s, client_id, rater_id, answer)
        if again is not None:
            return again
        old = s.get(Judgment, judgment_id)
        if old is None or old.rater_id != rater_id:
            raise Conflict("no such judgment of yours")
        if s.scalar(select(Judgment.id).where(Judgment.supersedes_id == old.id)) is not None:
            raise Conflict("this judgment was already edited; edit its latest revision")
        campaign = s.get(Campaign, old.campaign_id)
        payload = read_answer(campaign.task_type, answer, old.presentation, campaign.rubric)
        j = Judgment(client_id=client_id, campaign_id=old.campaign_id, item_id=old.item_id, rater_id=rater_id,
                     slot=old.slot, overlap=old.overlap, revision=old.revision + 1, supersedes_id=old.id,
                     presentation=old.presentation, payload=payload, created_at=now)
        s.add(j)
        s.flush()  # UNIQUE(supersedes_id): of two racing edits of one revision, one wins
        s.add(Audit(user_id=rater_id, action="judgment.edit", target=f"judgment:{old.id}",
                    detail={"new": j.id}, at=now))
        return Written(j.id, True, old.campaign_id)

    return _retry(db, work)


def skip(db: sessionmaker, lease_id: int, rater_id: int, now: dt.datetime) -> int:
    """Give the lease back and never offer its item to this rater again; returns the campaign's id. The same skip
    sent again (a double click, a retry after a timeout) is done already, not a Conflict."""

    def work(s: Session) -> int:
        lease = s.get(Lease, lease_id)
        if lease is None:
            done = s.scalar(select(Item.campaign_id).join(Skip, Skip.item_id == Item.id)
                            .where(Skip.lease_id == lease_id, Skip.rater_id == rater_id))
            if done is not None:
                return done
        if lease is None or lease.rater_id != rater_id or lease.judged:
            raise Conflict("this task is not an open task of yours")
        s.delete(lease)
        s.add(Skip(item_id=lease.item_id, rater_id=rater_id, lease_id=lease_id, created_at=now))
        s.add(Audit(user_id=rater_id, action="item.skip", target=f"item:{lease.item_id}", at=now))
        return s.get(Item, lease.item_id).campaign_id

    return _retry(db, work)


@dataclass(frozen=True)
class Progress:
    mine: int  # judgments this rater has made in the campaign
    open_for_me: int  # items this rater could still be given
    judged: int  # judgments in the campaign, all raters (first revisions)
    needed: int  # items x overlap


def progress(s: Session, campaign: Campaign, rater_id: int) -> Progress:
    base = select(func.count()).select_from(Judgment).where(Judgment.campaign_id == campaign.id,
                                                            Judgment.revision == 0)
    mine = s.scalar(base.where(Judgment.rater_id == rater_id))
    judged = s.scalar(base)
    open_for_me = s.scalar(select(func.count()).select_from(_open_items(campaign.id, campaign.overlap, rater_id,
                                                                        utcnow()).subquery()))
    items = s.scalar(select(func.count()).select_from(Item).where(Item.campaign_id == campaign.id))
    return Progress(mine, open_for_me, judged, items * campaign.overlap)


def current_judgments(s: Session, campaign_id: int) -> list[Judgment]:
    """The latest revision of every (item, rater) judgment in the campaign, in item order."""
    newer = aliased(Judgment)
    superseded = exists().where(newer.supersedes_id == Judgment.id)
    return list(s.scalars(select(Judgment).where(Judgment.campaign_id == campaign_id, ~superseded)
                          .order_by(Judgment.item_id, Judgment.rater_id)))
