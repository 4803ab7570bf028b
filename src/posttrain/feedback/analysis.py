"""What a campaign's judgments say: rater agreement, position bias, and a leaderboard of the model versions judged.

Reads the current judgments (latest revision of each rater's judgment of an item) and hands plain arrays to
`posttrain.eval.stats`; nothing statistical is computed here. Used by `posttrain feedback stats` and the
manager's page `/manage/campaigns/ID/stats`.

A judgment's *label*, the thing raters agree on or not, in response indices (so two raters who saw the items in
different orders but chose the same response have the same label):
- pairwise: the winning response's index, or "tie" / "both_bad";
- ranking: the response ranked first.
Rubric and correction campaigns have no leaderboard or position bias here, and no nominal label to agree on.

- Agreement: Krippendorff's α (nominal) over the (raters, items) label table; Cohen's κ for every pair of raters
  with at least `MIN_COMMON` items in common.
- Each rater against the others: κ between the rater's labels and the majority label of the other raters on the
  same items (items where the others are split evenly are left out), and α of the campaign without the rater.
  Flagging rule: a rater with at least `MIN_FLAG_ITEMS` compared items is flagged when that κ is more than
  `FLAG_MARGIN` below the median κ of the other raters (a rater who answers at random has κ near 0 while careful
  raters are near their shared accuracy; a margin, not a z-score, because campaigns have few raters).
- Position bias: the share of judgments in which the response shown first won (pairwise: ties and "both bad"
  count as half; ranking: the first-shown response is ranked above the second-shown), with a Wilson interval.
- Leaderboard: Bradley-Terry ratings of the model versions (the `model` of each response), each comparison
  between two responses of an item one game (pairwise: tie and "both bad" are a draw, as Chatbot Arena counts
  them, arXiv:2403.04132; ranking: every pair of the order), with intervals from a bootstrap that resamples
  items with all their judgments (one item's raters judged the same responses) and Arena ranks.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from posttrain.errors import DataError
from posttrain.eval import stats
from posttrain.feedback.assign import current_judgments
from posttrain.feedback.db import Campaign, Item, Judgment, User
from posttrain.feedback.export import excluded_raters, find_campaign

MIN_COMMON = 5
"""Items two raters (or a rater and the others) must share before their κ is reported."""
FLAG_MARGIN = 0.25
"""A rater is flagged when their κ against the others' majority is this far below the other raters' median."""
MIN_LEADERBOARD_ITEMS = 20
"""Judged items below which the leaderboard gets a note: its bootstrap resamples a handful of items, some of them
with a version that wins every game (no finite rating), so its intervals say little (a win rate over 20 items
is already ±22 points)."""
MIN_FLAG_ITEMS = 20
"""Compared items a rater needs before they can be flagged: on fewer, one κ's sampling error (about 0.15 at
κ = 0.8 on 12 items) is as large as the margin, and careful raters would be flagged by chance."""
LABELLED = ("pairwise", "ranking")


@dataclass
class PairKappa:
    rater_a: str
    rater_b: str
    n_common: int
    kappa: float


@dataclass
class RaterAgreement:
    rater: str
    n_judgments: int
    n_compared: int  # items where the others' majority label exists
    kappa_vs_others: float | None  # None: fewer than MIN_COMMON compared items
    alpha_without: float | None  # the campaign's α with this rater left out
    flagged: bool = False


@dataclass
class PositionBias:
    first_wins: float
    ci_low: float
    ci_high: float
    n: int


@dataclass
class LeaderRow:
    model: str
    rating: float
    ci_low: float
    ci_high: float
    rank: int
    games: int
    wins: float  # draws count half


@dataclass
class CampaignStats:
    campaign: str
    task_type: str
    items: int
    judgments: int
    raters: int
    alpha: float | None = None  # None: fewer than 2 raters on any item, or no labels for this task type
    kappas: list[PairKappa] = field(default_factory=list)
    rater_agreement: list[RaterAgreement] = field(default_factory=list)
    position_bias: PositionBias | None = None
    leaderboard: list[LeaderRow] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what could not be computed, and why

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def label_of(task_type: str, payload: dict[str, Any]) -> str:
    """A judgment's nominal label in response indices (see the module docstring)."""
    if task_type == "pairwise":
        return str(payload["winner"]) if payload["winner"] is not None else payload["choice"]
    return str(payload["order"][0])


