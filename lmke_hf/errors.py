"""The errors lmke_hf raises for things a user can fix, each with a message that names the value and the fix.

Library code (models, tokenizer, training, evaluation, the commands' `main(args)`) raises these like any Python
library; only the command line (`lmke-hf ...`, `examples/*.py`, `python -m lmke_hf.commands.<name>`) turns them into a
one-line message on stderr and an exit status (`lmke_hf.cli.run_program`).

    from lmke_hf import ClmkeTrainingArguments, train_clmke
    from lmke_hf.errors import UsageError

    try:
        train_clmke(ClmkeTrainingArguments(dataset="umls", output_dir="/home/me"))
    except UsageError as err:  # e.g. the output folder holds files no run of ours wrote
        print(err)
"""

from __future__ import annotations

import signal
from pathlib import Path


class LmkeError(Exception):
    """Base of lmke_hf's own errors. `exit_code` is the status the command line exits with."""

    exit_code = 1


class UsageError(LmkeError, ValueError):
    """A flag, argument, file or folder that cannot work as given (a `ValueError`): the message names the value
    and what to give instead."""


class TrainingDiverged(LmkeError, RuntimeError):
    """The training loss stopped being finite or grew far above its start; nothing of the step was saved."""


class TrainingStopped(LmkeError):
    """Training stopped on a signal (SIGTERM / SIGINT): after saving a checkpoint, or, `finished`, once training had
    ended (during the test evaluation; the last step's checkpoint, when there is one, resumes into the test).
    `command` resumes it (None when no checkpoint can). The command line exits with status 128 + the signal's
    number, as a process killed by it would."""

    def __init__(
        self,
        signum: int,
        checkpoint: Path | None,
        step: int,
        command: str | None,
        finished: bool = False,
        best: Path | None = None,
    ):
        self.signum, self.checkpoint, self.step, self.command = signum, checkpoint, step, command
        self.finished = finished
        self.exit_code = 128 + signum
        name = signal.Signals(signum).name
        if not finished:
            self.message = f"Stopped by {name} after step {step}" + (
                f"; checkpoint {checkpoint}. Resume with:\n  {command}" if checkpoint is not None else "."
            )
        elif checkpoint is not None:
            self.message = (
                f"Stopped by {name} after training finished at step {step}, before its test evaluation ended; "
                f"checkpoint {checkpoint}. Resume with (it trains nothing more and runs the test evaluation):\n"
                f"  {command}"
            )
        else:
            self.message = (
                f"Stopped by {name} after training finished at step {step}, before its test evaluation ended; no "
                f"checkpoint holds step {step} (--checkpointing_steps N saves the last step too), so the run cannot "
                f"resume: test its best model with `lmke-hf evaluate --model {best} --dataset <its dataset> "
                "--split test`."
            )
        super().__init__(self.message)


__all__ = ["LmkeError", "TrainingDiverged", "TrainingStopped", "UsageError"]
