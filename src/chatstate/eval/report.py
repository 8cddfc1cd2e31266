"""Aggregate the evaluation's records; print the table; write the JSON and the chart.

Recall is counted over (question, evidence turn) pairs. Token figures are means per
question. "Fewer tokens" compares the full history with what chatstate sent, over the
conversations of more than 50 turns (a turn: a user message and its replies).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO, cast

from chatstate.eval.datasets import LOCOMO_CATEGORIES
from chatstate.model import JSONValue

__all__ = ["STRATEGIES", "summarise", "write_chart", "write_json", "write_table"]

STRATEGIES = ("chatstate", "front_truncation", "sliding_window")
LABELS = {
    "chatstate": "chatstate",
    "front_truncation": "front truncation",
    "sliding_window": "sliding window",
}
ROUTES = ("verbatim", "retrieved", "summary")
Record = dict[str, JSONValue]
Summary = dict[str, JSONValue]


def _found(run: dict[str, JSONValue], strategy: str) -> int:
    if strategy == "chatstate":
        routes = cast(list[str], run["routes"])
        return sum(r != "missing" for r in routes)
    return cast(int, run["found"])


def summarise(records: Sequence[Record], price_per_mtok: float) -> dict[str, Summary]:
    """Per data set: recall and mean tokens per strategy and budget, and the details."""
    by_set: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        by_set[cast(str, record["dataset"])].append(record)
    return {name: _summarise_set(rows, price_per_mtok) for name, rows in by_set.items()}


def _summarise_set(rows: list[Record], price: float) -> Summary:
    budgets = [cast(int, run["budget"]) for run in cast(list[Record], rows[0]["budgets"])]
    pairs = sum(len(cast(list[str], r["evidence"])) for r in rows)
    full = sum(cast(int, r["full_tokens"]) for r in rows) / len(rows)
    strategies: dict[str, JSONValue] = {}
    for strategy in STRATEGIES:
        per: dict[str, JSONValue] = {}
        for i, budget in enumerate(budgets):
            runs = [cast(list[dict[str, JSONValue]], r["budgets"])[i][strategy] for r in rows]
            found = sum(_found(cast(dict[str, JSONValue], run), strategy) for run in runs)
            tokens = sum(cast(int, cast(Record, run)["tokens"]) for run in runs) / len(runs)
            per[str(budget)] = {"recall": round(found / pairs, 4), "tokens": round(tokens, 1)}
        strategies[strategy] = per
    return {
        "conversations": len({r["conversation"] for r in rows}),
        "questions": len(rows),
        "evidence_turns": pairs,
        "budgets": cast(list[JSONValue], budgets),
        "full_history": {
            "recall": 1.0,
            "tokens": round(full, 1),
            "cost_per_question_usd": round(full * price / 1e6, 5),
        },
        "strategies": strategies,
        "chatstate_routes": _routes(rows, budgets),
        "chatstate_by_category": _by_category(rows, budgets),
        "fewer_tokens_over_50_turns": _ratios(rows, budgets),
    }


def _chatstate(row: Record, i: int) -> dict[str, JSONValue]:
    return cast(dict[str, JSONValue], cast(list[Record], row["budgets"])[i]["chatstate"])


def _routes(rows: list[Record], budgets: list[int]) -> dict[str, JSONValue]:
    out: dict[str, JSONValue] = {}
    for i, budget in enumerate(budgets):
        counts = Counter(r for row in rows for r in cast(list[str], _chatstate(row, i)["routes"]))
        total = sum(counts.values())
        out[str(budget)] = {k: round(counts[k] / total, 4) for k in (*ROUTES, "missing")}
    return out


def _by_category(rows: list[Record], budgets: list[int]) -> dict[str, JSONValue]:
    out: dict[str, JSONValue] = {}
    for category in sorted({cast(str, r["category"]) for r in rows}):
        mine = [r for r in rows if r["category"] == category]
        pairs = sum(len(cast(list[str], r["evidence"])) for r in mine)
        per: dict[str, JSONValue] = {"questions": len(mine)}
        for i, budget in enumerate(budgets):
            found = sum(_found(_chatstate(r, i), "chatstate") for r in mine)
            per[str(budget)] = round(found / pairs, 4)
        out[category] = per
    return out


def _ratios(rows: list[Record], budgets: list[int]) -> dict[str, JSONValue] | None:
    long = [r for r in rows if cast(int, r["turns"]) > 50]
    if not long:
        return None
    full = sum(cast(int, r["full_tokens"]) for r in long)
    out: dict[str, JSONValue] = {}
    for i, budget in enumerate(budgets):
        sent = sum(cast(int, _chatstate(r, i)["tokens"]) for r in long)
        out[str(budget)] = round(full / sent, 2)
    return out


def write_table(summary: dict[str, Summary], out: TextIO, *, model: str = "gpt-4o") -> None:
    for name, s in summary.items():
        budgets = cast(list[int], s["budgets"])
        full = cast(dict[str, float], s["full_history"])
        out.write(
            f"\n{name}: {s['conversations']} conversations, {s['questions']:,} questions, "
            f"{s['evidence_turns']:,} evidence turns; full history {full['tokens']:,.0f} "
            f"tokens a question (${full['cost_per_question_usd']:.4f} of {model} input)\n"
        )
        head = "".join(f"{b:>9,}" for b in budgets)
        strategies = cast(dict[str, dict[str, dict[str, float]]], s["strategies"])
        out.write(f"{'evidence recall at budget':<28}{head}\n")
        for strategy in STRATEGIES:
            cells = "".join(f"{strategies[strategy][str(b)]['recall']:>9.3f}" for b in budgets)
            out.write(f"  {LABELS[strategy]:<26}{cells}\n")
        out.write(f"  {'full history':<26}" + "".join(f"{1.0:>9.3f}" for _ in budgets) + "\n")
        out.write(f"{'mean tokens sent':<28}{head}\n")
        for strategy in STRATEGIES:
            cells = "".join(f"{strategies[strategy][str(b)]['tokens']:>9,.0f}" for b in budgets)
            out.write(f"  {LABELS[strategy]:<26}{cells}\n")
        out.write(f"  {'full history':<26}" + f"{full['tokens']:>9,.0f}" * len(budgets) + "\n")
        routes = cast(dict[str, dict[str, float]], s["chatstate_routes"])
        out.write(f"{'chatstate: evidence found by':<28}{head}\n")
        for route in ROUTES:
            cells = "".join(f"{routes[str(b)][route]:>9.3f}" for b in budgets)
            out.write(f"  {route:<26}{cells}\n")
        out.write(f"{'chatstate recall by category':<28}{head}\n")
        categories = cast(dict[str, dict[str, float]], s["chatstate_by_category"])
        for category, per in categories.items():
            label = (
                f"{category} {LOCOMO_CATEGORIES.get(category, '')}".strip()
                if (name == "locomo")
                else category
            )
            label = f"{label} ({per['questions']:.0f} q)"
            out.write(f"  {label:<26}" + "".join(f"{per[str(b)]:>9.3f}" for b in budgets) + "\n")
        ratios = cast(dict[str, float] | None, s["fewer_tokens_over_50_turns"])
        if ratios:
            cells = "".join(f"{ratios[str(b)]:>8.1f}x" for b in budgets)
            out.write(f"{'full / chatstate tokens':<28}{cells}   (conversations > 50 turns)\n")


def write_json(
    path: Path,
    options: dict[str, JSONValue],
    summary: dict[str, Summary],
    records: Sequence[Record],
) -> None:
    document = {"options": options, "summary": summary, "records": list(records)}
    path.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")


def write_chart(path: Path, summary: dict[str, Summary]) -> str | None:
    """Recall against budget, one line per strategy, one panel per data set. Returns why
    it was not drawn (matplotlib absent), else ``None``."""
    try:
        import matplotlib as mpl  # noqa: PLC0415 - optional: the [eval] extra

        mpl.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        return "no chart: matplotlib is not installed (pip install 'chatstate[eval]')"
    names = list(summary)
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        s = summary[name]
        budgets = cast(list[int], s["budgets"])
        strategies = cast(dict[str, dict[str, dict[str, float]]], s["strategies"])
        for strategy, style in zip(STRATEGIES, ("o-", "s--", "^:"), strict=True):
            recall = [strategies[strategy][str(b)]["recall"] for b in budgets]
            ax.plot(budgets, recall, style, label=LABELS[strategy])
        full = cast(dict[str, float], s["full_history"])["tokens"]
        ax.axhline(1.0, color="grey", linewidth=1, label=f"full history ({full:,.0f} tokens)")
        ax.set_xscale("log")
        ax.set_xticks(budgets, [f"{b:,}" for b in budgets])
        ax.minorticks_off()
        ax.set_ylim(0, 1.05)
        ax.set_xlabel("token budget")
        ax.set_ylabel("evidence recall")
        ax.set_title(f"{name} ({s['questions']:,} questions)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
