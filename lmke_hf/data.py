"""Knowledge graphs for LMKE / C-LMKE: loading, answer indices, negatives and Hub export.

A :class:`KnowledgeGraph` holds integer-coded triples in a :class:`datasets.DatasetDict` and the entity and
relation texts in two :class:`datasets.Dataset` tables whose row index is the integer id. It is read from

* a folder in the KG-BERT / LMKE layout (``train.tsv``, ``dev.tsv``, ``test.tsv``, ``entities.txt``,
  ``relations.txt``, ``entity2text*.txt``, ``relation2text.txt``),
* a folder written by :func:`save_prepared` (parquet, Hub-ready), or
* a Hugging Face Hub dataset repository holding such a folder (configs ``triples``, ``entities``,
  ``relations``).

Every statistic that could leak evaluation triples (degrees, answer indices used as filters, the known-triple
set of the negative sampler) takes the splits it is computed from as an explicit argument.

Example::

    >>> from lmke_hf.data import load_kg
    >>> kg = load_kg("umls", data_dir="/path/to/data")          # doctest: +SKIP
    >>> kg.triples("train").shape                                 # doctest: +SKIP
    (5216, 3)
    >>> index = kg.answer_index(["train"], direction="tail")      # doctest: +SKIP
    >>> rows, answers = index.pairs(heads, relations)             # doctest: +SKIP

References: Wang et al., "Language Models as Knowledge Embeddings", IJCAI 2022 (section 4.1 for the
negative sampling protocol of triple classification).
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import json
import logging
import os
import re
import shutil
import sys
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

SHORT_NAMES = {
    "wn18rr": "wn18rr",
    "fb15k-237": "fb15k-237",
    "fb15k237": "fb15k-237",
    "fb13": "fb13",
    "umls": "umls",
    "wn11": "wn11",
    "nations": "nations",
    "kinship": "kinship",
}
"""Accepted short names (lower case) and the folder name they resolve to."""

DATA_DIR_ENV = "LMKE_HF_DATA_DIR"
"""Environment variable naming the folder that holds one sub-folder per short name."""

SPLITS = ("train", "validation", "test")
"""Split names of every :class:`KnowledgeGraph`."""

SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv", "test": "test.tsv"}
"""KG-BERT file of each split."""

PREPARED_METADATA = "lmke_hf_kg.json"
"""Metadata file written by :func:`save_prepared`."""

PREPARED_FORMAT_VERSION = 1

"""Dataset configs of a prepared folder / Hub repository."""

_PREPARED_FILES = {
    "triples": {split: f"data/{split}.parquet" for split in SPLITS},
    "entities": {"train": "entities/entities.parquet"},
    "relations": {"train": "relations/relations.parquet"},
}

_METADATA_KEYS = frozenset(
    {
        "format_version",
        "name",
        "description_source",
        "labelled_splits",
        "negatives",
        "negatives_seed",
        "source",
        "prepared_at",
        "statistics",
        "cleaning",
    }
)


@dataclass(frozen=True)
class _TextLayout:
    """Which text files of a KG-BERT folder give entity names and descriptions.

    ``names`` and ``descriptions`` are candidate files in order of preference; ``name_separator`` cuts the
    name out of a ``name<sep>definition`` line; ``stand_ins`` maps a description file that is not the
    paper's text to the warning issued when it is used.
    """

    names: tuple[str, ...] = ("entity2text.txt",)
    name_separator: str | None = None
    descriptions: tuple[str, ...] = (
        "FB15k_mid2description.txt",
        "entity2textlong.txt",
        "my_entity2text.txt",
        "entity2text.txt",
    )
    stand_ins: tuple[tuple[str, str], ...] = ()


_TEXT_LAYOUTS = {
    "wn18rr": _TextLayout(
        names=("entity2text.txt",),
        name_separator=", ",
        descriptions=("my_entity2text.txt", "entity2text.txt"),
    ),
    "fb15k-237": _TextLayout(
        names=("entity2text.txt",),
        descriptions=("FB15k_mid2description.txt", "entity2textlong.txt", "entity2text_firstsentence.txt"),
        stand_ins=(
            (
                "entity2text_firstsentence.txt",
                "fb15k-237: using entity2text_firstsentence.txt (StAR's 'name -- first sentence', about 24 "
                "words) as a stand-in for the paper's long descriptions (FB15k_mid2description.txt, about 142 "
                "words), which are not in {folder}; results are not comparable with LMKE Table 3.",
            ),
        ),
    ),
    "fb13": _TextLayout(
        names=("entity2text_capital.txt", "entity2textshort.txt"),
        descriptions=("entity2text.txt",),
    ),
    "umls": _TextLayout(names=("entity2text.txt",), descriptions=("entity2textlong.txt", "entity2text.txt")),
    "wn11": _TextLayout(names=("entity2text.txt",), descriptions=("entity2text.txt",)),
}

_LICENCE_NOTES = {
    "wn18rr": (
        "other",
        "WordNet 3.0 licence (Princeton University), see `Wordnet3.0-LICENSE`. Splits from ConvE (MIT), "
        "texts from LMKE (no licence file).",
    ),
    "wn11": ("other", "WordNet 3.0 licence (Princeton University), see `Wordnet3.0-LICENSE`; files from KG-BERT "
             "(Apache-2.0) and OpenKE (MIT)."),
    "fb15k-237": (
        "other",
        "Microsoft Research Data License Agreement (see `MSR-LA_Data_Full_Rights_FB15K-237.docx`): "
        "non-commercial or research use only, redistribution under the same terms, modified files must carry "
        "a notice of the change and its date (see *Changes* below). The Freebase FB15k portion is CC-BY 2.5; "
        "description text derived from Wikipedia is CC BY-SA.",
    ),
    "fb13": ("unknown", "No licence statement found for FB13 (Socher et al. 2013); files from LMKE/KG-BERT "
             "(Apache-2.0) and OpenKE (MIT). Entity texts derived from Wikipedia are CC BY-SA."),
    "umls": ("unknown", "No licence statement found for UMLS (Kok & Domingos 2007); descriptions come from "
             "Wikipedia via KG-BERT's `wiki.py` (CC BY-SA)."),
    "nations": ("unknown", "No licence statement found for Nations (Kok & Domingos 2007); files from ConvE (MIT)."),
    "kinship": ("unknown", "No licence statement found for Kinship (Kok & Domingos 2007); files from ConvE (MIT)."),
}

_SOURCE_NOTES = {
    "wn18rr": "Neph0s/LMKE `data/WN18RR/` (splits byte-identical to ConvE's WN18RR).",
    "fb15k-237": "Neph0s/LMKE `data/fb15k-237/` (train from ConvE, identical to KG-BERT's); "
    "`entity2text_firstsentence.txt` from StAR_KGC is a stand-in for the paper's descriptions.",
    "fb13": "Neph0s/LMKE `data/FB13/` (train rebuilt from OpenKE, byte-identical to KG-BERT's).",
    "umls": "Neph0s/LMKE `data/umls/` (triple sets equal ConvE's umls).",
    "wn11": "yao8839836/kg-bert `data/WN11/` (train rebuilt from OpenKE, byte-identical to KG-BERT's).",
    "nations": "TimDettmers/ConvE `nations.tar.gz`.",
    "kinship": "TimDettmers/ConvE `kinship.tar.gz`.",
}

_LICENCE_FILE_PATTERNS = ("*LICENSE*", "*LICENCE*", "MSR-LA*", "*_README.txt")


_MAX_EXCERPT = 200
"""Characters of a line (or id) an error or warning message quotes at most."""


def _excerpt(text, limit: int = _MAX_EXCERPT, quote=repr) -> str:
    """``quote(text)`` (``repr`` or ``ascii``) cut to ``limit`` characters, so one bad line cannot flood a message."""
    text = str(text)
    if len(text) <= limit:
        return quote(text)
    return f"{quote(text[:limit])}... ({len(text):,} characters in all)"


def _unicode_form(text: str) -> str:
    if unicodedata.is_normalized("NFC", text):
        return "NFC"
    return "NFD" if unicodedata.is_normalized("NFD", text) else "neither NFC nor NFD"


def _normalisation_clash(unknown: pa.Array, known: pa.Array) -> tuple[int, str, str] | None:
    """Distinct ``unknown`` strings that equal a ``known`` one only once both are NFC-normalised.

    Returns ``(count, first unknown, the known string it matches)`` or ``None``; only called on error paths.
    """
    unknown = pc.unique(unknown.drop_null())
    position = pc.index_in(pc.utf8_normalize(unknown, form="NFC"), value_set=pc.utf8_normalize(known, form="NFC"))
    matched = np.asarray(position.is_valid())
    if not matched.any():
        return None
    first = int(np.flatnonzero(matched)[0])
    return int(matched.sum()), unknown[first].as_py(), known[position[first].as_py()].as_py()


def _normalisation_advice(clash: tuple[int, str, str], kind: str, here: str, there: str) -> str:
    count, unknown, known = clash
    return (
        f"{count} of these {kind} ids equal an id of {there} once both are normalised to Unicode NFC, e.g. "
        f"{_excerpt(unknown, quote=ascii)} ({_unicode_form(unknown)}) in {here} vs {_excerpt(known, quote=ascii)} "
        f"({_unicode_form(known)}) in {there}: the files write the same text in different Unicode normalisation "
        "forms. Normalise every file to NFC, e.g. with Python's unicodedata.normalize('NFC', text)."
    )


def _did_you_mean(value: str, choices, n: int = 3) -> str:
    """`` (did you mean 'a' or 'b'?)`` from :func:`difflib.get_close_matches`, or ``""``."""
    close = difflib.get_close_matches(str(value), list(choices), n=n, cutoff=0.6)
    return f" (did you mean {' or '.join(_excerpt(c) for c in close)}?)" if close else ""


def _warn(message: str) -> None:
    """``warnings.warn`` attributed to the first caller outside this module (the user's ``load_kg`` line)."""
    frame, level = sys._getframe(0), 1
    while frame is not None and frame.f_globals.get("__name__") == __name__:
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


# ----------------------------------------------------------------------------------------------------------
# Answer index
# ----------------------------------------------------------------------------------------------------------


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

    def __init__(self, given, relation, answer, num_entities: int, num_relations: int):
        given = _as_int64(given, "given")
        relation = _as_int64(relation, "relation")
        answer = _as_int64(answer, "answer")
        if not (given.ndim == relation.ndim == answer.ndim == 1) or not (
            given.shape == relation.shape == answer.shape
        ):
            raise ValueError(
                "`given`, `relation` and `answer` must be 1-D arrays of equal length, got shapes "
                f"{given.shape}, {relation.shape} and {answer.shape}."
            )
        if num_entities < 1 or num_relations < 1:
            raise ValueError(
                f"num_entities={num_entities} and num_relations={num_relations} must both be positive."
            )
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
            raise ValueError(
                f"`given` and `relation` must have the same length, got {given.size} and {relation.size}."
            )
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

    def counts(self, given, relation) -> np.ndarray:
        """(B,) int64 number of known answers of each query."""
        return self._locate(given, relation)[1]

    def answers(self, given: int, relation: int) -> np.ndarray:
        """Sorted int64 ids of the known answers of one query; empty if the query is unknown."""
        starts, counts = self._locate(np.array([given]), np.array([relation]))
        return self.indices[starts[0] : starts[0] + counts[0]].copy()

    def pairs(self, given, relation) -> tuple[np.ndarray, np.ndarray]:
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

    def padded(self, given, relation, pad_value: int = -1) -> np.ndarray:
        """(B, max_answers_in_batch) int64 answers of each query, right-padded with ``pad_value``."""
        starts, counts = self._locate(given, relation)
        width = int(counts.max()) if counts.size else 0
        out = np.full((counts.size, width), pad_value, dtype=np.int64)
        rows = np.repeat(np.arange(counts.size, dtype=np.int64), counts)
        columns = np.arange(rows.size, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
        out[rows, columns] = self.indices[np.repeat(starts, counts) + columns]
        return out

    def contains(self, given, relation, answer) -> np.ndarray:
        """Boolean array (broadcast shape of the inputs): is ``answer`` a known answer of the query?"""
        given, relation, answer = np.broadcast_arrays(
            _as_int64(given, "given"), _as_int64(relation, "relation"), _as_int64(answer, "answer")
        )
        _check_range(given, self.num_entities, "given")
        _check_range(answer, self.num_entities, "answer")
        _check_range(relation, self.num_relations, "relation")
        keys = (given * self.num_relations + relation) * self.num_entities + answer
        return _sorted_member(self._pair_keys, keys)


# ----------------------------------------------------------------------------------------------------------
# Knowledge graph
# ----------------------------------------------------------------------------------------------------------


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
            seed, ...), kept for the dataset card and :meth:`statistics`.

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
                f"`{argument}` must be a sequence of split names, got the string {splits!r}; "
                f"write [{splits!r}]."
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
        """LMKE's long-tail groups: ``floor(log2(degree)) + 1`` for degree >= 1, 0 for degree 0.

        Computed exactly with ``np.frexp`` (the original ``log(v) / log(2)`` can round across a power of two).
        Same shape as ``degrees``, int64.
        """
        from .evaluation import degree_bucket

        degrees = np.asarray(degrees)
        return degree_bucket(degrees.astype(np.int64) if degrees.size and np.all(degrees == np.round(degrees)) else degrees)

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


# ----------------------------------------------------------------------------------------------------------
# Reading KG-BERT files
# ----------------------------------------------------------------------------------------------------------


def _read_lines(path: Path) -> tuple[pa.Array, np.ndarray]:
    """Non-blank lines of a UTF-8 text file without ``\\r``/``\\n``, and their 1-based line numbers.

    A leading UTF-8 byte-order mark is dropped (``utf-8-sig``; Windows editors write one), LF and CRLF line
    endings are read alike, and a carriage return anywhere else (CR-only line endings of old Mac OS files)
    is an error naming the file and the fix, since it would glue lines together.
    """
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        # error.object is what the decoder saw, i.e. the bytes after any byte-order mark
        line = error.object[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 ({error.reason}); re-encode the file as UTF-8.") from None
    if text.endswith("\n"):
        text = text[:-1]
    lines = pc.utf8_rtrim(pa.array(text.split("\n") if text else [], pa.string()), characters="\r")
    line_numbers = np.arange(1, len(lines) + 1, dtype=np.int64)
    inner_cr = np.asarray(pc.match_substring(lines, "\r"), dtype=bool)
    if inner_cr.any():
        fix = (
            f"Convert it to LF line endings, e.g. `perl -pi -e 's/\\r\\n?/\\n/g' {path}` or `mac2unix {path}`, "
            "or re-save it with Unix (LF) line endings."
        )
        if "\n" not in text:
            raise ValueError(
                f"{path}: CR-only line endings (old Mac OS style): {text.count(chr(13)):,} carriage returns and no "
                f"line feed, so the whole file would read as one line. {fix}"
            )
        first = int(np.flatnonzero(inner_cr)[0])
        raise ValueError(
            f"{path}:{line_numbers[first]}: a carriage return (\\r) inside the line {_excerpt(lines[first].as_py())}: "
            f"the file mixes CR-only line endings (old Mac OS style) with LF ones ({int(inner_cr.sum())} lines "
            f"affected). {fix}"
        )
    blank = np.asarray(pc.equal(pc.utf8_length(lines), 0))
    if blank.any():
        _warn(f"{path}: skipped {int(blank.sum())} blank lines.")
        keep = pa.array(~blank)
        lines, line_numbers = lines.filter(keep), line_numbers[~blank]
    return lines, line_numbers


def _split_fields(
    path: Path, lines: pa.Array, line_numbers: np.ndarray, allowed: Sequence[int], what: str, max_splits=None
) -> list[pa.Array]:
    """Split tab-separated lines into columns; error naming file and line if a column count is not allowed."""
    parts = pc.split_pattern(lines, "\t", max_splits=max_splits)
    counts = np.asarray(pc.list_value_length(parts), dtype=np.int64)
    width = int(counts[0]) if counts.size else allowed[0]
    bad = (counts != width) if width in allowed else np.ones(counts.shape, dtype=bool)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{path}:{line_numbers[first]}: expected {' or '.join(map(str, allowed))} tab-separated columns "
            f"({what}) like the first line ({width} columns), found {counts[first]} in "
            f"{_excerpt(lines[first].as_py())}; {int(bad.sum())} rows of {path.name} are malformed. Fix or remove them."
        )
    return [pc.list_element(parts, i) for i in range(width)] if counts.size else []


def _read_id_list(path: Path, kind: str) -> pa.Array:
    """Ids of ``entities.txt`` / ``relations.txt``, one per line, duplicates removed with a warning."""
    lines, line_numbers = _read_lines(path)
    if len(lines) == 0:
        raise ValueError(f"{path}: the {kind} list is empty; list one {kind} id per line or remove the file.")
    tabs = np.asarray(pc.match_substring(lines, "\t"))
    if tabs.any():
        first = int(np.flatnonzero(tabs)[0])
        raise ValueError(
            f"{path}:{line_numbers[first]}: expected one {kind} id per line, found a tab in "
            f"{_excerpt(lines[first].as_py())}; remove the extra columns."
        )
    unique = pc.unique(lines)
    if len(unique) != len(lines):
        _warn(
            f"{path}: {len(lines) - len(unique)} duplicated {kind} ids removed (kept the first occurrence).",
        )
    return unique


_HEADER_WORDS = frozenset(
    {"head", "relation", "tail", "h", "r", "t", "subject", "predicate", "object", "s", "p", "o", "rel", "sub", "obj"}
)
"""Column names a header line of a triple file would hold (compared case-insensitively)."""


def _is_column_name(value: str) -> bool:
    word = value.strip().lstrip("#").strip().lower()
    word = re.sub(r"(?<=\w)[ _-]?id$", "", word)  # head_id, relation id, tail-id
    return word in _HEADER_WORDS


def _check_no_header(path: Path, line: str, line_number: int, known: Sequence[pa.Array | None]) -> None:
    """Refuse a first line whose head, relation and tail fields all look like column names.

    ``known`` holds the entity, relation and entity id lists read from ``entities.txt`` / ``relations.txt``
    (``None`` where absent): a first line whose fields are all listed ids is a triple, not a header.
    """
    fields = line.split("\t")[:3]
    if len(fields) < 3 or not all(_is_column_name(f) for f in fields):
        return
    if all(ids is not None and pc.is_in(pa.array([f]), value_set=ids)[0].as_py() for f, ids in zip(fields, known)):
        return
    raise ValueError(
        f"{path}:{line_number}: the first line {_excerpt(line)} looks like a header (column names), but KG-BERT "
        "triple files have none: it would be read as a triple of made-up entities and relations. Delete that line "
        f"(e.g. `sed -i {line_number}d {path}`)."
    )


def _read_triple_file(path: Path, known: Sequence[pa.Array | None] = (None, None, None)) -> dict:
    """Columns of a ``head<TAB>relation<TAB>tail[<TAB>label]`` file (strings), labels as int8 or None.

    ``known``: the listed entity, relation and entity ids (see :func:`_check_no_header`).
    """
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing; a KG-BERT folder needs train.tsv, dev.tsv and test.tsv "
            "(head<TAB>relation<TAB>tail[<TAB>label])."
        )
    lines, line_numbers = _read_lines(path)
    if len(lines) == 0:
        raise ValueError(f"{path}: the split is empty; every split needs at least one triple.")
    _check_no_header(path, lines[0].as_py(), int(line_numbers[0]), known)
    columns = _split_fields(path, lines, line_numbers, (3, 4), "head, relation, tail[, label]")
    label = None
    if len(columns) == 4:
        raw = columns[3]
        positive = np.asarray(pc.equal(raw, "1"))
        negative = np.asarray(pc.is_in(raw, value_set=pa.array(["-1", "0"])))
        bad = ~(positive | negative)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"{path}:{line_numbers[first]}: label {_excerpt(raw[first].as_py())} is not 1, -1 or 0 "
                f"({int(bad.sum())} such rows); use 1 for true and -1 or 0 for false triples."
            )
        label = positive.astype(np.int8)
    return {"head": columns[0], "relation": columns[1], "tail": columns[2], "label": label, "line": line_numbers}


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
    triples: np.ndarray, label: np.ndarray | None, rows: np.ndarray, where: str, split: str, num_entities: int,
    num_relations: int, report: dict,
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


