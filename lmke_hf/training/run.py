"""Preparing a run: the output folder (`claim_output_dir`), the process-wide settings a training script makes
in its `main` (`configure_process`: logging, progress bars, CPU threads, malloc), and `prepare_run` (Accelerator,
seeds, `training_args.json`, the KG with its splits checked)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path

import torch

from ..errors import UsageError
from ..folders import LOCK_FILE, check_output_dir, claim_folder, recover_final_save
from ..run_io import public_args, write_json
from .arguments import typed_command
from .loop import BEST_STATE


def run_inputs(args) -> dict:
    """The folders a run reads, by flag: an output folder may never be one of them or hold one of them."""
    inputs = {
        "--data_dir": args.data_dir or os.environ.get("LMKE_HF_DATA_DIR"),
        "--encoder": getattr(args, "encoder", None),
    }
    init_from = getattr(args, "init_from", None)
    if init_from and Path(init_from).exists():
        inputs["--init_from"] = init_from
    dataset = getattr(args, "dataset", None)
    if dataset:
        inputs["--dataset"] = (
            dataset
            if Path(dataset).exists()
            else (Path(inputs["--data_dir"]) / dataset if inputs["--data_dir"] else None)
        )
    return inputs


def _refuse_resume_without_checkpoint(args, out: Path) -> None:
    """`--resume_from_checkpoint latest` needs a run of ours with a checkpoint in it: never a silent fresh start."""
    from .checkpoints import find_checkpoint

    if args.resume_from_checkpoint != "latest" or find_checkpoint(args) is not None:
        return
    results = out / "all_results.json"
    if results.is_file():
        try:
            done = json.loads(results.read_text())
        except ValueError:
            done = {}
        steps = done.get("completed_steps")
        raise UsageError(
            f"--resume_from_checkpoint latest: the run in {out} is finished ({steps if steps is not None else 'all'} steps) and kept no "
            "checkpoints, so it cannot train longer. Train a new run into a new --output_dir, with --checkpointing_steps N "
            "--checkpoints_total_limit 2 so that it can be resumed and extended later."
        )
    raise UsageError(
        f"--resume_from_checkpoint latest: {out} holds no checkpoint to resume from (no {out / 'checkpoints'}/step_N). "
        "Start a new run without --resume_from_checkpoint (into a new folder, or this one with --overwrite_output_dir "
        "if it is a run of yours to discard)."
    )


@contextlib.contextmanager
def claim_output_dir(args):
    """One run, one output folder. Takes a lock on `args.output_dir` (a second run into it stops at once, naming
    the first) and decides what the run may do there (`lmke_hf.folders.check_output_dir`): a new or empty folder
    is marked as a run's; a folder holding a run of ours is cleared with `--overwrite_output_dir` or continued with
    `--resume_from_checkpoint` (which needs a checkpoint there); anything else is refused untouched: a folder no
    tool of ours made, the working directory and its parents, a home folder, a repository, the data and encoder
    folders, or a link to one of them. An interrupted final save is completed (`recover_final_save`), and a run
    that fails before anything worth keeping (a checkpoint, a best or final model) was written removes the folder
    it created. Only the first process of a multi-process run does this; the others wait for the folder."""
    from filelock import FileLock, Timeout

    out = Path(args.output_dir)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        yield out
        return
    resume = bool(args.resume_from_checkpoint)
    check = dict(
        inputs=run_inputs(args),
        replace_flag="--overwrite_output_dir",
        replace=getattr(args, "overwrite_output_dir", False),
        reuse=resume,
    )
    decision = check_output_dir(
        out, "training-run", **check
    )  # refuse before creating anything (the lock file included)
    if resume and decision == "new" and args.resume_from_checkpoint == "latest":
        raise UsageError(
            f"--resume_from_checkpoint latest: {out} holds no run to resume. Start a new run without --resume_from_checkpoint."
        )
    existed = out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = (
            (out / (LOCK_FILE + ".owner")).read_text().strip()
            if (out / (LOCK_FILE + ".owner")).is_file()
            else "another process"
        )
        raise UsageError(
            f"--output_dir {out} is in use by another run ({owner}); wait for it or choose another folder."
        ) from None
    try:
        (out / (LOCK_FILE + ".owner")).write_text(
            f"pid {os.getpid()} on {os.uname().nodename}, started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
        )
        recover_final_save(out, locked=True)
        claim_folder(out, "training-run", **check)  # under the lock: the decision again, then clear / mark
        if resume:
            _refuse_resume_without_checkpoint(args, out)
        try:
            yield out
        except BaseException:
            kept = [n for n in ("checkpoints", "best", "model.safetensors") if (out / n).exists()]
            if not existed and not kept:
                lock.release()
                shutil.rmtree(out, ignore_errors=True)
            raise
    finally:
        if lock.is_locked:
            lock.release()
            for name in (LOCK_FILE + ".owner", LOCK_FILE):
                with contextlib.suppress(FileNotFoundError):
                    (out / name).unlink()


def set_cpu_threads(accelerator, threads: int | None = None) -> int:
    """Sets torch's intra-op threads for a CPU run and returns them.

    `accelerate launch` exports OMP_NUM_THREADS=1 unless told `--cpu` or `--num_cpu_threads_per_process`,
    which halves a single CPU process's speed on a 2-core machine; with `threads=None` a lone CPU process
    takes every core it may run on, the processes of one machine share them evenly, and an OMP_NUM_THREADS
    set outside `accelerate launch` is respected. GPU runs are left alone.
    """
    if accelerator.device.type != "cpu":
        return torch.get_num_threads()
    if threads is None:
        launched = any(k.startswith("ACCELERATE_") for k in os.environ)  # set by `accelerate launch`
        if "OMP_NUM_THREADS" in os.environ and not launched:
            return torch.get_num_threads()  # the user's own OMP_NUM_THREADS is kept
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", accelerator.num_processes))  # this machine's share
        threads = max(1, available // max(1, local_processes))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


def keep_freed_memory(max_bytes: int = 1 << 30) -> bool:
    """Tells glibc's malloc to keep freed blocks (up to `max_bytes`) in the process instead of unmapping them.

    Every CPU training step frees and reallocates the dense gradients of the embedding tables (word pieces plus
    one row per entity: tens of MB); by default glibc serves such blocks with fresh mmap'd pages, so each step
    page-faults them in again (~14k faults per step on WN18RR with the BERT-tiny shape, ~25 % of the backward
    pass in benchmarks/bench_train.py). Returns False where the C library is not glibc (nothing changed).
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, min(max_bytes, 1 << 30) // 4) == 1
    ok &= mallopt(m_trim_threshold, max_bytes) == 1
    ok &= mallopt(m_top_pad, 64 << 20) == 1
    return bool(ok)


