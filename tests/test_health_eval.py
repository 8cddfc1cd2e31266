"""The detectors' evaluation: scoring arithmetic, case validation, and the shipped set.

The last test runs the labelled set in ``evals/detectors/`` and holds the offline
detectors to the issue's bar for re-ask and contradiction (precision at least 0.8, recall
at least 0.7) on the tuned (dev) cases and on all cases, and to their measured floors on
the held-out (test) cases.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chatstate.errors import ValidationError
from chatstate.health.evaluate import evaluate, load_cases, parse_case, render_table

CASES = Path(__file__).parents[1] / "evals/detectors/cases.jsonl"


def raw(labels: list[dict[str, object]], *turns: tuple[str, str]) -> dict[str, object]:
    return {
        "id": "c",
        "events": [{"role": r, "content": t} for r, t in turns],
        "labels": labels,
    }


ASKED = (
    ("user", "My account number is 48213."),
    ("assistant", "What is your account number?"),
)


def test_scoring() -> None:
    hit = parse_case(raw([{"detector": "re_ask", "seq": 2}], *ASKED))
    missed = parse_case(raw([{"detector": "contradiction", "seq": 2}], *ASKED))
    clean = parse_case(raw([], ("user", "hi"), ("assistant", "Hello! How can I help?")))
    result = evaluate([hit, missed, clean])
    re_ask, contradiction = result.scores["re_ask"], result.scores["contradiction"]
    assert (re_ask.tp, re_ask.fp, re_ask.fn) == (1, 1, 0)  # the second case's flag is a fp
    assert re_ask.precision == 0.5 and re_ask.recall == 1.0
    assert (contradiction.tp, contradiction.fn, contradiction.precision) == (0, 1, None)
    assert result.clean_cases == 1 and result.clean_flagged == 0
    assert ("c", "fn", "contradiction", 2) in result.misses
    table = render_table(result)
    assert "re_ask" in table and "0.50" in table and "n/a" in table
    assert json.loads(json.dumps(result.to_dict()))["detectors"]["re_ask"]["tp"] == 1


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ({"events": "nope"}, "events list"),
        ({"events": [{"role": "robot", "content": "x"}]}, "role"),
        (raw([{"detector": "vibes", "seq": 1}], ("user", "x")), "detector"),
        (raw([{"detector": "re_ask", "seq": 9}], ("user", "x")), "seq"),
    ],
)
def test_bad_cases_are_refused(case: dict[str, object], problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        parse_case(case)  # type: ignore[arg-type]


def test_summaries_and_budget_are_read() -> None:
    case = parse_case(
        {
            "events": [
                {"role": "user", "content": "a"},
                {"summary": {"from_seq": 1, "to_seq": 1, "text": "a"}},
            ],
            "budget": 500,
            "split": "test",
        }
    )
    assert case.events[1].kind == "summary" and case.events[1].data["to_seq"] == 1
    assert case.budget == 500 and case.split == "test"


def test_the_shipped_set_meets_the_bar_for_re_ask_and_contradiction() -> None:
    cases = load_cases(CASES)
    assert len(cases) > 400 and {c.split for c in cases} == {"dev", "test"}
    for split in ("dev", "all"):
        chosen = [c for c in cases if split in ("all", c.split)]
        result = evaluate(chosen)
        for detector in ("re_ask", "contradiction"):
            score = result.scores[detector]
            assert score.precision is not None and score.precision >= 0.8, (split, detector)
            assert score.recall is not None and score.recall >= 0.7, (split, detector)
    # The held-out cases were run once and never tuned on. Precision holds there; recall of
    # contradictions does not reach the bar (6 of 11: commitments the rules cannot read,
    # such as a quoted price or an instruction). These floors only catch regressions.
    held_out = evaluate([c for c in cases if c.split == "test"])
    floors = {"re_ask": 0.8, "contradiction": 0.5, "inconsistency": 0.6}
    for detector, floor in floors.items():
        score = held_out.scores[detector]
        assert score.precision is not None and score.precision >= 0.8, detector
        assert score.recall is not None and score.recall >= floor, detector
    assert held_out.clean_flagged == 0