def first_shown_outcome(task_type: str, payload: dict[str, Any], presentation: list[int]) -> float:
    """1 when the first-shown response won, 0.5 for a draw, 0 when the second-shown won."""
    if task_type == "pairwise":
        return 0.5 if payload["winner"] is None else float(payload["winner"] == presentation[0])
    order = payload["order"]
    return float(order.index(presentation[0]) < order.index(presentation[1]))


def games_of(task_type: str, payload: dict[str, Any]) -> list[tuple[int, int, float]]:
    """(response i, response j, i's score) for each game a judgment holds."""
    if task_type == "pairwise":
        w = payload["winner"]
        return [(0, 1, 0.5 if w is None else float(w == 0))]
    order = payload["order"]
    return [(order[a], order[b], 1.0) for a, b in itertools.combinations(range(len(order)), 2)]


def _alpha(table: np.ndarray) -> float | None:
    """α of a (raters, items) table of label codes (NaN: not judged), None when no item has two labels."""
    pairable = (np.sum(~np.isnan(table), axis=0) >= 2) if table.size else np.array([], dtype=bool)
    if not pairable.any():
        return None
    compared = table[:, pairable]  # the items α reads; a label elsewhere (an item one rater judged) is not in it
    if np.unique(compared[~np.isnan(compared)]).size < 2:
        return 1.0  # every label the same: α's expected disagreement is 0, the package refuses; agreement is total
    return stats.krippendorff_alpha(compared, level="nominal")


def agreement(labels: dict[str, dict[int, str]]) -> tuple[float | None, list[PairKappa], list[RaterAgreement]]:
    """α, pairwise κ and each rater against the others from `labels[rater][item] = label`."""
    raters = sorted(labels)
    items = sorted({i for by_item in labels.values() for i in by_item})
    codes = {lab: n for n, lab in enumerate(sorted({lab for by_item in labels.values() for lab in by_item.values()}))}
    table = np.full((len(raters), len(items)), np.nan)  # (raters, items)
    column = {item: n for n, item in enumerate(items)}
    for r, rater in enumerate(raters):
        for item, lab in labels[rater].items():
            table[r, column[item]] = codes[lab]
    alpha = _alpha(table)

    kappas = []
    for a, b in itertools.combinations(raters, 2):
        common = sorted(set(labels[a]) & set(labels[b]))
        if len(common) >= MIN_COMMON:
            kappas.append(PairKappa(a, b, len(common), stats.cohen_kappa(
                np.array([labels[a][i] for i in common]), np.array([labels[b][i] for i in common]))))

    per_rater = []
    for r, rater in enumerate(raters):
        mine, theirs = [], []
        for item, lab in labels[rater].items():
            votes = Counter(labels[o][item] for o in raters if o != rater and item in labels[o]).most_common(2)
            if votes and (len(votes) == 1 or votes[0][1] > votes[1][1]):
                mine.append(lab)
                theirs.append(votes[0][0])
        kappa = stats.cohen_kappa(np.array(mine), np.array(theirs)) if len(mine) >= MIN_COMMON else None
        per_rater.append(RaterAgreement(rater, len(labels[rater]), len(mine), kappa,
                                        _alpha(np.delete(table, r, axis=0)) if len(raters) > 2 else None))
    flag_outliers(per_rater)
    return alpha, kappas, per_rater


def flag_outliers(per_rater: list[RaterAgreement]) -> None:
    """Set `flagged` on raters with MIN_FLAG_ITEMS compared items or more whose κ vs the others is more than
    FLAG_MARGIN below the other raters' median κ."""
    scored = [r for r in per_rater if r.kappa_vs_others is not None]
    for r in scored:
        others = [o.kappa_vs_others for o in scored if o is not r]
        r.flagged = (r.n_compared >= MIN_FLAG_ITEMS and bool(others)
                     and r.kappa_vs_others < float(np.median(others)) - FLAG_MARGIN)


