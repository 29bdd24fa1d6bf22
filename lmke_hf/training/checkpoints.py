"""Checkpoints of the training loop: finding the one to resume from (damaged ones skipped), refusing a resume
whose run-defining flags differ, and `CheckpointManager`, which saves (atomically: into `<tag>.partial`, then
renamed), rotates (`--checkpoints_total_limit`) and restores them with the loop's own state."""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError
from ..run_io import write_json

logger = logging.getLogger(__name__)


def find_checkpoint(args) -> Path | None:
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint != "latest":
        path = Path(args.resume_from_checkpoint)
        problem = checkpoint_problem(path)
        if problem:
            raise UsageError(
                f"Cannot resume from {path}: {problem}. Delete it or point --resume_from_checkpoint elsewhere."
            )
        return path
    folders = [
        p for p in Path(args.output_dir).glob("checkpoints/*") if p.is_dir() and not p.name.endswith(PARTIAL_SUFFIX)
    ]
    folders.sort(key=lambda p: _step_of(p), reverse=True)
    for path in folders:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        warnings.warn(f"Skipping damaged checkpoint {path} ({problem}); trying an older one.", stacklevel=2)
    if folders:
        raise UsageError(
            f"No complete checkpoint in {Path(args.output_dir) / 'checkpoints'}: all {len(folders)} are damaged (see the warnings)."
        )
    return None


PARTIAL_SUFFIX = ".partial"
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.bin", "scheduler.bin")


