"""What changed since an earlier evaluation (`posttrain eval --compare-to`): read its results.json, decide which
figures of the two evaluations pair up (models, tasks, ratings: `compare_plan`), and give each paired figure's
difference with its 95% interval (`compare_results`). Printing is eval/tables.py's `print_changes`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

from posttrain.errors import DataError, UserError
from posttrain.eval import stats

FORMAT = "posttrain-eval/1"  # results.json's "format"


def read_results(path: str) -> dict[str, Any]:
    """An earlier results.json (given itself or its evaluation folder), checked as `check_results` says, or a
    one-line error naming the file and what it is not. Called before any model loads."""
    p = Path(path)
    if p.is_dir():
        if not (p / "results.json").is_file():
            raise UserError(f"--compare-to {path}: a folder without results.json (give an earlier evaluation's "
                            "folder, e.g. runs/sft/eval, or its results.json)")
        p = p / "results.json"
    elif not p.is_file():
        raise UserError(f"--compare-to {path}: no such file or folder (give an earlier evaluation's folder, "
                        "e.g. runs/sft/eval, or its results.json)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"--compare-to {p}: not JSON ({e}); give an earlier evaluation's results.json") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise UserError(f"--compare-to {p}: not a posttrain results.json (its \"format\" is not {FORMAT!r}); "
                        "give the results.json that posttrain eval wrote")
    return check_results(data, f"--compare-to {p}")


LABELS = "labels"  # a field type of RESULTS_ROWS: a list of strings
NUMBER = (int, float)
# What the comparison and the report read of each row of a results.json list: field -> type; a field ending in
# "?" may be absent or null. "models" and "tasks" must be there; the other lists may be absent.
_FIGURE = {"model": str, "task": str, "value": NUMBER, "ci_low": NUMBER, "ci_high": NUMBER}
RESULTS_ROWS: dict[str, dict[str, Any]] = {
    "models": {"label": str, "name": str},
    "tasks": {"name": str, "n": int, "sha256?": str},
    "accuracy": _FIGURE, "pass_at_k": {**_FIGURE, "k": int}, "rm_score": _FIGURE, "length": _FIGURE,
    "win_rates": {"a": str, "b": str, "task": str, "judge": str, "value": NUMBER, "ci_low": NUMBER,
                  "ci_high": NUMBER},
    "ratings": {"model": str, "rating": NUMBER, "ci_low": NUMBER, "ci_high": NUMBER, "judge?": str,
                "rated?": LABELS},
    "finish_reasons": {"model": str, "counts?": dict},
}


def _is(value: Any, kind: Any) -> bool:
    if kind == LABELS:
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    return isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)


def _kind_name(kind: Any) -> str:
    names = {str: "a string", int: "an integer", NUMBER: "a number", dict: "an object", LABELS: "a list of strings"}
    return names[kind]


def check_results(data: dict[str, Any], where: str) -> dict[str, Any]:
    """`data` itself when it has every list, row and field that `compare_plan`, `compare_results` and the report
    read (`RESULTS_ROWS`), else a one-line DataError naming `where` (the file), the field and what it holds:
    a hand-edited or foreign results.json fails here, not in a KeyError after the evaluation has run."""
    from posttrain.data.records import json_type

    def fail(field: str, problem: str) -> DataError:
        return DataError(f"{where}: {field} {problem}; is it a results.json written by posttrain eval?")

    for key, fields in RESULTS_ROWS.items():
        if key not in data and key not in ("models", "tasks"):
            continue
        rows = data.get(key)
        if not isinstance(rows, list):
            got = "is missing" if key not in data else f"expected a list of rows, got {json_type(rows)}"
            raise fail(f'field "{key}"', got)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                raise fail(f"{key}[{i}]", f"expected an object, got {json_type(row)}")
            for name, kind in fields.items():
                optional, name = name.endswith("?"), name.removesuffix("?")
                value = row.get(name)
                if value is None and optional:
                    continue
                if name not in row:
                    raise fail(f'{key}[{i}]: field "{name}"', "is missing")
                if not _is(value, kind):
                    raise fail(f'{key}[{i}]: field "{name}"', f"expected {_kind_name(kind)}, got {json_type(value)}")
    settings = data.get("settings", {})
    if not isinstance(settings, dict):
        raise fail('field "settings"', f"expected an object, got {json_type(settings)}")
    sha = settings.get("reward_model_sha256")
    if sha is not None and not isinstance(sha, str):
        raise fail('settings: field "reward_model_sha256"', f"expected a string, got {json_type(sha)}")
    return data


def _keyed(results: dict[str, Any], swapped: bool = False) -> dict[tuple, tuple[float, float, float]]:
    """(figure, identifying fields...) -> (value, ci_low, ci_high) for every figure with an interval.

    `swapped`: each win rate of A over B is also there as B's over A (unless that pair is there itself), so
    models listed in another order pair. It is the same judgments with each outcome o read as 1 - o: the value
    is 1 - value and the Wilson interval over the prompts' mean outcomes mirrors, [1 - ci_high, 1 - ci_low]."""
    out = {}
    for kind in ("accuracy", "pass_at_k", "rm_score", "length"):
        for f in results.get(kind, []):
            out[(kind, f["model"], f["task"], f.get("k"))] = (f["value"], f["ci_low"], f["ci_high"])
    for f in results.get("win_rates", []):
        out[("win_rate", f"{f['a']} vs {f['b']}", f["task"], f["judge"])] = (f["value"], f["ci_low"], f["ci_high"])
    for f in results.get("win_rates", []) if swapped else []:
        out.setdefault(("win_rate", f"{f['b']} vs {f['a']}", f["task"], f["judge"]),
                       (1.0 - f["value"], 1.0 - f["ci_high"], 1.0 - f["ci_low"]))
    for f in results.get("ratings", []):
        out[("rating", f["model"], None, None)] = (f["rating"], f["ci_low"], f["ci_high"])
    return out


