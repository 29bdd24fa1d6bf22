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


CORRUPTIONS = ("uniform", "relation")
"""How `generate_negatives` draws the replacing entity: from all candidates (the paper), or from the entities seen
in that position of that relation in the training split (PyKEEN's pseudo-typed sampling)."""


def _relation_pools(triples: np.ndarray, num_relations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CSR pools of the distinct heads (position 0) and tails (position 2) of each relation: `entities[start[r, p] :
    start[r, p] + size[r, p]]`, p = 0 for heads and 1 for tails."""
    starts, sizes, chunks, offset = (
        np.zeros((num_relations, 2), np.int64),
        np.zeros((num_relations, 2), np.int64),
        [],
        0,
    )
    for p, column in enumerate((0, 2)):
        pairs = np.unique(triples[:, [1, column]], axis=0)  # (relation, entity), sorted by relation
        counts = np.bincount(pairs[:, 0], minlength=num_relations)
        starts[:, p] = offset + np.concatenate([[0], np.cumsum(counts)[:-1]])
        sizes[:, p] = counts
        chunks.append(pairs[:, 1])
        offset += pairs.shape[0]
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.int64)), starts, sizes


def generate_negatives(
    kg: KnowledgeGraph,
    split: str,
    seed: int | np.random.Generator,
    known_splits: Sequence[str] | None = None,
    candidate_entities: np.ndarray | None = None,
    max_rounds: int = 100,
    corruption: str = "uniform",
) -> datasets.Dataset:
    """One corrupted negative per positive of ``split`` (LMKE section 4.1, KG-BERT protocol).

    For each positive a fair coin picks the head or the tail, which is replaced by an entity drawn uniformly
    from ``candidate_entities``. A draw that gives a known true triple (a positive of any of ``known_splits``,
    or of ``split`` itself) is redrawn, coin included, for all colliding rows at once, up to ``max_rounds``.

    With ``corruption="relation"`` the replacing entity is drawn from those seen in the same position of the same
    relation in the *training* split (a corrupted tail of ``(h, gender, ?)`` is another gender, not a city), as
    FB13's and WN11's shipped evaluation negatives are made; rows whose pool holds no other valid entity fall back
    to uniform draws after half of ``max_rounds``.

    Args:
        kg: the graph.
        split: split whose positives are corrupted.
        seed: int seed or ``np.random.Generator``; the same seed gives the same negatives.
        known_splits: splits whose positives a negative must avoid. ``None`` applies the paper's rule:
            ``["train"]`` for the train split, all three splits otherwise.
        candidate_entities: (C,) entity ids to draw from; default all entities.
        max_rounds: redraw rounds before giving up with an error.
        corruption: ``"uniform"`` (the paper) or ``"relation"`` (pools of the training split, see above).

    Returns:
        A dataset of ``2 * n`` rows, int64 ``head``, ``relation``, ``tail`` and int8 ``label``: each positive
        (label 1) directly followed by its negative (label 0).
    """
    kg._check_split(split)
    if corruption not in CORRUPTIONS:
        raise ValueError(f"`corruption`={corruption!r} is unknown; choose one of {CORRUPTIONS}.")
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
    known = np.unique(_triple_keys(np.concatenate([kg._positives(known_splits), positives], axis=0), E, R))
    negatives = positives.copy()
    pending = np.arange(positives.shape[0], dtype=np.int64)
    if corruption == "relation":
        pool, starts, sizes = _relation_pools(kg.triples("train"), R)
    for round_ in range(max_rounds):
        if pending.size == 0:
            break
        replace_head = rng.random(pending.size) < 0.5
        drawn = candidates[rng.integers(0, candidates.size, pending.size)]
        if corruption == "relation" and round_ < max_rounds // 2:
            position = np.where(replace_head, 0, 1)
            relations = positives[pending, 1]
            size, start = sizes[relations, position], starts[relations, position]
            typed = size > 0
            picks = start + np.floor(rng.random(pending.size) * np.maximum(size, 1)).astype(np.int64)
            drawn = np.where(typed, pool[np.minimum(picks, max(pool.size - 1, 0))] if pool.size else drawn, drawn)
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
