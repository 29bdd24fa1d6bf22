"""The `lmke-hf` command: the installed console script, and `lmke_hf.cli.main` delegating to the scripts."""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import sysconfig
import types
import warnings
from pathlib import Path

import pytest

import lmke_hf
from lmke_hf import cli

from helpers import cli_refusal

REPO_ROOT = Path(__file__).resolve().parents[1]


def _installed_command() -> str:
    """The `lmke-hf` this interpreter's install created (pip puts console scripts in its scripts folder)."""
    name = "lmke-hf.exe" if os.name == "nt" else "lmke-hf"
    beside = Path(sysconfig.get_path("scripts")) / name
    found = str(beside) if beside.is_file() else shutil.which("lmke-hf")
    assert found, "no lmke-hf command on PATH: install the package with `pip install -e .` (it makes the entry point)"
    return found


def _run_installed(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [_installed_command(), *argv], capture_output=True, text=True, timeout=300, env=env, check=False
    )


# ------------------------------------------------------------------------------------------ installed command


def test_installed_help_lists_every_command():
    done = _run_installed("--help")
    assert done.returncode == 0, done.stderr
    for name, command in cli.COMMANDS.items():
        assert name in done.stdout and command.help in done.stdout


def test_installed_subcommand_help_is_the_scripts_own():
    done = _run_installed("train-clmke", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: lmke-hf train-clmke ") and "--output_dir" in done.stdout


def test_installed_unknown_command_exits_2_naming_the_choices():
    done = _run_installed("train-transe")
    assert done.returncode == 2
    assert "invalid choice: 'train-transe'" in done.stderr and "train-clmke" in done.stderr


# ------------------------------------------------------------------------------------------ in process


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"lmke-hf {lmke_hf.__version__}"


def test_no_command_exits_2(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([])
    assert exit_info.value.code == 2
    assert "required" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["train-clmke", "train-lmke", "evaluate", "prepare", "export-card"])
def test_every_command_shows_its_scripts_help_under_its_own_name(name, capsys):
    argv_before = list(sys.argv)
    with pytest.raises(SystemExit) as exit_info:
        cli.main([name, "--help"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: lmke-hf {name} ")
    assert sys.argv == argv_before


def test_evaluate_is_ours_even_when_a_module_named_evaluate_exists(monkeypatch, capsys):
    """An installed Hugging Face `evaluate` package must not stand in for the evaluate command."""
    monkeypatch.setitem(sys.modules, "evaluate", types.ModuleType("evaluate"))
    with pytest.raises(SystemExit):
        cli.main(["evaluate", "--help"])
    assert "--model" in capsys.readouterr().out
    assert (
        Path(sys.modules["lmke_hf.commands.evaluate"].__file__).resolve()
        == REPO_ROOT / "lmke_hf" / "commands" / "evaluate.py"
    )


def test_every_command_works_from_the_package_alone(tmp_path):
    """A wheel holds the package and no examples/ folder: with only `lmke_hf/` importable, every command still runs
    (its --help), so `pip install .` gives the whole CLI."""
    shutil.copytree(REPO_ROOT / "lmke_hf", tmp_path / "lmke_hf", ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONNOUSERSITE": "1"}
    code = (
        "import sys, lmke_hf, lmke_hf.cli as cli; assert lmke_hf.__file__.startswith(sys.argv[1]), lmke_hf.__file__; "
        "import contextlib, io\n"
        "assert len(cli.COMMANDS) == 7, sorted(cli.COMMANDS)\n"
        "for name in cli.COMMANDS:\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out):\n"
        "        try:\n"
        "            cli.main([name, '--help'])\n"
        "        except SystemExit as e:\n"
        "            assert e.code == 0, (name, e.code)\n"
        "    assert out.getvalue().startswith('usage: lmke-hf ' + name), name\n"
        "print('ok')"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0 and result.stdout.strip().endswith("ok"), result.stderr[-3000:]


def _run_example(name: str, argv, monkeypatch) -> int:
    """Runs `python examples/<name>.py argv` in this process (as `__main__`); returns its exit status."""
    script = REPO_ROOT / "examples" / f"{name}.py"
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, argv)])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(script), run_name="__main__")
    return done.value.code


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_prepare_writes_what_the_example_writes(toy_kg_dir, tmp_path, capsys, monkeypatch):  # noqa: F811
    flags = ["--negatives_seed", "3"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli.main(["prepare", str(toy_kg_dir), "--output_dir", str(tmp_path / "cli"), *flags]) == 0
        by_cli = capsys.readouterr().out
        assert _run_example("prepare_kg", [toy_kg_dir, "--output_dir", tmp_path / "example", *flags], monkeypatch) == 0
        by_example = capsys.readouterr().out
    assert by_cli.replace(str(tmp_path / "cli"), "OUT") == by_example.replace(str(tmp_path / "example"), "OUT")
    written = _folder_bytes(tmp_path / "cli")
    assert written and written == _folder_bytes(tmp_path / "example")


def test_export_card_copies_a_finished_run(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "README.md").write_text("---\nlibrary_name: transformers\n---\n# card\n")
    (run / "all_results.json").write_text(json.dumps({"test_mrr": 0.5}))
    assert cli.main(["export-card", str(run), str(tmp_path / "card")]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [str(tmp_path / "card" / "README.md"), str(tmp_path / "card" / "all_results.json")]
    assert (tmp_path / "card" / "README.md").read_text() == (run / "README.md").read_text()


def test_export_card_of_a_folder_that_is_no_run_is_one_line(tmp_path, capsys):
    assert re.search(
        "export-card: .* not a finished training run",
        cli_refusal(capsys, ["export-card", str(tmp_path), str(tmp_path / "card")]),
    )


def test_a_refusal_is_one_line_and_status_1_from_every_entry_point(toy_kg_dir, tmp_path, capsys, monkeypatch):
    """Library code raises `UsageError`; `lmke-hf`, the examples and `python -m lmke_hf.commands.<name>` print its
    message alone on stderr and exit with status 1."""
    from lmke_hf.commands import prepare_kg
    from lmke_hf.errors import UsageError

    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("the user's own file")
    argv = [str(toy_kg_dir), "--output_dir", str(user), "--overwrite_output_dir"]
    with pytest.raises(UsageError, match="did not write") as raised:  # the library's own error, for Python callers
        prepare_kg.main(prepare_kg.parse_args(argv))
    message = str(raised.value)
    assert cli_refusal(capsys, ["prepare", *argv]) == message
    assert _run_example("prepare_kg", argv, monkeypatch) == 1
    assert capsys.readouterr().err.strip() == message
    done = subprocess.run(
        [sys.executable, "-m", "lmke_hf.commands.prepare_kg", *argv], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 1 and done.stderr.strip() == message and "Traceback" not in done.stderr
    assert (user / "notes.txt").read_text() == "the user's own file" and sorted(os.listdir(user)) == ["notes.txt"]