def _read_text_file(path: Path, ids: pa.Array, kind: str) -> pa.Array:
    """``id<TAB>text`` file -> (len(ids),) texts aligned with ``ids``; null where missing or empty."""
    lines, line_numbers = _read_lines(path)
    columns = _split_fields(path, lines, line_numbers, (2,), "id, text", max_splits=1)
    if not columns:
        return pa.nulls(len(ids), pa.string())
    keys, texts = columns
    texts = pc.utf8_trim_whitespace(texts)
    position = pc.index_in(keys, value_set=ids)
    known = np.asarray(position.is_valid())
    extra = int((~known).sum())
    if extra:
        logger.info("%s: %d lines name %s ids not used by this graph; ignored.", path, extra, kind)
        clash = _normalisation_clash(keys.filter(pa.array(~known)), ids)
        if clash is not None:
            _warn(
                f"{path}: {extra} lines name {kind} ids that match no id of this graph exactly; their texts are "
                "ignored. " + _normalisation_advice(clash, kind, path.name, "the graph's ids")
            )
    position = np.asarray(position.filter(pa.array(known)), dtype=np.int64)
    texts = texts.filter(pa.array(known))
    unique_positions, first = np.unique(position, return_index=True)
    if unique_positions.size != position.size:
        _warn(
            f"{path}: {position.size - unique_positions.size} {kind} ids have more than one line; "
            "kept the first text of each.",
        )
    aligned = np.full(len(ids), -1, dtype=np.int64)
    aligned[unique_positions] = first
    taken = texts.take(pa.array(aligned, mask=aligned < 0))
    return pc.if_else(pc.equal(pc.utf8_length(taken), 0), pa.scalar(None, pa.string()), taken)


