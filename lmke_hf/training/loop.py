"""The epoch loop shared by both training scripts: two-group AdamW, the LR schedule, validation every epoch
(and every `--eval_steps`) keeping the best model, checkpoints through `CheckpointManager`, exact resume with
`skip_first_batches`."""

from __future__ import annotations

import json
import math
import random
import shutil
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import numpy as np
import torch
from transformers import get_scheduler

from ..errors import TrainingDiverged, TrainingStopped, UsageError
from ..run_io import confirm_resume, public_args, write_json
from .checkpoints import CheckpointManager, LoopState, find_checkpoint, run_settings

# best/'s record of the validation that made it the best: step, epoch, metric, the run's training seconds by then
BEST_STATE = "best_state.json"


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


class GeneratorState:
    """A `torch.Generator` as Accelerate checkpoints it (`register_for_checkpointing` wants `state_dict` /
    `load_state_dict`), so a resumed run draws the same numbers as an uninterrupted one."""

    def __init__(self, generator: torch.Generator):
        self.generator = generator

    def state_dict(self) -> dict:
        return {"state": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["state"])


def seeded_generator(seed: int, accelerator) -> torch.Generator:
    """A generator on the run's device, seeded per process (`seed + process_index`): each process draws its own
    numbers, the same in every run with that seed."""
    return torch.Generator(device=accelerator.device).manual_seed(seed + accelerator.process_index)


