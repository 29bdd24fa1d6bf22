"""The in-memory knowledge graph: :class:`KnowledgeGraph` and its filter index :class:`AnswerIndex`.

A :class:`KnowledgeGraph` holds integer-coded triples in a :class:`datasets.DatasetDict` and the entity and
relation texts in two :class:`datasets.Dataset` tables whose row index is the integer id. Every statistic that
could leak evaluation triples (degrees, answer indices used as filters) takes the splits it is computed from as an
explicit argument. The int64 triple-key helpers here (:func:`_triple_keys`, :func:`_sorted_member`) also serve
the readers and the negative sampler.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def _as_int64(values, argument: str) -> np.ndarray:
    array = np.asarray(values)
    if array.dtype.kind not in "iu":
        if array.size == 0:
            return array.astype(np.int64)
        raise TypeError(f"`{argument}` must hold integers, got dtype {array.dtype}; pass integer ids.")
    return array.astype(np.int64, copy=False)


def _check_range(values: np.ndarray, upper: int, argument: str) -> None:
    if values.size and (values.min() < 0 or values.max() >= upper):
        bad = values[(values < 0) | (values >= upper)][0]
        raise ValueError(f"`{argument}` holds id {int(bad)}, outside [0, {upper}); pass ids of this graph.")


def _check_key_capacity(num_entities: int, num_relations: int) -> None:
    if num_entities * num_relations * num_entities >= np.iinfo(np.int64).max:
        raise ValueError(
            f"num_entities={num_entities} and num_relations={num_relations} are too large for int64 triple "
            "keys (num_entities**2 * num_relations must stay below 2**63)."
        )


def _triple_keys(triples: np.ndarray, num_entities: int, num_relations: int) -> np.ndarray:
    """One int64 per triple: ``(head * num_relations + relation) * num_entities + tail``. (n, 3) -> (n,)"""
    return (triples[:, 0] * num_relations + triples[:, 1]) * num_entities + triples[:, 2]


def _sorted_member(sorted_keys: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """Vectorised membership of ``queries`` in the sorted array ``sorted_keys``. Same shape as ``queries``."""
    if sorted_keys.size == 0:
        return np.zeros(queries.shape, dtype=bool)
    position = np.searchsorted(sorted_keys, queries)
    return sorted_keys[np.minimum(position, sorted_keys.size - 1)] == queries


class AnswerIndex:
    """All known answers of ``(given, relation)`` queries, as a CSR table over sorted int64 keys.

    The key of a query is ``given * num_relations + relation``; ``indptr[i]:indptr[i + 1]`` delimits the
    sorted, de-duplicated answers of ``keys[i]`` in ``indices``. Built with ``np.unique`` and
    ``np.searchsorted``; no Python loop over triples or queries.

    For tail prediction ``given`` is the head and ``answer`` the tail; for head prediction ``given`` is the
    tail and ``answer`` the head (see :meth:`KnowledgeGraph.answer_index`).

    Args:
        given: (n,) int ids of the given entity.
        relation: (n,) int relation ids.
        answer: (n,) int ids of the answer entity.
        num_entities: number of entities; ids must lie in ``[0, num_entities)``.
        num_relations: number of relations; ids must lie in ``[0, num_relations)``.

    Example::

        >>> index = AnswerIndex(np.array([0, 0, 1]), np.array([0, 0, 1]), np.array([2, 1, 0]), 3, 2)
        >>> index.answers(0, 0)
        array([1, 2])
        >>> index.padded(np.array([0, 1, 2]), np.array([0, 1, 0]))
        array([[ 1,  2],
               [ 0, -1],
               [-1, -1]])
    """

    def __init__(
        self, given: ArrayLike, relation: ArrayLike, answer: ArrayLike, num_entities: int, num_relations: int
    ) -> None:
        given = _as_int64(given, "given")
        relation = _as_int64(relation, "relation")
        answer = _as_int64(answer, "answer")
        if not (given.ndim == relation.ndim == answer.ndim == 1) or not (given.shape == relation.shape == answer.shape):
            raise ValueError(
                "`given`, `relation` and `answer` must be 1-D arrays of equal length, got shapes "
                f"{given.shape}, {relation.shape} and {answer.shape}."
            )
        if num_entities < 1 or num_relations < 1:
            raise ValueError(f"num_entities={num_entities} and num_relations={num_relations} must both be positive.")
        _check_key_capacity(num_entities, num_relations)
        _check_range(given, num_entities, "given")
        _check_range(answer, num_entities, "answer")
        _check_range(relation, num_relations, "relation")
        self.num_entities = int(num_entities)
        self.num_relations = int(num_relations)
        pair_keys = np.unique((given * num_relations + relation) * num_entities + answer)
        query_keys = pair_keys // num_entities
        self.indices = pair_keys % num_entities
        self.keys, starts = np.unique(query_keys, return_index=True)
        self.indptr = np.append(starts, pair_keys.size).astype(np.int64)
        self._pair_keys = pair_keys

    def __repr__(self) -> str:
        return (
            f"AnswerIndex(queries={self.num_queries}, pairs={self.num_pairs}, max_answers={self.max_answers}, "
            f"num_entities={self.num_entities}, num_relations={self.num_relations})"
        )

    @property
    def num_queries(self) -> int:
        """Number of distinct ``(given, relation)`` keys."""
        return int(self.keys.size)

    @property
    def num_pairs(self) -> int:
        """Number of distinct ``(given, relation, answer)`` triples."""
        return int(self.indices.size)

    @property
    def max_answers(self) -> int:
        """Largest number of answers of any query (0 for an empty index)."""
        return int(np.diff(self.indptr).max()) if self.keys.size else 0

    def _locate(self, given, relation) -> tuple[np.ndarray, np.ndarray]:
        """(B,) start offsets into ``indices`` and (B,) answer counts of each query (0 if unknown)."""
        given = _as_int64(given, "given").reshape(-1)
        relation = _as_int64(relation, "relation").reshape(-1)
        if given.shape != relation.shape:
            raise ValueError(f"`given` and `relation` must have the same length, got {given.size} and {relation.size}.")
        _check_range(given, self.num_entities, "given")
        _check_range(relation, self.num_relations, "relation")
        query = given * self.num_relations + relation
        if self.keys.size == 0:
            zeros = np.zeros(query.shape, dtype=np.int64)
            return zeros, zeros.copy()
        position = np.searchsorted(self.keys, query)
        clipped = np.minimum(position, self.keys.size - 1)
        found = self.keys[clipped] == query
        starts = np.where(found, self.indptr[clipped], 0)
        counts = np.where(found, self.indptr[clipped + 1] - self.indptr[clipped], 0)
        return starts, counts

    def counts(self, given: ArrayLike, relation: ArrayLike) -> np.ndarray:
        """(B,) int64 number of known answers of each query."""
        return self._locate(given, relation)[1]

    def answers(self, given: int, relation: int) -> np.ndarray:
        """Sorted int64 ids of the known answers of one query; empty if the query is unknown."""
        starts, counts = self._locate(np.array([given]), np.array([relation]))
        return self.indices[starts[0] : starts[0] + counts[0]].copy()

    def pairs(self, given: ArrayLike, relation: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Every known answer of every query of a batch, flattened.

        Args:
            given: (B,) int entity ids.
            relation: (B,) int relation ids.

        Returns:
            ``(rows, answers)``, two (P,) int64 arrays: ``answers[k]`` is a known answer of query ``rows[k]``.
            A (B, N) filter mask is ``mask[rows, answers] = True``.
        """
        starts, counts = self._locate(given, relation)
        rows = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
        offsets = np.arange(rows.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        return rows, self.indices[np.repeat(starts, counts) + offsets]

    def padded(self, given: ArrayLike, relation: ArrayLike, pad_value: int = -1) -> np.ndarray:
        """(B, max_answers_in_batch) int64 answers of each query, right-padded with ``pad_value``."""
        starts, counts = self._locate(given, relation)
        width = int(counts.max()) if counts.size else 0
        out = np.full((counts.size, width), pad_value, dtype=np.int64)
        rows = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
        columns = np.arange(rows.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        out[rows, columns] = self.indices[np.repeat(starts, counts) + columns]
        return out

    def contains(self, given: ArrayLike, relation: ArrayLike, answer: ArrayLike) -> np.ndarray:
        """Boolean array (broadcast shape of the inputs): is ``answer`` a known answer of the query?"""
        given, relation, answer = np.broadcast_arrays(
            _as_int64(given, "given"), _as_int64(relation, "relation"), _as_int64(answer, "answer")
        )
        _check_range(given, self.num_entities, "given")
        _check_range(answer, self.num_entities, "answer")
        _check_range(relation, self.num_relations, "relation")
        keys = (given * self.num_relations + relation) * self.num_entities + answer
        return _sorted_member(self._pair_keys, keys)


def _arrow(dataset: datasets.Dataset) -> pa.Table:
    """The pyarrow table of a dataset, with any indices mapping (select/shuffle) applied."""
    return (dataset.flatten_indices() if dataset._indices is not None else dataset).data.table


def _split_columns(dataset: datasets.Dataset, columns: Sequence[str]) -> dict[str, np.ndarray]:
    table = _arrow(dataset)
    return {column: table.column(column).to_numpy() for column in columns}


def _word_counts(texts: pa.Array) -> np.ndarray:
    """(n,) whitespace-separated word counts, as Python's ``str.split()`` counts them."""
    return np.asarray(pc.count_substring_regex(texts, r"\S+").fill_null(0), dtype=np.int64)


@dataclass(eq=False)
class KnowledgeGraph:
    """A knowledge graph with integer-coded triples and entity / relation texts.

    Attributes:
        name: short name, e.g. ``"wn18rr"``.
        splits: ``"train"``, ``"validation"``, ``"test"``; int64 columns ``head``, ``relation``, ``tail`` and,
            only where the split carries labelled negatives, an int8 ``label`` (1 true, 0 false).
        entities: columns ``id`` (original id, e.g. ``"/m/0abc"``), ``name``, ``description``; the row index is
            the integer entity id. ``description`` is the entity text LMKE feeds the encoder (it may repeat the
            name, e.g. wn18rr's ``"stool, solid excretory product ..."``); ``name`` is the short name.
        relations: columns ``id``, ``name``, ``description``; the row index is the integer relation id.
        source: where the graph was read from (folder path or ``hub:<repo_id>``).
        description_source: file (or ``"name"``) the descriptions came from.
        report: what loading did to the raw files (dropped duplicates and conflicts per split, negatives
            seed, an inductive split's record, ...), kept for the dataset card and :meth:`statistics`; the
            inductive record (saved with a prepared folder) also turns on evaluate's inductive guards.

    Example::

        >>> kg = load_kg("wn18rr", data_dir="/path/to/data")           # doctest: +SKIP
        >>> kg.triples("train").shape, kg.num_entities                 # doctest: +SKIP
        ((86835, 3), 40943)
        >>> buckets = kg.degree_buckets(kg.degrees(["train"]))          # doctest: +SKIP
        >>> filters = kg.answer_index(["train", "validation", "test"], "tail")  # doctest: +SKIP
    """

    name: str
    splits: datasets.DatasetDict
    entities: datasets.Dataset
    relations: datasets.Dataset
    source: str
    description_source: str = ""
    report: dict = field(default_factory=dict)
    _entity_index: dict | None = field(default=None, init=False, repr=False)
    _relation_index: dict | None = field(default=None, init=False, repr=False)

    @property
    def num_entities(self) -> int:
        return self.entities.num_rows

    @property
    def num_relations(self) -> int:
        return self.relations.num_rows

    def entity_index(self) -> dict[str, int]:
        """Original entity id -> integer id (built once, then cached)."""
        if self._entity_index is None:
            self._entity_index = {key: i for i, key in enumerate(_arrow(self.entities).column("id").to_pylist())}
        return self._entity_index

    def relation_index(self) -> dict[str, int]:
        """Original relation id -> integer id (built once, then cached)."""
        if self._relation_index is None:
            self._relation_index = {key: i for i, key in enumerate(_arrow(self.relations).column("id").to_pylist())}
        return self._relation_index

    def _check_split(self, split: str, argument: str = "split") -> None:
        if split not in self.splits:
            raise ValueError(f"`{argument}`={split!r} is not a split of {self.name}; use one of {list(self.splits)}.")

    def _check_split_list(self, splits: Sequence[str], argument: str) -> list[str]:
        if isinstance(splits, str):
            raise TypeError(
                f"`{argument}` must be a sequence of split names, got the string {splits!r}; write [{splits!r}]."
            )
        splits = list(splits)
        for split in splits:
            self._check_split(split, argument)
        return splits

    def triples(self, split: str, positives_only: bool = True) -> np.ndarray:
        """(n, 3) int64 ``head, relation, tail`` of a split; only label-1 rows when ``positives_only``."""
        self._check_split(split)
        dataset = self.splits[split]
        has_label = "label" in dataset.column_names
        columns = _split_columns(dataset, ["head", "relation", "tail"] + (["label"] if has_label else []))
        triples = np.stack([columns["head"], columns["relation"], columns["tail"]], axis=1).astype(np.int64)
        if positives_only and has_label:
            triples = triples[columns["label"] == 1]
        return triples.reshape(-1, 3)

    def labels(self, split: str) -> np.ndarray:
        """(n,) int8 labels of every row of a split (all ones where the split has no ``label`` column)."""
        self._check_split(split)
        dataset = self.splits[split]
        if "label" not in dataset.column_names:
            return np.ones(dataset.num_rows, dtype=np.int8)
        return _split_columns(dataset, ["label"])["label"].astype(np.int8)

    def _positives(self, splits: Sequence[str]) -> np.ndarray:
        parts = [self.triples(split) for split in splits]
        return np.concatenate(parts, axis=0) if parts else np.zeros((0, 3), dtype=np.int64)

    def degrees(self, splits: Sequence[str]) -> np.ndarray:
        """(num_entities,) int64 occurrences of each entity as head or tail in the positives of ``splits``.

        ``splits`` has no default so that evaluation triples can only enter when named, e.g.
        ``kg.degrees(["train"])`` for LMKE's long-tail analysis.
        """
        splits = self._check_split_list(splits, "splits")
        triples = self._positives(splits)
        return np.bincount(triples[:, [0, 2]].reshape(-1), minlength=self.num_entities).astype(np.int64)

    def answer_index(self, splits: Sequence[str], direction: str) -> AnswerIndex:
        """Known answers of the positives of ``splits``.

        Args:
            splits: split names whose positives are indexed (e.g. all three for filtered ranking).
            direction: ``"tail"``: key (head, relation) -> tails; ``"head"``: key (tail, relation) -> heads.
        """
        splits = self._check_split_list(splits, "splits")
        if direction not in ("tail", "head"):
            raise ValueError(f"`direction`={direction!r} is not supported; use 'tail' or 'head'.")
        triples = self._positives(splits)
        given, answer = (triples[:, 0], triples[:, 2]) if direction == "tail" else (triples[:, 2], triples[:, 0])
        return AnswerIndex(given, triples[:, 1], answer, self.num_entities, self.num_relations)

    @staticmethod
    def degree_buckets(degrees: np.ndarray) -> np.ndarray:
        """LMKE's long-tail group of each degree: `lmke_hf.evaluation.degree_bucket`, reached from the graph."""
        from ..evaluation import degree_bucket

        return degree_bucket(degrees)

    def statistics(self) -> dict:
        """Sizes and text statistics, comparable with LMKE Table 3 and the data README.

        Word counts split on whitespace and are averaged over the entities that occur in any row of any split
        (negatives included), as in the data README.
        """
        split_stats = {}
        used = np.zeros(self.num_entities, dtype=bool)
        train_entities = np.zeros(self.num_entities, dtype=bool)
        train_positive = self.triples("train") if "train" in self.splits else np.zeros((0, 3), np.int64)
        train_entities[train_positive[:, [0, 2]].reshape(-1)] = True
        unseen = {}
        for split in self.splits:
            all_rows = self.triples(split, positives_only=False)
            positives = self.triples(split)
            used[all_rows[:, [0, 2]].reshape(-1)] = True
            split_stats[split] = {
                "triples": int(positives.shape[0]),
                "negatives": int(all_rows.shape[0] - positives.shape[0]),
                "labelled": "label" in self.splits[split].column_names,
            }
            if split != "train":
                in_split = np.unique(positives[:, [0, 2]].reshape(-1))
                unseen[split] = int((~train_entities[in_split]).sum())
        table = _arrow(self.entities)
        used_rows = np.flatnonzero(used)
        descriptions = table.column("description").combine_chunks().take(pa.array(used_rows))
        names = table.column("name").combine_chunks().take(pa.array(used_rows))
        description_words = _word_counts(descriptions)
        name_words = _word_counts(names)
        return {
            "name": self.name,
            "source": self.source,
            "description_source": self.description_source,
            "entities": self.num_entities,
            "relations": self.num_relations,
            "entities_in_triples": int(used.sum()),
            **{split: split_stats[split]["triples"] for split in split_stats},
            "splits": split_stats,
            "entities_unseen_in_train": unseen,
            "avg_description_words": round(float(description_words.mean()), 2) if used_rows.size else 0.0,
            "median_description_words": float(np.median(description_words)) if used_rows.size else 0.0,
            "avg_name_words": round(float(name_words.mean()), 2) if used_rows.size else 0.0,
            "descriptions_equal_to_name": int(pc.sum(pc.equal(descriptions, names)).as_py() or 0),
            "report": self.report,
        }
