"""How the context engine's retrievers rank messages (issue 13): the previous message's
words, query expansion from the first hits, fusion by normalised scores."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pytest

from chatstate.context.bm25 import AROUND, BM25Retriever
from chatstate.context.embeddings import (
    FusedRetriever,
    default_retriever,
    fused_for_messages,
    message_retriever,
)
from chatstate.context.feedback import Feedback, expansion
from chatstate.context.speakers import (
    SpeakerBoost,
    WithoutLabels,
    named_in,
    speaker_of,
    unlabelled,
)

CONVERSATION = [
    (1, "Ann: I started pottery classes at the studio downtown."),
    (2, "Bob: Pottery sounds fun! What did you make at the studio?"),
    (3, "Ann: A bowl, my first one. The pottery teacher is patient."),
    (4, "Bob: My car broke down again on the highway."),
    (5, "Ann: Oh no, did the mechanic fix it?"),
    (6, "Bob: He did, the engine needed a new belt."),
    (7, "Ann: The weather has been grey all week."),
    (8, "Bob: I read a novel about sailors on a long voyage."),
    (9, "Ann: The glaze on my vase came out blue after the kiln firing at the studio."),
    (10, "Bob: Let us go hiking on Sunday if it does not rain."),
    # Thirty more messages: a term in over 10% of them (4) is too common to expand with.
    *((i, f"{('Ann', 'Bob')[i % 2]}: reminder {i}, buy apples") for i in range(11, 41)),
]


def _ids(hits: list[tuple[int, float]]) -> list[int]:
    return [doc for doc, _ in hits]


def test_feedback_finds_a_message_that_shares_no_word_with_the_query() -> None:
    plain = BM25Retriever()
    expanded = BM25Retriever(feedback=Feedback(docs=3, terms=5))
    plain.add(CONVERSATION)
    expanded.add(CONVERSATION)
    # Message 9 never says "pottery": plain BM25 cannot return it at all.
    assert 9 not in _ids(plain.search("pottery", k=10))
    hits = _ids(expanded.search("pottery", k=10))
    # The expansion took "studio" from the first hits: message 9 comes back after them;
    # "ann", in 20 of the 40 messages, was not added.
    assert set(hits[:3]) == {1, 2, 3}
    assert hits[3:] == [9]
    common = BM25Retriever(feedback=Feedback(docs=3, terms=5, max_share=1.0))
    common.add(CONVERSATION)
    assert len(common.search("pottery", k=50)) > 4  # with "ann": every message of Ann's


def test_feedback_keeps_the_exact_hit_first_and_is_deterministic() -> None:
    index = BM25Retriever(feedback=Feedback())
    index.add([*CONVERSATION, (41, "Bob: my order number is 48213, the car part")])
    first = index.search("order 48213", k=5)
    assert first[0][0] == 41
    assert index.search("order 48213", k=5) == first
    assert not {1, 2} & set(_ids(index.search("pottery", k=10, exclude={1, 2})))


def test_expansion_weights_and_validation() -> None:
    first = [({"studio": 2.0, "bowl": 1.0, "pottery": 1.0}, 3.0), ({"studio": 1.0}, 1.0)]
    df = {"studio": 3, "bowl": 2, "pottery": 3}
    extra = expansion(first, {"pottery": 1.0}, df.__getitem__, 100, Feedback(weight=0.4))
    assert "pottery" not in extra  # the query's own words keep weight 1
    assert extra["studio"] == pytest.approx(0.4)  # the best term gets the full weight
    assert 0 < extra["bowl"] < extra["studio"]
    rare = expansion(first, {}, {"studio": 3, "bowl": 1, "pottery": 3}.__getitem__, 100, Feedback())
    assert "bowl" not in rare  # in fewer than min_df documents
    assert set(expansion(first, {}, df.__getitem__, 20, Feedback())) == {"bowl"}  # 3 > 10%
    assert expansion([], {}, df.__getitem__, 10, Feedback()) == {}
    long_query = dict.fromkeys([f"w{i}" for i in range(13)], 1.0)
    assert expansion(first, long_query, df.__getitem__, 100, Feedback()) == {}  # 13 > 12
    with pytest.raises(ValueError, match="feedback"):
        Feedback(weight=2)


def test_previous_message_words_find_the_reply() -> None:
    docs = [
        (1, "Where did you go on holiday?"),
        (2, "Lisbon, for a week."),
        (3, "How was the food there?"),
        (4, "Grilled sardines every day."),
    ]
    alone, chained = BM25Retriever(), BM25Retriever.for_messages()
    alone.add(docs)
    chained.add(docs[:1])
    chained.add(docs[1:])  # the chain goes on across adds
    assert _ids(alone.search("holiday", k=5)) == [1]
    assert _ids(chained.search("holiday", k=5))[:2] == [1, 2]
    half = BM25Retriever(previous=0.5)
    half.add(docs)
    # The reply's own words weigh more than the question's it carries.
    assert _ids(half.search("sardines food", k=2)) == [4, 3]
    with pytest.raises(ValueError, match="previous"):
        BM25Retriever(previous=1.5)


def test_around_lifts_a_message_inside_an_exchange_about_the_query() -> None:
    docs = [
        (1, "Ann: The garden needs water, the tomatoes look dry."),
        (2, "Bob: We could fix the garden hose this weekend."),
        (3, "Ann: The old hose leaks near the tap washer, I saw it."),
        (4, "Bob: Buy a new hose and a tap washer then, the shop on the corner has them."),
        *((i, f"Ann: note {i} about groceries and bills") for i in range(5, 20)),
        (20, "Bob: A tap washer came in the post today."),
        *((i, f"Bob: note {i} about groceries and bills") for i in range(21, 30)),
    ]
    plain, around = BM25Retriever(), BM25Retriever(around=(0.3, 0.15))
    plain.add(docs)
    around.add(docs)
    # Alone, message 20 matches "tap washer" best (message 4 is longer).
    assert _ids(plain.search("tap washer", k=1)) == [20]
    # Around it, the exchange about the hose (1-4) lifts message 4 above the lone one.
    assert _ids(around.search("tap washer", k=1)) == [4]
    assert around.search("tap washer", k=5) == around.search("tap washer", k=5)
    assert BM25Retriever.for_messages()._around == AROUND
    with pytest.raises(ValueError, match="around"):
        BM25Retriever(around=(-1.0,))


class _Fixed:
    """A retriever with set answers, to check how lists are fused."""

    def __init__(self, hits: list[tuple[int, float]]) -> None:
        self.hits = hits
        self.count = 0

    def add(self, docs: Sequence[tuple[int, str]]) -> None:
        self.count += len(docs)

    def search(
        self, query: str, *, k: int, exclude: Collection[int] = ()
    ) -> list[tuple[int, float]]:
        return self.hits[:k]

    def __len__(self) -> int:
        return self.count


def test_score_fusion_keeps_a_clear_lexical_lead_that_rank_fusion_loses() -> None:
    # BM25: one exact hit far ahead of the rest; the dense list puts it last.
    lexical = [(1, 12.0), (2, 1.1), (3, 1.0), (4, 0.9)]
    dense = [(2, 0.62), (3, 0.61), (4, 0.60), (1, 0.40)]
    rank = FusedRetriever([_Fixed(lexical), _Fixed(dense)], depth=4)
    score = FusedRetriever(
        [_Fixed(lexical), _Fixed(dense)], fusion="score", weights=(0.7, 0.3), depth=4
    )
    assert _ids(rank.search("q", k=4))[0] != 1
    hits = score.search("q", k=4)
    assert _ids(hits)[0] == 1
    assert hits[0][1] == pytest.approx(0.7)  # 0.7 x 1 + 0.3 x 0 (last of the dense list)
    assert hits[1][0] == 2
    assert hits[1][1] == pytest.approx(0.7 * 0.2 / 11.1 + 0.3)
    with pytest.raises(ValueError, match="weights"):
        FusedRetriever([_Fixed(lexical)], weights=(0.5, 0.5))


def test_fused_for_messages_ranks_real_retrievers() -> None:
    class Words:
        """A tiny dense model: one dimension per word of a fixed vocabulary."""

        vocab = ("pottery", "studio", "car", "weather", "vase", "bowl")

        def __call__(self, texts: Sequence[str]) -> list[list[float]]:
            return [[float(w in t.lower()) + 0.01 for w in self.vocab] for t in texts]

    from chatstate.context.embeddings import EmbeddingRetriever

    fused = fused_for_messages(EmbeddingRetriever(encode=Words()))
    fused.add(CONVERSATION)
    assert len(fused) == len(CONVERSATION)
    hits = _ids(fused.search("pottery", k=4))
    assert set(hits[:3]) == {1, 2, 3}


def test_speaker_of_and_named_in() -> None:
    assert speaker_of("Melanie: I painted a sunrise.") == "melanie"
    assert speaker_of("[8 May, 2023] Jon Snow: hi") == "jon snow"
    assert speaker_of("I said: no") is None  # "I said" is not a capitalised name
    assert speaker_of("the plan: go") is None
    assert named_in("What has Melanie painted, and Caroline\u2019s dog?") >= {"melanie", "caroline"}
    assert named_in("what has she painted?") == frozenset()


def test_unlabelled_drops_the_speaker_and_date_at_the_head() -> None:
    assert unlabelled("[8 May, 2023] Jon Snow: we went to Florida") == "we went to Florida"
    assert unlabelled("Melanie: I painted a sunrise.") == "I painted a sunrise."
    assert unlabelled("I said: no") == "I said: no"  # no speaker label
    assert unlabelled("[8 May, 2023] hello") == "[8 May, 2023] hello"
    assert unlabelled("Ann: ") == "Ann: "  # nothing after the label: kept whole


def test_without_labels_indexes_what_was_said_and_passes_queries_on() -> None:
    seen: list[str] = []

    class Recorder(BM25Retriever):
        def add(self, docs: Sequence[tuple[int, str]]) -> None:
            seen.extend(text for _, text in docs)
            super().add(docs)

    dense = WithoutLabels(Recorder())
    dense.add([(1, "[8 May, 2023] Ann: a vacation in Florida"), (2, "plain text")])
    assert seen == ["a vacation in Florida", "plain text"]
    assert len(dense) == 2
    assert _ids(dense.search("Florida", k=2)) == [1]
    assert _ids(dense.search("florida", k=2)) == [1]
    # A speaker's name leaves the query (the label was not indexed: it would match nothing).
    queries: list[str] = []

    class Asked(BM25Retriever):
        def search(
            self, query: str, *, k: int, exclude: Collection[int] = ()
        ) -> list[tuple[int, float]]:
            queries.append(query)
            return super().search(query, k=k, exclude=exclude)

    names = WithoutLabels(Asked())
    names.add([(1, "[8 May, 2023] Jon Snow: a vacation in Florida"), (2, "Ann: hi")])
    for question in ("Where did Jon\u2019s family go, Ann?", "Snow?", "Who is Annie?"):
        names.search(question, k=1)
    assert queries == ["Where did family go, ?", "Snow?", "Who is Annie?"]
    with pytest.raises(ValueError, match="increasing"):
        dense.add([(2, "Ann: again")])


def test_speaker_boost_lifts_what_the_named_speaker_said() -> None:
    docs = [
        (1, "Caroline: Painting! Painting is my life, painting every day."),
        (
            2,
            "Melanie: After a long walk on the beach with the kids and the dog last "
            "weekend, I painted a small sunrise over the lake.",
        ),
        *((i, f"Melanie: The kids loved museum number {i}.") for i in range(3, 9)),
    ]
    plain = BM25Retriever()
    boosted = SpeakerBoost(BM25Retriever())
    plain.add(docs)
    boosted.add(docs)
    # Caroline's message is all about painting: plain BM25 ranks it first.
    assert _ids(plain.search("What has Melanie painted?", k=2))[0] == 1
    assert _ids(boosted.search("What has Melanie painted?", k=2))[0] == 2
    # A query that names nobody, or messages with no speaker: the inner ranking.
    assert boosted.search("painting", k=4) == plain.search("painting", k=4)
    unlabelled = [(1, "I love painting"), (2, "Melanie painted a sunrise")]
    chat = SpeakerBoost(BM25Retriever())
    chat.add(unlabelled)
    question = "What has Melanie painted?"
    assert chat.search(question, k=2) == _indexed(unlabelled).search(question, k=2)
    assert len(boosted) == 8
    with pytest.raises(ValueError, match="increasing"):
        boosted.add([(8, "Caroline: again")])
    with pytest.raises(ValueError, match="boost"):
        SpeakerBoost(BM25Retriever(), boost=-1)


def _indexed(docs: list[tuple[int, str]]) -> BM25Retriever:
    index = BM25Retriever()
    index.add(docs)
    return index


def test_engine_default_retriever_composes_the_measured_steps() -> None:
    retriever = message_retriever()
    assert isinstance(retriever, SpeakerBoost)
    retriever.add(CONVERSATION)
    assert set(_ids(retriever.search("What pottery did Ann make?", k=3))) == {1, 2, 3}


def test_engine_default_without_embeddings_is_the_offline_composition(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHATSTATE_RETRIEVER", "bm25")
    retriever = default_retriever()
    assert isinstance(retriever, SpeakerBoost)
    assert not getattr(retriever, "blocking", False)  # BM25 alone runs on the loop