class RandomStates:
    """The random states of a step boundary that a checkpoint saves (Python's, NumPy's, torch's CPU and CUDA
    generators, and `generators`), captured there and put back when the next step is dropped (`StepAbandoned`), so
    that its checkpoint holds the random states one saved at that boundary would have held. (The rest of a dropped
    step's state is untouched: with one micro-batch per step it changes nothing else before its backward ends.)"""

    def __init__(self, generators: list[torch.Generator]):
        self.generators = generators
        self.saved: tuple | None = None

    def capture(self) -> None:
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        own = [g.get_state() for g in self.generators]
        self.saved = (random.getstate(), np.random.get_state(), torch.get_rng_state(), cuda, own)

    def restore(self) -> None:
        python, numpy, cpu, cuda, own = self.saved
        random.setstate(python)
        np.random.set_state(numpy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        for generator, state in zip(self.generators, own):
            generator.set_state(state)


@dataclass(frozen=True)
class Schedule:
    """The step budget of a run, derived from its arguments and its batches per epoch as transformers' no_trainer
    scripts do: `--max_train_steps` (else `--num_train_epochs` whole epochs), the epochs that takes, and the warmup
    steps (`--warmup_ratio` of all steps, else `--num_warmup_steps`). The arguments themselves stay as given."""

    steps_per_epoch: int
    max_train_steps: int
    num_train_epochs: int
    num_warmup_steps: int

    @classmethod
    def of(cls, args, steps_per_epoch: int) -> Schedule:
        steps = args.max_train_steps if args.max_train_steps is not None else args.num_train_epochs * steps_per_epoch
        ratio = getattr(args, "warmup_ratio", None)
        warmup = math.ceil(ratio * steps) if ratio is not None else args.num_warmup_steps
        return cls(steps_per_epoch, steps, math.ceil(steps / steps_per_epoch), warmup)

    def as_args(self) -> dict:
        """The run's arguments as it ran them: what cards and trackers record."""
        return {
            "max_train_steps": self.max_train_steps,
            "num_train_epochs": self.num_train_epochs,
            "num_warmup_steps": self.num_warmup_steps,
        }

    def validation_ends(self) -> list[int]:
        """The steps that validate whatever `--eval_steps` says: each epoch's last step and the run's last."""
        ends = list(range(self.steps_per_epoch, self.max_train_steps + 1, self.steps_per_epoch))
        return ends if ends and ends[-1] == self.max_train_steps else [*ends, self.max_train_steps]

    def near_duplicate_validations(self, eval_steps: int | None) -> list[tuple[int, int]]:
        """(`--eval_steps` point, the epoch-end or final validation it nearly repeats) for each step validation
        within 1 % of an epoch (at least 1 step) of one that happens anyway: the same model validated twice."""
        if not eval_steps:
            return []
        per_epoch, last = self.steps_per_epoch, self.max_train_steps
        tolerance, pairs = max(1, per_epoch // 100), []
        for step in range(eval_steps, last, eval_steps):
            if step % per_epoch:
                before = step // per_epoch * per_epoch
                after = min(before + per_epoch, last)
                nearest = before if before and step - before <= after - step else after
                if abs(nearest - step) <= tolerance:
                    pairs.append((step, nearest))
        return pairs

    def nearest_step_divisor(self, eval_steps: int) -> int | None:
        """The divisor of the steps per epoch (other than 1 and the epoch itself) nearest to `eval_steps`."""
        divisors = [d for d in range(2, self.steps_per_epoch) if self.steps_per_epoch % d == 0]
        return min(divisors, key=lambda d: (abs(d - eval_steps), -d)) if divisors else None

    def describe(self, examples_per_step: int, eval_steps: int | None, checkpoint_every: int | str | None) -> str:
        """One line of what the run will do, as transformers' Trainer prints before training; `checkpoint_every`
        is a step count, "epoch" or None (no checkpoints), as `--checkpointing_steps` takes it."""
        epochs = self.max_train_steps / self.steps_per_epoch
        line = (
            f"Training plan: {self.max_train_steps} optimizer steps of {examples_per_step} examples "
            f"({epochs:.4g} epochs of {self.steps_per_epoch} steps), {self.num_warmup_steps} warmup steps; "
            "validation at each epoch end and the last step"
        )
        line += f", and every {eval_steps} steps" if eval_steps else ""
        if checkpoint_every == "epoch":
            return line + "; a checkpoint at each epoch end."
        return line + (f"; a checkpoint every {checkpoint_every} steps." if checkpoint_every else ".")


class _Clock:
    """Training time of a run over all its segments (None when a resumed checkpoint predates timing) and the
    part of it spent validating."""

    def __init__(self, state: LoopState):
        self.before, self.eval_before, self.start, self.eval_seconds = (
            state.train_runtime_s,
            state.eval_runtime_s,
            time.time(),
            0.0,
        )

    def runtime(self) -> float | None:
        return None if self.before is None else self.before + time.time() - self.start

    def eval_runtime(self) -> float:
        return self.eval_before + self.eval_seconds

    def minutes_excluding_eval(self) -> float | None:
        spent = self.runtime()
        return None if spent is None else (spent - self.eval_runtime()) / 60


class _LogWindow:
    """The batches since the last `--logging_steps` line: their summed loss, and the time they took without the
    validations in between."""

    def __init__(self, clock: _Clock, step: int):
        self.clock = clock
        self._reset(step)

    def _reset(self, step: int) -> None:
        self.loss, self.batches, self.step = 0.0, 0, step
        self.began, self.eval_at_start = time.time(), self.clock.eval_seconds

    def add(self, loss: float) -> None:
        self.loss += loss
        self.batches += 1

    def take(self, step: int) -> tuple[float, float]:
        """(mean loss, seconds per optimizer step) since the last call, and a new window from here."""
        seconds = time.time() - self.began - (self.clock.eval_seconds - self.eval_at_start)
        mean = self.loss / max(self.batches, 1)
        per_step = seconds / (step - self.step) if step > self.step else float("nan")
        self._reset(step)
        return mean, per_step


def _restore_best(out: Path, state: LoopState, metric_name: str) -> None:
    """A finished run keeps no `best/` (its folder's own model is the best one, unless `--keep_best`): when such a
    run is resumed to train longer, that model becomes `best/` again, with the best validation it reached."""
    results = out / "all_results.json"
    if (out / "best").exists() or not (out / "config.json").is_file() or not results.is_file():
        return
    finished = json.loads(results.read_text())
    metric = finished.get(f"best_eval_{metric_name}")
    if metric is None:
        return
    shutil.copytree(
        out, out / "best", ignore=shutil.ignore_patterns("checkpoints", "best", "test_metrics", "*.json.tmp", ".*")
    )
    if metric >= state.best["metric"]:
        state.best = {"metric": metric, "epoch": finished.get("best_epoch"), "step": finished.get("best_step")}


def _install_handlers(handler) -> dict:
    """Installs `handler` for SIGTERM and SIGINT (from the main thread only: elsewhere Python refuses); returns the
    previous handlers for `_restore_handlers`."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}


def _restore_handlers(previous: dict) -> None:
    """Puts back the handlers `_install_handlers` replaced; a second call does nothing. A handler installed outside
    Python (`signal.getsignal` gives None) cannot be put back: the default takes its place."""
    while previous:
        signum, handler = previous.popitem()
        signal.signal(signum, signal.SIG_DFL if handler is None else handler)


class StepAbandoned(BaseException):
    """Raised by `StopRequest`'s handler inside a step's forward / backward: the step in hand is dropped. A
    `BaseException`, as `KeyboardInterrupt` is, so that no `except Exception` on the way swallows it."""


class ValidationAbandoned(BaseException):
    """Raised by `StopRequest`'s handler inside a validation: the run stops without it, and the resume validates
    that step first (`TrainingLoop.validate_owed`)."""


class StopRequest:
    """SIGTERM / SIGINT during training (a scheduler's time limit, a spot instance reclaimed, Ctrl-C) as a request
    to stop cleanly: the loop saves a checkpoint and stops (`TrainingStopped`). Where the loop can drop what is in
    hand (`drops`: a step's forward or backward, a validation; one process), the signal raises that exception at
    once (`StepAbandoned`, `ValidationAbandoned`), so the checkpoint is written within seconds: `accelerate launch`
    kills its training process 5 s after passing a signal on. Elsewhere (the optimizer step, a save) the handler
    only records the signal and the loop stops at the end of the step. The first signal is the one reported (under
    the launcher a Ctrl-C reaches the training process as SIGINT, then as the launcher's SIGTERM). Installed for the
    loop only (from the main thread), previous handlers restored."""

    def __init__(self):
        self.signum: int | None = None
        # what a signal raises now (the loop sets it around what it may drop), or None: only recorded
        self.drops: type[BaseException] | None = None
        self._previous: dict = {}

    def __enter__(self) -> StopRequest:
        self._previous = _install_handlers(self._record)
        return self

    def _record(self, signum, frame) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, without the checkpoint
        if self.signum is None:
            self.signum = signum
        if self.drops is not None:
            drops, self.drops = self.drops, None
            raise drops

    def __exit__(self, *exc) -> bool:
        _restore_handlers(self._previous)
        return False

    def requested(self, accelerator) -> bool:
        """Whether any process was asked to stop (all processes agree, so they stop at the same step)."""
        if accelerator.num_processes == 1:
            return self.signum is not None
        flag = torch.tensor([0 if self.signum is None else self.signum], device=accelerator.device)
        flag = accelerator.reduce(flag, reduction="sum")
        if flag.item() and self.signum is None:
            self.signum = int(signal.SIGTERM)
        return bool(flag.item())


class StopAtOnce:
    """SIGTERM / SIGINT after training, during the test evaluation: nothing is left to save (the last step's
    checkpoint, `summary["last_checkpoint"]`, and best/ are on disk) and an evaluation can take many minutes, so the
    first signal stops at once with `TrainingStopped` (`finished`) naming that checkpoint and the command that
    resumes into the test; the previous handlers are back before it is raised (a second signal acts as it would
    have), and the main process logs the message. With several processes each stops on its own signal; one already
    waiting in a gather for the others stays there until the launcher ends it.

    Args:
        args: the run's arguments (`output_dir`).
        summary: the training loop's summary (`completed_steps`, `last_checkpoint`).
        accelerator: the run's `Accelerator`.
        logger: where the main process logs the message."""

    def __init__(self, args, summary: dict, accelerator, logger):
        self.args, self.summary, self.accelerator, self.logger = args, summary, accelerator, logger
        self._previous: dict = {}

    def __enter__(self) -> StopAtOnce:
        self._previous = _install_handlers(self._stop)
        return self

    def _stop(self, signum, frame) -> None:
        _restore_handlers(self._previous)
        checkpoint = self.summary.get("last_checkpoint")
        raise stopped_error(
            self.args, signum, self.summary["completed_steps"], Path(checkpoint) if checkpoint else None, finished=True
        )

    def __exit__(self, exc_type, exc, tb) -> bool:
        _restore_handlers(self._previous)
        if isinstance(exc, TrainingStopped) and self.accelerator.is_main_process:
            self.logger.warning(exc.message)  # logged here, not in the handler, which may interrupt a log call
        return False


def stopped_error(args, signum: int, step: int, checkpoint: Path | None, finished: bool = False) -> TrainingStopped:
    """The `TrainingStopped` of a run stopped by `signum` at `step`, `checkpoint` holding that step (or None), with
    the command that resumes from it."""
    command = resume_command(args.output_dir, checkpoint) if checkpoint is not None else None
    return TrainingStopped(signum, checkpoint, step, command, finished=finished, best=Path(args.output_dir) / "best")


class DivergenceGuard:
    """Stops a run whose loss is no longer finite or has grown `factor` times above its start (the mean of its first
    `warmup` steps in this process): a diverged model must not train on, be checkpointed or become the best one."""

    def __init__(self, args, factor: float = 1000.0, warmup: int = 10):
        self.args, self.factor, self.warmup = args, factor, warmup
        self.start: list[float] = []

    def check(self, loss: float, step: int) -> None:
        if len(self.start) < self.warmup and math.isfinite(loss):
            self.start.append(loss)
            return
        reference = sum(self.start) / len(self.start) if self.start else None
        if math.isfinite(loss) and (reference is None or loss <= self.factor * max(abs(reference), 1e-2)):
            return
        began = f" (it started at {reference:.3g})" if reference is not None else ""
        raise TrainingDiverged(
            f"Training diverged at step {step}: the loss is {loss:.3g}{began}. Nothing of this step was saved; the best "
            f"model so far and the checkpoints stay. Lower --learning_rate (now {self.args.learning_rate:g}) and "
            f"--head_learning_rate (now {getattr(self.args, 'head_learning_rate', float('nan')):g}), or clip with --max_grad_norm, and start again."
        )


def resume_command(output_dir, checkpoint: Path | None = None) -> str:
    """This process's own command line (tokens redacted, paths as typed; `accelerate launch ...`, `lmke-hf <command>
    ...` or `python <script> ...` as it was started) with `--resume_from_checkpoint latest` in place of any it had,
    or `--resume_from_checkpoint <checkpoint>` where `latest` would pick another checkpoint than `checkpoint`."""
    import shlex

    from .arguments import command_words, redact_argv

    flag = "--resume_from_checkpoint"
    words, skip = [], False
    for word in redact_argv(command_words(), shorten_paths=False):
        if skip or word == flag or word.startswith(flag + "="):
            skip = word == flag
            continue
        words.append(word)
    target = "latest"
    if checkpoint is not None and _latest_checkpoint(output_dir) != Path(checkpoint):
        target = str(checkpoint)
    return shlex.join([*words, flag, target])


def _latest_checkpoint(output_dir) -> Path | None:
    """The checkpoint `--resume_from_checkpoint latest` would take in `output_dir`, or None."""
    import warnings
    from types import SimpleNamespace

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return find_checkpoint(SimpleNamespace(resume_from_checkpoint="latest", output_dir=output_dir))
        except UsageError:
            return None


def format_metrics(metrics: dict, digits: int = 4) -> str:
    """`mrr 0.3140 | hits@1 0.2010 | ...`: the numbers of a metrics dict as a person reads them."""
    return " | ".join(
        f"{k} {v:.{digits}f}" if isinstance(v, float) else f"{k} {v}"
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool)
    )


class TrainingLoop:
    """The epoch loop of both training commands, as named steps (as PyKEEN's `TrainingLoop`): `run()` prepares the
    optimizer, schedule and checkpoints (`_prepare`, resuming where a checkpoint says), then trains epoch by epoch
    (`train_epoch`, one `train_step` per batch), validates (`validate`, keeping the best model in
    `output_dir/best`), saves checkpoints (`save_checkpoint`) and stops cleanly on SIGTERM / SIGINT (`stop_at_step`); it
    returns the run's summary (`summary`).

    Args:
        args: the run's arguments (`ClmkeTrainingArguments` / `LmkeTrainingArguments`); never changed.
        accelerator: the run's `accelerate.Accelerator`.
        model: the model to train (prepared by the loop).
        train_dataloader: batches of training examples.
        evaluate_fn: `evaluate_fn(model) -> dict` of validation metrics, called at each epoch end and every
            `--eval_steps`; the model with the highest `metric_name` is kept in `output_dir/best`.
        save_fn: `save_fn(model, folder)` saves a model (and its tokenizer) there.
        forward_kwargs: extra keyword arguments of every training forward (e.g. C-LMKE's `gather_keys`, or a
            `generator` for its negative subsampling: any `torch.Generator` among them is checkpointed).
    """

    def __init__(
        self,
        args,
        accelerator,
        model,
        train_dataloader,
        evaluate_fn,
        metric_name: str,
        save_fn,
        logger,
        forward_kwargs: dict | None = None,
    ):
        self.args, self.accelerator, self.model, self.train_dataloader = args, accelerator, model, train_dataloader
        self.evaluate_fn, self.metric_name, self.save_fn, self.logger = evaluate_fn, metric_name, save_fn, logger
        self.forward_kwargs = forward_kwargs or {}
        self.schedule = Schedule.of(args, math.ceil(len(train_dataloader) / args.gradient_accumulation_steps))
        self.every = (
            int(args.checkpointing_steps)
            if isinstance(args.checkpointing_steps, str) and args.checkpointing_steps.isdigit()
            else None
        )
        self.eval_steps = getattr(args, "eval_steps", None)
        self.logging_steps = getattr(args, "logging_steps", 0) or 0
        self.examples_per_step = (
            args.per_device_train_batch_size * args.gradient_accumulation_steps * accelerator.num_processes
        )
        self.stop_request = StopRequest()
        # Steps a signal may drop (`StepAbandoned`): one process only (with several, a process leaving its backward
        # would leave the others in its all-reduce), and one micro-batch per step (otherwise the micro-batches
        # already done would have advanced Accelerate's step counter and pushed keys into the queue)
        self.can_abandon = accelerator.num_processes == 1 and args.gradient_accumulation_steps == 1
        # generators among the forward's arguments (e.g. the negative subsampling's): checkpointed, and put back
        # with the other random states when a step is dropped
        self.generators = [v for v in self.forward_kwargs.values() if isinstance(v, torch.Generator)]
        self.random_states = RandomStates(self.generators)
        # Validations a signal may drop (`ValidationAbandoned`; the resume makes them first): one process only (with
        # several, a process leaving its validation would leave the others in its gathers). The random states from
        # before a dropped validation are the ones its checkpoint keeps.
        self.can_drop_validation = accelerator.num_processes == 1
        self.validation_states = RandomStates(self.generators)
        self.divergence = DivergenceGuard(args)
        self.queue = getattr(model, "key_queue", None)
        if self.queue is not None and not self.queue.size:
            self.queue = None

    # ------------------------------------------------------------------ setup
    def _prepare(self) -> None:
        """Optimizer, LR scheduler and Accelerate's preparation; what a checkpoint must restore registered with it;
        trackers; then the state of a checkpoint to resume from (or a fresh one)."""
        args, accelerator, schedule = self.args, self.accelerator, self.schedule
        optimizer = build_optimizer(self.model, args)
        scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=schedule.num_warmup_steps * accelerator.num_processes,
            num_training_steps=schedule.max_train_steps * accelerator.num_processes,
        )
        self.model, self.optimizer, self.train_dataloader, self.scheduler = accelerator.prepare(
            self.model, optimizer, self.train_dataloader, scheduler
        )
        if self.queue is not None:  # pre-batch negatives: a resume continues with the same queue
            accelerator.register_for_checkpointing(self.queue)
        for generator in self.generators:  # restored at resume
            accelerator.register_for_checkpointing(GeneratorState(generator))
        if args.with_tracking:
            config = {
                k: v for k, v in public_args({**vars(args), **schedule.as_args()}).items() if v is not None
            }  # no token, no local paths
            accelerator.init_trackers(Path(args.output_dir).name or "lmke", config)
        # the flags that define the run, with the warmup steps as derived (max_train_steps / epochs may change at resume)
        settings = {**run_settings(args), "num_warmup_steps": schedule.num_warmup_steps}
        settings["mixed_precision"] = (
            accelerator.mixed_precision
        )  # from the flag, accelerate launch or accelerate config
        self.checkpoints = CheckpointManager(accelerator, args.output_dir, settings, args.checkpoints_total_limit)
        self.checkpoints.clear_partial()
        self.state = self.checkpoints.resume(args)
        # the newest checkpoint of this run and its step: a resume's, then each save's (`checkpoint_of_this_step`)
        self.last_checkpoint = (
            (self.state.resumed_from, self.state.completed_steps) if self.state.resumed_from else None
        )
        if self.state.resumed_from is not None and accelerator.is_main_process:  # (no checkpoint: refused earlier)
            confirm_resume(args.output_dir, self.state.completed_steps)  # the card counts this resume now
        self.starting_epoch = self.state.completed_steps // schedule.steps_per_epoch
        self.resume_batches = (self.state.completed_steps % schedule.steps_per_epoch) * args.gradient_accumulation_steps
        if self.state.resumed_from is not None:
            self.logger.info(
                f"Resumed from {self.state.resumed_from} at step {self.state.completed_steps} (epoch {self.starting_epoch}, batch {self.resume_batches})."
            )
            if accelerator.is_main_process:
                _restore_best(Path(args.output_dir), self.state, self.metric_name)
        accelerator.wait_for_everyone()
        self.clock = _Clock(self.state)
        self.window = _LogWindow(self.clock, self.state.completed_steps)

    def _log_plan(self) -> None:
        """The schedule in one line, and a warning when `--eval_steps` nearly repeats epoch-end validations."""
        schedule = self.schedule
        self.logger.info(schedule.describe(self.examples_per_step, self.eval_steps, self.args.checkpointing_steps))
        duplicates = schedule.near_duplicate_validations(self.eval_steps)
        if duplicates:
            step, end = duplicates[0]
            divisor = schedule.nearest_step_divisor(self.eval_steps)
            self.logger.warning(
                f"--eval_steps {self.eval_steps} validates at step {step}, {abs(step - end)} step(s) from the "
                f"validation at step {end} that every epoch end (and the last step) makes anyway: {len(duplicates)} "
                f"near-duplicate validation(s) in this run. An epoch has {schedule.steps_per_epoch} steps: "
                + (f"--eval_steps {divisor} divides it; " if divisor else "")
                + "without --eval_steps the run validates at epoch ends and the last step only."
            )

    # ------------------------------------------------------------------ the run
    def run(self) -> dict:
        """Trains until `--max_train_steps` (or the epochs) and returns the summary (`summary`)."""
        from tqdm.auto import tqdm
        from tqdm.contrib.logging import logging_redirect_tqdm

        self._prepare()
        state, schedule = self.state, self.schedule
        self._log_plan()
        self.progress = tqdm(
            range(schedule.max_train_steps),
            disable=not self.accelerator.is_local_main_process or self.args.no_progress,
            initial=state.completed_steps,
        )
        with (
            logging_redirect_tqdm(),
            self.stop_request,
        ):  # validation lines go above the bar, not onto it; signals stop cleanly
            if state.completed_steps >= schedule.max_train_steps:
                self.logger.info(
                    f"The checkpoint is at step {state.completed_steps}, --max_train_steps {schedule.max_train_steps}: "
                    "nothing more to train (pass a larger --max_train_steps to train longer)."
                )
            self.validate_owed()
            for epoch in range(self.starting_epoch, schedule.num_train_epochs):
                if state.completed_steps >= schedule.max_train_steps:
                    break
                self.train_epoch(epoch)
            if self.every and self.checkpoint_of_this_step() is None:
                # the last step: a run stopped during its test evaluation resumes here
                self.save_checkpoint(f"step_{state.completed_steps}")
            if self.stop_request.requested(self.accelerator):  # a signal while the last steps were saved
                self.progress.close()
                self._raise_stopped(self.checkpoint_of_this_step(), finished=True)
        self.progress.close()
        if self.args.with_tracking:
            self.accelerator.end_training()
        return self.summary()

    def validate_owed(self) -> None:
        """A resume at a step that validates (an epoch's last step, an `--eval_steps` point, the run's last step)
        whose checkpoint holds no validation of it (the run was stopped before or during it): that validation, first."""
        state, schedule = self.state, self.schedule
        step = state.completed_steps
        if state.resumed_from is None or step == 0 or (state.history and state.history[-1]["step"] == step):
            return
        end_of_epoch = step % schedule.steps_per_epoch == 0
        if end_of_epoch or step >= schedule.max_train_steps or (self.eval_steps and step % self.eval_steps == 0):
            self.logger.info(
                f"The checkpoint at step {step} holds no validation of that step, which this run makes: validating now."
            )
            self.validate(max(self.starting_epoch - end_of_epoch, 0), None, end_of_epoch=end_of_epoch)
            # written back into the checkpoint of this step (the state after a validation is what a checkpoint of a
            # validating step holds), so that a second stop before the next save does not make it again
            loaded = self.checkpoint_of_this_step()
            in_folder = loaded is not None and loaded.resolve().parent == self.checkpoints.folder.resolve()
            if in_folder or self.args.checkpointing_steps:  # (one loaded from elsewhere: ours, if this run makes any)
                self.save_checkpoint(loaded.name if in_folder else f"step_{step}")

    def train_epoch(self, epoch: int) -> None:
        """One epoch (the rest of it after a mid-epoch resume): its batches, the validations and checkpoints due,
        and a clean stop when a signal asked for one."""
        args, accelerator, state, schedule = self.args, self.accelerator, self.state, self.schedule
        steps_per_epoch = schedule.steps_per_epoch
        self.model.train()
        # The epoch seeds the shuffle order (seedable sampler) and any per-epoch data (a dataset's `set_epoch`,
        # e.g. resampled negatives). A fresh process starts its loader at iteration 0, so set it explicitly:
        # otherwise a run resumed in epoch k would replay epoch 0's order.
        self.train_dataloader.set_epoch(epoch)
        dataset = getattr(self.train_dataloader, "dataset", None)
        if hasattr(dataset, "set_epoch"):
            dataset.set_epoch(epoch)
        loader = self.train_dataloader
        if epoch == self.starting_epoch and self.resume_batches:
            loader = _keep_rng(accelerator.skip_first_batches(self.train_dataloader, self.resume_batches))
        total_loss, seen, pending_checkpoint = 0.0, 0, None
        if self.can_abandon:
            self.random_states.capture()  # this boundary's, as a checkpoint saved here would hold them
        for batch in loader:
            try:
                value = self.train_step(batch)
            except StepAbandoned:
                self.abandon_step()
            total_loss += value
            seen += 1
            self.window.add(value)
            if accelerator.sync_gradients:
                state.completed_steps += 1
                step = state.completed_steps
                self.progress.update(1)
                self.progress.set_postfix(loss=f"{total_loss / seen:.4f}")
                if args.with_tracking:
                    accelerator.log({"train_loss": value, "lr": self.scheduler.get_last_lr()[0]}, step=step)
                if self.logging_steps and step % self.logging_steps == 0:
                    self.log_progress(epoch)
                if (
                    self.eval_steps
                    and step % self.eval_steps == 0
                    and step % steps_per_epoch
                    and step < schedule.max_train_steps
                ):
                    self.validate(epoch, total_loss / max(seen, 1), end_of_epoch=False)
                if self.every and step % self.every == 0:
                    if step % steps_per_epoch:
                        self.save_checkpoint(f"step_{step}")
                    else:  # an epoch's last step: saved after its validation, which its resume need not make again
                        pending_checkpoint = f"step_{step}"
            if state.completed_steps >= schedule.max_train_steps:
                break
            if accelerator.sync_gradients and self.stop_request.requested(accelerator):
                self.stop_at_step()  # an epoch's last step too: the resume makes its validation (`validate_owed`)
            if self.can_abandon:
                self.random_states.capture()
        self.validate(epoch, total_loss / max(seen, 1), end_of_epoch=state.completed_steps % steps_per_epoch == 0)
        if pending_checkpoint:
            self.save_checkpoint(pending_checkpoint)
        if args.checkpointing_steps == "epoch":
            self.save_checkpoint(f"epoch_{epoch}")
        if self.stop_request.requested(accelerator):
            self.stop_at_step()

    def train_step(self, batch) -> float:
        """Forward, backward and (at the end of an accumulation) the optimizer step on one batch; returns its loss.
        A loss that is no longer finite or has grown far above its start stops the run (`TrainingDiverged`). When
        the loop can drop steps (`can_abandon`), a signal before or during the forward / backward raises
        `StepAbandoned` before the step has changed anything it keeps (weights, optimizer, scheduler, key queue)."""
        accelerator, stop = self.accelerator, self.stop_request
        with accelerator.accumulate(self.model):
            stop.drops = StepAbandoned if self.can_abandon else None
            try:
                if self.can_abandon and stop.signum is not None:  # signalled while its batch was loaded
                    raise StepAbandoned
                outputs = self.model(**batch, **self.forward_kwargs)
                loss = outputs.loss
                accelerator.backward(loss)
            finally:
                stop.drops = None
            if self.queue is not None:  # pre-batch negatives: this batch's keys for the next steps
                self.queue.push(outputs.batch_key_embeddings.detach(), outputs.batch_key_entity_ids)
            if self.args.max_grad_norm and accelerator.sync_gradients:
                accelerator.clip_grad_norm_(self.model.parameters(), self.args.max_grad_norm)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad()
        value = loss.detach().float().item()
        self.divergence.check(value, self.state.completed_steps + 1)
        return value

    def log_progress(self, epoch: int) -> None:
        """One line every `--logging_steps`: step, mean loss of the batches since the last line, learning rate,
        seconds per step (validations excluded) and the training time left at that pace."""
        step, total = self.state.completed_steps, self.schedule.max_train_steps
        loss, per_step = self.window.take(step)
        left = (total - step) * per_step
        self.logger.info(
            f"step {step}/{total} (epoch {epoch}): loss {loss:.4f}, lr {self.scheduler.get_last_lr()[0]:.3g}, "
            f"{per_step:.2f} s/step, {int(left // 3600)} h {int(left % 3600 // 60):02d} min of training left"
        )

    def validate(self, epoch: int, train_loss: float | None, end_of_epoch: bool) -> None:
        """Validation metrics at this step, recorded in the history (with examples seen, training minutes and the
        mean training loss since the epoch or segment began: None for the validation a resume makes first) and the
        log; a new best model is saved to `output_dir/best`."""
        accelerator, state, clock, stop = self.accelerator, self.state, self.clock, self.stop_request
        began, trained_minutes = time.time(), clock.minutes_excluding_eval()  # before this validation's own time
        if self.can_drop_validation:
            self.validation_states.capture()
        try:
            try:
                stop.drops = ValidationAbandoned if self.can_drop_validation else None
                if self.can_drop_validation and stop.signum is not None:  # signalled since the step ended
                    raise ValidationAbandoned
                metrics = {f"eval_{k}": v for k, v in self.evaluate_fn(accelerator.unwrap_model(self.model)).items()}
            finally:
                stop.drops = None  # before the stop's save: a second signal there is only recorded
        except ValidationAbandoned:
            clock.eval_seconds += time.time() - began
            self.abandon_validation()
        metrics.update(
            epoch=epoch,
            train_loss=train_loss,
            step=state.completed_steps,
            examples_seen=state.completed_steps * self.examples_per_step,
            end_of_epoch=end_of_epoch,
            train_minutes_excluding_eval=trained_minutes,
        )
        state.history.append(metrics)
        shown = {k[len("eval_") :]: v for k, v in metrics.items() if k.startswith("eval_") and not isinstance(v, dict)}
        self.logger.info(
            f"validation at step {state.completed_steps} (epoch {epoch}"
            + (f", train loss {train_loss:.4f}" if train_loss is not None else "")
            + f"): {format_metrics(shown)}"
        )
        if self.args.with_tracking:
            accelerator.log(
                {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=state.completed_steps
            )
        if metrics[f"eval_{self.metric_name}"] > state.best["metric"]:
            state.best = {"metric": metrics[f"eval_{self.metric_name}"], "epoch": epoch, "step": state.completed_steps}
            accelerator.wait_for_everyone()
            if accelerator.is_main_process:
                best = Path(self.args.output_dir) / "best"
                self.save_fn(accelerator.unwrap_model(self.model), best)
                # what a later run started from best/ (`--init_from <run>/best`) reports as its training time
                write_json(best / BEST_STATE, {**state.best, "train_runtime_s": clock.runtime()}, indent=2)
        self.model.train()
        clock.eval_seconds += time.time() - began

    def save_checkpoint(self, tag: str) -> None:
        """Saves the resumable state as `output_dir/checkpoints/<tag>` (`CheckpointManager`)."""
        path = self.checkpoints.save(tag, self.state, self.clock.runtime(), self.clock.eval_runtime())
        self.last_checkpoint = (path, self.state.completed_steps)

    def checkpoint_of_this_step(self) -> Path | None:
        """The checkpoint this run loaded or saved at its current step (one left by an earlier segment at the same
        step number does not count: it may hold other weights), or None."""
        if self.last_checkpoint is not None and self.last_checkpoint[1] == self.state.completed_steps:
            return Path(self.last_checkpoint[0])
        return None

    def _raise_stopped(self, checkpoint: Path | None, finished: bool = False) -> NoReturn:
        error = stopped_error(self.args, self.stop_request.signum, self.state.completed_steps, checkpoint, finished)
        if self.accelerator.is_main_process:
            self.logger.warning(error.message)
        raise error

    def abandon_step(self) -> NoReturn:
        """A signal during a step's forward / backward: drops its gradients, puts back the random states of the last
        step boundary and stops there (`stop_at_step`)."""
        self.model.zero_grad(set_to_none=True)
        self.random_states.restore()
        self.stop_at_step()

    def abandon_validation(self) -> NoReturn:
        """A signal during a validation: stops without it (`stop_at_step`), with the random states from before it;
        the resume validates that step first (`validate_owed`)."""
        self.validation_states.restore()
        self.model.train()
        self.stop_at_step()

    def stop_at_step(self) -> NoReturn:
        """Ends a run a signal asked to stop: the checkpoint of the current step (the one this run saved or loaded
        at it, wherever it is, else `step_<n>` saved now), the resume command in the log, `TrainingStopped`."""
        checkpoint = self.checkpoint_of_this_step()
        if checkpoint is None:
            self.save_checkpoint(f"step_{self.state.completed_steps}")
            checkpoint = self.checkpoint_of_this_step()
        self.progress.close()
        self._raise_stopped(checkpoint)

    def summary(self) -> dict:
        """What the run reports: training time over all its segments, steps, the best validation, the history, whether
        every resume was exact, the precision, the schedule, and the trained (prepared) model."""
        state = self.state
        return {
            "train_runtime_s": self.clock.runtime(),
            "resumed_from": str(state.resumed_from) if state.resumed_from is not None else None,
            "completed_steps": state.completed_steps,
            "last_checkpoint": str(last) if (last := self.checkpoint_of_this_step()) is not None else None,
            "best_epoch": state.best["epoch"],
            "best_step": state.best.get("step"),
            f"best_eval_{self.metric_name}": state.best["metric"],
            "history": state.history,
            "exact_resume": state.exact_resume,
            "mixed_precision": self.accelerator.mixed_precision,
            "schedule": self.schedule.as_args(),
            "model": self.model,
        }


def train(
    args,
    accelerator,
    model,
    train_dataloader,
    evaluate_fn,
    metric_name: str,
    save_fn,
    logger,
    forward_kwargs: dict | None = None,
) -> dict:
    """Runs `TrainingLoop(...)` and returns its summary (the arguments are `TrainingLoop`'s)."""
    return TrainingLoop(
        args, accelerator, model, train_dataloader, evaluate_fn, metric_name, save_fn, logger, forward_kwargs
    ).run()