def silence_progress_bars() -> None:
    """Turns off every progress bar the libraries of a run draw: transformers ("Loading weights"), datasets
    (tokenising maps, shard writes) and huggingface_hub (downloads, uploads)."""
    import datasets
    import huggingface_hub.utils
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()
    huggingface_hub.utils.disable_progress_bars()


def configure_process(args):
    """The process-wide settings of a training script, made once in its `main`: log format and level (INFO on the
    main process), progress bars off with `--no_progress`, torch threads on CPU (`set_cpu_threads`) and, unless
    `--no_malloc_tuning`, glibc's malloc keeping freed memory on CPU (`keep_freed_memory`). Returns the
    `accelerate.PartialState` (device, process index) the run's Accelerator will share."""
    import logging

    from accelerate import PartialState

    state = PartialState()
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if state.is_main_process else logging.WARNING,
    )
    for name in ("accelerate.checkpointing", "accelerate.accelerator"):  # six lines per save; the loop logs one
        logging.getLogger(name).setLevel(logging.WARNING)
    if getattr(args, "no_progress", False):
        silence_progress_bars()
    if state.device.type == "cpu":
        set_cpu_threads(state, getattr(args, "cpu_threads", None))
        if not getattr(args, "no_malloc_tuning", False):
            keep_freed_memory()
    return state


def resolve_precision(flag: str | None) -> str:
    """The run's precision: `--mixed_precision`, else what `accelerate launch` / `accelerate config` exported, else
    fp32 ("no"); "auto" becomes `auto_precision()`'s choice. Accelerate keeps one precision per process; a later run
    of the same process (a notebook, the tests) that asks for another one gets a fresh Accelerator state instead of
    the first run's precision."""
    from accelerate.state import AcceleratorState

    precision = (flag or os.environ.get("ACCELERATE_MIXED_PRECISION") or "no").lower()
    if precision == "auto":
        precision = auto_precision()
    state = AcceleratorState._shared_state
    if state.get("_mixed_precision") not in (None, precision):
        AcceleratorState._reset_state()  # the process group (PartialState) is kept
    return precision


def cpu_has_bf16_units() -> bool | None:
    """Whether this CPU computes bf16 natively (x86 `avx512_bf16` / `amx_bf16`, Arm `bf16`), from /proc/cpuinfo;
    None where that cannot be read (not Linux)."""
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return None
    return any(flag in flags for flag in ("avx512_bf16", "amx_bf16", "bf16"))


