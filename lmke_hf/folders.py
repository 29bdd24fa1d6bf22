"""Folders lmke_hf writes into, and what it may do to them.

A folder is ours only if a tool of ours made it: every tool that writes an output folder (training runs,
evaluations, prepared datasets, exported cards) marks it with `MARKER_FILE`, naming what it holds. A tool
refuses a non-empty folder without that marker, a folder holding another kind of output, and, whatever they
hold, the places where a slip of the keyboard would do the most harm: the filesystem root, a home folder, the
working directory and its parents, a git repository, the installed package, and the input folders a run reads
(its data, its encoder). Symlinks are resolved first, so a link to such a place is refused like the place.

Final saves are transactions (`FinalSave`): every file is written into `STAGING_DIR` inside the folder, which
is renamed to `READY_DIR` once complete (the commit point); the files are then moved into place one by one.
A crash before the commit leaves the old files untouched (the staging folder is discarded later); a crash
after it is completed by the next reader or writer of the folder (`recover_final_save`), so a folder is
never seen holding half of one save and half of another.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import UsageError

if TYPE_CHECKING:
    from types import TracebackType

MARKER_FILE = ".lmke_hf_folder.json"
KINDS = {
    "training-run": "a training run",
    "evaluation": "evaluation results",
    "prepared-dataset": "a prepared dataset",
    "model-card": "an exported model card",
}
STAGING_DIR = ".final.partial"
READY_DIR = ".final.ready"
_REPLACED_DIR = ".replaced"  # inside READY_DIR: the files a save replaced, removed with it
# what a tool's own bookkeeping leaves in a folder: not counted as "holding files"
LOCK_FILE = ".lmke_hf.lock"  # a tool writing into a folder holds it (filelock); LOCK_FILE + ".owner" names the holder
_BOOKKEEPING = {MARKER_FILE, LOCK_FILE, LOCK_FILE + ".owner", STAGING_DIR, READY_DIR}


# what a training run has written before its first checkpoint, best model or final save: a run stopped that early
# (e.g. SIGTERM while it tokenised) left nothing to keep, and the next run may start there without a flag
_ABORTED_START = {"training_args.json"}


class OutputDirError(UsageError):
    """An output folder a tool may not write into (not ours, or a protected place), with the reason and advice."""


def _resolve(path) -> Path:
    return Path(os.path.abspath(os.path.expanduser(str(path)))).resolve()


def _is_within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _repository_roots() -> list[Path]:
    """The folder holding the lmke_hf package (site-packages, or a clone's root) and, for a clone, its git root."""
    package = Path(__file__).resolve().parent
    roots = [package.parent]
    for folder in package.parents:
        if (folder / ".git").exists():
            roots.append(folder)
            break
    return roots


def protected_reason(path: str | os.PathLike, inputs: dict[str, str | os.PathLike | None] | None = None) -> str | None:
    """Why `path` must never be written into as an output folder (None when it may be).

    Args:
        path: the folder a tool was asked to write; resolved, so a symlink is judged by its target.
        inputs: folders the tool reads, by the flag that named them (e.g. `{"--data_dir": ...}`): the output
            may not be one of them or hold one of them.
    """
    target = _resolve(path)
    home = _resolve(Path.home())
    cwd = _resolve(os.getcwd())
    if target == Path(target.anchor):
        return "it is the filesystem root"
    if target == home:
        return "it is your home folder"
    if _is_within(cwd, target):
        return "it is the working directory" if cwd == target else f"it holds the working directory ({cwd})"
    if (target / ".git").exists():
        return "it is a git repository"
    for root in _repository_roots():
        if _is_within(root, target):
            return f"it holds the lmke_hf package ({root})"
    for flag, folder in (inputs or {}).items():
        if folder is None or not Path(folder).exists():
            continue
        source = _resolve(folder)
        if _is_within(source, target):
            return f"it {'is' if source == target else 'holds'} the folder of {flag} ({source})"
    return None


def _contents(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name not in _BOOKKEEPING)


def _legacy_kind(folder: Path) -> str | None:
    """The kind of a folder written before markers existed: training runs (their `training_args.json` or a
    checkpoint of the loop) and exported cards (`card.json` and only files export-card writes); anything else
    of ours from then is treated as not ours."""
    args = folder / "training_args.json"
    with contextlib.suppress(OSError, ValueError, AttributeError):
        info = json.loads(args.read_text())
        if info.get("method") in ("C-LMKE", "LMKE") and "args" in info:
            return "training-run"
    if any((c / "trainer_state.json").is_file() for c in folder.glob("checkpoints/*")):
        return "training-run"
    exported = {
        "README.md",
        "card.json",
        "all_results.json",
        "degree_buckets.png",
        "train_history.json",
        "metrics.json",
    }
    names = {p.name for p in folder.iterdir()} - _BOOKKEEPING
    if "card.json" in names and names <= exported:  # model_cards/<name>/ from export-card
        return "model-card"
    return None


def folder_kind(path: str | os.PathLike) -> str | None:
    """What lmke_hf wrote `path` as (`KINDS` key), or None when no tool of ours made it."""
    folder = Path(path)
    with contextlib.suppress(OSError, ValueError, AttributeError):
        kind = json.loads((folder / MARKER_FILE).read_text()).get("kind")
        if kind in KINDS:
            return kind
    return _legacy_kind(folder) if folder.is_dir() else None


def mark_folder(path: str | os.PathLike, kind: str) -> None:
    """Writes the marker that makes `path` a folder of ours holding `kind`."""
    from .run_io import write_json

    write_json(
        Path(path) / MARKER_FILE, {"kind": kind, "written_by": "lmke_hf"}
    )  # no time: a folder's bytes stay reproducible


def fresh_sibling(path: str | os.PathLike) -> Path:
    """`path` if it does not exist, else the first of `path-2`, `path-3`, ... that does not: for advice."""
    folder = Path(path)
    if folder.name in ("", ".", ".."):
        folder = _resolve(folder)
    if not folder.exists():
        return folder
    for i in range(2, 10_000):
        candidate = folder.with_name(f"{folder.name}-{i}")
        if not candidate.exists():
            return candidate
    return folder.with_name(f"{folder.name}-{os.getpid()}")


def _shown(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f", ... ({len(names)} entries)" if len(names) > 5 else "")


def clear_folder(path: str | os.PathLike) -> None:
    """Removes everything in `path` but the marker and the lock; symlinks inside are unlinked, never followed."""
    folder = Path(path)
    for entry in folder.iterdir():
        if entry.name in (MARKER_FILE, LOCK_FILE, LOCK_FILE + ".owner"):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def check_output_dir(
    path: str | os.PathLike,
    kind: str,
    *,
    flag: str = "--output_dir",
    inputs: dict[str, str | os.PathLike | None] | None = None,
    replace_flag: str | None = None,
    replace: bool = False,
    reuse: bool = False,
) -> str:
    """Decides what a tool may do with output folder `path` before it writes anything there.

    Returns "new" (missing or empty: create and mark it), "replace" (ours, of this kind: clear it first, with
    `replace`) or "reuse" (ours, of this kind, kept as is: with `reuse`, e.g. a resumed run).

    Raises:
        OutputDirError: a protected place; a file; a non-empty folder no tool of ours made, or of another kind;
            a folder of this kind asked neither to be replaced nor reused. The message names the path, what it
            holds and a fresh folder to use instead.
    """
    folder = Path(path)
    where = f"{flag} {path}" + (f" (a link to {_resolve(folder)})" if folder.is_symlink() else "")
    reason = protected_reason(folder, inputs)
    if reason:
        suggestion = fresh_sibling(Path("outputs") / kind.split("-")[-1])  # a new folder under the working directory
        raise OutputDirError(
            f"{where} is not a place to write {KINDS[kind]} into: {reason}. Nothing was changed; choose a new folder, e.g. {suggestion}."
        )
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(
            f"{where} is a file, not a folder. Nothing was changed; choose a new folder, e.g. {fresh_sibling(folder)}."
        )
    contents = _contents(folder) if folder.is_dir() else []
    if not contents:
        return "new"
    found = folder_kind(folder)
    if found is None:
        raise OutputDirError(
            f"{where} already holds files that lmke_hf did not write ({_shown(contents)}). Nothing was changed; "
            f"choose a new folder, e.g. {fresh_sibling(folder)}."
        )
    if found != kind:
        raise OutputDirError(
            f"{where} holds {KINDS[found]} of lmke_hf ({_shown(contents)}), not {KINDS[kind]}. Nothing was changed; "
            f"choose a new folder, e.g. {fresh_sibling(folder)}."
        )
    if reuse:
        return "reuse"
    if replace or (kind == "training-run" and set(contents) <= _ABORTED_START):
        return "replace"  # with the flag, or a run stopped before it wrote anything but how it started
    advice = f"pass {replace_flag} to replace it, or " if replace_flag else ""
    raise OutputDirError(
        f"{where} already holds {KINDS[kind]} ({_shown(contents)}): {advice}choose a new folder, e.g. {fresh_sibling(folder)}."
    )


def claim_folder(path: str | os.PathLike, kind: str, **check: Any) -> Path:
    """`check_output_dir`, then makes the folder ready: created and marked ("new"), cleared ("replace") or left
    as it is ("reuse"; marked if it predates markers). Returns the folder."""
    decision = check_output_dir(path, kind, **check)
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    if decision == "replace":
        clear_folder(folder)
    if decision != "reuse" or not (folder / MARKER_FILE).is_file():
        mark_folder(folder, kind)
    return folder


# ------------------------------------------------------------------------------------------ final saves
def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
    with contextlib.suppress(OSError):
        fd = os.open(root, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _apply_ready(folder: Path) -> None:
    """Moves a committed save's entries into place; safe to repeat after a crash at any point."""
    ready = folder / READY_DIR
    replaced = ready / _REPLACED_DIR
    for entry in sorted(p.name for p in ready.iterdir() if p.name != _REPLACED_DIR):
        target = folder / entry
        if target.exists() or target.is_symlink():
            replaced.mkdir(exist_ok=True)
            os.replace(target, replaced / entry)
        os.replace(ready / entry, target)
    shutil.rmtree(ready)


def recover_final_save(path: str | os.PathLike, locked: bool = False) -> bool:
    """Completes a final save of `path` that was committed but not fully moved into place, and discards one
    that was never committed. Returns True when a committed save was completed. Unless the caller holds the
    folder's lock (`locked`), it waits for a tool writing there to finish first. A folder whose save cannot be
    completed raises `OutputDirError` (its files would mix two saves)."""
    folder = Path(path)
    if not folder.is_dir() or not ((folder / READY_DIR).exists() or (folder / STAGING_DIR).exists()):
        return False
    if not locked:
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(folder / LOCK_FILE), timeout=600):
                return recover_final_save(folder, locked=True)
        except Timeout:
            raise OutputDirError(
                f"{folder} is being written by another process that holds its lock; try again when it has finished."
            ) from None
        except OSError:  # a read-only folder: no lock to take; try anyway, an error below says what is wrong
            pass
    completed = False
    try:
        if (folder / READY_DIR).is_dir():
            _apply_ready(folder)
            completed = True
        if (folder / STAGING_DIR).exists():
            shutil.rmtree(folder / STAGING_DIR)
    except OSError as err:
        raise OutputDirError(
            f"{folder} holds a save that was interrupted ({READY_DIR}) and could not be completed ({err}); "
            "open it once with write access to finish it."
        ) from err
    return completed


class FinalSave:
    """Stages the files of a folder's final save and swaps them in as a whole.

    ```
    with FinalSave(out) as staging:
        model.save_pretrained(staging)
        card.save(staging)
        ...
    ```
    Everything written under `staging` replaces the folder's entries of the same names when the block ends
    without an exception; an exception (or a crash) leaves the folder's old entries as they were.
    """

    def __init__(self, folder: str | os.PathLike, locked: bool = True) -> None:
        self.folder = Path(folder)
        self.staging = self.folder / STAGING_DIR
        self.locked = locked

    def __enter__(self) -> Path:
        recover_final_save(self.folder, locked=self.locked)
        self.staging.mkdir(parents=True)
        return self.staging

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc_type is not None:
            shutil.rmtree(self.staging, ignore_errors=True)
            return False
        _fsync_tree(self.staging)
        os.replace(self.staging, self.folder / READY_DIR)  # the commit point
        _apply_ready(self.folder)
        return False


__all__ = [
    "MARKER_FILE",
    "KINDS",
    "OutputDirError",
    "protected_reason",
    "folder_kind",
    "mark_folder",
    "check_output_dir",
    "claim_folder",
    "clear_folder",
    "fresh_sibling",
    "FinalSave",
    "recover_final_save",
]
