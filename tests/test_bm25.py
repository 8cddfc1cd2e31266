"""BM25Retriever: tokenizer, ranking, exact numbers, ties, incremental adds."""

from __future__ import annotations

import math
import random

import pytest

from chatstate.context.bm25 import BM25Retriever, tokenize
from chatstate.context.retrieval import Retriever


def test_is_a_retriever() -> None:
    assert isinstance(BM25Retriever(), Retriever)


@pytest.mark.parametrize(
    ("text", "terms"),
    [
        ("The Refunds ARRIVED", ["refund", "arrived"]),
        ("order #48213, not 4821", ["order", "48213", "4821"]),
        ("ticket ORD48213", ["ticket", "ord48213", "ord", "48213"]),
        ("user_id=ORD-77", ["user", "id", "ord", "77"]),
        ("policies and classes", ["policy", "class"]),
        ("I'll send it; it's done", ["send", "done"]),
        (
            "\u201cCurly\u201d quotes \u2014 and caf\u00e9\u2019s menu",
            ["curly", "quote", "café", "menu"],
        ),
        ("東京タワー", ["東", "京", "タ", "ワ", "ー"]),
        ("straße ٣٤٥", ["straße", "٣٤٥"]),
        ("the of and", []),
        ("", []),
    ],
)
def test_tokenize(text: str, terms: list[str]) -> None:
    assert tokenize(text) == terms


def test_custom_stop_words() -> None:
    assert tokenize("the order", stop_words=()) == ["the", "order"]
    index = BM25Retriever(stop_words={"order"})
    index.add([(1, "order shipped")])
    assert index.search("order", k=5) == []
    assert [i for i, _ in index.search("shipped", k=5)] == [1]


def test_score_matches_okapi_formula() -> None:
    index = BM25Retriever(k1=1.2, b=0.75)
    index.add([(1, "apple apple banana"), (2, "cherry date"), (3, "banana")])
    # "apple": df=1 of N=3, tf=2 in doc 1 (length 3, average length 2)
    idf = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))
    expected = idf * 2 * 2.2 / (2 + 1.2 * (1 - 0.75 + 0.75 * 3 / 2))
    [(doc, score)] = index.search("apple", k=5)
    assert doc == 1
    assert score == pytest.approx(expected)


def test_exact_number_wins_over_common_words() -> None:
    index = BM25Retriever()
    index.add(
        [
            (1, "My order number is 48213, please check the order."),
            (2, "Order 4821 was a different order entirely."),
            (3, "Any order can be returned within 30 days of the order date."),
        ]
    )
    hits = index.search("what happened with order 48213?", k=3)
    assert hits[0][0] == 1
    assert [i for i, _ in index.search("48213", k=3)] == [1]
    assert [i for i, _ in index.search("ORD48213", k=3)] == [1]


def test_rare_terms_outrank_frequent_ones() -> None:
    index = BM25Retriever()
    index.add([(i, f"weather chat number {i}") for i in range(1, 50)])
    index.add([(50, "weather and my allergy to peanuts")])
    assert index.search("peanuts weather", k=1)[0][0] == 50


def test_ties_newest_first_and_k_and_exclude() -> None:
    index = BM25Retriever()
    index.add([(10, "refund approved"), (20, "refund approved"), (30, "refund approved")])
    assert [i for i, _ in index.search("refund", k=10)] == [30, 20, 10]
    assert [i for i, _ in index.search("refund", k=2)] == [30, 20]
    assert [i for i, _ in index.search("refund", k=10, exclude=[30])] == [20, 10]
    assert [i for i, _ in index.search("refund", k=10, exclude={10, 20, 30})] == []


def test_nothing_to_find() -> None:
    index = BM25Retriever()
    assert index.search("anything", k=3) == []
    index.add([(1, "shipping to Lisbon"), (2, "")])
    assert len(index) == 2
    assert index.search("the and of", k=3) == []
    assert index.search("", k=3) == []
    assert index.search("Lisbon", k=0) == []
    assert index.search("unrelated words", k=3) == []


def test_ids_must_be_new_and_increasing_and_errors_change_nothing() -> None:
    index = BM25Retriever()
    index.add([(5, "alpha")])
    with pytest.raises(ValueError, match="increasing"):
        index.add([(6, "beta"), (5, "alpha again")])
    with pytest.raises(ValueError, match="increasing"):
        index.add([(5, "alpha again")])
    assert len(index) == 1
    assert index.search("beta", k=3) == []
    index.add([])
    index.add([(6, "beta")])
    assert [i for i, _ in index.search("beta", k=3)] == [6]


def test_bad_parameters() -> None:
    with pytest.raises(ValueError, match="k1"):
        BM25Retriever(k1=-1)
    with pytest.raises(ValueError, match="b must"):
        BM25Retriever(b=1.5)
    with pytest.raises(ValueError, match="max_query_terms"):
        BM25Retriever(max_query_terms=0)


def test_a_long_query_is_scored_on_its_rarest_terms() -> None:
    # 30 common words in every document, one rare word in one document each.
    common = " ".join(f"common{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(30))
    docs = [(i + 1, f"{common} rare{chr(97 + i)}") for i in range(5)]
    index = BM25Retriever(max_query_terms=2)
    index.add(docs)
    # The query repeats the common words and names two rare ones: only the rare terms
    # are scored, so exactly their documents come back (the common words alone would
    # have matched all five).
    hits = index.search(f"{common} rarea rarec", k=5)
    assert sorted(i for i, _ in hits) == [1, 3]
    # A short query is scored as it is.
    assert len(index.search("commonaa commonab", k=5)) == 5
    # With room for every term, the common words count too.
    assert len(BM25Retriever(max_query_terms=64).search("x", k=1)) == 0
    wide = BM25Retriever(max_query_terms=64)
    wide.add(docs)
    assert len(wide.search(f"{common} rarea rarec", k=5)) == 5


def _corpus(seed: int, n: int) -> list[tuple[int, str]]:
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(300)] + ["refund", "48213", "Lisbon", "peanuts"]
    return [(i * 2 + 1, " ".join(rng.choices(words, k=rng.randint(0, 30)))) for i in range(n)]


def test_incremental_adds_equal_one_bulk_add() -> None:
    docs = _corpus(3, 400)
    bulk = BM25Retriever()
    bulk.add(docs)
    piecemeal = BM25Retriever()
    rng = random.Random(4)
    start = 0
    while start < len(docs):
        step = rng.randint(1, 25)
        piecemeal.add(docs[start : start + step])
        start += step
    assert len(piecemeal) == len(bulk) == 400
    assert piecemeal.vocabulary_size == bulk.vocabulary_size
    for query in ["refund 48213", "w1 w2 w3 w299", "lisbon peanuts w7", "nothing"]:
        assert piecemeal.search(query, k=15) == bulk.search(query, k=15)


def test_deterministic_across_instances() -> None:
    runs = []
    for _ in range(2):
        index = BM25Retriever()
        index.add(_corpus(9, 300))
        runs.append([index.search(f"w{i} w{i + 1} refund", k=8) for i in range(0, 300, 37)])
    assert runs[0] == runs[1]


def test_results_sorted_best_first_and_positive() -> None:
    index = BM25Retriever()
    index.add(_corpus(5, 500))
    hits = index.search("w10 w20 w30 refund peanuts", k=50)
    scores = [s for _, s in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(s > 0 for s in scores)
    assert len({i for i, _ in hits}) == len(hits)
