"""Campaign statistics (feedback/analysis.py): hand-checked pieces, then simulated raters with known strengths
and noise rates judging through the core functions, then the manager's page and `posttrain feedback stats`."""

import datetime as dt
import json
import math
import random
import re

import numpy as np
import pytest
from fastapi.testclient import TestClient

from posttrain.cli import main
from posttrain.eval.stats import ELO_BASE, ELO_SCALE
from posttrain.feedback import assign
from posttrain.feedback.analysis import (
    FLAG_MARGIN,
    MIN_FLAG_ITEMS,
    RaterAgreement,
    agreement,
    campaign_stats,
    first_shown_outcome,
    flag_outliers,
    games_of,
    label_of,
)
from posttrain.feedback.db import Item, Lease

from .conftest import add_campaign, add_users, login

T0 = dt.datetime(2026, 1, 1)


# ------------------------------------------------------------------------------------------- hand-checked pieces


def test_labels_games_and_first_shown_outcomes_are_in_response_indices():
    """A pairwise judgment shown as [1, 0] whose winner is response 1: the first-shown won (outcome 1), the game
    is (0, 1, score of 0 = 0.0), the label "1". A tie: label "tie", a draw (0.5) both ways. A ranking [2, 0, 1]
    shown as [0, 2, 1]: label "2"; games (2,0), (2,1), (0,1) each won by the first; first-shown 0 is ranked below
    second-shown 2, so outcome 0."""
    won = {"choice": "A", "winner": 1}
    assert label_of("pairwise", won) == "1"
    assert first_shown_outcome("pairwise", won, [1, 0]) == 1.0
    assert first_shown_outcome("pairwise", won, [0, 1]) == 0.0
    assert games_of("pairwise", won) == [(0, 1, 0.0)]
    tie = {"choice": "tie", "winner": None}
    assert label_of("pairwise", tie) == "tie" and first_shown_outcome("pairwise", tie, [0, 1]) == 0.5
    assert games_of("pairwise", tie) == [(0, 1, 0.5)]
    ranked = {"order": [2, 0, 1]}
    assert label_of("ranking", ranked) == "2"
    assert games_of("ranking", ranked) == [(2, 0, 1.0), (2, 1, 1.0), (0, 1, 1.0)]
    assert first_shown_outcome("ranking", ranked, [0, 2, 1]) == 0.0


def test_the_flag_rule_is_a_margin_below_the_others_median():
    """κ = 0.8, 0.7, 0.75, 0.4 (a-d, 20 items each) and 0.1 (e, 19 items); f has too few items for a κ. The
    other scored raters' medians for a-d: median(.7,.75,.4,.1) = 0.55, median(.8,.75,.4,.1) = 0.575, 0.55, and
    median(.8,.7,.75,.1) = 0.725. d: 0.4 < 0.725 - 0.25 = 0.475, flagged; b: 0.7 >= 0.575 - 0.25, not. e is far
    below (0.1 < 0.725 - 0.25) but has 19 compared items, fewer than MIN_FLAG_ITEMS, so it is not flagged."""
    raters = [RaterAgreement(name, 20, 20, k, None) for name, k in zip("abcd", (0.8, 0.7, 0.75, 0.4))]
    raters += [RaterAgreement("e", 19, 19, 0.1, None), RaterAgreement("f", 2, 2, None, None)]
    flag_outliers(raters)
    assert [r.flagged for r in raters] == [False, False, False, True, False, False]
    assert FLAG_MARGIN == 0.25 and MIN_FLAG_ITEMS == 20


