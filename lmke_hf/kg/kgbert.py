"""Reading a folder in the KG-BERT / LMKE layout into a :class:`~lmke_hf.kg.graph.KnowledgeGraph`.

The layout: ``train.tsv``, ``dev.tsv``, ``test.tsv`` (``head<TAB>relation<TAB>tail[<TAB>label]``), optional
``entities.txt`` / ``relations.txt`` id lists, and ``entity2text*.txt`` / ``relation2text.txt`` texts
(``id<TAB>text``). :data:`_TEXT_LAYOUTS` records which text file gives each benchmark's names and descriptions.
The entry point is :func:`_load_kgbert_folder`, called by :func:`lmke_hf.kg.load_kg`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._common import SPLIT_FILES, SPLITS, _did_you_mean, _excerpt, _normalisation_advice, _normalisation_clash, _warn
from ._tables import _clean_split, _encode, _split_dataset, _text_dataset
from .graph import KnowledgeGraph, _check_key_capacity

logger = logging.getLogger(__name__)


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
                folder,
                list_file,
                len(vocabularies[kind][0]),
                kind,
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
