"""Constants and message helpers shared by every module of :mod:`lmke_hf.kg`.

The public constants (:data:`SPLITS`, :data:`SHORT_NAMES`, :data:`DATA_DIR_ENV`, :data:`SPLIT_FILES`,
:data:`PREPARED_METADATA`, :data:`PREPARED_FORMAT_VERSION`) are re-exported by :mod:`lmke_hf.kg`. The private
helpers keep error and warning messages short (:func:`_excerpt`), suggest near-misses (:func:`_did_you_mean`),
explain Unicode normalisation clashes, and attribute warnings to the user's line (:func:`_warn`).
"""

from __future__ import annotations

import difflib
import sys
import unicodedata
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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

_PREPARED_FILES = {
    "triples": {split: f"data/{split}.parquet" for split in SPLITS},
    "entities": {"train": "entities/entities.parquet"},
    "relations": {"train": "relations/relations.parquet"},
}
"""Dataset configs of a prepared folder / Hub repository."""

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


_PACKAGE = __name__.rpartition(".")[0]
"""``lmke_hf.kg``: frames of its modules are skipped when :func:`_warn` looks for the caller."""


def _in_package(module_name) -> bool:
    return module_name == _PACKAGE or str(module_name).startswith(_PACKAGE + ".")


def _warn(message: str) -> None:
    """``warnings.warn`` attributed to the first caller outside :mod:`lmke_hf.kg` (the user's ``load_kg`` line)."""
    frame, level = sys._getframe(0), 1
    while frame is not None and _in_package(frame.f_globals.get("__name__")):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)