def test_agreement_of_two_raters_by_hand():
    """Two raters, 6 items, labels x: 0 0 1 1 0 1, y: 0 0 1 1 1 0. p_o = 4/6; each says 0 half the time, so
    p_e = 0.5 and κ = (4/6 - 0.5) / 0.5 = 1/3. Nominal α (Krippendorff 2004, coincidence matrix): 12 values, six
    0s and six 1s; the two split items give o_01 = o_10 = 2, so D_o = 4/12 = 1/3 and D_e = 2·6·6/(12·11) = 6/11,
    α = 1 - (1/3)/(6/11) = 7/18."""
    x = dict(enumerate("001101"))
    y = dict(enumerate("001110"))
    alpha, kappas, per_rater = agreement({"x": x, "y": y})
    assert kappas[0].n_common == 6 and kappas[0].kappa == pytest.approx(1 / 3)
    assert alpha == pytest.approx(7 / 18)
    assert [r.kappa_vs_others for r in per_rater] == [pytest.approx(1 / 3)] * 2  # the other's majority is the other


# ------------------------------------------------------------------------------------------- simulated raters


def judge_campaign(fb, campaign_id: int, rater_ids: list[int], choose) -> None:  # noqa: ANN001
    """Each rater takes leases until none is left and answers `choose(rater index, item responses,
    presentation, rng)`: the response index they prefer, or a choice string ("tie")."""
    rng = np.random.default_rng(1)
    for r, uid in enumerate(rater_ids):
        picks = random.Random(r)  # which open item a rater gets is random: seeded, so the judgments are fixed
        while (lease_id := assign.next_lease(fb.db, campaign_id, uid, T0, picks)) is not None:
            with fb.db() as s:
                lease = s.get(Lease, lease_id)
                responses, shown = s.get(Item, lease.item_id).responses, lease.presentation
            picked = choose(r, responses, shown, rng)
            answer = {"choice": "AB"[shown.index(picked)] if isinstance(picked, int) else picked}
            assign.submit(fb.db, lease_id, uid, f"{uid}-{lease_id}", answer, T0)


def test_the_leaderboard_orders_four_versions_and_its_intervals_cover_their_strengths(fb):
    """Four versions with log-strengths θ = -1.2, -0.4, 0.4, 1.2 (ratings 1000 + 173.7·θ: 792, 931, 1069, 1208);
    240 items, 40 per pair of versions, each judged by 3 raters who prefer version i over j with probability
    σ(θ_i - θ_j). Each 95% interval covers its true rating (fixed seed), the order is right, and the gaps of
    139 points (≈ 5 standard errors with ~120 games per pair) give four distinct Arena ranks."""
    theta = {"v1": -1.2, "v2": -0.4, "v3": 0.4, "v4": 1.2}
    pairs = [(a, b) for i, a in enumerate(theta) for b in list(theta)[i + 1:]]
    items = [{"prompt": [{"role": "user", "content": f"q{n}"}],
              "responses": [{"text": f"{a} says {n}", "model": a}, {"text": f"{b} says {n}", "model": b}]}
             for n in range(240) for a, b in [pairs[n % len(pairs)]]]
    cid = add_campaign(fb.db, "four", items=items, overlap=3)
    raters = list(add_users(fb.db, {f"s{i}": "rater" for i in range(3)}).values())

    def choose(r, responses, shown, rng):  # noqa: ANN001, ANN202
        d = theta[responses[0]["model"]] - theta[responses[1]["model"]]
        return 0 if rng.random() < 1 / (1 + math.exp(-d)) else 1

    judge_campaign(fb, cid, raters, choose)
    with fb.db() as s:
        result = campaign_stats(s, "four", n_resamples=500)
    board = result.leaderboard
    assert [row.model for row in board] == ["v4", "v3", "v2", "v1"]
    assert [row.rank for row in board] == [1, 2, 3, 4]
    for row in board:
        true = ELO_SCALE * theta[row.model] + ELO_BASE  # θ is centred already, as the fit centres it
        assert row.ci_low <= true <= row.ci_high, (row, true)
        assert row.games == 360  # 3 versions × 40 items × 3 raters
    assert result.judgments == 720 and result.raters == 3


