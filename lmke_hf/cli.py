"""The `lmke-hf` command: one entry point for the programs of `lmke_hf.commands` and the model-card export.

    lmke-hf prepare umls --data_dir /path/to/data --output_dir outputs/umls-kg
    lmke-hf train-clmke --dataset umls --output_dir outputs/clmke-umls
    lmke-hf evaluate --model outputs/clmke-umls --dataset umls --split test
    lmke-hf index --model outputs/clmke-umls --dtype float16 --faiss hnsw
    lmke-hf export-card outputs/clmke-umls model_cards/clmke-umls
    lmke-hf demo --model outputs/clmke-umls --kg umls      # needs pip install "lmke_hf[demo]"

Each subcommand runs the very `parse_args(argv)` + `main(args)` of its program in `lmke_hf.commands` (or
`lmke_hf.modelcard`, `lmke_hf.demo`), so flags, help and results are the program's own (`lmke-hf train-clmke --help`), from any
install of the package, a wheel included. Several processes: `accelerate launch -m lmke_hf.cli train-clmke ...`.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from dataclasses import dataclass

import lmke_hf
from lmke_hf.errors import LmkeError, TrainingStopped


@dataclass(frozen=True)
class Command:
    """A subcommand: `module` defines `parse_args(argv)` and `main(args)`."""

    help: str
    module: str


COMMANDS = {
    "train-clmke": Command(
        "Train C-LMKE (bi-encoder) for filtered link prediction.", module="lmke_hf.commands.train_clmke"
    ),
    "train-lmke": Command(
        "Train LMKE (cross-encoder) for triple classification.", module="lmke_hf.commands.train_lmke"
    ),
    "evaluate": Command("Evaluate a trained LMKE / C-LMKE model on a split.", module="lmke_hf.commands.evaluate"),
    "prepare": Command(
        "Convert a KG-BERT / LMKE data folder to a Hub-ready dataset.", module="lmke_hf.commands.prepare_kg"
    ),
    "index": Command(
        "Build or export a C-LMKE model's entity index (FAISS too).", module="lmke_hf.commands.build_index"
    ),
    "export-card": Command("Copy or re-render a finished run's model card.", module="lmke_hf.modelcard"),
    "demo": Command("Serve a demo page (Gradio) of a trained model.", module="lmke_hf.demo"),
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse measures subcommand names without their extra indent, so the longer ones wrap onto a line of
    their own; counting the indent keeps each command and its help on one line."""

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max((len(name) for name in action.choices), default=0)
            self._action_max_length = max(
                self._action_max_length, longest + self._current_indent + self._indent_increment
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmke-hf",
        description="LMKE / C-LMKE knowledge-graph embeddings on Hugging Face transformers.",
        epilog="`lmke-hf <command> --help` shows the flags of one command.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {lmke_hf.__version__}")
    sub = parser.add_subparsers(title="commands", dest="command", metavar="<command>", required=True)
    for name, command in COMMANDS.items():
        # The subcommand's flags belong to its script's parser, so this one only names it.
        sub.add_parser(name, help=command.help, add_help=False)
    return parser


def run_program(module, argv=None, prog: str | None = None) -> int:
    """Runs a program of `lmke_hf.commands` (a module with `parse_args(argv)` and `main(args)`) as a command: returns
    the exit status, 0 when it finished. lmke_hf's own errors (`lmke_hf.errors.LmkeError`: a flag, file or folder
    that cannot work, a diverged run) are printed as their one-line message on stderr, without a traceback (status 1);
    a run stopped by a signal has logged how to resume and exits with 128 + the signal's number. Bad flags exit
    through argparse (status 2); any other exception is a bug and keeps its traceback.

    `prog` (e.g. "lmke-hf train-clmke") is what the program's help and its recorded command line call it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    saved = sys.argv
    if prog is not None:  # the run records its command line from sys.argv
        sys.argv = [prog, *argv]
    try:
        module.main(module.parse_args(argv))
    except TrainingStopped as err:
        return err.exit_code  # its message and resume command are in the log already
    except LmkeError as err:
        print(err, file=sys.stderr)
        return err.exit_code
    finally:
        sys.argv = saved
    return 0


def main(argv=None) -> int:
    """Runs `lmke-hf` with `argv` (default: this process's arguments); returns the exit status (`run_program`).

    An unknown command exits through `SystemExit(2)` as argparse's errors do (the choices are named)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # Everything after the command is the script's to parse, so only the options before it and the command itself
    # go to this parser (argparse would otherwise take `--help` or `--version` after the command as its own).
    at = next((i for i, token in enumerate(argv) if not token.startswith("-")), len(argv))
    name = parser.parse_args(argv[: at + 1]).command
    rest = argv[at + 1 :]
    module = importlib.import_module(COMMANDS[name].module)
    # The program's parser takes its prog from sys.argv[0] and the run records its command line from sys.argv, so
    # both see the subcommand as if it had been run directly.
    return run_program(module, rest, prog=f"lmke-hf {name}")


if __name__ == "__main__":
    sys.exit(main())
