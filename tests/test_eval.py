"""``chatstate eval context``: the recall metric on hand-made cases, the baselines, a
synthetic data set end to end, and one LoCoMo conversation when the data is present."""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path

import pytest

from chatstate.cli._errors import UsageError
from chatstate.cli._eval import parse_policy
from chatstate.cli.main import main
from chatstate.context.manifest import Manifest, RetrievedTurn, SummaryUse
from chatstate.eval import report
from chatstate.eval.context import EvalOptions, evaluate, select_questions
from chatstate.eval.datasets import (
    Conversation,
    DatasetMissing,
    Question,
    Utterance,
    default_datasets_dir,
    load_locomo,
)
from chatstate.eval.recall import (
    content_terms,
    facts_present,
    front_truncation,
    key_sentences,
    retrieved_text,
    route_of,
    sliding_window,
    turn_starts,
    window_turns,
)

SAID = "We moved last spring. My locker code is 4417 and it opens the blue door."
ANSWER = "4417"


def manifest(
    verbatim: tuple[int, ...] = (),
    retrieved: tuple[tuple[int, ...], ...] = (),
    summary_to: int | None = None,
) -> Manifest:
    return Manifest(
        model="gpt-4o",
        budget=1000,
        used=0,
        sections={},
        verbatim=verbatim,
        retrieved=tuple(RetrievedTurn(seqs, 1.0) for seqs in retrieved),
        summary=None if summary_to is None else SummaryUse(99, 1, summary_to),
        dropped=(),
        excluded=(),
        prefix_tokens=0,
        stable_prefix_tokens=0,
    )


# -- the metric -----------------------------------------------------------------------


def test_content_terms_drop_stop_words_and_short_words_but_keep_numbers() -> None:
    assert content_terms("My locker code is 4417, at 9 on the blue door!") == [
        "locker",
        "code",
        "4417",
        "9",
        "blue",
        "door",
    ]


def test_key_sentences_are_those_holding_the_answer_else_all() -> None:
    assert key_sentences(SAID, ANSWER) == [{"locker", "code", "4417", "opens", "blue", "door"}]
    assert len(key_sentences(SAID, "somewhere else")) == 2
    assert key_sentences("Wow!", None) == [{"wow"}]


def test_facts_present_needs_one_line_holding_the_sentence() -> None:
    restated = "user: Dana: my locker code is 4417, it opens the blue door"
    assert facts_present(SAID, ANSWER, f"Summary:\n{restated}")
    # 5 of the 6 terms (83%) on one line still counts; the same terms spread over lines do not
    assert facts_present(SAID, ANSWER, "locker code 4417 opens the blue")
    assert not facts_present(SAID, ANSWER, "locker code 4417\nopens the blue door")
    # a missing number never counts, whatever else is there
    assert not facts_present(SAID, ANSWER, "locker code 4471 opens the blue door")
    # paraphrase and a cut to the fact's neighbours are under 80%: not present
    assert not facts_present(SAID, ANSWER, "the combination for the locker is 4417")
    assert not facts_present(SAID, ANSWER, "... locker code is 4417 ...")
    assert not facts_present(SAID, ANSWER, "")


def test_route_of_prefers_the_manifest_then_a_covering_summary() -> None:
    text = "Summary of the conversation up to message 40:\nmy locker code is 4417 opens blue door"
    assert route_of(7, SAID, ANSWER, manifest(verbatim=(7, 8)), "", "") == "verbatim"
    assert route_of(7, SAID, ANSWER, manifest(retrieved=((7, 8),)), "", "") == "retrieved"
    assert route_of(7, SAID, ANSWER, manifest(summary_to=40), text, "") == "summary"
    # the same words in a summary that does not cover seq 7 are not evidence of it
    assert route_of(7, SAID, ANSWER, manifest(summary_to=5), text, "") == "missing"
    # pinned state has no span: its lines count wherever the turn is
    assert route_of(7, SAID, ANSWER, manifest(), "", "Session state:\n" + text) == "summary"
    assert route_of(7, SAID, ANSWER, manifest(verbatim=(6,)), "", "") == "missing"


def test_a_cut_message_counts_only_with_its_key_facts() -> None:
    cut = replace(manifest(), retrieved=(RetrievedTurn((7,), 1.0, cut=(7,)),))
    kept = f"Earlier messages relevant to the current one:\n[#7] user: {SAID}"
    lost = "Earlier messages relevant to the current one:\n[#7] user: It opens the door."
    assert route_of(7, SAID, ANSWER, cut, "", "", kept) == "retrieved"
    assert route_of(7, SAID, ANSWER, cut, "", "", lost) == "missing"
    assert retrieved_text([{"role": "system", "content": kept}]) == kept