def noisy_rater_campaign(fb, name: str, noise: list[float], n_items: int = 100) -> None:  # noqa: ANN001
    """Items whose right answer is response 0 or 1 at random; rater r answers at random with probability
    noise[r] (A or B, fair coin), and otherwise picks the right one."""
    rng = np.random.default_rng(len(name))
    right = rng.integers(0, 2, n_items)
    items = [{"prompt": [{"role": "user", "content": f"{name} {n}"}],
              "responses": [{"text": f"{n}: {'good' if right[n] == i else 'bad'}", "model": "m0" if i == 0 else "m1"}
                            for i in range(2)]} for n in range(n_items)]
    cid = add_campaign(fb.db, name, items=items, overlap=len(noise))
    raters = list(add_users(fb.db, {f"{name}-r{i}": "rater" for i in range(len(noise))}).values())

    def choose(r, responses, shown, rng):  # noqa: ANN001, ANN202
        if rng.random() < noise[r]:
            return int(rng.integers(0, 2))
        return next(i for i, resp in enumerate(responses) if resp["text"].endswith("good"))

    judge_campaign(fb, cid, raters, choose)


def test_alpha_falls_as_noise_rises(fb):
    """A rater with noise ε is right with probability 1 - ε/2; two such raters agree with probability
    p_o = (1 - ε/2)² + (ε/2)², chance agreement is 1/2 (labels balanced), so α ≈ κ ≈ 2 p_o - 1 = (1 - ε)²:
    0.81, 0.49 and 0.16 for ε = 0.1, 0.3, 0.6 (4 raters, 100 items each)."""
    alphas = []
    for eps in (0.1, 0.3, 0.6):
        noisy_rater_campaign(fb, f"noise{eps}", [eps] * 4)
        with fb.db() as s:
            alphas.append(campaign_stats(s, f"noise{eps}", n_resamples=50).alpha)
        assert alphas[-1] == pytest.approx((1 - eps) ** 2, abs=0.12), (eps, alphas[-1])
    assert alphas[0] > alphas[1] > alphas[2]


def test_the_rater_who_answers_at_random_is_the_one_flagged(fb):
    """Four raters at noise 0.1 (κ against the others' majority ≈ 0.8) and one at noise 1 (κ ≈ 0): only the
    random one is more than FLAG_MARGIN below the others' median; leaving them out raises α."""
    noisy_rater_campaign(fb, "flag", [0.1, 0.1, 1.0, 0.1, 0.1])
    with fb.db() as s:
        result = campaign_stats(s, "flag", n_resamples=50)
    flagged = [r.rater for r in result.rater_agreement if r.flagged]
    assert flagged == ["flag-r2"]
    random_one = next(r for r in result.rater_agreement if r.rater == "flag-r2")
    assert random_one.kappa_vs_others < 0.3 and random_one.alpha_without > result.alpha
    assert len(result.kappas) == 10  # every pair of 5 raters shares all 100 items
    bias = result.position_bias
    assert bias.n == 500 and bias.ci_low < 0.5 < bias.ci_high  # the orders are shuffled; no rater favours A


# ------------------------------------------------------------------------------------------- page and command


def test_the_stats_page_shows_the_figures_escaped(fb):
    """The manager's page for a campaign with an HTML-looking model name shows it as text and states the flagging
    rule with the code's MIN_FLAG_ITEMS; a campaign with no judgments says so instead of failing."""
    items = [{"prompt": [{"role": "user", "content": f"q{n}"}],
              "responses": [{"text": f"a{n}", "model": "<b>v1</b>"}, {"text": f"b{n}", "model": "v2"}]}
             for n in range(12)]
    cid = add_campaign(fb.db, "page", items=items, overlap=2)
    judge_campaign(fb, cid, [fb.users["rater1"], fb.users["rater2"]], lambda r, resp, shown, rng: 1)
    c = TestClient(fb.app)
    login(c, "manager")
    page = c.get(f"/manage/campaigns/{cid}/stats")
    assert page.status_code == 200
    assert "&lt;b&gt;v1&lt;/b&gt;" in page.text and "<b>v1</b>" not in page.text
    assert re.search(r"Krippendorff.{0,80}1\.000", page.text, re.S)
    assert f"at least {MIN_FLAG_ITEMS} items compared" in page.text  # the rule flag_outliers applies, not 5
    empty = c.get("/manage/campaigns/1/stats")
    assert empty.status_code == 200 and "no judgments yet" in empty.text
    assert c.get("/manage/campaigns/999/stats").status_code == 404
    assert f'href="/manage/campaigns/{cid}/stats"' in c.get("/manage").text


