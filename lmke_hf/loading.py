"""Loading a trained LMKE / C-LMKE checkpoint (a saved folder or a Hub id) and checking that a knowledge graph is
the one it was trained on.

    from lmke_hf import check_same_kg, load_model
    from lmke_hf.kg import load_kg

    model, tokenizer = load_model("outputs/clmke-umls", task="link-prediction")
    check_same_kg(tokenizer, load_kg("umls", data_dir="data"), "outputs/clmke-umls")

A name that looks like a local path (`looks_like_local_path`) is only ever looked up on disk: a mistyped folder is
reported as missing at once, with the closest names beside it, instead of being asked of the Hub (which, offline,
retries for half a minute before failing with a message about the network). Only an existing folder, an
`org/name` or a bare `name` that is not on disk goes to the Hub.

The errors are `OSError`s (`FileNotFoundError` for a missing folder) and `ValueError`s on one line, starting with
the name as given (its `repr`), so that a command can put the flag in front: `flag_errors("--model")` turns them into a `UsageError` on that one
line, which the command line prints without a traceback.
"""

from __future__ import annotations

import contextlib
import difflib
import os
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import UsageError
from .tokenization_lmke import LmkeTokenizer

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .kg import KnowledgeGraph
    from .modeling_clmke import ClmkeForLinkPrediction
    from .modeling_lmke import LmkeForTripleClassification

CONFIG_FILE = "config.json"
# model_type -> the task `load_model(task=...)` checks for, and what a checkpoint of that type is
TASKS = {"clmke": "link-prediction", "lmke": "triple-classification"}
MODEL_KINDS = {"clmke": "a C-LMKE link predictor", "lmke": "an LMKE triple classifier"}
KG_FILES = ("train.tsv", "lmke_hf_kg.json")  # a KG-BERT folder / a folder written by data.save_prepared


def one_line(error: BaseException | str) -> str:
    """The message of `error` with its whitespace (the line breaks of Hub and transformers errors) collapsed."""
    return " ".join(str(error).split())


@contextlib.contextmanager
def flag_errors(flag: str, errors: tuple[type[BaseException], ...] = (OSError, ValueError)) -> Iterator[None]:
    """One of `errors` raised inside (a mistake in the value of `flag`) becomes a `UsageError("<flag>: <message>")` on
    one line, which the command line prints without a traceback (exit status 1). Other errors (bugs) pass unchanged.

        with flag_errors("--model"):
            model, tokenizer = load_model(args.model)
    """
    try:
        yield
    except UsageError:  # already says which flag and what to do
        raise
    except errors as err:
        message = one_line(err)
        raise UsageError(f"{flag} {message}" if message[:1] in "'\"" else f"{flag}: {message}") from err


