"""Building the split and text tables of a :class:`~lmke_hf.kg.graph.KnowledgeGraph` from string ids.

Shared by both readers (:mod:`lmke_hf.kg.kgbert` for KG-BERT folders, :mod:`lmke_hf.kg.prepared` for prepared
folders and Hub datasets) and by the negative sampler (:mod:`lmke_hf.kg.negatives`): :func:`_encode` maps
string ids to integer codes (an unknown id is an error naming file and row), :func:`_clean_split` drops duplicated
rows and contradictory labels with a warning, :func:`_split_dataset` and :func:`_text_dataset` wrap the arrays
as :class:`datasets.Dataset` tables.
"""

from __future__ import annotations

from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._common import _excerpt, _normalisation_advice, _normalisation_clash, _warn
from .graph import _triple_keys


def _encode(values: pa.Array, vocabulary: pa.Array, where: str, rows: np.ndarray, kind: str, vocabulary_source: str):
    """(n,) int64 positions of ``values`` in ``vocabulary``; error naming the first unknown value."""
    index = pc.index_in(values, value_set=vocabulary)
    missing = np.asarray(index.is_null())
    if missing.any():
        first = int(np.flatnonzero(missing)[0])
        unknown = values.filter(pa.array(missing))
        distinct = len(pc.unique(unknown))
        clash = _normalisation_clash(unknown, vocabulary)
        advice = (
            f"Add them to {vocabulary_source} or fix the triples."
            if clash is None
            else _normalisation_advice(clash, kind, Path(where).name, vocabulary_source)
        )
        raise ValueError(
            f"{where}:{rows[first]}: {kind} {_excerpt(values[first].as_py())} is not in {vocabulary_source} "
            f"({int(missing.sum())} rows, {distinct} distinct {kind} ids missing). {advice}"
        )
    return np.asarray(index, dtype=np.int64)


def _clean_split(
    triples: np.ndarray,
    label: np.ndarray | None,
    rows: np.ndarray,
    where: str,
    split: str,
    num_entities: int,
    num_relations: int,
    report: dict,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Drop duplicated rows and triples labelled both true and false, warning with the counts."""
    keys = _triple_keys(triples, num_entities, num_relations)
    row_keys = keys if label is None else keys * 2 + label
    _, first = np.unique(row_keys, return_index=True)
    keep = np.sort(first)
    duplicates = triples.shape[0] - keep.size
    split_report = report.setdefault("splits", {}).setdefault(split, {})
    split_report["raw_rows"] = int(triples.shape[0])
    split_report["duplicate_rows_dropped"] = int(duplicates)
    if duplicates:
        _warn(
            f"{where}: dropped {duplicates} duplicated rows from the {split} split (kept the first occurrence).",
        )
        triples, keys, rows = triples[keep], keys[keep], rows[keep]
        label = None if label is None else label[keep]
    split_report["conflicting_triples_dropped"] = 0
    if label is not None:
        unique_keys, counts = np.unique(keys, return_counts=True)
        conflicting = unique_keys[counts > 1]
        if conflicting.size:
            drop = np.isin(keys, conflicting)
            first_row = rows[np.flatnonzero(drop)[0]]
            _warn(
                f"{where}: {conflicting.size} triples are labelled both true and false (first at line {first_row}); "
                f"dropped their {int(drop.sum())} rows from the {split} split so that evaluation does not "
                "score contradictory labels.",
            )
            split_report["conflicting_triples_dropped"] = int(conflicting.size)
            triples, label = triples[~drop], label[~drop]
    if triples.shape[0] == 0:
        raise ValueError(f"{where}: the {split} split is empty after cleaning; it needs at least one triple.")
    return triples, label


def _split_dataset(triples: np.ndarray, label: np.ndarray | None) -> datasets.Dataset:
    columns = {
        "head": pa.array(triples[:, 0], pa.int64()),
        "relation": pa.array(triples[:, 1], pa.int64()),
        "tail": pa.array(triples[:, 2], pa.int64()),
    }
    if label is not None:
        columns["label"] = pa.array(label.astype(np.int8), pa.int8())
    return datasets.Dataset(datasets.table.InMemoryTable(pa.table(columns)))


def _text_dataset(ids: pa.Array, names: pa.Array, descriptions: pa.Array) -> datasets.Dataset:
    table = pa.table(
        {"id": ids.cast(pa.string()), "name": names.cast(pa.string()), "description": descriptions.cast(pa.string())}
    )
    return datasets.Dataset(datasets.table.InMemoryTable(table))
