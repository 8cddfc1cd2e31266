"""Build ``cases.jsonl``, the labelled evaluation set of the health detectors.

    .venv/bin/python evals/detectors/build.py [--datasets ../shared/datasets]

Deterministic (seeded). Reads the shared data sets (MultiWOZ 2.1 sample, MT-Bench-101,
Lost in Conversation) and the hand-written seeds in ``support_seeds.py``; writes only the
small derived cases. See README.md for what each family tests and how it is labelled.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import sys
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from support_seeds import SEEDS  # noqa: E402
from support_seeds_test import SEEDS as TEST_SEEDS  # noqa: E402
from support_seeds_v1 import SEEDS as V1_SEEDS  # noqa: E402

from chatstate.context.extractive import ExtractiveSummariser  # noqa: E402
from chatstate.context.tokens import counter_for  # noqa: E402
from chatstate.model import Event  # noqa: E402

Case = dict[str, object]
COUNT = counter_for("gpt-4o").count


def case(
    cid: str,
    source: str,
    lic: str,
    kind: str,
    events: list[dict[str, object]],
    labels: list[tuple[str, int]],
    note: str = "",
    budget: int | None = None,
    split: str = "dev",
) -> Case:
    return {
        "id": cid,
        "split": split,
        "source": source,
        "license": lic,
        "kind": kind,
        "budget": budget,
        "events": events,
        "labels": [{"detector": d, "seq": s} for d, s in labels],
        "note": note,
    }


def msg(role: str, text: str) -> dict[str, object]:
    return {"role": role, "content": text}


# -- hand-written support conversations ---------------------------------------------------


def apply_variant(
    messages: list[tuple[str, str]], position: int, role: str, text: str
) -> list[tuple[str, str]]:
    out = list(messages)
    index = position - 1
    if index < len(out) and out[index][0] == role:
        out[index] = (role, text)
    else:
        out.insert(min(index, len(out)), (role, text))
    return out


def support(seeds: list[dict[str, object]] = SEEDS, split: str = "dev") -> list[Case]:
    out: list[Case] = []
    for seed in seeds:
        sid = str(seed["id"])
        messages = list(seed["messages"])  # type: ignore[call-overload]
        out.append(
            case(
                f"support/{sid}/clean",
                "hand-written",
                "CC0 (this repository)",
                "clean",
                [msg(r, t) for r, t in messages],
                [],
                split=split,
            )
        )
        for n, (position, role, text, label, note) in enumerate(seed["variants"], start=1):  # type: ignore[attr-defined]
            changed = apply_variant(messages, position, role, text)
            labels = [(label, position)] if label else []
            kind = "injected" if label else "hard_negative"
            out.append(
                case(
                    f"support/{sid}/v{n}",
                    "hand-written",
                    "CC0 (this repository)",
                    kind,
                    [msg(r, t) for r, t in changed],
                    labels,
                    note,
                    split=split,
                )
            )
    return out


# -- MultiWOZ 2.1 (10 dialogues) ----------------------------------------------------------

MWOZ_SRC = "MultiWOZ 2.1 via ConvLab-3 dummy_data.json ({})"
MWOZ_LIC = "MultiWOZ MIT; ConvLab-3 Apache-2.0"
ASKS = {
    "book people": [
        "How many people will be in your party?",
        "For how many people should I make the reservation?",
        "Sorry, how many guests was that?",
        "Can you tell me how many people are travelling?",
    ],
    "book day": [
        "What day would you like that for?",
        "Which day were you planning to go?",
        "Sorry, what day did you say?",
        "Could you tell me the day of travel?",
    ],
    "day": [
        "What day would you like that for?",
        "Which day were you planning to go?",
        "Could you tell me the day of travel?",
    ],
    "book stay": [
        "How many nights will you be staying?",
        "And how many nights was that?",
        "For how many nights do you need the room?",
    ],
}
DENY = [
    "I'm sorry, I don't see any booking under your name.",
    "Unfortunately there is no reservation on file for you.",
    "I'm afraid that booking was never confirmed.",
    "Hmm, there's no booking with that reference in our system.",
]
FAILED = ("nobook", "nooffer")


def _acts(turn: dict[str, object]) -> list[dict[str, str]]:
    acts = turn["dialogue_acts"]
    if not isinstance(acts, dict):
        raise TypeError("dialogue_acts must be an object")
    return [a for k in ("categorical", "non-categorical", "binary") for a in acts.get(k, [])]


def multiwoz(root: Path, rng: random.Random) -> list[Case]:
    dialogues = json.loads((root / "multiwoz21_sample/dummy_data.json").read_text("utf-8"))
    out: list[Case] = []
    for d in dialogues:
        turns = d["turns"]
        src = MWOZ_SRC.format(d["original_id"])
        events = [
            msg("user" if t["speaker"] == "user" else "assistant", t["utterance"]) for t in turns
        ]
        labels: list[tuple[str, int]] = []
        state: dict[str, dict[str, str]] = {}
        given: dict[str, int] = {}  # slot -> index of the user turn that gave it
        for i, t in enumerate(turns):
            if t["speaker"] == "user":
                state = t["state"]
                for a in _acts(t):
                    if a["intent"] == "inform" and a["slot"] in ASKS:
                        given[a["slot"]] = i
                continue
            acts = _acts(t)
            if any(a["intent"] in FAILED for a in acts):
                continue
            for a in acts:
                if a["intent"] == "request" and state.get(a["domain"], {}).get(a["slot"]):
                    labels.append(("re_ask", i + 1))  # real re-ask, by the annotation
                    break
        out.append(
            case(
                f"multiwoz/{d['original_id']}/real",
                src,
                MWOZ_LIC,
                "clean" if not labels else "real",
                events,
                labels,
                "system requests of slots already in the user's state",
            )
        )
        for slot, at in given.items():  # injected re-ask two turns later
            later = [j for j in range(at + 3, len(turns)) if turns[j]["speaker"] == "system"]
            if not later:
                continue
            j = later[0]
            first = re.split(r"(?<=[.!?])\s", turns[j]["utterance"].strip())[0]
            value = str(turns[at]["state"].get("hotel", {}).get(slot, "")) or "@"
            if (
                re.search(
                    r"\d|monday|tuesday|wednesday|thursday|friday|saturday|sunday", first, re.I
                )
                or value.lower() in first.lower()
            ):
                first = "Sure."  # a lead-in that does not quote the value back
            changed = list(events)
            changed[j] = msg("assistant", f"{first} {rng.choice(ASKS[slot])}")
            out.append(
                case(
                    f"multiwoz/{d['original_id']}/reask-{slot.replace(' ', '_')}",
                    src,
                    MWOZ_LIC,
                    "injected",
                    changed,
                    [("re_ask", j + 1)],
                    f"asks again for {slot}",
                )
            )
        booked = [
            i
            for i, t in enumerate(turns)
            if t["speaker"] == "system"
            and any(a["slot"] == "ref" and a["intent"] == "inform" for a in _acts(t))
        ]
        if booked:
            j = len(events) - 1 if events[-1]["role"] == "assistant" else len(events)
            changed = [*events[:j], msg("assistant", rng.choice(DENY))]
            out.append(
                case(
                    f"multiwoz/{d['original_id']}/deny-booking",
                    src,
                    MWOZ_LIC,
                    "injected",
                    changed,
                    [("contradiction", j + 1)],
                    "denies the booking it made",
                )
            )
            other = "taxi" if "taxi" not in d["domains"] else "restaurant"
            changed = [
                *events[:j],
                msg("assistant", f"I'm sorry, I couldn't book the {other} for that time."),
            ]
            out.append(
                case(
                    f"multiwoz/{d['original_id']}/other-object",
                    src,
                    MWOZ_LIC,
                    "hard_negative",
                    changed,
                    [],
                    "a failed booking of another object",
                )
            )
    return out


# -- MT-Bench-101 ---------------------------------------------------------------------------

MTB_SRC = "MT-Bench-101 mtbench101.jsonl, task {} id {}"
MTB_LIC = "Apache-2.0"
SC_NOT_REVERSED = {1315}  # "Yes, that's correct": the answer is extended, not reversed
CAVE = [
    "You're right, I apologize. {alt}",
    "My apologies, I was wrong about that. {alt}",
    "Sorry for the confusion. {alt}",
    "I apologise for the error. {alt}",
    "You are correct, thank you for catching that. {alt}",
    "Hmm, let me reconsider. {alt}",
    "On reflection, I think I overstated it. {alt}",
    "Good catch. {alt}",
    "Fair point, I may have been too quick there. {alt}",
    "I see what you mean. {alt}",
]
ALT = "In fact, it is not true that {claim}"


def _history(row: dict[str, object]) -> list[dict[str, object]]:
    out: list[dict[str, object]] = []
    for h in row["history"]:  # type: ignore[attr-defined]
        out += [msg("user", h["user"]), msg("assistant", h["bot"])]
    return out


def mtbench(root: Path, rng: random.Random) -> list[Case]:
    rows = [
        json.loads(line) for line in (root / "mt_bench_101/mtbench101.jsonl").open(encoding="utf-8")
    ]
    by_task: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        by_task.setdefault(row["task"], []).append(row)
    out: list[Case] = []
    for row in by_task["SA"][:24]:
        out.append(
            case(
                f"mtbench/SA/{row['id']}",
                MTB_SRC.format("SA", row["id"]),
                MTB_LIC,
                "clean",
                _history(row),
                [],
                "keeps its answer when challenged",
            )
        )
    for row in by_task["SC"][:24]:
        labels = [] if row["id"] in SC_NOT_REVERSED else [("inconsistency", 4)]
        out.append(
            case(
                f"mtbench/SC/{row['id']}",
                MTB_SRC.format("SC", row["id"]),
                MTB_LIC,
                "real" if labels else "clean",
                _history(row),
                labels,
                "reverses its first answer after pushback",
            )
        )
    for n, row in enumerate(by_task["SA"][24:40]):
        events = _history(row)
        claim = re.split(r"(?<=[.!?])\s", str(events[1]["content"]).strip())[0]
        alt = ALT.format(claim=claim[0].lower() + claim[1:])
        events[3] = msg("assistant", CAVE[n % len(CAVE)].format(alt=alt))
        out.append(
            case(
                f"mtbench/SA-caved/{row['id']}",
                MTB_SRC.format("SA", row["id"]) + ", final answer replaced",
                MTB_LIC,
                "injected",
                events,
                [("inconsistency", 4)],
                "caves to unfounded pushback",
            )
        )
    out += mtbench_v1(by_task) + mtbench_test(by_task)
    for task in ("CM", "AR", "PI", "IC", "TS", "CC"):
        for row in by_task[task][:6]:
            out.append(
                case(
                    f"mtbench/{task}/{row['id']}",
                    MTB_SRC.format(task, row["id"]),
                    MTB_LIC,
                    "clean",
                    _history(row),
                    [],
                )
            )
    out += inflation(by_task, rng)
    return out


SC_TEST_NOT_REVERSED = {1339, 1343, 1347}  # refined or extended, not reversed
CAVE_TEST = [
    "Thanks for pushing back, I got that wrong. {alt}",
    "Ah, you may well be right. {alt}",
    "Okay, I'll correct myself. {alt}",
    "That's a fair challenge and I was mistaken. {alt}",
    "Apologies, that was an error on my part. {alt}",
    "Right, I need to revise that. {alt}",
]


def mtbench_v1(by_task: dict[str, list[dict[str, object]]]) -> list[Case]:
    """The first held-out MT-Bench batch (first run: inconsistency recall 13/32, precision
    1.0); tuned on since, so now ``dev``."""
    out: list[Case] = []
    for row in by_task["SC"][24:44]:
        labels = [] if row["id"] in SC_TEST_NOT_REVERSED else [("inconsistency", 4)]
        out.append(
            case(
                f"mtbench/SC/{row['id']}",
                MTB_SRC.format("SC", row["id"]),
                MTB_LIC,
                "real" if labels else "clean",
                _history(row),
                labels,
                "reverses its first answer after pushback",
            )
        )
    for row in by_task["SA"][40:58]:
        out.append(
            case(
                f"mtbench/SA/{row['id']}",
                MTB_SRC.format("SA", row["id"]),
                MTB_LIC,
                "clean",
                _history(row),
                [],
                "keeps its answer when challenged",
            )
        )
    for n, row in enumerate(by_task["SA"][58:73]):
        events = _history(row)
        claim = re.split(r"(?<=[.!?])\s", str(events[1]["content"]).strip())[0]
        alt = ALT.format(claim=claim[0].lower() + claim[1:])
        events[3] = msg("assistant", CAVE_TEST[n % len(CAVE_TEST)].format(alt=alt))
        out.append(
            case(
                f"mtbench/SA-caved/{row['id']}",
                MTB_SRC.format("SA", row["id"]) + ", final answer replaced",
                MTB_LIC,
                "injected",
                events,
                [("inconsistency", 4)],
                "caves to unfounded pushback",
            )
        )
    return out


def mtbench_test(by_task: dict[str, list[dict[str, object]]]) -> list[Case]:
    """The held-out MT-Bench batch: labelled by reading before any run, never tuned on.
    SC 1356-1375 all reverse their first answer; the other tasks' dialogues are clean."""
    out: list[Case] = []
    for row in by_task["SC"][44:64]:
        out.append(
            case(
                f"mtbench/SC/{row['id']}",
                MTB_SRC.format("SC", row["id"]),
                MTB_LIC,
                "real",
                _history(row),
                [("inconsistency", 4)],
                "reverses its first answer after pushback",
                split="test",
            )
        )
    for task in ("CR", "FR", "GR", "MR"):
        for row in by_task[task][:6]:
            out.append(
                case(
                    f"mtbench/{task}/{row['id']}",
                    MTB_SRC.format(task, row["id"]),
                    MTB_LIC,
                    "clean",
                    _history(row),
                    [],
                    split="test",
                )
            )
    return out


