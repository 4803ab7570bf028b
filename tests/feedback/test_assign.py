"""Leases, overlap and append-only judgments, straight on the database (no HTTP)."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from posttrain.feedback import assign
from posttrain.feedback.db import Judgment, Lease

from .conftest import add_campaign, add_users, pairwise_items

T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def test_each_item_gets_overlap_raters_and_no_rater_twice(fb):
    """3 items x overlap 2 = 6 slots; 4 raters asking until refused fill exactly those, each rater <= once/item."""
    for name in ("admin", "manager", "rater1", "rater2"):
        uid = fb.users[name]
        while (lease := assign.next_lease(fb.db, 1, uid, T0)) is not None:
            assign.submit(fb.db, lease, uid, f"{name}-{lease}", {"choice": "A"}, T0)
    with fb.db() as s:
        per_item = s.execute(select(Judgment.item_id, func.count()).group_by(Judgment.item_id)).all()
        pairs = s.execute(select(Judgment.item_id, Judgment.rater_id)).all()
    assert sorted(n for _, n in per_item) == [2, 2, 2]
    assert len(set(pairs)) == len(pairs) == 6


def test_an_open_lease_is_handed_back_until_it_expires_then_reclaimed(fb):
    r1, r2 = fb.users["rater1"], fb.users["rater2"]
    cid = add_campaign(fb.db, "one", items=pairwise_items(1), overlap=1, lease_seconds=60)
    lease = assign.next_lease(fb.db, cid, r1, T0)
    assert assign.next_lease(fb.db, cid, r1, T0 + dt.timedelta(seconds=10)) == lease  # resumes, no second lease
    assert assign.next_lease(fb.db, cid, r2, T0 + dt.timedelta(seconds=30)) is None  # the only slot is held
    taken = assign.next_lease(fb.db, cid, r2, T0 + dt.timedelta(seconds=61))  # expired: back in the queue
    assert taken is not None and taken != lease
    with pytest.raises(assign.Conflict, match="no longer yours"):  # r1's late vote is refused, not double-counted
        assign.submit(fb.db, lease, r1, "late-vote", {"choice": "A"}, T0 + dt.timedelta(seconds=62))
    assign.submit(fb.db, taken, r2, "r2-vote", {"choice": "B"}, T0 + dt.timedelta(seconds=63))
    with fb.db() as s:
        assert s.scalar(select(func.count()).select_from(Judgment).where(Judgment.campaign_id == cid)) == 1


def test_a_late_answer_is_kept_while_nobody_needed_its_slot(fb):
    """Another rater asking for work (and getting another item) does not take a run-out lease's slot: its late
    answer is stored, and its rater asking again gets the same lease back, renewed (trial 12: the answer was lost
    by chance, when anyone asked for work meanwhile)."""
    r1, r2 = fb.users["rater1"], fb.users["rater2"]
    cid = add_campaign(fb.db, "two", items=pairwise_items(2), overlap=1, lease_seconds=60)
    first = assign.next_lease(fb.db, cid, r1, T0)
    other = assign.next_lease(fb.db, cid, r2, T0 + dt.timedelta(seconds=70))  # first has run out; the free item
    assert other not in (None, first)
    assert assign.next_lease(fb.db, cid, r1, T0 + dt.timedelta(seconds=80)) == first  # back, renewed
    assert assign.next_lease(fb.db, cid, r2, T0 + dt.timedelta(seconds=90)) == other
    with fb.db() as s:
        assert s.get(Lease, first).expires_at == T0 + dt.timedelta(seconds=140)
    assert assign.submit(fb.db, first, r1, "late-but-kept", {"choice": "A"}, T0 + dt.timedelta(seconds=300)).created
    with fb.db() as s:
        assert s.scalar(select(func.count()).select_from(Judgment).where(Judgment.campaign_id == cid)) == 1


def test_a_run_out_lease_gives_its_slot_to_the_next_rater_and_then_refuses_the_late_answer(fb):
    """Overlap 2: the slot of the lease that ran out is the one given away; the live one keeps its own."""
    r1, r2, r3 = fb.users["rater1"], fb.users["rater2"], fb.users["manager"]
    cid = add_campaign(fb.db, "pair", items=pairwise_items(1), overlap=2, lease_seconds=60)
    early = assign.next_lease(fb.db, cid, r1, T0)
    live = assign.next_lease(fb.db, cid, r2, T0 + dt.timedelta(seconds=30))
    taken = assign.next_lease(fb.db, cid, r3, T0 + dt.timedelta(seconds=61))
    with fb.db() as s:
        assert s.get(Lease, early) is None and s.get(Lease, live) is not None
        assert s.get(Lease, taken).slot == 0
    with pytest.raises(assign.Conflict, match="another rater was given its place.*not stored"):
        assign.submit(fb.db, early, r1, "too-late", {"choice": "A"}, T0 + dt.timedelta(seconds=62))
    assign.submit(fb.db, live, r2, "r2", {"choice": "A"}, T0 + dt.timedelta(seconds=95))  # run out, still its own
    assert assign.next_lease(fb.db, cid, r1, T0 + dt.timedelta(seconds=100)) is None  # both slots are held


def test_a_judged_lease_is_never_reclaimed(fb):
    r1, r2 = fb.users["rater1"], fb.users["rater2"]
    cid = add_campaign(fb.db, "one", items=pairwise_items(1), overlap=1, lease_seconds=60)
    lease = assign.next_lease(fb.db, cid, r1, T0)
    assign.submit(fb.db, lease, r1, "vote-1", {"choice": "A"}, T0)
    assert assign.next_lease(fb.db, cid, r2, T0 + dt.timedelta(days=1)) is None


def test_a_repeated_client_id_is_stored_once(fb):
    r1 = fb.users["rater1"]
    lease = assign.next_lease(fb.db, 1, r1, T0)
    first = assign.submit(fb.db, lease, r1, "same-click", {"choice": "A"}, T0)
    again = assign.submit(fb.db, lease, r1, "same-click", {"choice": "A"}, T0)
    assert first.created and not again.created and first.judgment_id == again.judgment_id
    with pytest.raises(assign.Conflict, match="already judged"):  # a new vote on a judged lease: edit instead
        assign.submit(fb.db, lease, r1, "other-click", {"choice": "B"}, T0)
    with pytest.raises(assign.Conflict, match="another judgment"):  # another rater cannot reuse the id
        assign.submit(fb.db, lease, fb.users["rater2"], "same-click", {"choice": "A"}, T0)


def test_an_edit_supersedes_and_keeps_the_old_row(fb):
    r1 = fb.users["rater1"]
    lease = assign.next_lease(fb.db, 1, r1, T0)
    old = assign.submit(fb.db, lease, r1, "v1", {"choice": "A"}, T0).judgment_id
    new = assign.edit(fb.db, old, r1, "v2", {"choice": "tie"}, T0).judgment_id
    with pytest.raises(assign.Conflict, match="already edited"):
        assign.edit(fb.db, old, r1, "v3", {"choice": "B"}, T0)
    with pytest.raises(assign.Conflict, match="no such judgment"):
        assign.edit(fb.db, new, fb.users["rater2"], "v4", {"choice": "B"}, T0)
    with fb.db() as s:
        rows = {j.id: j for j in s.scalars(select(Judgment))}
        current = assign.current_judgments(s, 1)
    assert rows[old].payload["choice"] == "A" and rows[new].supersedes_id == old and rows[new].revision == 1
    assert [j.id for j in current] == [new]


def test_skip_returns_the_item_to_others_but_not_to_the_skipper(fb):
    cid = add_campaign(fb.db, "one", items=pairwise_items(1), overlap=1)
    r1, r2 = fb.users["rater1"], fb.users["rater2"]
    lease = assign.next_lease(fb.db, cid, r1, T0)
    assign.skip(fb.db, lease, r1, T0)
    assign.skip(fb.db, lease, r1, T0)  # sent again (a retry after a timeout): done already, not a 409 (trial 12)
    with pytest.raises(assign.Conflict, match="not an open task of yours"):  # and not someone else's to repeat
        assign.skip(fb.db, lease, r2, T0)
    assert assign.next_lease(fb.db, cid, r1, T0) is None
    assert assign.next_lease(fb.db, cid, r2, T0) is not None


def test_the_database_refuses_a_slot_beyond_overlap(fb):
    """The guard is a CHECK constraint, not only the allocator's arithmetic."""
    from sqlalchemy.exc import IntegrityError

    extra = add_users(fb.db, {"rater3": "rater"})["rater3"]
    with pytest.raises(IntegrityError), fb.db() as s, s.begin():
        s.add(Lease(item_id=1, rater_id=extra, slot=2, overlap=2, presentation=[0, 1], expires_at=T0, judged=False))