def leaderboard(games: list[tuple[str, str, float, int]], n_resamples: int = 1000, seed: int = 0) -> list[LeaderRow]:
    """Rows best first from games (model a, model b, a's score, item id), via stats.bradley_terry_bootstrap."""
    models = sorted({g[0] for g in games} | {g[1] for g in games})
    index = {m: n for n, m in enumerate(models)}
    a = np.array([index[g[0]] for g in games])
    b = np.array([index[g[1]] for g in games])
    outcome = np.array([g[2] for g in games])
    ratings = stats.bradley_terry_bootstrap(a, b, outcome, np.array([g[3] for g in games]), len(models),
                                            n_resamples=n_resamples, seed=seed)
    played, won = Counter(), Counter()
    for ma, mb, score, _ in games:
        played[ma] += 1
        played[mb] += 1
        won[ma] += score
        won[mb] += 1.0 - score
    rows = [LeaderRow(m, float(ratings.rating[i]), float(ratings.ci_low[i]), float(ratings.ci_high[i]),
                      int(ratings.rank[i]), played[m], won[m]) for m, i in index.items()]
    return sorted(rows, key=lambda row: -row.rating)


def separation_notes(rows: list[LeaderRow]) -> list[str]:
    """A note for each model version that won, or lost, every game it played: Bradley-Terry then has no finite
    rating for it (the likelihood keeps rising as its rating moves away), so its rating and interval are where
    the fit's small L2 penalty holds them, and every bootstrap resample is as one-sided: a narrow interval that
    measures nothing. Read such a version as above (below) the others by a gap the judgments do not size."""
    notes = []
    for row in rows:
        if row.games and row.wins in (0, row.games):
            how = "won" if row.wins else "lost"
            notes.append(f"leaderboard: {row.model} {how} every one of its {row.games} games, so Bradley-Terry has no "
                         f"finite rating for it: its rating and interval are set by the fit's regularisation, not "
                         f"measured; it is {'above' if row.wins else 'below'} the others by a gap these judgments "
                         "do not size")
    return notes


def campaign_stats(s: Session, campaign_name: str, n_resamples: int = 1000, seed: int = 0,
                   without_excluded: bool = False) -> CampaignStats:
    """Everything above for one campaign; DataError for an unknown campaign or one with no judgments yet. Raters
    excluded from the campaign's exports are counted (a note names them), or with `without_excluded` left out of
    every figure, as the exports leave them out of the training data."""
    campaign: Campaign = find_campaign(s, campaign_name)
    judgments: list[Judgment] = current_judgments(s, campaign.id)
    items = {i.id: i for i in s.query(Item).filter_by(campaign_id=campaign.id)}
    excluded = excluded_raters(s, campaign.id)
    if without_excluded:
        left_out = set(s.scalars(select(User.id).where(User.username.in_(excluded))))
        judgments = [j for j in judgments if j.rater_id not in left_out]
    if not judgments:
        but = f" but those of raters excluded from its exports ({', '.join(excluded)})" if without_excluded and \
            excluded else ""
        raise DataError(f"campaign {campaign_name!r} has no judgments yet{but} ({len(items)} items wait for raters); "
                        "stats need at least one")
    names = {u.id: u.username for u in s.query(User).filter(User.id.in_({j.rater_id for j in judgments}))}
    out = CampaignStats(campaign.name, campaign.task_type, len(items), len(judgments), len(names))
    if excluded:
        out.notes.append(f"raters excluded from exports ({', '.join(excluded)}) are left out of these figures"
                         if without_excluded else
                         f"raters excluded from exports ({', '.join(excluded)}) are counted in these figures; "
                         "`posttrain feedback stats --without-excluded` leaves them out, as the exports do")
    if campaign.task_type not in LABELLED:
        out.notes.append(f"{campaign.task_type} campaigns have no agreement, position bias or leaderboard here "
                         f"(only {' and '.join(LABELLED)})")
        return out

    labels: dict[str, dict[int, str]] = defaultdict(dict)
    first, games, unnamed = [], [], set()
    for j in judgments:
        labels[names[j.rater_id]][j.item_id] = label_of(campaign.task_type, j.payload)
        first.append(first_shown_outcome(campaign.task_type, j.payload, j.presentation))
        models = [r.get("model") for r in items[j.item_id].responses]
        if None in models:  # a response of no named model version: nothing to rank it as
            unnamed.add(j.item_id)
            continue
        games += [(models[x], models[y], score, j.item_id) for x, y, score in games_of(campaign.task_type, j.payload)
                  if models[x] != models[y]]
    if unnamed:
        out.notes.append(f"leaderboard: {len(unnamed)} judged items left out, their responses name no model version "
                         "(give models, chosen_model/rejected_model or model in the item file)")

    out.alpha, out.kappas, out.rater_agreement = agreement(labels)
    if out.alpha is None:
        out.notes.append("agreement needs items judged by two raters or more: " + (
            "no item has two judgments yet" if campaign.overlap >= 2 else
            f"this campaign's overlap is {campaign.overlap} (make the next one with --overlap 2 or more)"))
    rate, low, high = stats.position_bias(np.array(first))
    out.position_bias = PositionBias(rate, low, high, len(first))
    if games:
        out.leaderboard = leaderboard(games, n_resamples, seed)
        out.notes += separation_notes(out.leaderboard)
        if (judged := len({g[3] for g in games})) < MIN_LEADERBOARD_ITEMS:  # a bootstrap over a handful of items
            out.notes.append(f"leaderboard: only {judged} judged items compare model versions (fewer than "
                             f"{MIN_LEADERBOARD_ITEMS}): its intervals rest on a bootstrap over so few items; read it "
                             "as a first look, not a result")
    else:
        out.notes.append("no leaderboard: no judged item compares two named model versions")
    return out


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "-" if x is None else format(x, spec)