def test_stats_command_prints_tables_and_writes_json(fb, tmp_path, capsys):
    noisy_rater_campaign(fb, "cli", [0.1, 0.1, 0.1])
    out = tmp_path / "stats.json"
    assert main(["feedback", "stats", "--db", fb.url, "--campaign", "cli", "--json", str(out),
                 "--resamples", "50"]) == 0
    printed = capsys.readouterr().out
    assert "Leaderboard" in printed and "Krippendorff" in printed and "Position bias" in printed
    figures = json.loads(out.read_text())
    assert figures["campaign"] == "cli" and figures["judgments"] == 300
    assert [row["model"] for row in figures["leaderboard"]] in (["m0", "m1"], ["m1", "m0"])
    assert 0.5 < figures["alpha"] <= 1.0


def test_stats_bad_input_is_one_line(fb, tmp_path, capsys):
    """Unknown campaign, a campaign with no judgments, a database that cannot be reached: exit 2, one line."""
    cases = [
        (["--db", fb.url, "--campaign", "nope"], "no campaign named 'nope' (campaigns: c1)"),
        (["--db", fb.url, "--campaign", "c1"], "campaign 'c1' has no judgments yet"),
        (["--db", "postgresql://nobody@127.0.0.1:1/none", "--campaign", "c1"],
         "postgresql://nobody@127.0.0.1:1/none: cannot open the database"),
    ]
    for args, expect in cases:
        assert main(["feedback", "stats", *args]) == 2, args
        err = capsys.readouterr().err.strip()
        assert expect in err and "\n" not in err and "Traceback" not in err, err


def test_items_without_model_names_stay_out_of_the_leaderboard(fb, tmp_path, capsys):
    """A chosen/rejected line with no chosen_model/rejected_model names no model version: its responses keep model
    None, the import says so, raters judge it and it is exported, but "chosen" and "rejected" never rank as if
    they were models; the named items still make the leaderboard."""
    from posttrain.feedback.source import read_campaign

    lines = [{"prompt": f"q{i}", "responses": [f"a{i}", f"b{i}"], "models": ["v1", "v2"]} for i in range(3)]
    lines += [{"prompt": "Write a haiku", "chosen": "old pond", "rejected": "frog"},
              {"prompt": "Name a colour", "chosen": "red", "rejected": "blue", "chosen_model": "v1",
               "rejected_model": "v2"}]
    items = tmp_path / "items.jsonl"
    items.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert main(["feedback", "import", "--db", fb.url, "--campaign", "mixed", "--items", str(items)]) == 0
    assert "note: 1 of 5 items name no model for a response" in capsys.readouterr().err
    with fb.db() as s:
        cid = s.query(Item).filter_by(prompt=[{"role": "user", "content": "q0"}]).one().campaign_id
    rater = fb.users["rater1"]
    while (lease := assign.next_lease(fb.db, cid, rater, T0)) is not None:
        assign.submit(fb.db, lease, rater, f"vote-{lease}", {"choice": "A"}, T0)
    with fb.db() as s:
        result = campaign_stats(s, "mixed", 50, 0)
    assert sorted(row.model for row in result.leaderboard) == ["v1", "v2"]
    assert any(n.startswith("leaderboard: 1 judged items left out, their responses name no model") for n in
               result.notes), result.notes
    # four items: the leaderboard says it is a first look; one rater: the note says why there is no agreement
    assert "leaderboard: only 4 judged items compare model versions (fewer than 20)" in " ".join(result.notes)
    overlap = next(n for n in result.notes if n.startswith("agreement needs"))
    assert "this campaign's overlap is 1 (make the next one with --overlap 2 or more)" in overlap  # import's default
    rows = read_campaign(fb.url, "mixed").rows
    assert len(rows) == 5  # every judgment is exported, the unnamed one with models null
    haiku = [r for r in rows if r["prompt"][0]["content"] == "Write a haiku"]
    assert haiku and haiku[0]["feedback"]["models"] == {"chosen": None, "rejected": None}