def test_front_truncation_keeps_the_newest_whole_messages() -> None:
    costs = [10, 20, 30, 40]
    assert front_truncation(costs, 75) == front_truncation(costs, 70)
    assert front_truncation(costs, 70).kept_from == 2
    assert front_truncation(costs, 70).tokens == 70
    assert front_truncation(costs, 39).kept_from == 4
    assert front_truncation(costs, 1000).kept_from == 0


def test_sliding_window_takes_n_turns_and_never_exceeds_the_budget() -> None:
    roles = ["user", "assistant", "user", "assistant", "user", "assistant"]
    costs = [10, 10, 10, 10, 50, 50]
    starts = turn_starts(roles)
    assert starts == [0, 2, 4]
    assert window_turns(costs, starts, 45) == 2  # median turn: 20 tokens
    assert sliding_window(costs, starts, 2, 1000).kept_from == 2
    assert sliding_window(costs, starts, 2, 100).kept_from == 4  # the older turn dropped
    assert sliding_window(costs, starts, 2, 99).tokens == 0


# -- end to end -----------------------------------------------------------------------

FILLER = "we talked about the weather and the traffic and what to cook for dinner tonight"


def synthetic() -> Conversation:
    utterances = [
        Utterance("u0", "user", "Dana: My locker code is 4417 and it opens the blue door."),
        Utterance("a0", "assistant", "Sam: Noted, the blue door."),
    ]
    for i in range(1, 60):
        utterances.append(Utterance(f"u{i}", "user", f"Dana: {FILLER} number {i}"))
        utterances.append(Utterance(f"a{i}", "assistant", f"Sam: sure, {FILLER}"))
    utterances.append(Utterance("u60", "user", "Dana: I also adopted a cat called Pixel."))
    questions = (
        Question("What is my locker code?", ("u0",), "4", "4417"),
        Question("What is my cat called?", ("u60",), "4", "Pixel"),
        Question("Unanswerable", ("u3",), "5"),
    )
    return Conversation("synthetic", "s1", tuple(utterances), questions)


async def test_evaluate_replays_and_compares_with_the_baselines(tmp_path: Path) -> None:
    opts = EvalOptions(budgets=(300, 4000))
    records = await evaluate([synthetic()], opts, progress=False)
    assert [r["question"] for r in records] == [q.text for q in synthetic().questions]
    summary = report.summarise(records, opts.price_per_mtok)["synthetic"]
    strategies = summary["strategies"]
    assert isinstance(strategies, dict)
    small, large = strategies["front_truncation"]["300"], strategies["chatstate"]["4000"]  # type: ignore[index, call-overload]
    # the newest turn is in every strategy; the first one only in chatstate at 300 tokens
    assert small["recall"] < 1.0  # type: ignore[index]
    assert large["recall"] == 1.0  # type: ignore[index]
    first = records[0]["budgets"][0]  # type: ignore[index]
    assert first["chatstate"]["routes"][0] in ("retrieved", "summary")  # type: ignore[index, call-overload]
    assert first["front_truncation"]["found"] == 0  # type: ignore[index, call-overload]
    assert first["chatstate"]["tokens"] <= 300  # type: ignore[index, call-overload]

    out = io.StringIO()
    report.write_table({"synthetic": summary}, out)
    assert "front truncation" in out.getvalue()
    assert "full / chatstate tokens" in out.getvalue()  # 60 turns: over 50
    report.write_json(tmp_path / "r.json", {}, {"synthetic": summary}, records)
    assert json.loads((tmp_path / "r.json").read_text())["records"][0]["category"] == "4"
    pytest.importorskip("matplotlib")
    assert report.write_chart(tmp_path / "r.png", {"synthetic": summary}) is None
    assert (tmp_path / "r.png").read_bytes()[:4] == b"\x89PNG"


async def test_the_same_replay_gives_the_same_records() -> None:
    # Compaction and state extraction are awaited at fixed points of the replay: two runs
    # of the same conversation must agree on every route and token count.
    conv = synthetic()
    opts = EvalOptions(budgets=(250, 600))
    first = await evaluate([conv], opts, progress=False)
    second = await evaluate([conv], opts, progress=False)
    assert first == second
    runs = [b["chatstate"] for r in first for b in r["budgets"]]  # type: ignore[union-attr, attr-defined]
    assert any(run["routes"] for run in runs)  # type: ignore[index]


def test_select_questions_filters_categories_and_spaces_the_limit() -> None:
    conv = synthetic()
    assert len(select_questions(conv, EvalOptions())) == 3
    assert len(select_questions(conv, EvalOptions(categories=frozenset({"4"})))) == 2
    assert [q.text for q in select_questions(conv, EvalOptions(limit=2))] == [
        "What is my locker code?",
        "What is my cat called?",
    ]