def _fill_missing(texts: pa.Array, fallback: pa.Array, message: str) -> pa.Array:
    missing = int(texts.null_count)
    if missing:
        _warn(message.format(count=missing, total=len(texts)))
        return pc.coalesce(texts, fallback)
    return texts


def _entity_texts(
    folder: Path, name: str, ids: pa.Array, description: str, report: dict
) -> tuple[pa.Array, pa.Array, str]:
    """(names, descriptions, description_source) of the entities of a KG-BERT folder."""
    layout = _TEXT_LAYOUTS.get(name, _TextLayout())
    cache: dict[Path, pa.Array] = {}

    def read(path: Path) -> pa.Array:
        if path not in cache:
            cache[path] = _read_text_file(path, ids, "entity")
        return cache[path]

    name_file = next((folder / f for f in layout.names if (folder / f).is_file()), None)
    if name_file is None:
        _warn(
            f"{folder}: no entity name file ({', '.join(layout.names)}); the names of all {len(ids)} entities "
            "are their ids.",
        )
        names = ids
    else:
        names = read(name_file)
        if layout.name_separator is not None:
            names = pc.utf8_trim_whitespace(
                pc.list_element(pc.split_pattern(names, layout.name_separator, max_splits=1), 0)
            )
            names = pc.if_else(pc.equal(pc.utf8_length(names), 0), pa.scalar(None, pa.string()), names)
        names = _fill_missing(
            names, ids, f"{name_file}: {{count}} of {{total}} entities have no or an empty name; used their ids."
        )
    report["entity_names"] = name_file.name if name_file is not None else "id"

    if description == "name":
        return names, names, "name"
    if description == "auto":
        path = next((folder / f for f in layout.descriptions if (folder / f).is_file()), None)
        if path is None:
            _warn(
                f"{folder}: no description file ({', '.join(layout.descriptions)}); the descriptions of all "
                f"{len(ids)} entities are their names.",
            )
            return names, names, "name"
    else:
        path = Path(description) if Path(description).is_absolute() else folder / description
        if not path.is_file():
            available = sorted(p.name for p in folder.glob("entity2text*")) + sorted(
                p.name for p in folder.glob("*description*")
            )
            raise FileNotFoundError(
                f"`description`={_excerpt(description)}: {path} does not exist"
                f"{_did_you_mean(Path(description).name, available)}; use 'auto', 'name' or one of {available}."
            )
    for stand_in, message in layout.stand_ins:
        if path.name == stand_in:
            _warn(message.format(folder=folder))
    texts = read(path)
    if path.name == "FB15k_mid2description.txt":
        # DKRL's file stores '"text"@en'; LMKE strips both markers the same way.
        texts = pc.utf8_trim(pc.replace_substring(texts, "@en", ""), characters='"')
    texts = _fill_missing(
        texts, names, f"{path}: {{count}} of {{total}} entities have no or an empty description; used their names."
    )
    return names, texts, path.name