def auto_precision() -> str:
    """`--mixed_precision auto`: "bf16" where the device computes it natively (a CUDA GPU that supports it, a CPU
    with bf16 units), else "no" (fp32): emulated bf16 is slower than fp32 (a 6-layer C-LMKE training step of 128
    29x slower on an AVX2-only AMD EPYC, benchmarks/bench_train.py). Logs the choice and why."""
    import logging

    from accelerate import PartialState

    device = PartialState().device
    if device.type == "cuda":
        native, why = torch.cuda.is_bf16_supported(including_emulation=False), "this GPU"  # Ampere or newer
    elif device.type == "cpu":
        units = cpu_has_bf16_units()
        native = units is True
        found = {True: "in /proc/cpuinfo", False: "not in /proc/cpuinfo", None: "unknown: no /proc/cpuinfo"}[units]
        why = f"this CPU (avx512_bf16 / amx_bf16 / Arm bf16 {found})"
    else:  # mps and others: fp32 unless asked for explicitly
        native, why = False, f"a {device.type} device"
    choice = "bf16" if native else "no"
    logging.getLogger(__name__).info(
        f"--mixed_precision auto: {'bf16' if native else 'fp32 (no)'} on {why}; pass bf16 or no to choose yourself."
    )
    return choice


def warn_if_slow_precision(accelerator) -> None:
    """One line when bf16 was asked for on a CPU that emulates it (slower than fp32 there)."""
    import logging

    if accelerator.mixed_precision == "bf16" and accelerator.device.type == "cpu" and cpu_has_bf16_units() is False:
        logging.getLogger(__name__).warning(
            "--mixed_precision bf16 on a CPU without bf16 units (no avx512_bf16 / amx_bf16 in /proc/cpuinfo): it runs, "
            "but far slower than fp32 here (29x per training step measured on an AVX2-only AMD EPYC); use --mixed_precision auto or no."
        )


