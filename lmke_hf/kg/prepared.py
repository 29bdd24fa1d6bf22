"""Prepared (parquet, Hub-ready) knowledge-graph folders and Hub dataset repositories.

Writing: :func:`save_prepared` (folder with the ``triples``, ``entities`` and ``relations`` configs, metadata
:data:`~lmke_hf.kg.PREPARED_METADATA` and a dataset card) and :func:`push_prepared_to_hub`. Reading:
:func:`_load_prepared_folder` and :func:`_load_hub`, both through :func:`_kg_from_tables`; they are called by
:func:`lmke_hf.kg.load_kg`.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._common import _PREPARED_FILES, PREPARED_FORMAT_VERSION, PREPARED_METADATA, SHORT_NAMES, SPLITS, _warn
from ._tables import _clean_split, _encode, _split_dataset, _text_dataset
from .card import _dataset_card, _public_source
from .graph import KnowledgeGraph, _arrow, _check_key_capacity

if TYPE_CHECKING:
    from huggingface_hub import CommitInfo

logger = logging.getLogger(__name__)

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
        "inductive",
    }
)

_LICENCE_FILE_PATTERNS = ("*LICENSE*", "*LICENCE*", "MSR-LA*", "*_README.txt")


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
    name: str,
    triples: Mapping[str, pa.Table],
    entities: pa.Table,
    relations: pa.Table,
    metadata: dict,
    source: str,
    description: str,
    where: Mapping[str, str],
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
    inductive = metadata.get("inductive")
    if inductive is not None and not (isinstance(inductive, dict) and {"fraction", "seed"} <= inductive.keys()):
        raise ValueError(
            f"{source} ({PREPARED_METADATA}): `inductive` must be a mapping with `fraction` and `seed`, as "
            f"save_prepared writes it; got {inductive!r}. Prepare the folder again."
        )
    if not inductive and name.endswith("-inductive"):
        _warn(
            f"{source}: {name} records no inductive split ({PREPARED_METADATA} has no `inductive`; prepared before "
            "lmke_hf kept it?), so evaluate cannot refuse a model trained on its held-out entities. Prepare it again: "
            "lmke-hf prepare <original graph> --inductive_fraction F --inductive_seed S --output_dir DIR.",
        )
    report: dict = {
        "format": "prepared",
        **{k: metadata[k] for k in ("negatives", "negatives_seed") if k in metadata},
        **({"source_cleaning": metadata["cleaning"]} if "cleaning" in metadata else {}),
        **({"inductive": inductive} if inductive else {}),  # keeps evaluate's guards on
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
                    table.column(c).combine_chunks().cast(pa.string()),
                    vocabulary,
                    f"{where[split]} row",
                    rows,
                    kind,
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
        name,
        {s: tables[s] for s in SPLITS},
        tables["entities"],
        tables["relations"],
        metadata,
        str(folder),
        description,
        where,
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
        name,
        {split: _arrow(triples[split]) for split in triples},
        _arrow(entities),
        _arrow(relations),
        metadata,
        source,
        description,
        where,
    )


def save_prepared(
    kg: KnowledgeGraph,
    out_dir: str | os.PathLike,
    card: bool = True,
    overwrite: bool = False,
    inputs: dict | None = None,
) -> Path:
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

    ``out_dir`` must be new, empty, or a prepared dataset written earlier by this function, which is replaced
    only with ``overwrite=True``; anything else (a folder of other files, the working directory or a parent of
    it, a repository, the source KG folder or any of ``inputs``, ``{flag: folder}``) raises
    :class:`lmke_hf.folders.OutputDirError` before anything is written.
    """
    from ..folders import claim_folder

    source_folder = Path(kg.source) if kg.source and Path(str(kg.source)).is_dir() else None
    out = claim_folder(
        out_dir,
        "prepared-dataset",
        flag="output folder",
        inputs={"the source KG": source_folder, **(inputs or {})},
        replace_flag="--overwrite_output_dir (overwrite=True)",
        replace=overwrite,
    )
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
        **({"inductive": kg.report["inductive"]} if kg.report.get("inductive") else {}),
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


def push_prepared_to_hub(
    out_dir: str | os.PathLike, repo_id: str, private: bool = False, token: str | None = None
) -> CommitInfo:
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
        folder_path=str(folder),
        repo_id=repo_id,
        repo_type="dataset",
        commit_message="Upload lmke_hf prepared KG",
        ignore_patterns=[".lmke_hf_folder.json", ".lmke_hf.lock*"],
    )