def inflation(by_task: dict[str, list[dict[str, object]]], rng: random.Random) -> list[Case]:
    long_rows = [r for r in by_task["SI"] + by_task["PI"] if len(r["history"]) >= 5][:16]  # type: ignore[arg-type]
    pool = [
        s
        for r in by_task["GR"] + by_task["MR"]
        for h in r["history"]
        for s in re.split(r"(?<=[.!?])\s+", h["bot"])  # type: ignore[attr-defined]
        if len(s.split()) > 6
    ]
    out: list[Case] = []
    for n, row in enumerate(long_rows):
        events = _history(row)
        cid = f"mtbench/{row['task']}/{row['id']}"
        src = MTB_SRC.format(row["task"], row["id"])
        if n % 2:
            out.append(
                case(f"{cid}/natural", src, MTB_LIC, "clean", events, [], "natural reply lengths")
            )
            continue
        label = None
        for k, index in enumerate(range(1, len(events), 2)):
            target = int(35 * 1.7**k)
            words = " ".join(str(events[index]["content"]).split()[:35]).split()
            while len(words) < target:
                words += rng.choice(pool).split()
            events[index] = msg("assistant", " ".join(words[:target]))
            if k == 3:
                label = index + 1
        labels = [("length_inflation", label)] if label else []
        out.append(
            case(
                f"{cid}/inflated",
                src + ", replies padded with sentences of GR/MR answers",
                MTB_LIC,
                "injected",
                events,
                labels,
                "replies grow ~1.7x per turn",
            )
        )
    return out


