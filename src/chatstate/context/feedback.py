"""Pseudo-relevance feedback for BM25 (RM3-style query expansion). Pure.

A question often shares no word with the message that answers it ("What has Melanie
painted?" against "take a look at this: a sunset over the lake"), but the messages that
rank first for it usually talk about the same thing. :func:`expansion` takes the best
``docs`` hits of a first search and gives the ``terms`` terms that weigh most in them
(each hit's share of the first scores x the term's share of the hit x its idf), each
weighted at most ``weight`` against 1 for the query's own words; the search is then run
again with the query's words and these, whose scores are added to the first ones.
Measured on LoCoMo (7 conversations, 1,510 evidence turns), evidence recall at 2,000
tokens with 20 terms: 0.702 without feedback, 0.732 with every term allowed, 0.738 with
terms in over 10% of the messages left out (5%: 0.734, 2%: 0.721); 10 documents, 30
terms or weight 0.5 gave 0.730 to 0.738. ``Feedback()`` takes 10 terms (with the speaker
lift of :mod:`chatstate.context.speakers`, 0.762 as with 20) and none for a query of more
than 12 terms. The caps keep the second pass cheap: on 10,000 LoCoMo messages a search
took 0.8 ms without feedback, 3.1 ms with 20 terms of any frequency, 1.8 ms with the 10%
cap; 10 terms halve the second pass again.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Feedback", "expansion"]


@dataclass(frozen=True, slots=True)
class Feedback:
    """How a BM25 search expands its query from its first hits."""

    docs: int = 5
    """First hits the expansion terms are taken from."""
    terms: int = 10
    """Expansion terms at most."""
    weight: float = 0.3
    """The best expansion term's weight; a query word weighs 1."""
    min_df: int = 2
    """Terms found in fewer documents are left out (a typo, a one-off name)."""
    max_share: float = 0.1
    """Terms found in more than this share of the documents are left out: they weigh
    little (low idf) and cost the most to score (long postings)."""
    max_query_terms: int = 12
    """A query with more distinct terms than this is not expanded: a long message says
    enough on its own (LoCoMo's questions have 2 to 12), and the second pass would cost
    as much as the first."""

    def __post_init__(self) -> None:
        if (
            self.docs < 1
            or self.terms < 0
            or not 0 <= self.weight <= 1
            or self.min_df < 1
            or not 0 < self.max_share <= 1
            or self.max_query_terms < 1
        ):
            raise ValueError(
                "feedback needs docs >= 1, terms >= 0, weight within [0, 1], min_df >= 1, "
                "max_share within (0, 1], max_query_terms >= 1"
            )


def expansion(
    first: Sequence[tuple[Mapping[str, float], float]],
    query: Mapping[str, float],
    df: Callable[[str], int],
    n_docs: int,
    feedback: Feedback,
) -> dict[str, float]:
    """Expansion terms and their weights (the query's own terms left out).

    ``first`` holds the best first hits, each as its document's term frequencies and its
    first score; ``df`` gives a term's document frequency in the index of ``n_docs``.
    """
    total = sum(score for _, score in first if score > 0)
    if total <= 0 or feedback.terms == 0 or len(query) > feedback.max_query_terms:
        return {}
    mass: dict[str, float] = {}
    cap = max(feedback.min_df, feedback.max_share * n_docs)
    idfs: dict[str, float] = {}  # each term's idf once, -1 if left out: hits share terms
    for terms, score in first:
        length = sum(terms.values())
        if score <= 0 or length <= 0:
            continue
        share = score / total / length
        for term, tf in terms.items():
            idf = idfs.get(term)
            if idf is None:
                freq = df(term)
                left_out = term in query or freq < feedback.min_df or freq > cap
                idf = idfs[term] = (
                    -1.0 if left_out else math.log(1.0 + (n_docs - freq + 0.5) / (freq + 0.5))
                )
            if idf >= 0:
                mass[term] = mass.get(term, 0.0) + share * tf * idf
    best = sorted(mass.items(), key=lambda item: (-item[1], item[0]))[: feedback.terms]
    if not best or best[0][1] <= 0:
        return {}
    top = best[0][1]
    return {term: feedback.weight * value / top for term, value in best}