def _relation_texts(folder: Path, ids: pa.Array) -> tuple[pa.Array, pa.Array]:
    path = folder / "relation2text.txt"
    if not path.is_file():
        _warn(
            f"{folder}: no relation2text.txt; the names of all {len(ids)} relations are their ids.",
        )
        return ids, ids
    texts = _fill_missing(
        _read_text_file(path, ids, "relation"),
        ids,
        f"{path}: {{count}} of {{total}} relations have no or an empty text; used their ids.",
    )
    return texts, texts


_PLURAL = {"entity": "entities", "relation": "relations"}


def _warn_evaluation_only(folder: Path, raw: dict, ids: pa.Array, kind: str, list_file: str, columns, report: dict):
    """Warn about ids gathered from the triples that occur in no train triple (typos in dev/test look so)."""
    in_train = pa.chunked_array([raw["train"][c] for c in columns]).combine_chunks()
    only = ids.filter(pc.invert(pc.is_in(ids, value_set=in_train)))
    report.setdefault("evaluation_only_ids", {})[kind] = len(only)
    if len(only) == 0:
        return
    shown = []
    for value in only[:5].to_pylist():  # where each of the first few is first used
        for split in ("validation", "test"):
            used = np.any([np.asarray(pc.equal(raw[split][c], value)) for c in columns], axis=0)
            if used.any():
                shown.append(f"{_excerpt(value)} ({SPLIT_FILES[split]}:{raw[split]['line'][int(np.argmax(used))]})")
                break
    _warn(
        f"{folder}: no {list_file}, so the {kind} ids are gathered from the triples, and {len(only)} of them occur "
        f"only in dev.tsv / test.tsv, never in train.tsv: {', '.join(shown)}{' ...' if len(only) > 5 else ''}. "
        f"A typo in an evaluation file looks like this. If they are genuinely unseen {_PLURAL[kind]}, list every "
        f"{kind} id in {list_file} (one per line) to confirm them; otherwise fix the triples."
    )