def looks_like_local_path(name_or_path: str | os.PathLike) -> bool:
    """Whether `name_or_path` names something on disk rather than a Hub repo: it exists as a path, starts with '.',
    '/' or '~', is absolute, holds a separator other than '/' (Windows), has more than one '/', or is no valid Hub
    repo id at all. A missing `org/name` or bare `name` is taken for a Hub id.

        >>> (
        ...     looks_like_local_path("./runs/clmke"),
        ...     looks_like_local_path("runs/clmke/best"),
        ...     looks_like_local_path("org/clmke"),
        ... )
        (True, True, False)
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    text = os.fspath(name_or_path)
    if os.path.lexists(os.path.expanduser(text)) or text.startswith((".", "/", "~")) or os.path.isabs(text):
        return True
    if any(sep and sep != "/" and sep in text for sep in (os.sep, os.altsep)) or text.count("/") > 1:
        return True
    try:
        validate_repo_id(text)
    except HFValidationError:
        return True
    return False


def _close_folders(text: str, path: Path) -> str:
    """What to tell about a missing `path` (as the user spelt it, `text`): similar folders beside it, or which
    ancestor is missing too."""
    parent = path.parent
    if parent.is_dir():
        try:
            names = [child.name for child in parent.iterdir() if child.is_dir()]
        except OSError:
            names = []
        close = difflib.get_close_matches(path.name, names, n=3)
        if close:
            return (
                "Did you mean " + " or ".join(repr(os.path.join(os.path.dirname(text), name)) for name in close) + "?"
            )
        return f"{parent.absolute()} holds no folder of a similar name."
    missing = next(p for p in reversed(path.absolute().parents) if not p.exists())
    return f"{missing} does not exist either."


def local_folder(name_or_path: str | os.PathLike, required: bool = False) -> Path | None:
    """The folder that `name_or_path` names on disk (`~` expanded), or None when it names no local path (a Hub
    id, a short dataset name) and `required` is False.

    Raises:
        FileNotFoundError: it looks like a local path (or `required`) but nothing is there; the message names the
            closest folders beside it. Nothing is asked of the Hub.
        NotADirectoryError: it is a file.
    """
    text = os.fspath(name_or_path)
    if not text.strip():
        raise ValueError(f"{text!r} is empty: give a folder or a Hub id.")
    if not required and not looks_like_local_path(text):
        return None
    path = Path(text).expanduser()
    if not path.exists():
        hub = "" if required else " (A local path: the Hub was not asked.)"
        raise FileNotFoundError(f"{text!r}: no such folder ({path.absolute()}). {_close_folders(text, path)}{hub}")
    if not path.is_dir():
        raise NotADirectoryError(f"{text!r} is a file, not a folder ({path.absolute()}).")
    return path


def _folder_holds(text: str, path: Path) -> str:
    """What a folder without config.json holds instead, as a hint."""
    inner = sorted(child.name for child in path.iterdir() if (child / CONFIG_FILE).is_file())
    if inner:
        return "; the checkpoints inside it: " + ", ".join(repr(os.path.join(text, name)) for name in inner[:5])
    if any((path / name).is_file() for name in KG_FILES):
        return f"; it holds a knowledge graph ({', '.join(n for n in KG_FILES if (path / n).is_file())}), not a model"
    if (path / "training_args.json").is_file():
        return "; it is a training run that has not finished (training_args.json, but no final model yet)"
    if not any(path.iterdir()):
        return "; it is empty"
    return ""


def checkpoint_source(name_or_path: str | os.PathLike) -> str:
    """Where `load_model` reads `name_or_path` from: the existing checkpoint folder (`~` expanded), or the Hub id
    unchanged. Reads no weights and asks nothing of the Hub, so scripts can check `--model` before slower work.

    Raises:
        FileNotFoundError: a local-looking path (`looks_like_local_path`) with nothing there.
        NotADirectoryError: a file.
        ValueError: a folder without config.json (named: the checkpoints inside it, a KG folder, an unfinished run).
    """
    path = local_folder(name_or_path)
    if path is None:
        return os.fspath(name_or_path)
    text = os.fspath(name_or_path)
    if not (path / CONFIG_FILE).is_file():
        raise ValueError(
            f"{text!r} is a folder but no LMKE / C-LMKE checkpoint: it has no {CONFIG_FILE}{_folder_holds(text, path)}."
        )
    return str(path)


def load_model(
    name_or_path: str | os.PathLike,
    revision: str | None = None,
    token: str | bool | None = None,
    task: str | None = None,
) -> tuple[ClmkeForLinkPrediction | LmkeForTripleClassification, LmkeTokenizer]:
    """A trained checkpoint as `ClmkeForLinkPrediction` or `LmkeForTripleClassification` (picked by its
    `model_type`) and its `LmkeTokenizer`, checked to agree.

    Args:
        name_or_path: a folder written by `train_clmke.py` / `train_lmke.py` (or `save_pretrained`), or a Hub id.
            A local-looking path is never asked of the Hub (see `checkpoint_source`).
        revision: Hub branch, tag or commit (ignored for a folder).
        token: Hub token for private repos (default: the cached login).
        task: None (either), "link-prediction" (C-LMKE only) or "triple-classification" (LMKE only); checked from
            the config, before any weights are read.

    Returns:
        `(model, tokenizer)`, the model in eval mode on the CPU.

    Raises:
        FileNotFoundError, NotADirectoryError: see `checkpoint_source`.
        OSError: a Hub id that cannot be read (missing, private, no network).
        ValueError: not an LMKE / C-LMKE checkpoint, the other task, or weights / KG tokenizer that do not load.
    """
    from transformers import AutoModel, PretrainedConfig

    if task is not None and task not in TASKS.values():
        raise ValueError(f"task={task!r} is unknown; use one of {sorted(TASKS.values())}, or None for either.")
    text = os.fspath(name_or_path)
    source = checkpoint_source(text)
    local = os.path.isdir(source)
    hub = {k: v for k, v in (("revision", revision), ("token", token)) if v is not None}
    try:
        config, _ = PretrainedConfig.get_config_dict(source, **hub)
    except (OSError, ValueError) as err:
        if local:
            raise ValueError(f"{text!r}: its {CONFIG_FILE} cannot be read ({one_line(err)}).") from err
        at = f" at revision {revision!r}" if revision else ""
        path = Path(text).expanduser()
        near = _close_folders(text, path) if path.parent.is_dir() else ""
        near = f" {near}" if near.startswith("Did you mean") else ""  # a local folder of a similar name
        raise OSError(
            f"{text!r} is no local folder (nothing at {path.absolute()}) and cannot be read from the Hub{at}: {one_line(err)}{near}"
        ) from err
    model_type = config.get("model_type")
    if model_type not in TASKS:
        kind = f"a {model_type!r} checkpoint" if model_type else f"a checkpoint whose {CONFIG_FILE} names no model_type"
        raise ValueError(f"{text!r} is {kind}, not an LMKE / C-LMKE model (model_type 'lmke' or 'clmke').")
    if task is not None and TASKS[model_type] != task:
        other = next(t for t, name in TASKS.items() if name == task)
        raise ValueError(
            f"{text!r} is {MODEL_KINDS[model_type]} (model_type {model_type!r}); {task} needs {MODEL_KINDS[other]} (model_type {other!r})."
        )
    try:
        model = AutoModel.from_pretrained(source, **hub)
        tokenizer = LmkeTokenizer.from_pretrained(source, **hub)
        model.check_tokenizer(tokenizer)
    except (OSError, ValueError) as err:
        kind = (
            OSError if isinstance(err, OSError) and not local else ValueError
        )  # a folder's content is no network matter
        raise kind(
            f"{text!r} is {MODEL_KINDS[model_type]} checkpoint whose weights or KG tokenizer do not load: {one_line(err)}"
        ) from err
    return model, tokenizer


def check_same_kg(tokenizer: LmkeTokenizer, kg: KnowledgeGraph, model_name: str | None = None) -> None:
    """Raises ValueError unless the model's entity / relation k is the KG's entity / relation k for every k (same
    ids, same order): KG triples are integer ids, so another KG (or the same one reordered) would score nonsense.

    Args:
        tokenizer: the checkpoint's `LmkeTokenizer` (from `load_model`).
        kg: a `KnowledgeGraph` (`lmke_hf.kg.load_kg`).
        model_name: how the message names the model (default "The model").
    """
    name = repr(model_name) if model_name is not None else "The model"
    for kind, ours, theirs in (
        ("entities", tokenizer.entity_ids, list(kg.entities["id"])),
        ("relations", tokenizer.relation_ids, list(kg.relations["id"])),
    ):
        ours, theirs = [str(x) for x in ours], [str(x) for x in theirs]
        if ours != theirs:
            unknown, extra = sorted(set(theirs) - set(ours)), sorted(set(ours) - set(theirs))
            detail = "; ".join(
                part
                for part in (
                    f"unknown to the model: {unknown[:5]}" if unknown else "",
                    f"not in the KG: {extra[:5]}" if extra else "",
                    "same ids in another order" if not unknown and not extra else "",
                )
                if part
            )
            raise ValueError(
                f"{name} was trained on other {kind} than the KG {kg.name!r} ({len(ours)} vs {len(theirs)} {kind}; "
                f"{detail}). Evaluate on the KG the model was trained on, or add new entities with `model.add_entities`."
            )
