"""Okapi BM25 over a session's older turns: offline, pure Python, incremental. The default.

The index keeps, per term, a postings list of ``(doc index, term frequency)`` and, per
document, its length. :meth:`BM25Retriever.add` therefore costs O(new text) and
:meth:`BM25Retriever.search` costs O(query terms x their postings); nothing is ever
re-indexed. The length normalisation uses the current average document length at query
time, so adding documents never rewrites earlier entries.

Tokenizer (:func:`tokenize`): lowercase; runs of Unicode letters and digits (punctuation
and ``_`` split); digit runs kept whole (``48213`` matches ``48213`` and not ``4821``); a
word that mixes letters and digits (``ord48213``) indexed whole and as its parts; each Han,
Hiragana or Katakana character its own token (those scripts do not separate words by
spaces); a short English stop-word list; a light plural fold on purely alphabetic words
(``refunds`` -> ``refund``, ``policies`` -> ``policy``, ``classes`` -> ``class``), then, in
the retriever (``stem=True``, the default), a light suffix strip (``promotions``,
``promoting``, ``promote`` -> ``promot``). Query and documents go through the same
tokenizer.

Measured on the project's 2-core machine (see ``docs/context-retrieval-and-summaries.md``):
indexing 10,000 documents of about 100 words takes about 0.5 s (about 45 us a document,
so a turn's ``add`` is negligible), a search over them 2 to 4 ms.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from functools import lru_cache

from chatstate.context.feedback import Feedback, expansion

__all__ = ["AROUND", "DEFAULT_STOP_WORDS", "BM25Retriever", "tokenize"]

DEFAULT_STOP_WORDS: frozenset[str] = frozenset(
    """
    a about above after again all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from
    further had has have having he her here hers herself him himself his how i if in into
    is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the
    their theirs them themselves then there these they this those through to too under
    until up very was we were what when where which while who whom why will with would
    you your yours yourself yourselves s t d ll m re ve don didn doesn isn wasn
    """.split()
)
"""Short English stop-word list; contractions split on the apostrophe leave ``s``, ``ll``..."""

AROUND = (0.3, 0.15)
"""The weights :meth:`BM25Retriever.for_messages` gives the first scores of the messages
one and two places away. Measured on LoCoMo (7 conversations, 1,510 evidence turns), the
evidence found in the first 30 / 40 hits of the engine's retriever: 0.751 / 0.776
without, 0.762 / 0.793 with (0.2, 0.1), 0.766 / 0.794 with (0.3, 0.15), 0.766 / 0.799
with (0.4, 0.2) and 0.768 / 0.799 with (0.4, 0.2, 0.1); the same with a depth of 50, 100
or 200 first hits."""

_CJK = r"\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+")
_HAS_CJK = re.compile(rf"[{_CJK}]")
_DIGITS_OR_LETTERS = re.compile(r"\d+|[^\W\d_]+")
# Fast path for ASCII text: every non-alphanumeric ASCII character to a space, then
# str.split (both in C, several times faster than the regex). Other text goes through
# _TOKEN, word by word where it has no CJK.
_ASCII_SPACE = str.maketrans({c: " " for c in map(chr, range(128)) if not c.isalnum()})
_PLURAL_KEEP = ("ss", "us", "is", "ous")
_ES_PLURALS = ("sses", "xes", "ches", "shes")


def _fold(word: str) -> str:
    """A light plural fold on alphabetic words of 4+ letters; everything else unchanged."""
    if len(word) < 4 or not word.isalpha() or word.endswith(_PLURAL_KEEP):
        return word
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith(_ES_PLURALS):
        return word[:-2]
    if word.endswith("s"):
        return word[:-1]
    return word


_SUFFIXES: tuple[str, ...] = (
    *("ations", "ation", "ments", "ment", "ness", "ings", "ing", "ions", "ion"),
    *("ed", "ly", "e"),
)


def _stem(word: str) -> str:
    """A light English suffix strip after the plural fold (``promotions``, ``promoting``,
    ``promote`` -> ``promot``; ``dancing``, ``danced`` -> ``danc``), on alphabetic words of
    5+ letters, leaving a stem of 3+ letters; a doubled final consonant is undoubled
    (``running`` -> ``run``)."""
    if len(word) < 5 or not word.isalpha():
        return word
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            stem = word[: -len(suffix)]
            if len(stem) >= 3 and stem[-1] == stem[-2] and stem[-1] not in "lsz":
                stem = stem[:-1]
            return stem
    return word


def _raw_tokens(text: str) -> list[str]:
    low = text.lower()
    if low.isascii():
        words = low.translate(_ASCII_SPACE).split()
        if not any(digit in low for digit in "0123456789"):
            return words
    elif _HAS_CJK.search(low):
        words = _TOKEN.findall(low)
    else:
        words = [t for w in low.split() for t in ((w,) if w.isalnum() else _TOKEN.findall(w))]
    # "ord48213" is indexed as itself and as "ord", "48213": an exact id ranks first, and
    # the number alone still matches.
    out: list[str] = []
    for word in words:
        out.append(word)
        if not (word.isalpha() or word.isdigit()):
            parts = _DIGITS_OR_LETTERS.findall(word)
            if len(parts) > 1:
                out.extend(parts)
    return out


@lru_cache(maxsize=16384)
def _stemmed(word: str) -> str:
    """``_stem(_fold(word))``, memoised: a query, the message :mod:`chatstate.context.
    assemble` cuts sentences for and the sentences themselves are mostly words seen
    before, and the two calls cost more than the lookup (155 words a bench turn)."""
    return _stem(_fold(word))


def tokenize(
    text: str, stop_words: Collection[str] = DEFAULT_STOP_WORDS, *, stem: bool = False
) -> list[str]:
    """The index terms of ``text``, in order, duplicates kept (``stem``: suffixes
    stripped as :class:`BM25Retriever` does by default)."""
    if stem:
        return [_stemmed(t) for t in _raw_tokens(text) if t not in stop_words]
    return [_fold(t) for t in _raw_tokens(text) if t not in stop_words]


class BM25Retriever:
    """Okapi BM25 (Lucene's non-negative idf) over documents ``(id, text)``.

    ``k1`` (1.2 to 2.0 is usual) sets how fast repeated terms saturate; ``b`` how much long
    documents are penalised; ``stem`` strips common English suffixes; a query with more
    than ``max_query_terms`` distinct indexed terms is scored on its rarest ones (a pasted
    paragraph costs as much as a question, not O(its words x their postings)). Documents are added
    with increasing ids (the context engine uses a message's seq); ties in score are broken
    by id, newest first.

    ``previous``: each document also holds the previous document's terms, counted at this
    weight, so that a reply is found by the words of the question it answers (0: documents
    stand alone). ``feedback``: each search is run again with its query expanded from its
    first hits (:mod:`chatstate.context.feedback`). ``around``: a document's score also
    takes the first scores of the documents beside it, at these weights by distance (1,
    2, ...), so that a message inside an exchange about the question outranks a lone one
    that shares a word with it; it is applied to the ``around_depth`` best documents and
    those beside them, so it costs O(depth), not O(matches). :meth:`for_messages` is the
    setting the context engine uses on a conversation's messages.
    """

    @classmethod
    def for_messages(cls) -> BM25Retriever:
        """BM25 over a conversation as the context engine uses it: one message a document,
        each also holding the previous message's words, and each query expanded from its
        first hits (measured in :mod:`chatstate.context.feedback`)."""
        return cls(previous=1.0, feedback=Feedback(), around=AROUND)

    def __init__(
        self,
        *,
        k1: float = 1.2,
        b: float = 0.75,
        stop_words: Collection[str] = DEFAULT_STOP_WORDS,
        stem: bool = True,
        previous: float = 0.0,
        feedback: Feedback | None = None,
        max_query_terms: int = 12,
        around: Sequence[float] = (),
        around_depth: int = 50,
    ) -> None:
        if k1 < 0:
            raise ValueError(f"k1 must be >= 0, got {k1}")
        if not 0.0 <= b <= 1.0:
            raise ValueError(f"b must be within [0, 1], got {b}")
        if not 0.0 <= previous <= 1.0:
            raise ValueError(f"previous must be within [0, 1], got {previous}")
        self._k1 = k1
        self._b = b
        self._stop_words = frozenset(stop_words)
        self._stem = stem
        self._previous = previous
        self._feedback = feedback
        if max_query_terms < 1:
            raise ValueError(f"max_query_terms must be >= 1, got {max_query_terms}")
        self._max_terms = max_query_terms
        if any(w < 0 for w in around) or around_depth < 1:
            raise ValueError(f"around weights must be >= 0 and around_depth >= 1, got {around}")
        self._around = tuple(around)
        self._around_depth = around_depth
        self._ids: list[int] = []
        self._lengths: list[float] = []
        self._total_length = 0.0
        # term -> (doc indexes, term frequencies), two parallel lists in increasing order
        self._postings: dict[str, tuple[list[int], list[float]]] = {}
        self._term_of: dict[str, str] = {}
        self._last_terms: dict[str, int] = {}
        """The previous document's own term counts (``previous`` adds them to the next)."""
        self._own_terms: list[tuple[tuple[str, ...], tuple[int, ...]]] = []
        """Each document's own terms and counts, kept only with ``feedback`` (its expansion
        reads them): two tuples whose strings are the term cache's, a third of a dict."""

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def vocabulary_size(self) -> int:
        """Number of distinct terms indexed so far."""
        return len(self._postings)

    def add(self, docs: Sequence[tuple[int, str]]) -> None:
        """Index ``docs``; ids must be new and increasing, else ``ValueError`` and no change."""
        last = self._ids[-1] if self._ids else None
        for doc_id, _ in docs:
            if last is not None and doc_id <= last:
                raise ValueError(f"document ids must be new and increasing: {doc_id} after {last}")
            last = doc_id
        postings = self._postings
        for doc_id, text in docs:
            index = len(self._ids)
            own = self._term_counts(text)
            terms: dict[str, float] = dict(own)
            weight = self._previous
            if weight:
                # At weight 1 the counts stay ints: small ints are shared, floats are not.
                for term, count in self._last_terms.items():
                    terms[term] = terms.get(term, 0) + (count if weight == 1 else weight * count)
            self._last_terms = own
            if self._feedback is not None:
                self._own_terms.append((tuple(own), tuple(own.values())))
            length = sum(terms.values())
            self._ids.append(doc_id)
            self._lengths.append(length)
            self._total_length += length
            for term, freq in terms.items():
                entry = postings.get(term)
                if entry is None:
                    postings[term] = ([index], [freq])
                else:
                    entry[0].append(index)
                    entry[1].append(freq)

    def _term_counts(self, text: str) -> dict[str, int]:
        """Term frequencies of ``text``: raw words counted in C, then each distinct word
        mapped to its term (``""`` for a stop word) through a per-index cache."""
        counts: dict[str, int] = {}
        term_of = self._term_of
        for raw, tf in Counter(_raw_tokens(text)).items():
            term = term_of.get(raw)
            if term is None:
                term = "" if raw in self._stop_words else _fold(raw)
                term = term_of[raw] = _stem(term) if self._stem and term else term
            if term:
                counts[term] = counts.get(term, 0) + tf
        return counts

    def search(
        self, query: str, *, k: int, exclude: Collection[int] = ()
    ) -> list[tuple[int, float]]:
        """The ``k`` best ``(id, score)`` with a positive score, best first.

        Documents sharing no term with ``query`` never appear, so fewer than ``k`` results
        is normal. Scores are comparable within one call only.
        """
        if k <= 0 or not self._ids:
            return []
        terms = dict.fromkeys(tokenize(query, self._stop_words, stem=self._stem))
        weights = dict.fromkeys(self._selective(terms), 1.0)
        scores = self._scores(weights)
        if not scores:
            return []
        feedback = self._feedback
        if feedback is not None and len(weights) <= feedback.max_query_terms:
            scores = self._expanded(weights, scores, feedback)
        if self._around:
            scores = self._with_around(scores, k + len(exclude))
        ids = self._ids
        excluded = exclude if isinstance(exclude, set | frozenset) else set(exclude)
        if excluded:
            scores = {i: s for i, s in scores.items() if ids[i] not in excluded}
        return [(ids[index], score) for score, index in _top(scores, k)]

    def _selective(self, terms: dict[str, None]) -> list[str]:
        """A long query's ``max_query_terms`` rarest indexed terms (the most selective, in
        query order); a short query's terms as they are. The terms left out are the most
        frequent ones: the lowest idf and the longest postings, so they cost most of a
        long query's time and change its ranking least."""
        postings = self._postings
        known = [t for t in terms if t in postings]
        if len(known) <= self._max_terms:
            return known
        rare = set(sorted(known, key=lambda t: len(postings[t][0]))[: self._max_terms])
        return [t for t in known if t in rare]

    def _expanded(
        self, weights: dict[str, float], scores: dict[int, float], feedback: Feedback
    ) -> dict[int, float]:
        """Scores again with the query expanded from its first hits (see
        :mod:`chatstate.context.feedback`); the first scores when nothing is added."""
        first = [(self._document(index), score) for score, index in _top(scores, feedback.docs)]
        extra = expansion(
            first, weights, lambda term: len(self._postings[term][0]), len(self._ids), feedback
        )
        return self._scores(extra, dict(scores)) if extra else scores

    def _with_around(self, scores: dict[int, float], k: int) -> dict[int, float]:
        """The ``max(k, around_depth)`` best documents and those beside them, scored again
        with their neighbours' first scores added at the ``around`` weights (see the class
        docstring). The ``k`` best are among them: each of the first ``depth`` keeps at
        least its first score, which no document left out exceeds."""
        depth = max(k, self._around_depth)
        best = _top(scores, depth)
        reach = len(self._around)
        last = len(self._ids) - 1
        near = {
            j
            for _, index in best
            for j in range(max(0, index - reach), min(last, index + reach) + 1)
        }
        get = scores.get
        out: dict[int, float] = {}
        for index in near:
            total = get(index, 0.0)
            for distance, weight in enumerate(self._around, 1):
                total += weight * (get(index - distance, 0.0) + get(index + distance, 0.0))
            if total > 0:
                out[index] = total
        return out

    def _document(self, index: int) -> dict[str, float]:
        """The terms the document at ``index`` was indexed with (its own and, with
        ``previous``, the previous document's at that weight)."""
        terms, counts = self._own_terms[index]
        out: dict[str, float] = dict(zip(terms, counts, strict=True))
        if self._previous and index > 0:
            terms, counts = self._own_terms[index - 1]
            for term, count in zip(terms, counts, strict=True):
                out[term] = out.get(term, 0) + self._previous * count
        return out

    def _scores(
        self, weights: Mapping[str, float], scores: dict[int, float] | None = None
    ) -> dict[int, float]:
        """BM25 score per doc index, summed over the distinct query terms, each times its
        weight (1 for the query's own words), added to ``scores`` when given."""
        n_docs = len(self._ids)
        avg_length = self._total_length / n_docs or 1.0
        k1 = self._k1
        base = k1 * (1.0 - self._b)
        per_length = k1 * self._b / avg_length
        lengths = self._lengths
        scores = {} if scores is None else scores
        get = scores.get
        for term, weight in weights.items():
            entry = self._postings.get(term)
            if entry is None:
                continue
            indexes, freqs = entry
            df = len(indexes)
            idf = math.log(1.0 + (n_docs - df + 0.5) / (df + 0.5))
            lift = weight * idf * (k1 + 1.0)
            for index, tf in zip(indexes, freqs, strict=True):
                part = lift * tf / (tf + base + per_length * lengths[index])
                scores[index] = get(index, 0.0) + part
        return scores


def _top(scores: dict[int, float], k: int) -> list[tuple[float, int]]:
    """The ``k`` best ``(score, index)``, best first; ties go to the larger index (the
    newer document): ``heapq.nlargest`` by ``(score, index)``, twice as fast. The k-th
    best score is found among the bare floats (compared in C, no pair built), then only
    the documents at or above it are paired and sorted. On 3,800 scores (a search at
    10,000 bench turns): 1,043 -> 594 us for k = 104, 541 -> 308 us for k = 5."""
    if len(scores) <= k:
        return sorted(zip(scores.values(), scores, strict=True), reverse=True)
    floor = heapq.nlargest(k, scores.values())[-1]
    return sorted(((s, i) for i, s in scores.items() if s >= floor), reverse=True)[:k]