def _load_kgbert_folder(folder: Path, name: str, description: str) -> KnowledgeGraph:
    report: dict = {"format": "kg-bert"}
    listed = {}
    for kind, list_file in (("entity", "entities.txt"), ("relation", "relations.txt")):
        path = folder / list_file
        listed[kind] = _read_id_list(path, kind) if path.is_file() else None
    known = (listed["entity"], listed["relation"], listed["entity"])
    raw = {split: _read_triple_file(folder / SPLIT_FILES[split], known) for split in SPLITS}
    vocabularies = {}
    for kind, list_file, columns in (
        ("entity", "entities.txt", ("head", "tail")),
        ("relation", "relations.txt", ("relation",)),
    ):
        if listed[kind] is not None:
            vocabularies[kind] = (listed[kind], list_file)
        else:
            every = pa.chunked_array([raw[s][c] for s in SPLITS for c in columns]).combine_chunks()
            vocabularies[kind] = (pc.unique(every).sort(), f"the triples (no {list_file})")
            logger.info(
                "%s: no %s; %d %s ids taken from the triples, sorted.",
                folder, list_file, len(vocabularies[kind][0]), kind,
            )
            _warn_evaluation_only(folder, raw, vocabularies[kind][0], kind, list_file, columns, report)
    entity_ids, entity_source = vocabularies["entity"]
    relation_ids, relation_source = vocabularies["relation"]
    num_entities, num_relations = len(entity_ids), len(relation_ids)
    _check_key_capacity(num_entities, num_relations)

    splits = {}
    for split in SPLITS:
        columns, where = raw[split], str(folder / SPLIT_FILES[split])
        triples = np.stack(
            [
                _encode(columns["head"], entity_ids, where, columns["line"], "entity", entity_source),
                _encode(columns["relation"], relation_ids, where, columns["line"], "relation", relation_source),
                _encode(columns["tail"], entity_ids, where, columns["line"], "entity", entity_source),
            ],
            axis=1,
        )
        triples, label = _clean_split(
            triples, columns["label"], columns["line"], where, split, num_entities, num_relations, report
        )
        splits[split] = _split_dataset(triples, label)

    names, descriptions, description_source = _entity_texts(folder, name, entity_ids, description, report)
    relation_names, relation_descriptions = _relation_texts(folder, relation_ids)
    return KnowledgeGraph(
        name=name,
        splits=datasets.DatasetDict(splits),
        entities=_text_dataset(entity_ids, names, descriptions),
        relations=_text_dataset(relation_ids, relation_names, relation_descriptions),
        source=str(folder),
        description_source=description_source,
        report=report,
    )


# ----------------------------------------------------------------------------------------------------------
# Reading prepared folders and Hub repositories
# ----------------------------------------------------------------------------------------------------------


def _check_metadata(metadata: dict, where: str) -> dict:
    unknown = sorted(set(metadata) - _METADATA_KEYS)
    if unknown:
        _warn(
            f"{where}: ignored {len(unknown)} unknown metadata keys {unknown} (written by a newer lmke_hf?).",
        )
    version = metadata.get("format_version", PREPARED_FORMAT_VERSION)
    if version > PREPARED_FORMAT_VERSION:
        _warn(
            f"{where}: format_version {version} is newer than this lmke_hf reads ({PREPARED_FORMAT_VERSION}); "
            "upgrade lmke_hf if loading fails.",
        )
    return metadata


