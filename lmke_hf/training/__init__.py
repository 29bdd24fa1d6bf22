"""The Accelerate training code shared by `examples/train_clmke.py` and `examples/train_lmke.py`.

Conventions follow transformers' `run_*_no_trainer.py`: flags, `accelerator.accumulate`, `save_state` /
`load_state` + `skip_first_batches` for exact resume, trackers, `save_pretrained` of model and tokenizer.

- `arguments`: the training arguments (`KgTrainingArguments`, one dataclass field per flag), range-checked argparse
  types, `parse_training_args`, the command as recorded.
- `run`: the output folder's lock (`claim_output_dir`), process-wide settings (`configure_process`) and
  `prepare_run` (Accelerator, seeds, KG).
- `checkpoints`: finding, checking, saving, rotating and restoring checkpoints (`CheckpointManager`).
- `loop`: the optimizer, the run's `Schedule` and the epoch loop (`TrainingLoop`, run by `train`).
- `finish`: the final folder, card, results, summary and push (`finish_run`).
"""

from ..errors import TrainingDiverged, TrainingStopped
from .arguments import (
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    SCHEDULERS,
    ClmkeTrainingArguments,
    KgTrainingArguments,
    LmkeTrainingArguments,
    arguments_parser,
    default_encoder,
    number,
    parse_training_args,
    redact_argv,
    run_command,
    typed_command,
)
from .checkpoints import (
    CHECKPOINT_FILES,
    PARTIAL_SUFFIX,
    RESUMABLE_FLAGS,
    CheckpointManager,
    LoopState,
    check_resume_settings,
    checkpoint_problem,
    find_checkpoint,
    run_settings,
)
from .finish import PUSH_IGNORE, finish_run, hub_dataset_id, run_results, summary_text
from .loop import (
    GeneratorState,
    RandomStates,
    Schedule,
    StepAbandoned,
    StopAtOnce,
    StopRequest,
    TrainingLoop,
    ValidationAbandoned,
    build_optimizer,
    format_metrics,
    resume_command,
    seeded_generator,
    train,
)
from .run import (
    LOCK_FILE,
    claim_output_dir,
    configure_process,
    keep_freed_memory,
    prepare_run,
    set_cpu_threads,
    silence_progress_bars,
    start_from_trained,
)

__all__ = [
    "arguments_parser",
    "ClmkeTrainingArguments",
    "KgTrainingArguments",
    "LmkeTrainingArguments",
    "parse_training_args",
    "build_optimizer",
    "check_resume_settings",
    "CHECKPOINT_FILES",
    "checkpoint_problem",
    "CheckpointManager",
    "claim_output_dir",
    "StopAtOnce",
    "StopRequest",
    "StepAbandoned",
    "ValidationAbandoned",
    "RandomStates",
    "start_from_trained",
    "TrainingDiverged",
    "TrainingStopped",
    "resume_command",
    "configure_process",
    "default_encoder",
    "find_checkpoint",
    "finish_run",
    "format_metrics",
    "GeneratorState",
    "hub_dataset_id",
    "keep_freed_memory",
    "LOCK_FILE",
    "LoopState",
    "NON_NEGATIVE_FLOAT",
    "NON_NEGATIVE_INT",
    "number",
    "PARTIAL_SUFFIX",
    "POSITIVE_FLOAT",
    "POSITIVE_INT",
    "prepare_run",
    "PUSH_IGNORE",
    "redact_argv",
    "RESUMABLE_FLAGS",
    "run_command",
    "run_results",
    "run_settings",
    "SCHEDULERS",
    "seeded_generator",
    "set_cpu_threads",
    "silence_progress_bars",
    "summary_text",
    "train",
    "TrainingLoop",
    "Schedule",
    "typed_command",
]
