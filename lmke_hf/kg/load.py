"""The public loading entry point :func:`load_kg`: local folder, short name in a data folder, or Hub dataset.

It dispatches to :mod:`lmke_hf.kg.kgbert` (folders with ``train.tsv``) and :mod:`lmke_hf.kg.prepared`
(prepared folders and Hub repositories), and lists what it tried, with "did you mean" suggestions, when nothing
works.
"""

from __future__ import annotations

import os
from pathlib import Path

from ._common import DATA_DIR_ENV, SHORT_NAMES, _did_you_mean, _excerpt
from .graph import KnowledgeGraph
from .kgbert import _load_kgbert_folder
from .prepared import _load_hub, _load_prepared_folder


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
                + (
                    " (the folder does not exist)"
                    if held is None
                    else f" (it holds {held[:20]}" + (" ...)" if len(held) > 20 else ")")
                )
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