def _kg_from_tables(
    name: str, triples: Mapping[str, pa.Table], entities: pa.Table, relations: pa.Table, metadata: dict,
    source: str, description: str, where: Mapping[str, str],
) -> KnowledgeGraph:
    """Build a graph from prepared tables whose triples hold original string ids."""
    for label, table, required in (
        ("entities", entities, ("id", "name", "description")),
        ("relations", relations, ("id", "name", "description")),
    ):
        missing = [c for c in required if c not in table.column_names]
        if missing:
            raise ValueError(
                f"{where[label]}: missing columns {missing}; a prepared {label} table needs {list(required)}."
            )
    entity_ids = entities.column("id").combine_chunks().cast(pa.string())
    relation_ids = relations.column("id").combine_chunks().cast(pa.string())
    for label, ids in (("entities", entity_ids), ("relations", relation_ids)):
        if len(pc.unique(ids)) != len(ids):
            raise ValueError(f"{where[label]}: {len(ids) - len(pc.unique(ids))} duplicated ids; ids must be unique.")
    num_entities, num_relations = len(entity_ids), len(relation_ids)
    _check_key_capacity(num_entities, num_relations)
    labelled = metadata.get("labelled_splits")
    report: dict = {
        "format": "prepared",
        **{k: metadata[k] for k in ("negatives", "negatives_seed") if k in metadata},
        **({"source_cleaning": metadata["cleaning"]} if "cleaning" in metadata else {}),
    }
    splits = {}
    for split in SPLITS:
        if split not in triples:
            raise ValueError(f"{source}: split {split!r} is missing; a prepared graph needs {list(SPLITS)}.")
        table = triples[split]
        missing = [c for c in ("head", "relation", "tail") if c not in table.column_names]
        if missing:
            raise ValueError(f"{where[split]}: missing columns {missing}; triples need head, relation, tail[, label].")
        if table.num_rows == 0:
            raise ValueError(f"{where[split]}: the {split} split is empty; every split needs at least one triple.")
        rows = np.arange(1, table.num_rows + 1, dtype=np.int64)
        encoded = np.stack(
            [
                _encode(
                    table.column(c).combine_chunks().cast(pa.string()), vocabulary, f"{where[split]} row", rows, kind,
                    where[vocabulary_name],
                )
                for c, vocabulary, kind, vocabulary_name in (
                    ("head", entity_ids, "entity", "entities"),
                    ("relation", relation_ids, "relation", "relations"),
                    ("tail", entity_ids, "entity", "entities"),
                )
            ],
            axis=1,
        )
        label = None
        if "label" in table.column_names:
            label = np.asarray(table.column("label").combine_chunks().fill_null(1), dtype=np.int8)
            bad = ~np.isin(label, (0, 1))
            if bad.any():
                raise ValueError(f"{where[split]} row {rows[bad][0]}: label {label[bad][0]} is not 0 or 1.")
            is_labelled = split in labelled if labelled is not None else bool((label == 0).any())
            if not is_labelled:
                if (label == 0).any():
                    raise ValueError(
                        f"{where[split]}: {int((label == 0).sum())} rows are labelled 0 but the metadata lists "
                        f"only {labelled} as labelled; fix {PREPARED_METADATA}."
                    )
                label = None
        encoded, label = _clean_split(encoded, label, rows, where[split], split, num_entities, num_relations, report)
        splits[split] = _split_dataset(encoded, label)

    names = entities.column("name").combine_chunks().cast(pa.string())
    descriptions = entities.column("description").combine_chunks().cast(pa.string())
    description_source = metadata.get("description_source", "prepared")
    if description == "name":
        descriptions, description_source = names, "name"
    elif description != "auto":
        raise ValueError(
            f"`description`={description!r} names a text file, but {source} is a prepared dataset whose "
            f"descriptions were fixed when it was prepared ({description_source!r}); use 'auto' or 'name', or "
            "load the KG-BERT folder instead."
        )
    return KnowledgeGraph(
        name=name,
        splits=datasets.DatasetDict(splits),
        entities=_text_dataset(entity_ids, names, descriptions),
        relations=_text_dataset(
            relation_ids,
            relations.column("name").combine_chunks().cast(pa.string()),
            relations.column("description").combine_chunks().cast(pa.string()),
        ),
        source=source,
        description_source=description_source,
        report=report,
    )


def _load_prepared_folder(folder: Path, description: str) -> KnowledgeGraph:
    metadata_path = folder / PREPARED_METADATA
    metadata = (
        _check_metadata(json.loads(metadata_path.read_text(encoding="utf-8-sig")), str(metadata_path))
        if metadata_path.is_file()
        else {}
    )
    tables, where = {}, {}
    for config, files in _PREPARED_FILES.items():
        for split, relative in files.items():
            path = folder / relative
            if not path.is_file():
                raise FileNotFoundError(
                    f"{path} is missing; a prepared folder (written by save_prepared) needs "
                    f"{[p for f in _PREPARED_FILES.values() for p in f.values()]}."
                )
            key = split if config == "triples" else config
            tables[key], where[key] = pq.read_table(path), str(path)
    name = metadata.get("name") or SHORT_NAMES.get(folder.name.lower(), folder.name.lower())
    return _kg_from_tables(
        name, {s: tables[s] for s in SPLITS}, tables["entities"], tables["relations"], metadata, str(folder),
        description, where,
    )


def _hub_metadata(repo_id: str, revision: str | None) -> dict:
    local = Path(repo_id) / PREPARED_METADATA
    if local.is_file():
        return _check_metadata(json.loads(local.read_text(encoding="utf-8-sig")), str(local))
    try:
        import huggingface_hub

        path = huggingface_hub.hf_hub_download(repo_id, PREPARED_METADATA, repo_type="dataset", revision=revision)
    except Exception as error:  # a repo without metadata still loads: labels decide, name from the repo id
        logger.info("%s: no %s (%s); inferring labelled splits from the labels.", repo_id, PREPARED_METADATA, error)
        return {}
    return _check_metadata(json.loads(Path(path).read_text(encoding="utf-8-sig")), f"{repo_id}/{PREPARED_METADATA}")


def _load_hub(repo_id: str, revision: str | None, description: str) -> KnowledgeGraph:
    """Read the ``triples``, ``entities`` and ``relations`` configs with :func:`datasets.load_dataset`."""
    triples = datasets.load_dataset(repo_id, "triples", revision=revision)
    entities = datasets.load_dataset(repo_id, "entities", split="train", revision=revision)
    relations = datasets.load_dataset(repo_id, "relations", split="train", revision=revision)

    metadata = _hub_metadata(repo_id, revision)
    name = metadata.get("name") or repo_id.rstrip("/").split("/")[-1].lower()
    source = f"hub:{repo_id}" + (f"@{revision}" if revision else "")
    where = {key: f"{source} ({key})" for key in (*SPLITS, "entities", "relations")}
    return _kg_from_tables(
        name, {split: _arrow(triples[split]) for split in triples}, _arrow(entities), _arrow(relations), metadata,
        source, description, where,
    )


# ----------------------------------------------------------------------------------------------------------
# Public loading entry point
# ----------------------------------------------------------------------------------------------------------


def _subfolders(folder: Path) -> list[str] | None:
    """Sorted names of the sub-folders of ``folder`` (``None`` if it is not a readable folder)."""
    try:
        return sorted(p.name for p in folder.iterdir() if p.is_dir())
    except OSError:
        return None


def _find_in_data_dir(data_dir: Path, canonical: str) -> Path | None:
    if (data_dir / canonical).is_dir():
        return data_dir / canonical
    if not data_dir.is_dir():
        return None
    aliases = {alias for alias, target in SHORT_NAMES.items() if target == canonical}
    for child in sorted(data_dir.iterdir()):
        if child.is_dir() and child.name.lower() in aliases:
            return child
    return None


