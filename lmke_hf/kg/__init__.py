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

    >>> from lmke_hf.kg import load_kg
    >>> kg = load_kg("umls", data_dir="/path/to/data")          # doctest: +SKIP
    >>> kg.triples("train").shape                                 # doctest: +SKIP
    (5216, 3)
    >>> index = kg.answer_index(["train"], direction="tail")      # doctest: +SKIP
    >>> rows, answers = index.pairs(heads, relations)             # doctest: +SKIP

Modules (everything public is re-exported here; import from ``lmke_hf.kg``):

* :mod:`lmke_hf.kg.load`: :func:`load_kg` (folder, short name in a data folder, or Hub dataset).
* :mod:`lmke_hf.kg.graph`: :class:`KnowledgeGraph`, :class:`AnswerIndex`, int64 triple keys.
* :mod:`lmke_hf.kg.kgbert`: the KG-BERT / LMKE folder reader and the per-benchmark text layouts.
* :mod:`lmke_hf.kg.prepared`: prepared parquet folders and Hub datasets: reading, :func:`save_prepared`,
  :func:`push_prepared_to_hub`.
* :mod:`lmke_hf.kg.card`: the dataset card and the licence / source notes of each benchmark.
* :mod:`lmke_hf.kg.negatives`: :func:`generate_negatives`, :func:`add_classification_negatives`.
* :mod:`lmke_hf.kg._tables`: string ids to integer-coded split and text tables (shared by both readers).
* :mod:`lmke_hf.kg._common`: the constants (:data:`SPLITS`, :data:`SHORT_NAMES`, :data:`DATA_DIR_ENV`, ...)
  and the message helpers.

References: Wang et al., "Language Models as Knowledge Embeddings", IJCAI 2022 (section 4.1 for the
negative sampling protocol of triple classification).
"""

from __future__ import annotations

from ._common import (
    DATA_DIR_ENV,
    PREPARED_FORMAT_VERSION,
    PREPARED_METADATA,
    SHORT_NAMES,
    SPLIT_FILES,
    SPLITS,
)
from .graph import AnswerIndex, KnowledgeGraph
from .inductive import held_out_entities, make_inductive_split
from .load import load_kg
from .negatives import add_classification_negatives, generate_negatives
from .prepared import push_prepared_to_hub, save_prepared

__all__ = [
    "load_kg",
    "KnowledgeGraph",
    "AnswerIndex",
    "generate_negatives",
    "add_classification_negatives",
    "save_prepared",
    "push_prepared_to_hub",
    "make_inductive_split",
    "held_out_entities",
    "SPLITS",
    "SPLIT_FILES",
    "SHORT_NAMES",
    "DATA_DIR_ENV",
    "PREPARED_METADATA",
    "PREPARED_FORMAT_VERSION",
]
