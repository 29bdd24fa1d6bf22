"""The `lmke-hf` command: one entry point for the example scripts and the model-card export.

    lmke-hf prepare umls --data_dir /path/to/data --output_dir outputs/umls-kg
    lmke-hf train-clmke --dataset umls --output_dir outputs/clmke-umls
    lmke-hf evaluate --model outputs/clmke-umls --dataset umls --split test
    lmke-hf export-card outputs/clmke-umls model_cards/clmke-umls

Each subcommand runs the very `parse_args(argv)` + `main(args)` of its script, so flags, help and results are the
script's own (`lmke-hf train-clmke --help`). The training and evaluation scripts live in the repository's
`examples/` folder, which a clone installed with `pip install -e .` has next to the package; a wheel (or
`pip install .`) has no such folder, and those subcommands then say so and exit with status 2. Several processes:
`accelerate launch -m lmke_hf.cli train-clmke ...`.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import lmke_hf

EXAMPLES_DIR = Path(lmke_hf.__file__).resolve().parents[1] / "examples"
# A package of our own for the scripts loaded by path: an installed Hugging Face `evaluate` package (or any other
# top-level module named like a script) can neither shadow them nor be shadowed by them.
EXAMPLES_PACKAGE = "lmke_hf_examples"


@dataclass(frozen=True)
class Command:
    """A subcommand: `script` is a file of `examples/`, or `module` an importable module; either defines
    `parse_args(argv)` and `main(args)`."""

    help: str
    script: str | None = None
    module: str | None = None


COMMANDS = {
    "train-clmke": Command("Train C-LMKE (bi-encoder) for filtered link prediction.", script="train_clmke.py"),
    "train-lmke": Command("Train LMKE (cross-encoder) for triple classification.", script="train_lmke.py"),
    "evaluate": Command("Evaluate a trained LMKE / C-LMKE model on a split.", script="evaluate.py"),
    "prepare": Command("Convert a KG-BERT / LMKE data folder to a Hub-ready dataset.", script="prepare_kg.py"),
    "export-card": Command("Copy or re-render a finished run's model card.", module="lmke_hf.modelcard"),
}


class _HelpFormatter(argparse.HelpFormatter):
    """argparse measures subcommand names without their extra indent, so the longer ones wrap onto a line of
    their own; counting the indent keeps each command and its help on one line."""

    def add_argument(self, action):
        super().add_argument(action)
        if isinstance(action, argparse._SubParsersAction):
            longest = max((len(name) for name in action.choices), default=0)
            self._action_max_length = max(self._action_max_length, longest + self._current_indent + self._indent_increment)


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


def load_script(path: Path):
    """The module of an example script, loaded by path as `lmke_hf_examples.<stem>` (once per process)."""
    path = Path(path).resolve()
    name = f"{EXAMPLES_PACKAGE}.{path.stem}"
    loaded = sys.modules.get(name)
    if loaded is not None and Path(loaded.__file__).resolve() == path:
        return loaded
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look a module up by name while it runs
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def main(argv=None) -> int:
    """Runs `lmke-hf` with `argv` (default: this process's arguments); returns the exit status (0).

    Errors exit through `SystemExit(2)` as argparse's do: an unknown command (the choices are named) or a
    script missing because this install has no examples/ folder."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    # Everything after the command is the script's to parse, so only the options before it and the command itself
    # go to this parser (argparse would otherwise take `--help` or `--version` after the command as its own).
    at = next((i for i, token in enumerate(argv) if not token.startswith("-")), len(argv))
    name = parser.parse_args(argv[: at + 1]).command
    rest = argv[at + 1 :]
    command = COMMANDS[name]
    if command.module is not None:
        module = importlib.import_module(command.module)
    else:
        path = EXAMPLES_DIR / command.script
        if not path.is_file():
            parser.exit(
                2,
                f"lmke-hf {name}: {path} is absent: this install of lmke_hf has no examples/ folder (a wheel or "
                "`pip install .`); install a clone of the repository with `pip install -e .`.\n",
            )
        module = load_script(path)
    # The script's parser takes its prog from sys.argv[0] and the run records its command line from sys.argv, so
    # both see the subcommand as if it had been run directly.
    saved = sys.argv
    sys.argv = [f"lmke-hf {name}", *rest]
    try:
        module.main(module.parse_args(rest))
    finally:
        sys.argv = saved
    return 0


if __name__ == "__main__":
    sys.exit(main())