def locomo_file(folder: Path) -> None:
    """A two-session conversation in LoCoMo's format."""
    (folder / "locomo").mkdir(parents=True)
    session_1 = [
        {"speaker": "Ann", "dia_id": "D1:1", "text": "I started pottery classes on Monday."},
        {"speaker": "Bo", "dia_id": "D1:2", "text": "Nice!", "blip_caption": "a clay bowl"},
    ]
    session_2 = [
        {"speaker": "Ann" if i % 2 == 0 else "Bo", "dia_id": f"D2:{i + 1}", "text": FILLER}
        for i in range(30)
    ]
    data = {
        "speaker_a": "Ann",
        "speaker_b": "Bo",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": session_1,
        "session_2_date_time": "2:00 pm on 9 May, 2023",
        "session_2": session_2,
        "qa": [
            {
                "question": "What did Ann start?",
                "answer": "pottery",
                "evidence": ["D1:1"],
                "category": 4,
            },
            {"question": "What did Bo show?", "evidence": ["D1:2; D9:9"], "category": 1},
            {"question": "Trick?", "adversarial_answer": "x", "evidence": ["D2:3"], "category": 5},
        ],
    }
    (folder / "locomo" / "1.json").write_text(json.dumps(data))


def test_locomo_loader_labels_speakers_dates_and_splits_evidence(tmp_path: Path) -> None:
    locomo_file(tmp_path)
    (conv,) = load_locomo(tmp_path)
    first, second = conv.utterances[:2]
    assert first.text == "[1:56 pm on 8 May, 2023] Ann: I started pottery classes on Monday."
    assert first.said == "I started pottery classes on Monday."
    assert (first.role, second.role) == ("user", "assistant")
    assert second.said == "Nice! [shares a photo: a clay bowl]"
    assert [q.evidence for q in conv.questions] == [("D1:1",), ("D1:2",), ("D2:3",)]
    assert conv.unknown_evidence == 1
    with pytest.raises(DatasetMissing):
        load_locomo(tmp_path / "nowhere")


def test_cli_eval_context_writes_table_json_and_skips_missing_sets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    locomo_file(tmp_path / "data")
    out = tmp_path / "out"
    argv = ["eval", "context", "--datasets-dir", str(tmp_path / "data"), "--budgets", "200,1000"]
    assert main([*argv, "--out", str(out), "--policy", "retrieve_k=3"]) == 0
    captured = capsys.readouterr()
    assert "locomo: 1 conversations, 2 questions" in captured.out
    assert "; policy: retrieve_k=3" in captured.out and "retriever: " in captured.out
    assert "skipped: lost_in_conversation" in captured.err
    document = json.loads((out / "context-recall.json").read_text())
    assert document["options"]["policy"]["retrieve_k"] == 3
    assert len(document["records"]) == 2
    assert main([*argv, "--out", str(out), "--retriever", "bm25"]) == 0
    assert "retriever: bm25; policy: balanced\n" in capsys.readouterr().out
    assert main([*argv, "--out", str(out), "--policy", "retrieve_k"]) == 2
    assert main([*argv, "--datasets", "nope"]) == 2
    empty = ["eval", "context", "--datasets-dir", str(tmp_path / "none"), "--out", str(out)]
    assert main(empty) == 1  # no data is a failure, never a silent success
    assert "nothing to evaluate" in capsys.readouterr().err


def test_parse_policy() -> None:
    policy = parse_policy("retrieved_share=0.5, retrieve_k=12,state_share=0")
    assert (policy.retrieved_share, policy.retrieve_k, policy.state_share) == (0.5, 12, 0.0)
    for bad in ("nope=1", "retrieve_k=x", "retrieved_share=0.9"):
        with pytest.raises(UsageError):
            parse_policy(bad)


async def test_one_locomo_conversation_when_present() -> None:
    try:
        conversations = load_locomo(default_datasets_dir())
    except DatasetMissing as exc:
        pytest.skip(str(exc))
    opts = EvalOptions(budgets=(2000,), limit=8)
    records = await evaluate(conversations[:1], opts, progress=False)
    assert len(records) == 8
    summary = report.summarise(records, opts.price_per_mtok)["locomo"]
    recall = summary["strategies"]["chatstate"]["2000"]["recall"]  # type: ignore[index, call-overload]
    assert 0.0 <= recall <= 1.0
    assert summary["fewer_tokens_over_50_turns"]["2000"] > 5  # type: ignore[index, call-overload]