def test_raters_who_agree_on_one_answer_get_full_agreement_not_a_crash():
    """All compared items got one label; another label only on an item one rater judged alone (not compared): the
    package refuses a one-value domain, so α is 1 there; `feedback stats` crashed on it (a newcomer's first campaign)."""
    from posttrain.feedback.analysis import agreement

    labels = {"ann": {i: "A" for i in range(8)}, "ben": {i: "A" for i in range(8)},
              "cho": {**{i: "A" for i in range(7)}, 8: "tie"}}
    alpha, _, per_rater = agreement(labels)
    assert alpha == 1.0 and [r.alpha_without for r in per_rater] == [1.0, 1.0, 1.0]


def test_a_version_that_won_every_game_is_noted_as_unmeasured():
    """10-0: the Bradley-Terry rating has no finite value, and a narrow interval would read as precision."""
    from posttrain.feedback.analysis import leaderboard, separation_notes

    rows = leaderboard([("v1", "v2", 1.0, i) for i in range(10)], n_resamples=50)
    notes = separation_notes(rows)
    assert len(notes) == 2 and "v1 won every one of its 10 games" in notes[0] and "v2 lost every one" in notes[1]
    mixed = leaderboard([("v1", "v2", 1.0, i) for i in range(9)] + [("v1", "v2", 0.0, 9)], n_resamples=50)
    assert separation_notes(mixed) == []


def test_stats_name_the_raters_excluded_from_exports_and_can_leave_them_out(fb):
    """An admin excluded the random rater from the exports: the figures count them unless asked not to (a note says
    which), and without them α is the campaign's α without that rater."""
    from posttrain.feedback.db import Campaign
    from posttrain.feedback.export import set_exclusion

    noisy_rater_campaign(fb, "excl", [0.1, 0.1, 1.0, 0.1, 0.1])
    with fb.db() as s, s.begin():
        set_exclusion(s, s.query(Campaign).filter_by(name="excl").one(), "excl-r2", True, "random", None)
    with fb.db() as s:
        counted = campaign_stats(s, "excl", n_resamples=50)
        cleaned = campaign_stats(s, "excl", n_resamples=50, without_excluded=True)
    assert counted.judgments == 500 and cleaned.judgments == 400 and cleaned.raters == 4
    assert any("(excl-r2) are counted in these figures; `posttrain feedback stats --without-excluded`" in n for n in counted.notes)
    assert any("(excl-r2) are left out of these figures" in n for n in cleaned.notes)
    assert "excl-r2" not in {r.rater for r in cleaned.rater_agreement}
    without_r2 = next(r for r in counted.rater_agreement if r.rater == "excl-r2").alpha_without
    assert cleaned.alpha == pytest.approx(without_r2)


def test_with_overlap_two_and_one_rater_so_far_the_note_says_no_item_has_two_judgments_yet(fb):
    """The fixture's campaign has overlap 2: with one rater's judgments only, 'overlap >= 2' would read as a wrong
    setting (a trial's finding); the note says that no item has its second judgment yet."""
    rater = fb.users["rater1"]
    while (lease := assign.next_lease(fb.db, 1, rater, T0)) is not None:
        assign.submit(fb.db, lease, rater, f"one-{lease}", {"choice": "A"}, T0)
    with fb.db() as s:
        result = campaign_stats(s, "c1", 50, 0)
    assert "agreement needs items judged by two raters or more: no item has two judgments yet" in result.notes
