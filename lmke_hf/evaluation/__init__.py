"""Evaluation for knowledge-graph embeddings: filtered ranks, link-prediction metrics, long-tail
(degree-bucket) breakdowns, triple-classification accuracy, and the loops that run the models over a split.

* ``ranks``: :func:`filtered_ranks`, :class:`RankTriple`, :func:`ranking_metrics_from_ranks`;
* ``link_prediction``: :class:`LinkPredictionEvaluator`, :func:`degree_bucket`, :func:`degree_bucket_label`,
  :func:`plot_degree_buckets`;
* ``classification``: :func:`tune_thresholds`, :func:`classification_report`;
* ``rerank``: :class:`GraphReranker`, SimKGC's bonus for candidates near the given entity in the training graph;
* ``loops``: :func:`encode_entities`, :func:`rank_link_prediction`, :func:`score_triples`. Imported on first use, so that the metrics
  (``import lmke_hf.evaluation``) do not load the data and feature code the loops need.

All but the loops work on scores and ranks only, so any model that scores a block of queries
against all entities (``(B, N)`` scores, higher = more plausible) can be evaluated.

Rank conventions follow pykeen (Ali et al., "Bringing Light Into the Dark", TPAMI 2021). For a gold
entity with score ``s`` among ``N`` candidates that survive filtering:

* optimistic rank  = 1 + #{candidates with score >  s}     (ties resolved in the gold's favour)
* pessimistic rank =     #{candidates with score >= s}     (ties resolved against it; counts the gold)
* realistic rank   = (optimistic + pessimistic) / 2        (expected rank under random tie-breaking)

Headline metrics (``mr``, ``mrr``, ``hits@k``) use the realistic rank, so a model that gives every
entity the same score gets MR ``(N + 1) / 2`` instead of a perfect 1. The original LMKE code broke
ties arbitrarily, which sits between the optimistic and pessimistic numbers also reported here.

Example:
    >>> import torch
    >>> scores = torch.tensor([[3.0, 2.0, 2.0, 2.0]])  # gold (index 1) ties with 2 others, 1 above
    >>> r = filtered_ranks(scores, torch.tensor([1]))
    >>> r.optimistic.tolist(), r.pessimistic.tolist(), r.realistic.tolist()
    ([2], [4], [3.0])
    >>> ev = LinkPredictionEvaluator()
    >>> _ = ev.update(
    ...     scores, torch.tensor([1]), direction="tail", relations=torch.tensor([0]), gold_degrees=torch.tensor([5])
    ... )
    >>> ev.compute()["mr"]
    3.0
"""

from __future__ import annotations

from typing import Any

from .classification import classification_report, tune_thresholds
from .link_prediction import LinkPredictionEvaluator, degree_bucket, degree_bucket_label, plot_degree_buckets
from .ranks import DIRECTIONS, RankTriple, filtered_ranks, ranking_metrics_from_ranks
from .rerank import GraphReranker

_LOOPS = ("encode_entities", "rank_link_prediction", "score_triples")


def __getattr__(name: str) -> Any:
    if name in _LOOPS:
        from . import loops

        return getattr(loops, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LOOPS})


__all__ = [
    "DIRECTIONS",
    "RankTriple",
    "filtered_ranks",
    "ranking_metrics_from_ranks",
    "degree_bucket",
    "degree_bucket_label",
    "LinkPredictionEvaluator",
    "plot_degree_buckets",
    "GraphReranker",
    "classification_report",
    "tune_thresholds",
    *_LOOPS,
]