def prepare_run(args, method: str):
    """Accelerator, seeded RNGs, output folder (with `training_args.json`: how the run started, and each resume)
    and the KG (train/validation/test checked) of a run. Process-wide settings are `configure_process`'s."""
    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    from ..kg import load_kg

    precision = resolve_precision(getattr(args, "mixed_precision", None))
    accelerator = Accelerator(
        mixed_precision=precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to if args.with_tracking else None,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(args.seed)
    warn_if_slow_precision(accelerator)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:  # what produced this folder, for cards and for anyone reading it later
        from ..run_io import describe_hardware

        info = {
            "method": method,
            "command": typed_command(),
            "hardware": describe_hardware(accelerator.device),
            "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision,
            "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "args": public_args(vars(args)),
        }
    try:
        kg = load_kg(args.dataset, data_dir=args.data_dir, description=args.description)
    except (FileNotFoundError, ValueError, KeyError) as err:  # a user's mistake: one clear line, no traceback
        raise UsageError(f"--dataset {args.dataset}: {err.args[0] if err.args else err}") from err
    if accelerator.is_main_process:
        info["kg"] = {"name": kg.name, "description_source": kg.description_source}
        path = Path(args.output_dir) / "training_args.json"
        if args.resume_from_checkpoint and path.is_file():  # keep how the run started; list its resumes
            first = json.loads(path.read_text())
            attempt = {k: info[k] for k in ("command", "started_at", "hardware")}
            # the fields this attempt would set, applied once the loop took its checkpoint (run_io.confirm_resume)
            attempt["pending"] = {k: v for k, v in info.items() if k not in ("command", "started_at", "method")}
            info = {**first, "resumes": [*first.get("resumes", []), attempt]}
        write_json(path, info, indent=2, default=str)
    for split in ("train", "validation", "test"):
        if split not in kg.splits:
            raise UsageError(
                f"Dataset {args.dataset} has no {split!r} split; {method} needs train, validation and test."
            )
    return accelerator, kg


# the flags that shape the weights: a model of other shapes cannot start from the run's tensors
_SHAPE_FLAGS = "--encoder, --encoder_layers, --matcher_hidden_size, --own_entity_bias, --no_degree_features"


def _recorded_runtime(init_from: str) -> float | None:
    """The training seconds behind a trained folder: a finished run's (`all_results.json`), or for a run's `best/`
    the seconds its run had trained by the validation that saved it (`best_state.json`)."""
    for name in ("all_results.json", BEST_STATE):
        record = Path(init_from) / name
        if record.is_file():
            with contextlib.suppress(ValueError):
                return json.loads(record.read_text()).get("train_runtime_s")
    return None


def start_from_trained(model, tokenizer, init_from: str, logger=None, load: bool = True) -> dict:
    """Loads the weights of a model this package trained (`--init_from`: its folder or Hub id) into `model`, which
    the run built for the same KG: the same model type, entities and relations in the same order, the same word
    pieces and tensor shapes, else `UsageError` naming what differs. Settings of the earlier run that do not shape
    tensors (loss, scorer, temperature, ...) are the new run's flags; those that differ are logged. Returns what
    the results record: the source (local paths shortened) and its training time (`init_train_runtime_s`, None where
    it did not record one). With `load=False` (a resumed run: its checkpoint holds the weights) only that record."""
    from transformers import AutoConfig

    from ..run_io import public_value

    record = {"init_from": public_value(str(init_from)), "init_train_runtime_s": _recorded_runtime(init_from)}
    if not load:
        return record
    from ..tokenization_lmke import LmkeTokenizer

    flag = f"--init_from {init_from}"
    try:
        config = AutoConfig.from_pretrained(init_from)
    except (OSError, ValueError, KeyError) as err:
        where = (
            "a folder without a saved model"
            if Path(init_from).is_dir()
            else "no such folder here, and no model on the Hub"
        )
        raise UsageError(f"{flag}: {where} ({str(err).splitlines()[0][:200]}).") from err
    if config.model_type != model.config.model_type:
        raise UsageError(
            f"{flag} is a {config.model_type!r} model; this command trains {model.config.model_type!r} models "
            f"(use the other training command, or a run of this one)."
        )
    try:
        source_tokenizer = LmkeTokenizer.from_pretrained(init_from)
    except (OSError, ValueError) as err:
        raise UsageError(f"{flag}: its KG tokenizer cannot be read ({err}).") from err
    for kind in ("entity", "relation"):
        ours, theirs = getattr(tokenizer, f"{kind}_ids"), getattr(source_tokenizer, f"{kind}_ids")
        if list(ours) != list(theirs):
            at = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
            raise UsageError(
                f"{flag} was trained on another KG: {len(theirs)} {kind} ids against this dataset's {len(ours)}, the "
                f"first difference at position {at} ({theirs[at] if at < len(theirs) else 'none'!r} there, "
                f"{ours[at] if at < len(ours) else 'none'!r} here). Train on the dataset it was trained on."
            )
    if source_tokenizer.base_vocab_size != tokenizer.base_vocab_size:
        raise UsageError(
            f"{flag} reads {source_tokenizer.base_vocab_size} word pieces, this run's --encoder "
            f"{tokenizer.base_vocab_size}: give the encoder that run started from."
        )
    try:
        source = type(model).from_pretrained(init_from)
    except ValueError as err:
        raise UsageError(f"{flag}: {err}") from err
    theirs, ours = source.state_dict(), model.state_dict()
    missing, unexpected = sorted(set(ours) - set(theirs)), sorted(set(theirs) - set(ours))
    shapes = sorted(k for k in set(ours) & set(theirs) if ours[k].shape != theirs[k].shape)
    if missing or unexpected or shapes:
        found = "; ".join(
            f"{label} {names[:3]}{' ...' if len(names) > 3 else ''}"
            for label, names in (("not in it:", missing), ("only in it:", unexpected), ("other shapes:", shapes))
            if names
        )
        raise UsageError(
            f"{flag} has other tensors than the model these flags build ({found}); give the flags that shape its "
            f"weights as that run did ({_SHAPE_FLAGS})."
        )
    model.load_state_dict(theirs)
    # what the save records beside the run's settings
    not_settings = {"model_type", "transformers_version", "architectures", "auto_map", "_name_or_path", "dtype"}
    not_settings |= {"torch_dtype", "encoder"}  # the encoder's shape was checked with the tensors
    differ = {
        k: (v, getattr(model.config, k, None))
        for k, v in config.to_dict().items()
        if k not in not_settings and getattr(model.config, k, None) != v
    }
    runtime = record["init_train_runtime_s"]
    if logger is not None:
        logger.info(
            "Started from the weights of %s%s.%s",
            init_from,
            f" ({runtime / 60:.1f} training minutes)" if runtime is not None else "",
            (" Settings that differ from that run: " + "; ".join(f"{k} {a!r} -> {b!r}" for k, (a, b) in differ.items()))
            if differ
            else "",
        )
    return record
