"""`posttrain eval`'s printed tables: figures with their intervals per model and task, win rates (with a note where
mostly-tied judgments make the interval wide), Bradley-Terry ratings, and what changed against `--compare-to`.
They print what `eval.suite.run_suite` returns; nothing here computes a figure."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from posttrain.eval.compare import change_cells


def table_console():
    """A console for tables: a terminal's own width; elsewhere (a log, CI, `| tee`, `> file`) wide enough that no
    cell is cut, where rich would otherwise fall back to 80 columns."""
    from rich.console import Console

    console = Console()
    return console if console.is_terminal else Console(width=100_000)


def new_table(title: str, columns: Iterable[str]):
    """A table whose cells fold onto more lines when narrowed, never cut with an ellipsis: two task names that share
    a prefix stay apart. Cells are rich markup: pass names through `rich.markup.escape`."""
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, overflow="fold")
    return table


def print_results(results: dict[str, Any]) -> None:
    from rich.markup import escape

    console = table_console()

    def cell(f: dict | None, fmt: str = "{:.1%}") -> str:
        return "" if f is None else f"{fmt.format(f['value'])} [{fmt.format(f['ci_low'])}, {fmt.format(f['ci_high'])}]"

    ks = sorted({f["k"] for f in results["pass_at_k"]})
    has_rm = bool(results["rm_score"])
    table = new_table(f"posttrain eval -> {escape(results['output_dir'])}",
                      ["model", "task", "accuracy", *[f"pass@{k}" for k in ks], *(["rm score"] if has_rm else []),
                       "length (tokens)", "finish"])
    find = {(kind, f["model"], f["task"], f.get("k")): f for kind in ("accuracy", "pass_at_k", "rm_score", "length")
            for f in results[kind]}
    for m in results["models"]:
        for t in results["tasks"]:
            key = (m["label"], t["name"])
            reasons = next(f["counts"] for f in results["finish_reasons"] if (f["model"], f["task"]) == key)
            rm = [cell(find.get(("rm_score", *key, None)), "{:.3f}")] if has_rm else []
            table.add_row(escape(m["label"]), escape(t["name"]), cell(find.get(("accuracy", *key, None))),
                          *[cell(find.get(("pass_at_k", *key, k))) for k in ks], *rm,
                          cell(find.get(("length", *key, None)), "{:.1f}"),
                          " ".join(f"{r}:{c}" for r, c in sorted(reasons.items())))
    console.print(table)
    if results["win_rates"]:
        # a judge that sees no order (a verifier, a reward model) has no position figures: no columns for them
        positions = ("a_first_win_rate", "b_first_win_rate")
        by_position = any(f.get(k) is not None for f in results["win_rates"] for k in positions)
        wins = new_table(f"win rates (judge: {escape(results['settings']['judge'])}; ties count half)",
                         ("A", "B", "task", "A wins", "W/T/L", *(("A shown first", "B shown first") if by_position else ())))
        for f in results["win_rates"]:
            first = [("" if f.get(k) is None else f"{f[k]:.1%}") for k in positions] if by_position else []
            wins.add_row(escape(f["a"]), escape(f["b"]), escape(f["task"]), cell(f), f"{f['wins']}/{f['ties']}/{f['losses']}", *first)
        console.print(wins)
        for line in tie_notes(results["win_rates"]):
            console.print(escape(line))
    if results["ratings"]:
        ratings = new_table("Bradley-Terry ratings (95% bootstrap over prompts; ranks tie where intervals overlap)",
                            ("rank", "model", "rating", "95% interval"))
        for r in results["ratings"]:
            ratings.add_row(str(r["rank"]), escape(r["model"]), f"{r['rating']:.0f}", f"[{r['ci_low']:.0f}, {r['ci_high']:.0f}]")
        console.print(ratings)
    if "changes" in results:
        print_changes(console, results["changes"], results.get("change_notes", []))


def tie_notes(win_rates: list[dict[str, Any]]) -> list[str]:
    """A note for each win rate whose interval holds 50% while most of its judgments are ties and the decisive ones
    lean one way: the Wilson interval counts a tie as a coin flip, so it is much wider there than the outcomes'
    spread (winrate.py), and a version that never loses can look indistinguishable."""
    notes = []
    for f in win_rates:
        n = f["wins"] + f["ties"] + f["losses"]
        if 2 * f["ties"] > n and f["wins"] != f["losses"] and f["ci_low"] <= 0.5 <= f["ci_high"]:
            notes.append(f"note: {f['a']} vs {f['b']} on {f['task']}: {f['ties']} of {n} judgments are ties and the "
                         f"others went {f['wins']}-{f['losses']}; the interval counts a tie as a coin flip, so it is "
                         "wide here; the ratings below (a bootstrap over prompts) are the sharper test "
                         "(docs/evaluation.md)")
    return notes


def print_changes(console, changes: list[dict[str, Any]], notes: list[str]) -> None:
    from rich.markup import escape

    for note in notes:
        console.print(f"--compare-to: {escape(note)}")
    if not changes:
        console.print("--compare-to: no figure of this evaluation is in the earlier one, so nothing to compare")
        return

    table = new_table("against --compare-to: old -> new, the difference with its 95% interval (MOVER)",
                      ("figure", "what", "old -> new", "difference [95%]", ""))
    for c in changes:
        table.add_row(c["figure"], escape(c["what"]), *change_cells(c),
                      "outside noise" if c["outside_noise"] else "within noise")
    console.print(table)