def _step_of(path: Path) -> int:
    """The step a checkpoint holds, as its `trainer_state.json` records it (`epoch_<k>` is named by its epoch, and a
    stop at an epoch's end saves `step_<n>` beside them); the digits of its name where that file is unreadable."""
    try:
        return int(json.loads((path / "trainer_state.json").read_text())["completed_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        digits = "".join(c for c in path.name.rsplit("_", 1)[-1] if c.isdigit())
        return int(digits) if digits else -1


def checkpoint_problem(path: Path) -> str | None:
    """Why `path` is not a complete checkpoint of this loop (missing or unreadable files), or None."""
    if not path.is_dir():
        return "no such folder"
    if not any(path.glob("model*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
        return "no model weights (model.safetensors)"
    missing = [name for name in CHECKPOINT_FILES if not (path / name).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        state = json.loads((path / "trainer_state.json").read_text())
        int(state["completed_steps"])
    except (ValueError, KeyError, TypeError) as err:
        return f"trainer_state.json is damaged ({type(err).__name__}: {err})"
    return None


# flags a resume may change (how long, how often to save or validate, where things are, what is reported);
# every other flag must equal the checkpoint's, or the optimizer state would silently disagree with the card
RESUMABLE_FLAGS = {
    "num_train_epochs",
    "max_train_steps",
    "resume_from_checkpoint",
    "checkpointing_steps",
    "checkpoints_total_limit",
    "output_dir",
    "data_dir",
    "encoder",
    "per_device_eval_batch_size",
    "eval_max_queries",
    "eval_steps",
    "no_progress",
    "logging_steps",
    "cpu_threads",
    "num_proc",
    "push_to_hub",
    "hub_model_id",
    "hub_token",
    "with_tracking",
    "report_to",
    "score_bf16",
    "no_test_eval",
    "overwrite_output_dir",
    "keep_best",
    "no_malloc_tuning",
}
# flags the loop stores as it resolved them (the precision may come from `accelerate launch` instead of the flag)
_STORED_BY_LOOP = {"mixed_precision"}
# settings a checkpoint written before they were stored cannot be checked against (not assumed to be a default):
# the precision came from `accelerate launch` then, and the loop stores the one in effect (`mixed_precision`)
UNRECORDED_BEFORE = {"mixed_precision"}


def run_settings(args) -> dict:
    """The flags that define a run (all but `RESUMABLE_FLAGS`), as stored with its checkpoints."""
    return {
        k: v
        for k, v in sorted(vars(args).items())
        if k not in RESUMABLE_FLAGS | _STORED_BY_LOOP and (v is None or isinstance(v, (int, float, str, bool, list)))
    }


# flags added after checkpoints were first written, with the value a checkpoint that lacks them ran with
ADDED_FLAG_DEFAULTS = {
    "negative_sampling": "uniform",
    "group_by_length": False,
    "init_from": None,
    "symmetric_loss": False,
}


def check_resume_settings(saved: dict | None, current: dict, checkpoint) -> None:
    """Refuses a resume whose run-defining flags differ from the checkpoint's, naming each."""
    if saved is not None:
        saved = {**{k: v for k, v in ADDED_FLAG_DEFAULTS.items() if k in current}, **saved}
    if saved is None:
        warnings.warn(
            f"{checkpoint} predates stored run settings: cannot check that this resume uses the same flags.",
            stacklevel=2,
        )
        return
    keys = (set(saved) | set(current)) - {k for k in UNRECORDED_BEFORE if k not in saved}
    differ = {k: (saved.get(k), current.get(k)) for k in sorted(keys) if saved.get(k) != current.get(k)}
    if differ:
        shown = "; ".join(f"--{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differ.items())
        precision = (  # `auto` (or accelerate's config) chooses by the machine: name the flag that matches
            f" (pass --mixed_precision {differ['mixed_precision'][0]}: 'auto' and `accelerate config` choose by the machine)"
            if "mixed_precision" in differ
            else ""
        )
        raise UsageError(
            f"Cannot resume from {checkpoint} with different settings ({shown}). Resume with the run's own flags{precision} "
            f"(only {', '.join(sorted(RESUMABLE_FLAGS - {'hub_token'}))} may change), or start a new run in another --output_dir."
        )


@dataclass
class LoopState:
    """What the loop carries across a resume besides model, optimizer, scheduler and RNG states (those are
    Accelerate's `save_state`): stored as `trainer_state.json` in every checkpoint.

    `train_runtime_s` is the training time of the segments before this process (None when a checkpoint predates
    timing), `eval_runtime_s` the part of it spent validating; `history` holds one entry per validation."""

    completed_steps: int = 0
    best: dict = field(default_factory=lambda: {"metric": float("-inf"), "epoch": None})
    train_runtime_s: float | None = 0.0
    eval_runtime_s: float = 0.0
    history: list = field(default_factory=list)
    exact_resume: bool = True
    resumed_from: Path | None = None


class CheckpointManager:
    """Saves, rotates and restores the loop's checkpoints under `output_dir/checkpoints/`.

    Args:
        accelerator: the run's `Accelerator` (its `save_state` / `load_state` hold the tensors and RNG states).
        output_dir: the run's folder.
        settings: the run-defining flags (`run_settings(args)`), stored with every checkpoint and compared at resume.
        total_limit: keep only this many most recent checkpoints (all when None).
    """

    def __init__(self, accelerator, output_dir, settings: dict, total_limit: int | None = None):
        self.accelerator = accelerator
        self.folder = Path(output_dir) / "checkpoints"
        self.settings = settings
        self.total_limit = total_limit

    def clear_partial(self) -> None:
        """Removes saves that a crash interrupted (`*.partial`): never resumed from, never counted."""
        if self.accelerator.is_main_process:
            for stale in self.folder.glob(f"*{PARTIAL_SUFFIX}"):
                shutil.rmtree(stale, ignore_errors=True)

    def resume(self, args) -> LoopState:
        """The state to start from: a fresh one, or the one of `--resume_from_checkpoint` (a folder or 'latest'),
        whose tensors and RNG states are loaded into the prepared objects."""
        checkpoint = find_checkpoint(args)
        if checkpoint is None:
            return LoopState()
        stored = json.loads((checkpoint / "trainer_state.json").read_text())
        check_resume_settings(stored.get("settings"), self.settings, checkpoint)
        try:
            self.accelerator.load_state(str(checkpoint))
        except Exception as err:  # noqa: BLE001 - any failure here means an unusable checkpoint
            raise UsageError(
                f"Could not resume from {checkpoint}: {err}. Delete it or point --resume_from_checkpoint elsewhere."
            ) from err
        exact = bool(stored.get("exact_resume", True))
        if not (checkpoint / f"random_states_{self.accelerator.process_index}.pkl").is_file():
            warnings.warn(
                f"{checkpoint} holds no random states for process {self.accelerator.process_index}: this resume is NOT exactly "
                "reproducible (dropout masks and data order after it differ from an uninterrupted run).",
                stacklevel=2,
            )
            exact = False
        return LoopState(
            completed_steps=stored["completed_steps"],
            best=stored.get("best", LoopState().best),
            train_runtime_s=stored.get("train_runtime_s"),
            eval_runtime_s=stored.get("eval_runtime_s", 0.0),
            history=list(stored.get("history", [])),
            exact_resume=exact,
            resumed_from=checkpoint,
        )

    def save(self, tag: str, state: LoopState, train_runtime_s: float | None, eval_runtime_s: float) -> Path:
        """Writes checkpoint `tag` (e.g. `step_500`) with `state`, then drops the oldest beyond `total_limit`."""
        path = self.folder / tag
        partial = path.with_name(tag + PARTIAL_SUFFIX)
        if self.accelerator.is_main_process and self.total_limit and self.total_limit >= 2 and self.folder.is_dir():
            # free the space first; with a limit of 1 the only checkpoint stays until the new one exists, and one
            # written again (a resume's validation written back) takes no room of another
            self._rotate(keep=path if path.exists() else None, room_for=1)
        try:
            self.accelerator.save_state(str(partial))
            if self.accelerator.is_main_process:
                stored = {
                    "completed_steps": state.completed_steps,
                    "best": state.best,
                    "train_runtime_s": train_runtime_s,
                    "history": state.history,
                    "eval_runtime_s": eval_runtime_s,
                    "settings": self.settings,
                    "exact_resume": state.exact_resume,
                }
                write_json(partial / "trainer_state.json", stored, default=float)
                if path.exists():
                    shutil.rmtree(path)
                os.replace(partial, path)
        except (OSError, RuntimeError) as err:
            shutil.rmtree(partial, ignore_errors=True)  # an incomplete save only keeps the disk full
            free = shutil.disk_usage(self.folder if self.folder.is_dir() else self.folder.parent).free
            text = str(err)
            if (
                getattr(err, "errno", None) == errno.ENOSPC
                or "No space left" in text
                or "unexpected pos" in text
                or free < 64 << 20
            ):
                raise OSError(
                    errno.ENOSPC,
                    f"No space left on device while saving checkpoint {tag} into {self.folder} ({free / 2**20:.0f} MiB free): the "
                    "incomplete save was removed and the older checkpoints kept. Free some space (or lower "
                    "--checkpoints_total_limit), then continue with --resume_from_checkpoint latest",
                ) from err
            raise
        self.accelerator.wait_for_everyone()
        if self.accelerator.is_main_process and self.total_limit:
            self._rotate(keep=path)
        if self.accelerator.is_main_process:
            logger.info(f"Saved checkpoint {path} (step {state.completed_steps}).")
        return path

    def _rotate(self, keep: Path | None, room_for: int = 0) -> None:
        """Removes the oldest checkpoints so that `total_limit` remain counting `keep` (the newest) or, before a
        save, `room_for` checkpoints still to be written."""
        saved = [
            p
            for p in self.folder.iterdir()
            if (p / "trainer_state.json").is_file() and p != keep and not p.name.endswith(PARTIAL_SUFFIX)
        ]
        saved.sort(key=_step_of)
        others = self.total_limit - (1 if keep is not None else room_for)
        for old in saved[: max(0, len(saved) - others)]:
            shutil.rmtree(old)