def _renamed(results: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """`results` with model labels replaced by `names` (old label -> new) in every per-model figure."""
    def rename(label: str) -> str:
        return names.get(label, label)

    out = {kind: [{**f, "model": rename(f["model"])} for f in results.get(kind, [])]
           for kind in ("accuracy", "pass_at_k", "rm_score", "length")}
    out["ratings"] = [{**f, "model": rename(f["model"])} for f in results.get("ratings", [])]
    for f in out["ratings"]:
        if "rated" in f:
            f["rated"] = sorted(map(rename, f["rated"]))
    out["win_rates"] = [{**f, "a": rename(f["a"]), "b": rename(f["b"])} for f in results.get("win_rates", [])]
    return out


class ComparePlan(NamedTuple):
    names: dict[str, str]  # old model label -> new label
    tasks: set[str]  # the tasks whose figures are compared
    ratings: bool  # whether the Bradley-Terry ratings are compared
    notes: list[str]  # to print
    reward_model: bool = True  # whether the reward model's figures (scores, its win rates) are compared


def compare_plan(old: dict[str, Any], new: dict[str, Any]) -> ComparePlan:
    """How the two evaluations line up.

    Figures pair by model label and task name. One model in each evaluation is the usual "new version against
    the last one" (`--models runs/dpo/final --compare-to runs/sft/eval/results.json`), so those two pair whatever
    their labels. A task evaluated on other prompts is not compared: another number of them (`n`; a file task's
    sha256 is the whole file's, whatever --limit took) or another sha256. Win rates pair only under the same
    judge (it is in their key; a change is noted), ratings only under the same judge, over the same models and
    the same tasks (`ratings_comparable`)."""
    old_labels, new_labels = [m["label"] for m in old["models"]], [m["label"] for m in new["models"]]
    names, notes = {}, []
    if len(old_labels) == len(new_labels) == 1 and old_labels != new_labels:
        names = {old_labels[0]: new_labels[0]}
        notes.append(f"comparing {new_labels[0]} with the earlier evaluation's {old_labels[0]} (one model in each)")
    else:
        missing = [label for label in new_labels if label not in old_labels]
        if missing:
            notes.append(f"not in the earlier evaluation: {', '.join(missing)} (its models: {', '.join(old_labels)}); "
                         "figures pair by model label: --labels names models as they were named then")
    before, tasks = {t["name"]: t for t in old["tasks"]}, set()
    for t in new["tasks"]:
        then = before.get(t["name"])
        if then is None:
            notes.append(f"task {t['name']}: not in the earlier evaluation")
        elif then["n"] != t["n"]:  # a file's sha256 is the whole file's, whatever --limit took of it
            notes.append(f"task {t['name']}: not compared ({then['n']} prompts then, {t['n']} now: another --limit)")
        elif then.get("sha256") != t.get("sha256"):
            notes.append(f"task {t['name']}: its data changed since the earlier evaluation (another sha256); "
                         "not compared")
        else:
            tasks.add(t["name"])
    same_tasks = {(t["name"], t.get("sha256"), t["n"]) for t in old["tasks"]} == {
        (t["name"], t.get("sha256"), t["n"]) for t in new["tasks"]}
    same_rm, why = same_reward_model(old, new)
    if why:
        notes.append(f"reward-model figures: not compared ({why})")
    judges = [w["judge"] for w in (old.get("win_rates") or [])[:1] + (new.get("win_rates") or [])[:1]]
    if len(judges) == 2 and judges[0] != judges[1]:  # a win rate's key holds its judge: it would just vanish
        notes.append(f"win rates: not compared (judged by {judges[0]} then, by {judges[1]} now)")
    ratings, why = ratings_comparable(_renamed(old, names)["ratings"], new.get("ratings", []), same_tasks, same_rm)
    if why:
        notes.append(f"ratings: not compared ({why})")
    return ComparePlan(names, tasks, ratings, notes, same_rm)


def uses_reward_model(results: dict[str, Any]) -> bool:
    """Whether an evaluation has figures of a reward model: its scores, or win rates it judged."""
    return bool(results.get("rm_score")) or results.get("settings", {}).get("judge") == "reward-model"


def same_reward_model(old: dict[str, Any], new: dict[str, Any]) -> tuple[bool, str | None]:
    """Whether the two evaluations' reward-model figures come from the same reward model (the same weights,
    whatever its folder), and if not (with both having such figures) why not. A reward model's scores have no
    common scale with another's."""
    if not (uses_reward_model(old) and uses_reward_model(new)):
        return False, None
    before = old.get("settings", {}).get("reward_model_sha256")
    after = new.get("settings", {}).get("reward_model_sha256")
    if before is None:
        return False, "the earlier results.json does not identify its reward model"
    if before != after:
        return False, f"another reward model: weights sha256 {before[:12]} then, {str(after)[:12]} now"
    return True, None


def ratings_comparable(old: list[dict], new: list[dict], same_tasks: bool, same_reward_model: bool = True
                       ) -> tuple[bool, str | None]:
    """Whether two sets of Bradley-Terry ratings can be paired, and if not (with both present) why not.

    A rating is only relative: to the judge (another judge rates the same responses otherwise), to the models
    rated together (adding a model moves the others' ratings) and to the prompts. results.json files written
    before ratings recorded their judge and models ("judge", "rated") count as unknown: not compared."""
    if not old or not new:
        return False, None
    if any("judge" not in r or "rated" not in r for r in old):
        return False, "the earlier results.json does not record their judge and models"
    if old[0]["judge"] != new[0]["judge"]:
        return False, f"judged by {old[0]['judge']} then, by {new[0]['judge']} now"
    if old[0]["judge"] == "reward-model" and not same_reward_model:
        return False, "judged by another reward model"
    if old[0]["rated"] != new[0]["rated"]:
        return False, (f"other models rated together: {', '.join(old[0]['rated'])} then, "
                       f"{', '.join(new[0]['rated'])} now")
    if not same_tasks:
        return False, "rated over other tasks or other task data"
    return True, None


def compare_results(old: dict[str, Any], new: dict[str, Any]) -> list[dict[str, Any]]:
    """Each figure present in both (paired as `compare_plan` says): old and new value, the difference with its
    95% interval (`stats.difference_ci`, MOVER from the two figures' own intervals) and whether that interval
    excludes 0 ("outside noise")."""
    plan = compare_plan(old, new)
    before, after = _keyed(_renamed(old, plan.names), swapped=True), _keyed(new)
    changes = []
    for key in after:
        judged_by_rm = key[0] == "rm_score" or (key[0] == "win_rate" and key[3] == "reward-model")
        if key in before and (plan.ratings if key[0] == "rating" else key[2] in plan.tasks) \
                and (plan.reward_model or not judged_by_rm):  # key[2]: the task
            d, low, high = stats.difference_ci(after[key], before[key])
            changes.append({"figure": key[0], "what": " ".join(str(k) for k in key[1:] if k is not None),
                            "old": before[key][0], "new": after[key][0], "diff": d, "ci_low": low, "ci_high": high,
                            "outside_noise": bool(low > 0 or high < 0)})
    return changes


PERCENT_FIGURES = ("accuracy", "pass_at_k", "win_rate")  # fractions, printed as percentages and points


def change_cells(c: dict[str, Any]) -> tuple[str, str]:
    """"old -> new" and "difference [95%]" of one change: fractions as the main tables print them (36.9% -> 40.0%,
    +3.1 pts [-8.2, +14.4]), ratings and lengths in their own units."""
    if c["figure"] in PERCENT_FIGURES:
        return (f"{c['old']:.1%} -> {c['new']:.1%}",
                f"{100 * c['diff']:+.1f} pts [{100 * c['ci_low']:+.1f}, {100 * c['ci_high']:+.1f}]")
    return f"{c['old']:.4g} -> {c['new']:.4g}", f"{c['diff']:+.4g} [{c['ci_low']:+.4g}, {c['ci_high']:+.4g}]"
