"""Judgments become the project's records, and the training commands' loaders read the exported file."""

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from posttrain.data.load import load_records
from posttrain.data.preference import PREFERENCE_KINDS, pairs_of
from posttrain.data.records import PreferencePair, PromptCompletion, Ranking
from posttrain.feedback import assign
from posttrain.feedback.export import export_campaign, export_id, export_rows
from posttrain.files import write_jsonl

from .conftest import add_campaign, login

T0 = dt.datetime(2026, 1, 1)


def judge_all(fb, cid: int, rater: str, answers: list[dict]) -> None:  # noqa: ANN001
    uid = fb.users[rater]
    for i, answer in enumerate(answers):
        lease = assign.next_lease(fb.db, cid, uid, T0)
        assign.submit(fb.db, lease, uid, f"{rater}-{cid}-{i}", answer, T0)


def presented(fb, rater: str) -> list[list[int]]:  # noqa: ANN001
    from posttrain.feedback.db import Lease

    with fb.db() as s:
        return [lease.presentation for lease in s.query(Lease).filter_by(rater_id=fb.users[rater]).order_by(Lease.id)]


def test_pairwise_export_loads_as_preference_pairs_with_the_winner_chosen(fb, tmp_path):
    """Each rater picks display position A; the chosen text is whichever response their order showed first."""
    judge_all(fb, 1, "rater1", [{"choice": "A"}, {"choice": "tie"}, {"choice": "A"}])
    with fb.db() as s:
        rows, counts = export_rows(s, "c1")
    assert counts == {"records": 2, "tie": 1}
    path = write_jsonl(rows, tmp_path / "pairs.jsonl")
    records = load_records(str(path), accept=PREFERENCE_KINDS)
    assert all(isinstance(r, PreferencePair) for r in records) and len(records) == 2
    from posttrain.feedback.db import Item, Lease

    with fb.db() as s:
        by_lease = {lease.item_id: lease.presentation for lease in s.query(Lease)}
        texts = {i.id: [r["text"] for r in i.responses] for i in s.query(Item)}
    judged = [row["feedback"] for row in rows]
    for record, meta in zip(records, judged):
        item_id = meta["item"] + 1
        assert record.chosen[0].content == texts[item_id][by_lease[item_id][0]]


def test_ranking_and_correction_exports_load_for_training(fb, tmp_path):
    ranking = add_campaign(fb.db, "rank", task="ranking", items=[
        {"prompt": [{"role": "user", "content": "q"}], "responses": [{"text": t, "model": t} for t in "xyz"]}])
    judge_all(fb, ranking, "rater1", [{"order": [0, 1, 2]}])
    correction = add_campaign(fb.db, "fix", task="correction", items=[
        {"prompt": [{"role": "user", "content": "2+2?"}], "responses": [{"text": "5", "model": "m"}]}])
    judge_all(fb, correction, "rater1", [{"response": 0, "text": "4"}])
    with fb.db() as s:
        rank_rows, _ = export_rows(s, "rank")
        fix = export_campaign(s, "fix")
    (rank,) = load_records(str(write_jsonl(rank_rows, tmp_path / "r.jsonl")), accept=PREFERENCE_KINDS)
    shown = presented(fb, "rater1")[0]
    assert isinstance(rank, Ranking) and list(rank.order) == shown and len(pairs_of(rank)) == 3
    assert rank_rows[0]["feedback"]["models"] == ["x", "y", "z"]
    (sft,) = load_records(str(write_jsonl(fix.rows, tmp_path / "f.jsonl")), accept=(PromptCompletion,))
    assert sft.prompt[0].content == "2+2?" and sft.completion[0].content == "4"
    (pair,) = load_records(str(write_jsonl(fix.correction_pairs, tmp_path / "p.jsonl")), accept=PREFERENCE_KINDS)
    assert pair.chosen[0].content == "4" and pair.rejected[0].content == "5"
    assert fix.rows[0]["feedback"]["model"] == "m" and fix.rows[0]["feedback"]["rater"] == "rater1"


def test_an_edit_exports_only_the_latest_revision(fb):
    uid = fb.users["rater1"]
    lease = assign.next_lease(fb.db, 1, uid, T0)
    first = assign.submit(fb.db, lease, uid, "e-1", {"choice": "A"}, T0).judgment_id
    assign.edit(fb.db, first, uid, "e-2", {"choice": "both_bad"}, T0)
    with fb.db() as s:
        rows, counts = export_rows(s, "c1")
    assert rows == [] and counts == {"both_bad": 1}