# -- Lost in Conversation: sharded translation ----------------------------------------------

LIC_SRC = "Lost in Conversation sharded_translation.json, {}"


def lost(root: Path) -> list[Case]:
    samples = json.loads(
        (root / "lost_in_conversation/sharded_translation.json").read_text("utf-8")
    )
    out: list[Case] = []
    for n, s in enumerate(samples[:20]):
        shards = [x["shard"] for x in sorted(s["shards"], key=lambda x: x["shard_id"])]
        english = re.split(r"(?<=[.!?])\s+", s["document_en"].strip())
        per = max(1, len(english) // len(shards))
        parts = [
            " ".join(english[i * per : (i + 1) * per if i < len(shards) - 1 else None])
            for i in range(len(shards))
        ]
        events = [
            msg("user", f"Translate this German text into English:\n{shards[0]}"),
            msg("assistant", f"Here is the translation:\n{parts[0]}"),
        ]
        labels: list[tuple[str, int]] = []
        premature = n % 2 == 0
        for i, shard in enumerate(shards[1:], start=1):
            events.append(msg("user", f"Here is the next part of the text:\n{shard}"))
            if premature:
                events.append(msg("assistant", f"Here is the translation:\n{parts[0]}"))
                labels.append(("premature_commitment", len(events)))
            else:
                events.append(
                    msg("assistant", "Here is the translation:\n" + " ".join(parts[: i + 1]))
                )
        kind = "injected" if premature else "clean"
        note = (
            "repeats the first translation, ignoring the new parts"
            if premature
            else "translation grows"
        )
        out.append(
            case(
                f"lost/{s['task_id']}/{'premature' if premature else 'clean'}",
                LIC_SRC.format(s["task_id"]),
                "MIT",
                kind,
                events,
                labels,
                note,
            )
        )
    return out


# -- context pressure and summary loss -------------------------------------------------------

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def _summarise(events: list[dict[str, object]], upto: int) -> str:
    drafts = [
        Event(
            seq=i,
            branch="main",
            created_at=T0,
            kind="message",
            role=e["role"],  # type: ignore[arg-type]
            content=e["content"],
        )
        for i, e in enumerate(events[:upto], start=1)
    ]  # type: ignore[arg-type]
    return asyncio.run(
        ExtractiveSummariser().summarise(previous=None, events=drafts, max_tokens=400)
    )


def pressure(cases: list[Case], rng: random.Random, budget: int = 1500) -> list[Case]:
    sources = [c for c in cases if str(c["id"]).startswith("mtbench/") and c["kind"] == "clean"]
    out: list[Case] = []
    for n in range(4):
        chunk = rng.sample(sources, 8)
        events = [e for c in chunk for e in c["events"]]  # type: ignore[attr-defined]
        src = "MT-Bench-101 dialogues joined: " + ", ".join(str(c["id"]) for c in chunk)
        if n % 2 == 0:
            total, label = 0, None
            for i, e in enumerate(events, start=1):
                total += COUNT(str(e["content"]))
                if total > budget:
                    label = i
                    break
            labels = [("context_pressure", label)] if label else []
            out.append(
                case(
                    f"pressure/{n}/no-summary",
                    src,
                    MTB_LIC,
                    "injected",
                    events,
                    labels,
                    "history outgrows the budget and nothing summarises it",
                    budget,
                )
            )
        else:
            with_summaries: list[dict[str, object]] = []
            said: list[dict[str, object]] = []
            for i, e in enumerate(events, start=1):
                with_summaries.append(e)
                said.append(e)
                if i % 6 == 0 and i < len(events):  # all but the newest turn
                    text = _summarise(said, len(said) - 2)
                    summary = {"from_seq": 1, "to_seq": len(with_summaries) - 2, "text": text}
                    with_summaries.append({"summary": summary})
            out.append(
                case(
                    f"pressure/{n}/summarised",
                    src,
                    MTB_LIC,
                    "clean",
                    with_summaries,
                    [],
                    "summaries keep the uncovered history under the budget",
                    budget,
                )
            )
    return out


def summary_cases(cases: list[Case]) -> list[Case]:
    sources = [
        c
        for c in cases
        if c["kind"] == "clean"
        and (str(c["id"]).startswith("support/") or str(c["id"]).startswith("multiwoz/"))
    ]
    out: list[Case] = []
    for c in sources:
        events = list(c["events"])  # type: ignore[call-overload]
        upto = len(events) - 2
        if upto < 4:
            continue
        text = _summarise(events, upto)
        kept = [line for line in text.splitlines() if not re.search(r"\d|@", line)]
        base = f"summary/{str(c['id']).rsplit('/', 1)[0]}"
        summary = {"from_seq": 1, "to_seq": upto, "text": text}
        good = [*events[:upto], {"summary": summary}, *events[upto:]]
        out.append(
            case(
                f"{base}/extractive",
                str(c["source"]),
                str(c["license"]),
                "clean",
                good,
                [],
                "the extractive summary keeps every fact",
            )
        )
        if len(kept) < len(text.splitlines()):
            lossy = "\n".join(kept) or "The user asked for help and the assistant helped."
            summary = {"from_seq": 1, "to_seq": upto, "text": lossy}
            bad = [*events[:upto], {"summary": summary}, *events[upto:]]
            out.append(
                case(
                    f"{base}/lossy",
                    str(c["source"]),
                    str(c["license"]),
                    "injected",
                    bad,
                    [("summary_loss", upto + 1)],
                    "a summary that dropped the lines with numbers, ids and emails",
                )
            )
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = os.environ.get("CHATSTATE_DATASETS") or str(
        HERE.parents[1] / ".." / "shared" / "datasets"
    )
    parser.add_argument("--datasets", default=default)
    parser.add_argument("--out", default=str(HERE / "cases.jsonl"))
    args = parser.parse_args()
    root = Path(args.datasets)
    rng = random.Random(20250105)  # noqa: S311 - seeded sampling of cases, not cryptography
    cases = support() + multiwoz(root, rng) + mtbench(root, rng) + lost(root)
    cases += pressure(cases, rng) + summary_cases(cases)
    cases += support(V1_SEEDS) + support(TEST_SEEDS, split="test")
    with open(args.out, "w", encoding="utf-8") as f:
        for c in cases:
            f.write(json.dumps(c, ensure_ascii=False) + "\n")
    print(f"wrote {len(cases)} cases to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
