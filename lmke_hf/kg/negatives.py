"""Corrupted negatives (LMKE section 4.1, the KG-BERT protocol) and labelled evaluation splits.

:func:`generate_negatives` draws one negative per positive of a split, avoiding the positives of the splits it
is told to; :func:`add_classification_negatives` gives ``validation`` and ``test`` labelled negatives for triple
classification. :func:`_rng` (seed checking) is shared with :mod:`lmke_hf.features`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import datasets
import numpy as np

from ._common import SPLITS
from ._tables import _split_dataset
from .graph import KnowledgeGraph, _as_int64, _check_range, _sorted_member, _triple_keys

def _rng(seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(
            f"`seed`={seed!r} must be an int (or a np.random.Generator) so that negatives are reproducible."
        )
    if seed < 0:
        raise ValueError(f"`seed`={seed} must be non-negative (numpy seeds are unsigned).")
    return np.random.default_rng(seed)


def generate_negatives(
    kg: KnowledgeGraph,
    split: str,
    seed: int | np.random.Generator,
    known_splits: Sequence[str] | None = None,
    candidate_entities: np.ndarray | None = None,
    max_rounds: int = 100,
) -> datasets.Dataset:
    """One corrupted negative per positive of ``split`` (LMKE section 4.1, KG-BERT protocol).

    For each positive a fair coin picks the head or the tail, which is replaced by an entity drawn uniformly
    from ``candidate_entities``. A draw that gives a known true triple (a positive of any of ``known_splits``,
    or of ``split`` itself) is redrawn, coin included, for all colliding rows at once, up to ``max_rounds``.

    Args:
        kg: the graph.
        split: split whose positives are corrupted.
        seed: int seed or ``np.random.Generator``; the same seed gives the same negatives.
        known_splits: splits whose positives a negative must avoid. ``None`` applies the paper's rule:
            ``["train"]`` for the train split, all three splits otherwise.
        candidate_entities: (C,) entity ids to draw from; default all entities.
        max_rounds: redraw rounds before giving up with an error.

    Returns:
        A dataset of ``2 * n`` rows, int64 ``head``, ``relation``, ``tail`` and int8 ``label``: each positive
        (label 1) directly followed by its negative (label 0).
    """
    kg._check_split(split)
    rng = _rng(seed)
    if known_splits is None:
        known_splits = ["train"] if split == "train" else list(SPLITS)
    known_splits = kg._check_split_list(known_splits, "known_splits")
    if candidate_entities is None:
        candidates = np.arange(kg.num_entities, dtype=np.int64)
    else:
        candidates = _as_int64(candidate_entities, "candidate_entities").reshape(-1)
        if candidates.size == 0:
            raise ValueError("`candidate_entities` is empty; pass at least one entity id or None for all entities.")
        _check_range(candidates, kg.num_entities, "candidate_entities")
    E, R = kg.num_entities, kg.num_relations
    positives = kg.triples(split)
    known = np.unique(
        _triple_keys(np.concatenate([kg._positives(known_splits), positives], axis=0), E, R)
    )
    negatives = positives.copy()
    pending = np.arange(positives.shape[0], dtype=np.int64)
    for _ in range(max_rounds):
        if pending.size == 0:
            break
        replace_head = rng.random(pending.size) < 0.5
        drawn = candidates[rng.integers(0, candidates.size, pending.size)]
        candidate = positives[pending].copy()
        candidate[:, 0] = np.where(replace_head, drawn, candidate[:, 0])
        candidate[:, 2] = np.where(replace_head, candidate[:, 2], drawn)
        negatives[pending] = candidate
        pending = pending[_sorted_member(known, _triple_keys(candidate, E, R))]
    if pending.size:
        h, r, t = positives[pending[0]]
        raise RuntimeError(
            f"generate_negatives: no negative found for {pending.size} positives of {split!r} after "
            f"{max_rounds} rounds (first: head {h}, relation {r}, tail {t}); nearly every candidate entity "
            "completes a known triple. Pass a larger `candidate_entities`, raise `max_rounds`, or drop those rows."
        )
    rows = np.empty((2 * positives.shape[0], 3), dtype=np.int64)
    rows[0::2], rows[1::2] = positives, negatives
    labels = np.tile(np.array([1, 0], dtype=np.int8), positives.shape[0])
    return _split_dataset(rows, labels)


def add_classification_negatives(kg: KnowledgeGraph, seed: int = 0) -> KnowledgeGraph:
    """Give ``validation`` and ``test`` labelled negatives for triple classification.

    Splits that already carry labels (FB13 and WN11 ship their negatives) are kept as given. Others get one
    negative per positive from :func:`generate_negatives`, avoiding the positives of all three splits; the
    validation split uses ``np.random.default_rng([seed, 1])`` and the test split ``[seed, 2]``. ``train``
    stays unlabelled (training negatives are drawn per epoch). Returns a new graph; ``kg`` is unchanged.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, (bool, np.bool_)):
        raise TypeError(f"`seed`={seed!r} must be an int.")
    if seed < 0:
        raise ValueError(f"`seed`={seed} must be non-negative (numpy seeds are unsigned).")
    splits = dict(kg.splits)
    negatives = dict(kg.report.get("negatives", {}))
    for stream, split in ((1, "validation"), (2, "test")):
        if "label" in kg.splits[split].column_names:
            negatives.setdefault(split, "shipped")
            continue
        splits[split] = generate_negatives(kg, split, np.random.default_rng([int(seed), stream]), list(SPLITS))
        negatives[split] = f"generated (seed {int(seed)}, stream {stream})"
    report = {**kg.report, "negatives": negatives, "negatives_seed": int(seed)}
    return dataclasses.replace(kg, splits=datasets.DatasetDict(splits), report=report)