def test_rubric_export_loads_as_rating_records_one_per_response(fb, tmp_path):
    """Scores are stored by response index; the rater typed them in display positions (the order they saw)."""
    from posttrain.data.records import Rating

    scales = [{"name": "helpful", "min": 1, "max": 5}, {"name": "correct", "min": 0, "max": 1}]
    cid = add_campaign(fb.db, "rubric", task="rubric", rubric=scales, items=[
        {"prompt": [{"role": "user", "content": "2+2?"}], "responses": [{"text": "4", "model": "m1"},
                                                                        {"text": "5", "model": "m2"}]}])
    judge_all(fb, cid, "rater1", [{"scores": [{"helpful": 5, "correct": 1}, {"helpful": 2, "correct": 0}]}])
    with fb.db() as s:
        rows, counts = export_rows(s, "rubric")
    assert counts == {"records": 2}
    records = load_records(str(write_jsonl(rows, tmp_path / "ratings.jsonl")), accept=(Rating,))
    shown = presented(fb, "rater1")[0]  # shown[0] is the response the rater saw first (and scored 5, 1)
    by_text = {r.completion[0].content: dict(r.scores) for r in records}
    texts = ["4", "5"]
    assert by_text == {texts[shown[0]]: {"helpful": 5.0, "correct": 1.0},
                       texts[shown[1]]: {"helpful": 2.0, "correct": 0.0}}
    assert all(r.scales == (("helpful", 1.0, 5.0), ("correct", 0.0, 1.0)) for r in records)
    assert all(isinstance(r, Rating) and r.prompt[0].content == "2+2?" for r in records)
    assert sorted(row["feedback"]["response"] for row in rows) == [0, 1]


def test_rows_name_rater_models_campaign_and_a_deterministic_export_id(fb, tmp_path):
    """The id is sha256 over (campaign, sorted judgment ids): the same judgments give the same id, one more
    judgment another; ties go to their own output with both responses and their models, never into the pairs."""
    judge_all(fb, 1, "rater1", [{"choice": "A"}, {"choice": "tie"}])
    with fb.db() as s:
        first, again = export_campaign(s, "c1"), export_campaign(s, "c1")
    assert first.export_id == again.export_id == export_id("c1", [r["feedback"]["judgment"] for r in first.rows]
                                                            + [t["feedback"]["judgment"] for t in first.ties])
    assert first.export_id.startswith("fb-") and len(first.export_id) == 19
    (row,) = first.rows
    meta = row["feedback"]
    assert meta["campaign"] == "c1" and meta["rater"] == "rater1" and meta["export"] == first.export_id
    def model(text: str) -> str:  # pairwise_items: model-a wrote the even sums, model-b the odd ones
        return "model-b" if int(text) % 2 else "model-a"

    assert meta["models"] == {"chosen": model(row["chosen"][0]["content"]),
                              "rejected": model(row["rejected"][0]["content"])}
    (tie,) = first.ties
    assert tie["choice"] == "tie" and tie["feedback"]["models"] == ["model-a", "model-b"]
    texts = [r[0]["content"] for r in tie["responses"]]
    assert [model(t) for t in texts] == ["model-a", "model-b"] and tie["prompt"][0]["content"].startswith("What")
    judge_all(fb, 1, "rater2", [{"choice": "B"}])
    with fb.db() as s:
        later = export_campaign(s, "c1")
    assert later.judgments == 3 and later.export_id != first.export_id
    assert later.state()["last_judgment"] == T0.isoformat() + "Z"


def test_an_admin_excludes_a_rater_from_exports_through_the_api_audited(fb):
    """Only an admin may; the rater's rows leave every export (and its id changes); putting them back restores
    both; each change is in the audit log."""
    from fastapi.testclient import TestClient

    from posttrain.feedback.db import Audit

    from .conftest import login

    judge_all(fb, 1, "rater1", [{"choice": "A"}])
    judge_all(fb, 1, "rater2", [{"choice": "A"}])
    with fb.db() as s:
        both = export_campaign(s, "c1")
    manager, admin = TestClient(fb.app), TestClient(fb.app)
    csrf_m, csrf_a = login(manager, "manager"), login(admin, "admin")
    body = {"rater": "rater2", "reason": "answers at random"}
    assert manager.post("/api/campaigns/1/exclusions", json=body, headers={"X-CSRF-Token": csrf_m}).status_code == 403
    r = admin.post("/api/campaigns/1/exclusions", json=body, headers={"X-CSRF-Token": csrf_a})
    assert r.status_code == 200 and r.json() == ["rater2"]
    with fb.db() as s:
        without = export_campaign(s, "c1")
    assert {row["feedback"]["rater"] for row in without.rows} == {"rater1"} and without.judgments == 1
    assert without.excluded_raters == ["rater2"] and without.export_id != both.export_id
    assert without.excluded_judgments == both.judgments - without.judgments == 1
    assert without.excluded() == "1 judgment of excluded rater rater2 not exported"
    assert sum(without.counts.values()) == without.judgments  # records and what was left out: the judgments exported
    r = admin.post("/api/campaigns/1/exclusions", json={"rater": "rater2", "excluded": False},
                   headers={"X-CSRF-Token": csrf_a})
    assert r.json() == []
    assert admin.post("/api/campaigns/1/exclusions", json={"rater": "ghost"},
                      headers={"X-CSRF-Token": csrf_a}).status_code == 404
    # a real user who judged nothing here (a typo that hits another name): refused, naming the campaign's raters
    r = admin.post("/api/campaigns/1/exclusions", json={"rater": "manager"}, headers={"X-CSRF-Token": csrf_a})
    assert r.status_code == 404 and "'manager' has judged nothing in campaign 'c1' (its raters: rater1, rater2)" \
        in r.json()["detail"]
    with fb.db() as s:
        assert export_campaign(s, "c1").export_id == both.export_id
        actions = [a.action for a in s.query(Audit).filter(Audit.action.like("export.%")).order_by(Audit.id)]
    assert actions == ["export.exclude", "export.include"]