def _load_folder(folder: Path, description: str) -> KnowledgeGraph:
    if (folder / "train.tsv").is_file():
        name = SHORT_NAMES.get(folder.name.lower(), folder.name.lower())
        return _load_kgbert_folder(folder, name, description)
    return _load_prepared_folder(folder, description)


def load_kg(
    name_or_path: str, data_dir: str | None = None, description: str = "auto", revision: str | None = None
) -> KnowledgeGraph:
    """Load a knowledge graph.

    ``name_or_path`` is resolved in this order:

    1. an existing local folder: KG-BERT layout if it has ``train.tsv``, otherwise a folder written by
       :func:`save_prepared` (``data/*.parquet``, ``entities/``, ``relations/``, ``lmke_hf_kg.json``);
    2. a short name (case-insensitive, see :data:`SHORT_NAMES`) found as a sub-folder of ``data_dir``, else of
       the folder named by the environment variable ``LMKE_HF_DATA_DIR``;
    3. anything else: a Hub dataset repo id read with :func:`datasets.load_dataset` (configs ``triples``,
       ``entities``, ``relations``, as written by :func:`save_prepared`), at ``revision``.

    If nothing works, the error lists what was tried, with "did you mean" suggestions for near-misses. A name
    without ``/`` that is a near-miss of a short name (``"wn18r"``) is taken as a typo: the Hub is not tried.

    Args:
        name_or_path: folder, short name or Hub repo id.
        data_dir: folder holding one sub-folder per short name (step 2).
        description: ``"auto"``: the longest description file available (wn18rr ``entity2text.txt``, umls
            ``entity2textlong.txt``, fb15k-237 ``FB15k_mid2description.txt`` or, with a warning, the stand-in
            ``entity2text_firstsentence.txt``, fb13 ``entity2text.txt`` or its names); ``"name"``: descriptions
            are the entity names; any other value: a file name in the KG-BERT folder (``id<TAB>text``).
        revision: Hub revision (branch, tag or commit) for step 3.

    Returns:
        The :class:`KnowledgeGraph`. Duplicated rows are dropped and triples labelled both true and false are
        removed from their split, each with a warning giving the count (see ``kg.report``).
    """
    if description in ("", None):
        raise ValueError(f"`description`={description!r} is empty; use 'auto', 'name' or a file name.")
    tried = []
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return _load_folder(path, description)
    tried.append(f"local folder {path}: does not exist{_did_you_mean(path.name, _subfolders(path.parent) or [])}")

    canonical = SHORT_NAMES.get(str(name_or_path).lower())
    if canonical is not None:
        env_dir = os.environ.get(DATA_DIR_ENV)
        for label, base in (("data_dir", data_dir), (f"${DATA_DIR_ENV}", env_dir)):
            if not base:
                tried.append(f"{label}: not set")
                continue
            found = _find_in_data_dir(Path(base).expanduser(), canonical)
            if found is not None:
                return _load_folder(found, description)
            held = _subfolders(Path(base).expanduser())
            tried.append(
                f"{label}={base}: no sub-folder {canonical!r}"
                + (" (the folder does not exist)" if held is None else f" (it holds {held[:20]}"
                   + (" ...)" if len(held) > 20 else ")"))
            )
        raise FileNotFoundError(
            f"Could not load {_excerpt(name_or_path)}. Tried: " + "; ".join(tried) + ". Pass `data_dir` (or set "
            f"{DATA_DIR_ENV}) to the folder holding {canonical}/, or pass the folder path or a Hub repo id."
        )

    suggestion = _did_you_mean(str(name_or_path).lower(), SHORT_NAMES)
    tried.append(f"short name: {_excerpt(name_or_path)} is not one of {sorted(SHORT_NAMES)}")
    if suggestion and "/" not in str(name_or_path):
        # a repo written by push_prepared_to_hub is owner/name: a near-miss of a short name is a typo, and the
        # Hub's retries would only delay this message
        raise FileNotFoundError(
            f"Could not load {_excerpt(name_or_path)}{suggestion}. Tried: " + "; ".join(tried) + ". Hub dataset: "
            "not tried (Hub dataset repos are owner/name). Pass a short name from the list above with `data_dir`, "
            "an existing folder, or a Hub dataset repo id."
        )
    try:
        return _load_hub(str(name_or_path), revision, description)
    except Exception as error:
        tried.append(f"Hub dataset {name_or_path!r}: {type(error).__name__}: {error}")
        raise FileNotFoundError(
            f"Could not load {_excerpt(name_or_path)}{suggestion}. Tried: " + "; ".join(tried) + ". Pass an "
            "existing folder, a short name with `data_dir`, or a Hub dataset repo written by "
            "save_prepared/push_prepared_to_hub."
        ) from error


# ----------------------------------------------------------------------------------------------------------
# Negatives
# ----------------------------------------------------------------------------------------------------------


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


# ----------------------------------------------------------------------------------------------------------
# Prepared folders and the Hub
# ----------------------------------------------------------------------------------------------------------


def _public_source(source: str) -> str:
    """The source without the local part of a folder path (the card and metadata may be published)."""
    return source if source.startswith("hub:") else Path(source).name


def _card_yaml(name: str, licence: str) -> str:
    lines = [
        "---",
        f"pretty_name: {name} (lmke_hf)",
        f"license: {licence}",
        "tags:",
        "- knowledge-graph",
        "- link-prediction",
        "- triple-classification",
        "- lmke-hf",
        "configs:",
    ]
    for config, files in _PREPARED_FILES.items():
        lines.append(f"- config_name: {config}")
        if config == "triples":
            lines.append("  default: true")
        lines.append("  data_files:")
        for split, path in files.items():
            lines += [f"  - split: {split}", f"    path: {path}"]
    lines.append("---")
    return "\n".join(lines)