def print_stats(result: CampaignStats, console: Any) -> None:
    """The figures as rich tables on `console` (a rich.console.Console); names are escaped (rater-chosen)."""
    from rich.markup import escape
    from rich.table import Table

    console.print(f"[bold]{escape(result.campaign)}[/bold]: {result.task_type}, {result.items} items, "
                  f"{result.judgments} judgments by {result.raters} raters")
    if result.leaderboard:
        table = Table(title="Leaderboard (Bradley-Terry, 95% bootstrap interval over items)")
        for col in ("rank", "model", "rating", "95% CI", "games", "wins"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for row in result.leaderboard:
            table.add_row(str(row.rank), escape(row.model), f"{row.rating:.0f}",
                          f"{row.ci_low:.0f} to {row.ci_high:.0f}", str(row.games), f"{row.wins:g}")
        console.print(table)
    if result.alpha is not None:
        console.print(f"Krippendorff's alpha (nominal): {result.alpha:.3f}")
    if result.rater_agreement:
        table = Table(title=f"Each rater against the others (flagged: kappa more than {FLAG_MARGIN} below the "
                            f"others' median, on {MIN_FLAG_ITEMS}+ items)",
                      caption="compared: the rater's items on which the other raters have a majority (an even split "
                              "is left out); alpha without: the campaign's alpha with this rater left out, so with "
                              "two careful raters and a random one, leaving a careful one out leaves a low alpha")
        for col in ("rater", "judgments", "compared", "kappa vs majority", "alpha without", "flagged"):
            table.add_column(col, justify="left" if col == "rater" else "right")
        for r in result.rater_agreement:
            table.add_row(escape(r.rater), str(r.n_judgments), str(r.n_compared), _fmt(r.kappa_vs_others),
                          _fmt(r.alpha_without), "FLAGGED" if r.flagged else "")
        console.print(table)
    if result.kappas:
        table = Table(title=f"Cohen's kappa between raters (>= {MIN_COMMON} common items)")
        for col in ("rater", "rater", "common items", "kappa"):
            table.add_column(col)
        for k in result.kappas:
            table.add_row(escape(k.rater_a), escape(k.rater_b), str(k.n_common), f"{k.kappa:.2f}")
        console.print(table)
    if result.position_bias is not None:
        p = result.position_bias
        console.print(f"Position bias: the first-shown response won {p.first_wins:.1%} of {p.n} judgments "
                      f"(95% CI {p.ci_low:.1%}-{p.ci_high:.1%}; 50% is unbiased)")
    for note in result.notes:
        console.print(f"note: {escape(note)}")