def test_the_manage_page_shows_exclusions_and_admins_change_them_there(fb):
    from fastapi.testclient import TestClient

    from .conftest import login

    judge_all(fb, 1, "rater1", [{"choice": "A"}])
    admin, manager = TestClient(fb.app), TestClient(fb.app)
    csrf, _ = login(admin, "admin"), login(manager, "manager")
    assert "/exclusions" not in manager.get("/manage").text  # the form is for admins
    r = admin.post("/manage/campaigns/1/exclusions", data={"csrf_token": csrf, "rater": "rater1", "excluded": "1",
                                                           "reason": "test"}, follow_redirects=False)
    assert r.status_code == 303
    page = admin.get("/manage").text
    assert '<span class="excluded">rater1</span>' in page and "/manage/campaigns/1/exclusions" in page
    with fb.db() as s:
        assert export_campaign(s, "c1").rows == []
    admin.post("/manage/campaigns/1/exclusions", data={"csrf_token": csrf, "rater": "rater1", "excluded": "0"})
    with fb.db() as s:
        assert len(export_campaign(s, "c1").rows) == 1


def test_the_item_files_own_ids_and_metadata_come_back_with_each_record(fb):
    """Each form of an item file line may carry `id` and `metadata`: kept through import, never part of what a
    rater is shown (the items' prompt and responses), and in every exported record's `feedback`; an item without
    them exports nulls. Lines of one prompt gathered into one item share the id a line gave."""
    import json

    from posttrain.feedback.campaigns import parse_items

    lines = [{"prompt": "p1", "responses": ["a", "b"], "id": "uf-17", "metadata": {"source": "ultrafeedback"}},
             {"prompt": "p2", "chosen": "c", "rejected": "d", "id": 42},
             {"prompt": "p3", "completion": "e", "model": "v1"},
             {"prompt": "p3", "completion": "f", "model": "v2", "id": "row-3", "metadata": {"split": "test"}},
             {"prompt": "p4", "responses": ["g", "h"]}]
    items = parse_items("".join(json.dumps(row) + "\n" for row in lines), "items.jsonl")
    cid = add_campaign(fb.db, "ids", items=items, overlap=2)
    client = TestClient(fb.app)
    csrf = login(client, "rater2")
    shown = []
    for _ in items:  # each item as the task page and the API show it to a rater, skipped to get the next
        shown.append(client.get(client.get(f"/c/{cid}/next", follow_redirects=False).headers["location"]).text)
        task = client.post(f"/api/campaigns/{cid}/next", headers={"X-CSRF-Token": csrf}).json()
        shown.append(json.dumps(task))
        assert client.post(f"/api/leases/{task['lease_id']}/skip", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert all(f">p{n}<" in "".join(shown) for n in range(1, 5))
    assert not any(secret in text for text in shown for secret in ("uf-17", "ultrafeedback", "row-3", "split"))
    judge_all(fb, cid, "rater1", [{"choice": "A"}] * 4)
    with fb.db() as s:
        rows, _ = export_rows(s, "ids")
    by_prompt = {row["prompt"][0]["content"]: row["feedback"] for row in rows}
    assert {p: (m["item_id"], m["metadata"]) for p, m in by_prompt.items()} == {
        "p1": ("uf-17", {"source": "ultrafeedback"}), "p2": ("42", None), "p3": ("row-3", {"split": "test"}),
        "p4": (None, None)}


@pytest.mark.parametrize("lines, message", [
    ([{"prompt": "a", "responses": ["x", "y"], "id": "k"}, {"prompt": "b", "responses": ["x", "y"], "id": "k"}],
     "items.jsonl:2: id: 'k' is also the id of items.jsonl:1 (an id names one item)"),
    ([{"prompt": "a", "completion": "x", "id": "k1"}, {"prompt": "a", "completion": "y", "id": "k2"}],
     "items.jsonl:2: id: differs from that of items.jsonl:1, a line of the same prompt"),
    ([{"prompt": "a", "responses": ["x", "y"], "id": ["k"]}], 'items.jsonl:1: id: expected a string or an integer'),
    ([{"prompt": "a", "responses": ["x", "y"], "id": "k" * 201}], "items.jsonl:1: id: 201 characters, at most 200"),
    ([{"prompt": "a", "responses": ["x", "y"], "metadata": "ultrafeedback"}],
     "items.jsonl:1: metadata: expected a JSON object"),
])
def test_an_item_id_or_metadata_that_cannot_be_kept_is_refused_by_its_line(lines, message):
    import json

    from posttrain.errors import DataError
    from posttrain.feedback.campaigns import parse_items

    with pytest.raises(DataError) as e:
        parse_items("".join(json.dumps(row) + "\n" for row in lines), "items.jsonl")
    assert str(e.value).startswith(message), str(e.value)