def _dataset_card(kg: KnowledgeGraph, statistics: dict, prepared_at: str) -> str:
    licence, licence_text = _LICENCE_NOTES.get(
        kg.name, ("unknown", "No licence information is recorded for this graph; check its source.")
    )
    splits = statistics["splits"]
    rows = [
        "| | entities | relations | train | validation | test |",
        "|---|---|---|---|---|---|",
        f"| triples | {statistics['entities']:,} | {statistics['relations']:,} | "
        + " | ".join(
            f"{splits[s]['triples']:,}" + (f" + {splits[s]['negatives']:,} negatives" if splits[s]["labelled"] else "")
            for s in SPLITS
        )
        + " |",
    ]
    negatives = kg.report.get("negatives", {})
    cleaning = [
        f"- `{split}`: {info.get('duplicate_rows_dropped', 0)} duplicated rows and "
        f"{info.get('conflicting_triples_dropped', 0)} triples labelled both true and false dropped"
        for split, info in kg.report.get("splits", {}).items()
    ]
    return "\n".join(
        [
            _card_yaml(kg.name, licence),
            "",
            f"# {kg.name} for LMKE / C-LMKE",
            "",
            "Knowledge-graph triples with entity and relation texts, prepared by `lmke_hf.data.save_prepared` for "
            "LMKE (Wang et al., *Language Models as Knowledge Embeddings*, IJCAI 2022).",
            "",
            "## Statistics",
            "",
            *rows,
            "",
            f"- Entity descriptions: `{statistics['description_source']}`, "
            f"{statistics['avg_description_words']} words on average "
            f"(median {statistics['median_description_words']}).",
            f"- Entities unseen in train: {statistics['entities_unseen_in_train']}.",
            *(f"- Negatives of `{split}`: {how}." for split, how in negatives.items()),
            "",
            "## Usage",
            "",
            "```python",
            "from datasets import load_dataset",
            'triples = load_dataset("<repo_id>", "triples")      # head, relation, tail as original ids, label',
            'entities = load_dataset("<repo_id>", "entities", split="train")  # id, name, description',
            "",
            "from lmke_hf.data import load_kg",
            'kg = load_kg("<repo_id>")  # integer-coded, row index of entities = entity id',
            "```",
            "",
            "`label` is 1 for true and 0 for false triples; splits listed without negatives hold positives only "
            f"(`label` is 1 everywhere). `{PREPARED_METADATA}` records the description source and negatives seed.",
            "",
            "## Source",
            "",
            f"Read from `{_public_source(kg.source)}`. "
            + _SOURCE_NOTES.get(kg.name, "See the original release of this graph for provenance."),
            "",
            "## Licence",
            "",
            licence_text,
            "",
            "## Changes",
            "",
            f"Converted to parquet by lmke_hf on {prepared_at}: string ids kept, KG-BERT labels 1/-1 mapped to 1/0.",
            *cleaning,
            "",
            "## Citation",
            "",
            "```bibtex",
            "@inproceedings{wang2022lmke,",
            "  title={Language Models as Knowledge Embeddings},",
            "  author={Wang, Xintao and He, Qianyu and Liang, Jiaqing and Xiao, Yanghua},",
            "  booktitle={Proceedings of IJCAI},",
            "  year={2022}",
            "}",
            "```",
            "",
        ]
    )


def save_prepared(kg: KnowledgeGraph, out_dir: str | os.PathLike, card: bool = True) -> Path:
    """Write a Hub-ready dataset folder that :func:`load_kg` and :func:`datasets.load_dataset` both read.

    Layout::

        out_dir/
          data/{train,validation,test}.parquet   config "triples": head, relation, tail (original string ids),
                                                 label (int8; 1 everywhere for unlabelled splits)
          entities/entities.parquet              config "entities": id, name, description (row = entity id)
          relations/relations.parquet            config "relations": id, name, description
          lmke_hf_kg.json                        name, description source, labelled splits, negatives seed
          README.md                              dataset card with the YAML ``configs:`` block (if ``card``)

    Licence files found in the source folder (``*LICENSE*``, ``MSR-LA*``, ``*_README.txt``) are copied along.
    Returns the folder path.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    entities, relations = _arrow(kg.entities), _arrow(kg.relations)
    entity_ids = entities.column("id").combine_chunks()
    relation_ids = relations.column("id").combine_chunks()
    labelled = []
    for split in SPLITS:
        triples = kg.triples(split, positives_only=False)
        labels = kg.labels(split)
        if "label" in kg.splits[split].column_names:
            labelled.append(split)
        table = pa.table(
            {
                "head": entity_ids.take(pa.array(triples[:, 0])),
                "relation": relation_ids.take(pa.array(triples[:, 1])),
                "tail": entity_ids.take(pa.array(triples[:, 2])),
                "label": pa.array(labels, pa.int8()),
            }
        )
        path = out / _PREPARED_FILES["triples"][split]
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path)
    for config, dataset in (("entities", entities), ("relations", relations)):
        path = out / _PREPARED_FILES[config]["train"]
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(dataset.select(["id", "name", "description"]), path)

    statistics = kg.statistics()
    prepared_at = datetime.date.today().isoformat()
    metadata = {
        "format_version": PREPARED_FORMAT_VERSION,
        "name": kg.name,
        "description_source": kg.description_source,
        "labelled_splits": labelled,
        "negatives": kg.report.get("negatives", {}),
        "negatives_seed": kg.report.get("negatives_seed"),
        "source": _public_source(kg.source),
        "prepared_at": prepared_at,
        "cleaning": kg.report.get("splits", {}),
        "statistics": {k: v for k, v in statistics.items() if k not in ("report", "source")},
    }
    (out / PREPARED_METADATA).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    if card:
        (out / "README.md").write_text(_dataset_card(kg, statistics, prepared_at), encoding="utf-8")
    source = Path(kg.source)
    if source.is_dir() and source.resolve() != out.resolve():
        for pattern in _LICENCE_FILE_PATTERNS:
            for licence_file in source.glob(pattern):
                if licence_file.is_file():
                    shutil.copyfile(licence_file, out / licence_file.name)
    return out


def push_prepared_to_hub(out_dir: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None):
    """Upload a folder written by :func:`save_prepared` to a Hub dataset repository.

    Creates the repository if needed (``repo_type="dataset"``, ``exist_ok=True``) and uploads the whole folder
    in one commit. ``token`` defaults to the one ``huggingface_hub`` finds (``HF_TOKEN`` or the login cache).
    Returns the commit info of the upload.
    """
    import huggingface_hub

    folder = Path(out_dir)
    missing = [
        name
        for name in (PREPARED_METADATA, "README.md", *[p for f in _PREPARED_FILES.values() for p in f.values()])
        if not (folder / name).is_file()
    ]
    if missing:
        raise FileNotFoundError(
            f"`out_dir`={str(out_dir)!r} lacks {missing}; write it with save_prepared(kg, out_dir, card=True) first."
        )
    api = huggingface_hub.HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    return api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="dataset", commit_message="Upload lmke_hf prepared KG"
    )
