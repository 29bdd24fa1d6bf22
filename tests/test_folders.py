"""Never delete or overwrite what is not ours (issue 18, items 1-3): which folders a tool may write into, resumes
that need a run to resume, and final saves that cannot tear. Every case uses decoy folders under tmp_path; the
working directory and the home folder are moved there with monkeypatch, so nothing real is at risk."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch

from lmke_hf import cli
from lmke_hf.errors import UsageError
from lmke_hf.folders import (
    MARKER_FILE,
    READY_DIR,
    STAGING_DIR,
    FinalSave,
    OutputDirError,
    check_output_dir,
    claim_folder,
    folder_kind,
    protected_reason,
    recover_final_save,
)

from helpers import RESUME_FLAGS, _clmke_argv, _common, _load_script, cli_refusal


@pytest.fixture(scope="module")
def script():
    return _load_script("train_clmke")


def _train(script, kg, encoder, out, *extra):
    return script.main(script.parse_args(_clmke_argv(kg, encoder, out, *extra)))


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


def _user_folder(folder: Path) -> Path:
    """A decoy of a user's own files: a photo, notes, and a README.md + config.json that look like a model's."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "photo.jpg").write_bytes(b"\xff\xd8 not really a photo")
    (folder / "notes").mkdir(exist_ok=True)
    (folder / "notes" / "todo.txt").write_text("buy milk")
    (folder / "README.md").write_text("# my project")
    (folder / "config.json").write_text(json.dumps({"mine": True}))
    return folder


# ------------------------------------------------------------------------------------ item 1: whose folder is it
def test_a_folder_lmke_hf_did_not_make_is_refused_even_with_overwrite_and_the_advice_names_a_fresh_folder(
    script, kg_dir, tiny_bert_dir, tmp_path
):
    mine = _user_folder(tmp_path / "mine")
    before = _snapshot(mine)
    with pytest.raises(UsageError) as info:
        _train(script, kg_dir, tiny_bert_dir, mine, "--max_train_steps", 1, "--overwrite_output_dir")
    message = str(info.value)
    assert str(mine) in message and "did not write" in message and "photo.jpg" in message
    assert "--overwrite_output_dir" not in message and str(tmp_path / "mine-2") in message
    assert _snapshot(mine) == before and not list(mine.glob(".lmke_hf*"))


@pytest.mark.parametrize("where", ["cwd", "parent", "home", "link_to_cwd"])
def test_the_working_directory_its_parents_home_and_links_to_them_are_refused(
    script, kg_dir, tiny_bert_dir, tmp_path, monkeypatch, where
):
    home = _user_folder(tmp_path / "home")
    cwd = _user_folder(_user_folder(home / "projects") / "work")
    monkeypatch.chdir(cwd)
    monkeypatch.setenv("HOME", str(home))
    (tmp_path / "link").symlink_to(cwd)
    target = {"cwd": ".", "parent": "..", "home": str(home), "link_to_cwd": str(tmp_path / "link")}[where]
    before = _snapshot(home)
    with pytest.raises(UsageError) as info:
        _train(script, kg_dir, tiny_bert_dir, target, "--max_train_steps", 1, "--overwrite_output_dir")
    message = str(info.value)
    assert {
        "cwd": "is the working directory",
        "parent": "holds the working directory",
        "home": "home folder",
        "link_to_cwd": "a link to",
    }[where] in message
    assert _snapshot(home) == before and cwd.is_dir()
    assert "choose a new folder, e.g. outputs/run" in message


def test_the_data_folder_the_dataset_folder_and_the_encoder_are_refused(script, kg_dir, tiny_bert_dir, tmp_path):
    data_dir = kg_dir.parent
    for target in (kg_dir, data_dir, tiny_bert_dir):
        before = _snapshot(target)
        with pytest.raises(UsageError, match="not a place to write a training run into"):
            _train(script, kg_dir, tiny_bert_dir, target, "--max_train_steps", 1, "--overwrite_output_dir")
        assert _snapshot(target) == before


def test_a_git_repository_is_refused(script, kg_dir, tiny_bert_dir, tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    subprocess.run(["git", "init", "-q", str(clone)], check=True)
    (clone / "lmke_hf.py").write_text("# sources")
    with pytest.raises(UsageError, match="is a git repository"):
        _train(script, kg_dir, tiny_bert_dir, clone, "--max_train_steps", 1, "--overwrite_output_dir")
    assert (clone / ".git").is_dir() and (clone / "lmke_hf.py").is_file()


def test_a_run_of_ours_is_still_replaced_with_overwrite_and_links_inside_it_are_not_followed(
    script, kg_dir, tiny_bert_dir, tmp_path
):
    out = tmp_path / "run"
    _train(script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 1)
    assert folder_kind(out) == "training-run"
    photos = _user_folder(tmp_path / "photos")
    (out / "photos").symlink_to(photos)  # something a user linked into the run folder
    before = _snapshot(photos)
    _train(script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 1, "--seed", 3, "--overwrite_output_dir")
    assert _snapshot(photos) == before and not (out / "photos").exists()
    assert (out / "model.safetensors").is_file()


def test_a_run_written_before_markers_is_recognised_by_its_training_args(tmp_path):
    legacy = tmp_path / "old_run"
    legacy.mkdir()
    (legacy / "training_args.json").write_text(json.dumps({"method": "C-LMKE", "args": {}, "command": "python ..."}))
    (legacy / "model.safetensors").write_bytes(b"x")
    assert folder_kind(legacy) == "training-run"
    assert check_output_dir(legacy, "training-run", replace=True) == "replace"
    user = _user_folder(tmp_path / "user")
    (user / "training_args.json").write_text(json.dumps({"lr": 1}))  # a file of the same name, not ours
    assert folder_kind(user) is None


def test_prepare_refuses_the_working_directory_and_other_files_and_replaces_its_own_only_with_the_flag(
    toy_kg_dir, tmp_path, monkeypatch, capsys
):
    cwd = _user_folder(tmp_path / "cwd")
    (cwd / "data").mkdir()
    (cwd / "data" / "train.parquet").write_bytes(b"the user's own table")
    monkeypatch.chdir(cwd)
    before = _snapshot(cwd)
    for target in (".", str(cwd)):
        assert re.search("working directory", cli_refusal(capsys, ["prepare", str(toy_kg_dir), "--output_dir", target]))
    mine = _user_folder(tmp_path / "mine")
    assert re.search(
        "did not write",
        cli_refusal(capsys, ["prepare", str(toy_kg_dir), "--output_dir", str(mine), "--overwrite_output_dir"]),
    )
    assert re.search(
        "the folder of name_or_path",
        cli_refusal(capsys, ["prepare", str(toy_kg_dir), "--output_dir", str(toy_kg_dir), "--overwrite_output_dir"]),
    )
    assert _snapshot(cwd) == before
    ours = tmp_path / "prepared"
    assert cli.main(["prepare", str(toy_kg_dir), "--output_dir", str(ours)]) == 0
    assert re.search(
        "--overwrite_output_dir", cli_refusal(capsys, ["prepare", str(toy_kg_dir), "--output_dir", str(ours)])
    )
    assert cli.main(["prepare", str(toy_kg_dir), "--output_dir", str(ours), "--overwrite_output_dir"]) == 0
    assert folder_kind(ours) == "prepared-dataset"


def _finished_run(folder: Path, mrr: float) -> Path:
    folder.mkdir()
    (folder / "README.md").write_text(f"# card {mrr}")
    (folder / "all_results.json").write_text(json.dumps({"test_mrr": mrr}))
    (folder / "training_args.json").write_text(json.dumps({"method": "C-LMKE", "args": {}}))
    (folder / "model.safetensors").write_bytes(b"weights")
    return folder


def test_export_card_never_writes_into_another_run_or_its_own_run(tmp_path, capsys):
    run_a, run_b = _finished_run(tmp_path / "a", 0.5), _finished_run(tmp_path / "b", 0.7)
    before = _snapshot(run_b)
    assert re.search(
        "export-card: destination .* holds a training run", cli_refusal(capsys, ["export-card", str(run_a), str(run_b)])
    )
    assert re.search(
        "export-card: destination .* is the folder of run_dir",
        cli_refusal(capsys, ["export-card", str(run_a), str(run_a)]),
    )  # was a raw SameFileError
    assert _snapshot(run_b) == before
    card = tmp_path / "cards" / "a"
    assert cli.main(["export-card", str(run_a), str(card)]) == 0
    assert cli.main(["export-card", str(run_b), str(card)]) == 0  # an exported card is updated in place
    assert json.loads((card / "all_results.json").read_text())["test_mrr"] == 0.7


def test_a_card_exported_before_markers_is_updated_and_a_folder_with_only_a_readme_is_not(tmp_path, capsys):
    run = _finished_run(tmp_path / "run", 0.5)
    legacy = tmp_path / "model_cards" / "old"
    legacy.mkdir(parents=True)
    (legacy / "README.md").write_text("old card")
    (legacy / "card.json").write_text("{}")
    assert folder_kind(legacy) == "model-card"
    readme_only = tmp_path / "docs"
    readme_only.mkdir()
    (readme_only / "README.md").write_text("my docs")
    assert re.search("did not write", cli_refusal(capsys, ["export-card", str(run), str(readme_only)]))
    assert (readme_only / "README.md").read_text() == "my docs"


def test_protected_reason_names_each_place(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert protected_reason(Path("/")) == "it is the filesystem root"
    assert "working directory" in protected_reason(tmp_path)
    assert protected_reason(tmp_path / "new") is None
    package_root = Path(__file__).resolve().parents[1]
    assert protected_reason(package_root) is not None  # the repository / the installed package
    data = tmp_path / "elsewhere" / "data"
    data.mkdir(parents=True)
    assert (
        protected_reason(tmp_path / "elsewhere", {"--data_dir": data})
        == f"it holds the folder of --data_dir ({data.resolve()})"
    )
    assert protected_reason(data, {"--data_dir": data}) == f"it is the folder of --data_dir ({data.resolve()})"
    assert protected_reason(data / "run", {"--data_dir": data}) is None  # a new folder inside it harms nothing


# ------------------------------------------------------------------------------------ item 2: resume needs a run
def test_resume_latest_refuses_a_folder_with_no_run_in_it_and_leaves_it_untouched(
    script, kg_dir, tiny_bert_dir, tmp_path
):
    mine = _user_folder(tmp_path / "mine")
    before = _snapshot(mine)
    with pytest.raises(UsageError, match="did not write"):
        _train(script, kg_dir, tiny_bert_dir, mine, "--max_train_steps", 1, "--resume_from_checkpoint", "latest")
    assert _snapshot(mine) == before
    missing = tmp_path / "nothing"
    with pytest.raises(UsageError, match="holds no run to resume"):
        _train(script, kg_dir, tiny_bert_dir, missing, "--max_train_steps", 1, "--resume_from_checkpoint", "latest")
    assert not missing.exists()


def test_resume_latest_of_a_finished_run_without_checkpoints_says_it_is_finished_and_retrains_nothing(
    script, kg_dir, tiny_bert_dir, tmp_path
):
    out = tmp_path / "run"
    _train(script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 2)
    before = _snapshot(out)
    with pytest.raises(UsageError) as info:
        _train(
            script,
            kg_dir,
            tiny_bert_dir,
            out,
            "--max_train_steps",
            4,
            "--resume_from_checkpoint",
            "latest",
            "--learning_rate",
            "0.5",
        )
    message = str(info.value)
    assert (
        "is finished (2 steps)" in message and "kept no checkpoints" in message and "--checkpointing_steps" in message
    )
    assert _snapshot(out) == before


def test_a_resume_at_max_train_steps_trains_nothing_more(script, kg_dir, no_dropout_encoder, tmp_path):
    out = tmp_path / "run"
    _train(script, kg_dir, no_dropout_encoder, out, "--max_train_steps", 4, *RESUME_FLAGS)
    weights = (out / "checkpoints" / "step_4" / "model.safetensors").read_bytes()
    results = _train(
        script,
        kg_dir,
        no_dropout_encoder,
        out,
        "--max_train_steps",
        4,
        "--resume_from_checkpoint",
        "latest",
        *RESUME_FLAGS,
    )
    assert results["completed_steps"] == 4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2", "step_4"]  # no step 5 was saved
    assert (out / "checkpoints" / "step_4" / "model.safetensors").read_bytes() == weights
    assert json.loads((out / "all_results.json").read_text())["completed_steps"] == 4


# ------------------------------------------------------------------------------------ item 3: saves that cannot tear
def _old_and_new(tmp_path: Path) -> Path:
    folder = tmp_path / "run"
    claim_folder(folder, "training-run")
    (folder / "model.bin").write_text("old weights")
    (folder / "index.bin").write_text("old index")
    (folder / "tables").mkdir()
    (folder / "tables" / "ranks.csv").write_text("old ranks")
    (folder / "training_args.json").write_text("kept")
    return folder


def _write_new(staging: Path) -> None:
    (staging / "model.bin").write_text("new weights")
    (staging / "index.bin").write_text("new index")
    (staging / "tables").mkdir()
    (staging / "tables" / "metrics.json").write_text("new metrics")


def test_a_final_save_that_fails_midway_leaves_the_old_files(tmp_path):
    folder = _old_and_new(tmp_path)
    before = _snapshot(folder)
    with pytest.raises(RuntimeError, match="disk full"):
        with FinalSave(folder) as staging:
            (staging / "model.bin").write_text("new weights")
            raise RuntimeError("disk full")
    assert _snapshot(folder) == before and not (folder / STAGING_DIR).exists()


def test_a_final_save_interrupted_after_its_commit_is_completed_by_the_next_reader(tmp_path, monkeypatch):
    folder = _old_and_new(tmp_path)
    moves = []
    real_replace = os.replace

    def crash_after_two_moves(src, dst):
        moves.append(dst)
        if len(moves) == 4:  # commit, move-aside + move of the first entry, then the crash
            raise KeyboardInterrupt("killed")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_after_two_moves)
    with pytest.raises(KeyboardInterrupt):
        with FinalSave(folder) as staging:
            _write_new(staging)
    monkeypatch.setattr(os, "replace", real_replace)
    assert (folder / READY_DIR).is_dir() and (folder / "index.bin").read_text() == "new index"  # torn on disk
    assert recover_final_save(folder) is True
    assert (folder / "model.bin").read_text() == "new weights" and (folder / "index.bin").read_text() == "new index"
    assert sorted(p.name for p in (folder / "tables").iterdir()) == ["metrics.json"]  # the old table set is gone whole
    assert (folder / "training_args.json").read_text() == "kept"
    assert not (folder / READY_DIR).exists() and (folder / MARKER_FILE).is_file()


def test_a_crash_in_a_runs_final_save_leaves_its_previous_complete_model(
    script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    _train(script, kg_dir, no_dropout_encoder, out, "--max_train_steps", 2, *RESUME_FLAGS)
    before = {k: v for k, v in _snapshot(out).items() if not k.startswith(("checkpoints", "training_args", "best"))}
    from lmke_hf.modelcard import ModelCard

    def full_disk(self, directory):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ModelCard, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _train(
            script,
            kg_dir,
            no_dropout_encoder,
            out,
            "--max_train_steps",
            4,
            "--resume_from_checkpoint",
            "latest",
            *RESUME_FLAGS,
        )
    after = {k: v for k, v in _snapshot(out).items() if not k.startswith(("checkpoints", "training_args", "best"))}
    assert after == before  # weights, entity index, card, results: all of the 2-step model
    assert not (out / STAGING_DIR).exists()


def test_an_entity_index_made_by_other_weights_is_detected_and_encoded_again(make_model, tok, tmp_path, caplog):
    from lmke_hf import ClmkeForLinkPrediction

    model = make_model("clmke")
    model.attach_tokenizer(tok)
    model.build_entity_index()
    model.save_pretrained(tmp_path / "a")
    loaded = ClmkeForLinkPrediction.from_pretrained(tmp_path / "a")
    assert loaded.load_entity_index() is not None  # its own index is used
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05)
    model.save_pretrained(tmp_path / "b")  # new weights; its index still records the old ones
    torn = tmp_path / "torn"
    (tmp_path / "a").rename(torn)
    (torn / "model.safetensors").write_bytes(
        (tmp_path / "b" / "model.safetensors").read_bytes()
    )  # weights of one save, index of another
    stale = ClmkeForLinkPrediction.from_pretrained(torn)
    with caplog.at_level("WARNING"):
        assert stale.load_entity_index() is None
    assert "encoded by other weights" in caplog.text
    fresh = stale.encode_entities()
    assert torch.allclose(stale.load_or_build_entity_index().keys, fresh)


# ------------------------------------------------------------------------------------ issue 22: stopped by a signal
def test_sigterm_mid_epoch_saves_a_checkpoint_exits_non_zero_and_the_resume_matches_an_uninterrupted_run(
    script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch
):
    import signal
    import sys
    import time

    from helpers import REPO, _assert_same_weights, counting_trained_steps

    flags = (
        "--max_train_steps",
        40,
        "--per_device_train_batch_size",
        1,
        "--lr_scheduler_type",
        "constant",
        "--checkpointing_steps",
        3,
    )
    stopped = tmp_path / "stopped"
    command = [
        sys.executable,
        str(REPO / "examples" / "train_clmke.py"),
        *_clmke_argv(kg_dir, no_dropout_encoder, stopped, *flags),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.time() + 300
    while not (stopped / "checkpoints" / "step_3").is_dir() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 128 + signal.SIGTERM, output
    step = int(output.split("Stopped by SIGTERM after step ")[1].split(";")[0])
    assert 3 <= step < 40, output  # mid-epoch: 80 batches of 1 per epoch
    assert "--resume_from_checkpoint latest" in output.split("Resume with:")[1]
    assert (stopped / "checkpoints" / f"step_{step}" / "trainer_state.json").is_file()
    assert not (stopped / "model.safetensors").exists()  # no final model: the run is not finished
    trained = counting_trained_steps(monkeypatch)
    results = _train(script, kg_dir, no_dropout_encoder, stopped, *flags, "--resume_from_checkpoint", "latest")
    assert results["completed_steps"] == 40 and results["exact_resume"] is True
    assert trained == list(range(step, 40))  # from the stop's step on, not from scratch
    whole = tmp_path / "whole"
    _train(script, kg_dir, no_dropout_encoder, whole, *flags)
    _assert_same_weights(
        stopped / "checkpoints" / "step_40" / "model.safetensors",
        whole / "checkpoints" / "step_40" / "model.safetensors",
    )


# (training forward the signal comes in, --gradient_accumulation_steps, the step the run stops after): a mid-epoch
# step; the first step of epoch 2 (after the epoch-end validation); the run's first step (its checkpoint is step_0);
# with 2 micro-batches a step is never dropped; with a key queue (the dropped step's keys are not pushed); after a
# mid-epoch validation (--eval_steps 8: the stop's step_8 holds it, so the resume does not validate it again)
@pytest.mark.parametrize(
    "signalled, accumulation, stopped_after, extra",
    [
        (4, 1, 3, ()),
        (21, 1, 20, ()),
        (1, 1, 0, ()),
        (3, 2, 2, ()),
        (11, 1, 10, ("--key_queue_size", 12)),
        (9, 1, 8, ("--eval_steps", 8)),
    ],
)
def test_a_signal_inside_a_forward_drops_that_step_and_the_resume_matches_an_uninterrupted_run_with_dropout(
    signalled,
    accumulation,
    stopped_after,
    extra,
    script,
    kg_dir,
    tiny_bert_dir,
    tmp_path,
    monkeypatch,
    caplog,
    sentinel_handlers,
):
    """`accelerate launch` kills its training process 5 s after passing a signal on, less than a CPU step can take:
    a signal during a step's forward drops that step at once, and the checkpoint is the previous step's, with that
    boundary's random states, so the resume (dropout on) trains exactly the weights of an uninterrupted run. With
    gradient accumulation the step in hand is finished first, as before."""
    import signal

    from lmke_hf import ClmkeForLinkPrediction
    from lmke_hf.errors import TrainingStopped

    from helpers import _assert_same_weights, counting_trained_steps

    # 20 batches per epoch; checkpoints every 7 steps, so the stop itself saves the step it names
    flags = ("--max_train_steps", 24, "--lr_scheduler_type", "constant", "--checkpointing_steps", 7)
    flags += ("--gradient_accumulation_steps", accumulation, *extra)
    original, calls = ClmkeForLinkPrediction.embed_keys, []

    def embed_keys(self, *args, **kwargs):
        if self.training:
            calls.append(True)
            if len(calls) == signalled:  # inside that forward, after its queries' dropout masks were drawn
                signal.raise_signal(signal.SIGTERM)
                assert accumulation > 1, "the step went on after the signal"
        return original(self, *args, **kwargs)

    stopped = tmp_path / "stopped"
    argv = _clmke_argv(kg_dir, tiny_bert_dir, stopped, *flags)
    with monkeypatch.context() as patched:
        patched.setattr(ClmkeForLinkPrediction, "embed_keys", embed_keys)
        with caplog.at_level("WARNING"), pytest.raises(TrainingStopped) as error:
            script.main(script.parse_args(argv))
    assert error.value.step == stopped_after and not error.value.finished
    assert error.value.checkpoint == stopped / "checkpoints" / f"step_{stopped_after}"
    assert f"Stopped by SIGTERM after step {stopped_after}" in caplog.text
    assert signal.getsignal(signal.SIGTERM) is sentinel_handlers  # the run's handlers are gone
    caplog.clear()
    trained = counting_trained_steps(monkeypatch)
    with caplog.at_level("INFO"):
        results = script.main(script.parse_args([*argv, "--resume_from_checkpoint", "latest"]))
    assert results["completed_steps"] == 24 and results["exact_resume"] is True
    assert trained[0] == stopped_after and len(trained) == (24 - stopped_after) * accumulation  # micro-batches
    assert "holds no validation" not in caplog.text
    whole = tmp_path / "whole"
    script.main(script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, whole, *flags)))
    _assert_same_weights(
        stopped / "checkpoints" / "step_24" / "model.safetensors",
        whole / "checkpoints" / "step_24" / "model.safetensors",
    )
    resumed_history = json.loads((stopped / "train_history.json").read_text())
    whole_history = json.loads((whole / "train_history.json").read_text())
    assert [(h["step"], h["eval_mrr"]) for h in resumed_history] == [(h["step"], h["eval_mrr"]) for h in whole_history]


_SLOW_STEP = """
import runpy, sys, time
from pathlib import Path
from lmke_hf import ClmkeForLinkPrediction

original, calls, began = ClmkeForLinkPrediction.embed_keys, [], Path(sys.argv[1])

def embed_keys(self, *args, **kwargs):
    if self.training:
        calls.append(True)
        if len(calls) == 4:  # step 4 takes a minute, as a CPU step of a large model may
            began.touch()
            time.sleep(60)
    return original(self, *args, **kwargs)

ClmkeForLinkPrediction.embed_keys = embed_keys
script, sys.argv = sys.argv[2], sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""

_SLOW_VALIDATION = """
import runpy, sys, time
from pathlib import Path
from lmke_hf.commands import train_clmke

original, began = train_clmke.rank_link_prediction, Path(sys.argv[1])

def rank_link_prediction(*args, **kwargs):
    if args[3] == "validation" and not began.exists():  # the validation at step 3 takes a minute, as WN18RR's may
        began.touch()
        time.sleep(60)
    return original(*args, **kwargs)

train_clmke.rank_link_prediction = rank_link_prediction
script, sys.argv = sys.argv[2], sys.argv[2:]
runpy.run_path(script, run_name="__main__")
"""


# (what takes a minute, the run's flags beyond RESUME_FLAGS, the step the checkpoint holds)
_SLOW = {"step": (_SLOW_STEP, (), 3), "validation": (_SLOW_VALIDATION, ("--eval_steps", 3), 3)}


@pytest.mark.parametrize("slow", sorted(_SLOW))
def test_sigterm_to_accelerate_launch_during_a_slow_step_or_validation_saves_the_last_finished_step_within_its_grace(
    slow, script, kg_dir, no_dropout_encoder, tmp_path
):
    """SIGTERM to `accelerate launch` (a scheduler stopping the job), not to the training process: the launcher
    terminates its child and kills it 5 s later. A step of a minute is dropped, and the previous step's checkpoint
    is saved and named in time; so is a validation of a minute, and the resume makes it first; the resume trains on
    from that checkpoint."""
    import signal
    import sys
    import time

    from helpers import REPO

    code, extra, saved = _SLOW[slow]
    flags = ("--max_train_steps", 6, *RESUME_FLAGS, *extra)
    wrapper, began, stopped = tmp_path / "slow.py", tmp_path / "slow_part_began", tmp_path / "stopped"
    wrapper.write_text(code)
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1", "--num_machines", "1"]
    launch += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    training = [str(REPO / "examples" / "train_clmke.py"), *_clmke_argv(kg_dir, no_dropout_encoder, stopped, *flags)]
    process = subprocess.Popen(
        [*launch, str(wrapper), str(began), *training],
        cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.time() + 300
    while not began.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert began.exists(), process.communicate(timeout=60)[0]
    process.send_signal(signal.SIGTERM)  # to the launcher
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    assert f"Stopped by SIGTERM after step {saved}; checkpoint" in output, output
    state = json.loads((stopped / "checkpoints" / f"step_{saved}" / "trainer_state.json").read_text())
    if slow == "validation":
        assert state["history"] == []  # the validation at step 3 was dropped, not finished
    results = _train(script, kg_dir, no_dropout_encoder, stopped, *flags, "--resume_from_checkpoint", "latest")
    assert results["completed_steps"] == 6 and results["exact_resume"] is True
    history = json.loads((stopped / "train_history.json").read_text())
    assert [h["step"] for h in history] == ([3, 6] if slow == "validation" else [6])


def test_latest_is_the_checkpoint_of_the_highest_step_whatever_its_name(tmp_path):
    """A stop at an epoch's end saves `step_<n>` even under `--checkpointing_steps epoch`, whose `epoch_<k>` names
    count epochs: `latest` orders checkpoints by the step their trainer_state.json records."""
    from types import SimpleNamespace

    from lmke_hf.training import find_checkpoint

    for name, step in (("step_20", 20), ("epoch_1", 40), ("epoch_2", 60)):
        folder = tmp_path / "checkpoints" / name
        folder.mkdir(parents=True)
        for file in ("model.safetensors", "optimizer.bin", "scheduler.bin"):
            (folder / file).write_bytes(b"x")
        (folder / "trainer_state.json").write_text(json.dumps({"completed_steps": step}))
    args = SimpleNamespace(resume_from_checkpoint="latest", output_dir=str(tmp_path))
    assert find_checkpoint(args) == tmp_path / "checkpoints" / "epoch_2"
    (tmp_path / "checkpoints" / "epoch_2" / "trainer_state.json").write_text("{")  # damaged: the next highest step
    assert find_checkpoint(args) == tmp_path / "checkpoints" / "epoch_1"


def _validation_calls(module, signal_when=None):
    """Wraps `module.rank_link_prediction`: records the split of each call, and raises SIGTERM in this thread at the
    first validation for which `signal_when(calls so far)` holds."""
    import signal

    original, calls, sent = module.rank_link_prediction, [], []

    def wrapped(*args, **kwargs):
        calls.append(args[3])
        if args[3] == "validation" and signal_when is not None and not sent and signal_when(calls):
            sent.append(True)
            signal.raise_signal(signal.SIGTERM)
            raise AssertionError("the validation went on after the signal")
        return original(*args, **kwargs)

    return wrapped, calls


# (when the signal comes, the step whose validation it stops): during the epoch-end validation; after the epoch's
# last step, before its validation; after the run's last step, before the last validation
@pytest.mark.parametrize("when, at", [("during", 20), ("before", 20), ("before", 24)])
def test_a_signal_at_a_validation_stops_without_it_and_the_resume_validates_first_and_matches_an_uninterrupted_run(
    when, at, kg_dir, tiny_bert_dir, tmp_path, monkeypatch, caplog, sentinel_handlers
):
    """A validation can take minutes (WN18RR's: 2.5), far more than the 5 s `accelerate launch` leaves its training
    process: a signal during it (or between a step and its validation) stops the run at once with the checkpoint of
    that step, saved before any validation of it; the resume validates that step first, then trains on (or tests),
    so history, best model, weights and test results are those of an uninterrupted run (dropout on)."""
    import signal

    from lmke_hf.commands import train_clmke
    from lmke_hf.errors import TrainingStopped
    from lmke_hf.training import loop

    from helpers import _assert_same_weights

    script = _load_script("train_clmke")
    # 20 steps per epoch, validation at step 20 and at the last step; checkpoints every 7, so the stop saves step_20
    flags = ("--max_train_steps", 24, "--lr_scheduler_type", "constant", "--checkpointing_steps", 7)
    flags += ("--logging_steps", 4, "--keep_best")
    stopped = tmp_path / "stopped"
    argv = _clmke_argv(kg_dir, tiny_bert_dir, stopped, *flags)
    with monkeypatch.context() as patched:
        if when == "during":
            wrapped, calls = _validation_calls(train_clmke, signal_when=lambda calls: True)
        else:  # while the progress line of that step is logged, after its optimizer step
            wrapped, calls = _validation_calls(train_clmke)
            logged = _signal_at(loop.TrainingLoop, "log_progress", lambda self, epoch: self.state.completed_steps == at)
            patched.setattr(loop.TrainingLoop, "log_progress", logged)
        patched.setattr(train_clmke, "rank_link_prediction", wrapped)
        with caplog.at_level("INFO"), pytest.raises(TrainingStopped) as error:
            script.main(script.parse_args(argv))
    assert error.value.step == at and not error.value.finished
    assert error.value.checkpoint == stopped / "checkpoints" / f"step_{at}"
    assert calls == (["validation"] if when == "during" or at == 24 else [])  # at 24: step 20's, finished
    assert f"validation at step {at}" not in caplog.text and f"Stopped by SIGTERM after step {at}" in caplog.text
    state = json.loads((stopped / "checkpoints" / f"step_{at}" / "trainer_state.json").read_text())
    assert [h["step"] for h in state["history"]] == ([20] if at == 24 else [])
    assert (stopped / "best").exists() == (at == 24)
    assert signal.getsignal(signal.SIGTERM) is sentinel_handlers  # the run's handlers are gone
    caplog.clear()
    with caplog.at_level("INFO"):
        resumed = script.main(script.parse_args([*argv, "--resume_from_checkpoint", "latest"]))
    assert (
        f"The checkpoint at step {at} holds no validation of that step, which this run makes: validating now."
        in caplog.text
    )
    assert resumed["completed_steps"] == 24 and resumed["exact_resume"] is True
    whole = tmp_path / "whole"
    uninterrupted = script.main(script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, whole, *flags)))
    _assert_same_weights(
        stopped / "checkpoints" / "step_24" / "model.safetensors",
        whole / "checkpoints" / "step_24" / "model.safetensors",
    )
    _assert_same_weights(stopped / "best" / "model.safetensors", whole / "best" / "model.safetensors")
    resumed_history = json.loads((stopped / "train_history.json").read_text())
    whole_history = json.loads((whole / "train_history.json").read_text())
    assert [(h["step"], h["epoch"], h["end_of_epoch"]) for h in resumed_history] == [(20, 0, True), (24, 1, False)]
    assert [h["eval_mrr"] for h in resumed_history] == [h["eval_mrr"] for h in whole_history]
    assert [h["train_loss"] is None for h in resumed_history] == [at == 20, at == 24]  # not measured again
    assert resumed["test_mrr"] == uninterrupted["test_mrr"] and resumed["best_step"] == uninterrupted["best_step"]


def test_the_validation_a_resume_makes_first_is_written_back_so_a_second_stop_does_not_make_it_again(
    kg_dir, tiny_bert_dir, tmp_path, monkeypatch, caplog, sentinel_handlers
):
    """A run stopped during step 20's validation; its resume validates step 20 first and writes that into step_20
    (taking no room of step_14 under --checkpoints_total_limit 2), then is stopped in its first step: the next resume
    does not validate step 20 again (a WN18RR validation takes minutes) and ends as an uninterrupted run."""
    import signal

    from lmke_hf import ClmkeForLinkPrediction
    from lmke_hf.commands import train_clmke
    from lmke_hf.errors import TrainingStopped

    from helpers import _assert_same_weights

    script = _load_script("train_clmke")
    flags = ("--max_train_steps", 24, "--lr_scheduler_type", "constant", "--checkpointing_steps", 7)
    flags += ("--checkpoints_total_limit", 2, "--keep_best")
    stopped = tmp_path / "stopped"
    argv = _clmke_argv(kg_dir, tiny_bert_dir, stopped, *flags)
    resume = script.parse_args([*argv, "--resume_from_checkpoint", "latest"])
    with monkeypatch.context() as patched:
        wrapped, calls = _validation_calls(train_clmke, signal_when=lambda calls: True)
        patched.setattr(train_clmke, "rank_link_prediction", wrapped)
        with pytest.raises(TrainingStopped) as error:
            script.main(script.parse_args(argv))
    assert error.value.step == 20 and calls == ["validation"]
    original = ClmkeForLinkPrediction.embed_keys

    def embed_keys(self, *args, **kwargs):  # the resume's first training forward: SIGTERM
        if self.training:
            signal.raise_signal(signal.SIGTERM)
        return original(self, *args, **kwargs)

    with monkeypatch.context() as patched:
        patched.setattr(ClmkeForLinkPrediction, "embed_keys", embed_keys)
        with caplog.at_level("INFO"), pytest.raises(TrainingStopped) as error:
            script.main(resume)
    assert "The checkpoint at step 20 holds no validation of that step" in caplog.text
    assert "validation at step 20" in caplog.text
    assert error.value.step == 20 and error.value.checkpoint == stopped / "checkpoints" / "step_20"
    state = json.loads((stopped / "checkpoints" / "step_20" / "trainer_state.json").read_text())
    assert [(h["step"], h["train_loss"]) for h in state["history"]] == [(20, None)] and state["best"]["step"] == 20
    assert sorted(p.name for p in (stopped / "checkpoints").iterdir()) == ["step_14", "step_20"]
    caplog.clear()
    with caplog.at_level("INFO"):
        resumed = script.main(resume)
    assert "holds no validation" not in caplog.text and "validation at step 20" not in caplog.text
    assert resumed["completed_steps"] == 24 and resumed["exact_resume"] is True
    whole = tmp_path / "whole"
    uninterrupted = script.main(script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, whole, *flags)))
    _assert_same_weights(
        stopped / "checkpoints" / "step_24" / "model.safetensors",
        whole / "checkpoints" / "step_24" / "model.safetensors",
    )
    resumed_history = json.loads((stopped / "train_history.json").read_text())
    whole_history = json.loads((whole / "train_history.json").read_text())
    assert [h["eval_mrr"] for h in resumed_history] == [h["eval_mrr"] for h in whole_history]
    assert resumed["test_mrr"] == uninterrupted["test_mrr"]


@pytest.fixture
def sentinel_handlers():
    """SIGTERM / SIGINT handlers that fail the test if a signal reaches them: a run must put them back when it
    is done with its own, and no signal of a test may slip through to them."""
    import signal

    def reached(signum, frame):
        raise AssertionError(f"{signal.Signals(signum).name} reached the handler from before the run")

    previous = {s: signal.signal(s, reached) for s in (signal.SIGTERM, signal.SIGINT)}
    yield reached
    for signum, handler in previous.items():
        signal.signal(signum, handler)


def _signal_at(module, name: str, when, signum=None):
    """Wraps `module.name` so that the call for which `when(*args)` holds raises `signum` (SIGTERM) in this
    thread first, once."""
    import signal

    original, sent = getattr(module, name), []

    def wrapped(*args, **kwargs):
        if not sent and when(*args):
            sent.append(True)
            signal.raise_signal(signum or signal.SIGTERM)
        return original(*args, **kwargs)

    return wrapped


# the step that ends a run is not a multiple of --checkpointing_steps 2, so the loop's own last-step save is tested
_AT_TEST = {
    "clmke": ("train_clmke", "rank_link_prediction", lambda *a: a[3] == "test", "test_mrr"),
    "lmke": ("train_lmke", "_labelled", lambda *a: a[1] == "test", "test_accuracy"),
}


@pytest.mark.parametrize("model", sorted(_AT_TEST))
def test_a_signal_during_the_test_evaluation_stops_at_once_names_the_last_checkpoint_and_the_resume_only_tests(
    model, kg_dir, no_dropout_encoder, tmp_path, monkeypatch, caplog, sentinel_handlers
):
    import importlib
    import signal

    from lmke_hf.errors import TrainingStopped

    command, name, at_test, metric = _AT_TEST[model]
    module = importlib.import_module(f"lmke_hf.commands.{command}")
    script = _load_script(command)
    out = tmp_path / "run"
    argv = (_clmke_argv if model == "clmke" else _common)(
        kg_dir, no_dropout_encoder, out, "--max_train_steps", 5, *RESUME_FLAGS
    )
    with monkeypatch.context() as patched:
        patched.setattr(module, name, _signal_at(module, name, at_test))
        with caplog.at_level("WARNING"), pytest.raises(TrainingStopped) as stopped:
            script.main(script.parse_args(argv))
    assert stopped.value.exit_code == 128 + signal.SIGTERM and stopped.value.finished
    assert stopped.value.checkpoint == out / "checkpoints" / "step_5" and stopped.value.step == 5
    assert "after training finished at step 5, before its test evaluation ended" in caplog.text
    assert stopped.value.command.endswith("--resume_from_checkpoint latest") and stopped.value.command in caplog.text
    assert signal.getsignal(signal.SIGTERM) is sentinel_handlers  # the run's handlers are gone
    assert signal.getsignal(signal.SIGINT) is sentinel_handlers
    assert not (out / "all_results.json").exists() and not (out / "model.safetensors").exists()
    weights = (out / "checkpoints" / "step_5" / "model.safetensors").read_bytes()
    results = script.main(script.parse_args([*argv, "--resume_from_checkpoint", "latest"]))
    assert results["completed_steps"] == 5 and metric in results
    assert (out / "checkpoints" / "step_5" / "model.safetensors").read_bytes() == weights  # nothing was trained
    assert json.loads((out / "all_results.json").read_text())[metric] == results[metric]


def test_with_checkpoints_at_epoch_ends_the_stop_during_the_test_names_the_last_epochs_checkpoint(
    script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch, caplog
):
    from lmke_hf.commands import train_clmke
    from lmke_hf.errors import TrainingStopped

    monkeypatch.setattr(
        train_clmke, "rank_link_prediction", _signal_at(train_clmke, "rank_link_prediction", lambda *a: a[3] == "test")
    )
    out = tmp_path / "run"  # 80 queries in batches of 4: one epoch is 20 steps
    with caplog.at_level("WARNING"), pytest.raises(TrainingStopped) as stopped:
        _train(script, kg_dir, no_dropout_encoder, out, "--max_train_steps", 20, "--checkpointing_steps", "epoch")
    assert stopped.value.checkpoint == out / "checkpoints" / "epoch_0" and stopped.value.step == 20
    assert "Resume with" in caplog.text


def test_a_signal_while_the_last_step_is_saved_stops_before_the_test(
    script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch, caplog
):
    from lmke_hf.commands import train_clmke
    from lmke_hf.errors import TrainingStopped
    from lmke_hf.training import loop

    ranked, rank = [], train_clmke.rank_link_prediction
    monkeypatch.setattr(train_clmke, "rank_link_prediction", lambda *a, **k: ranked.append(a[3]) or rank(*a, **k))
    monkeypatch.setattr(
        loop.TrainingLoop,
        "save_checkpoint",
        _signal_at(loop.TrainingLoop, "save_checkpoint", lambda self, tag: tag == "step_5"),
    )
    out = tmp_path / "run"
    with caplog.at_level("WARNING"), pytest.raises(TrainingStopped) as stopped:
        _train(script, kg_dir, no_dropout_encoder, out, "--max_train_steps", 5, *RESUME_FLAGS)
    assert stopped.value.finished and stopped.value.checkpoint == out / "checkpoints" / "step_5"
    assert "test" not in ranked  # stopped before the test, not after it ran in full


def test_a_signal_during_the_test_of_a_run_without_a_checkpoint_of_its_last_step_names_its_best_model(
    tmp_path, caplog, sentinel_handlers
):
    import logging
    import signal
    from types import SimpleNamespace

    from lmke_hf.errors import TrainingStopped
    from lmke_hf.training import StopAtOnce

    args = SimpleNamespace(output_dir=str(tmp_path))
    accelerator = SimpleNamespace(is_main_process=True)
    summary = {"completed_steps": 7, "last_checkpoint": None}
    with caplog.at_level("WARNING"), pytest.raises(TrainingStopped) as stopped:
        with StopAtOnce(args, summary, accelerator, logging.getLogger("t")):
            signal.raise_signal(signal.SIGINT)
    assert stopped.value.checkpoint is None and stopped.value.command is None
    assert stopped.value.exit_code == 128 + signal.SIGINT
    assert (
        f"lmke-hf evaluate --model {tmp_path / 'best'}" in caplog.text and "no checkpoint holds step 7" in caplog.text
    )
    assert signal.getsignal(signal.SIGINT) is sentinel_handlers


def test_a_second_signal_during_the_stop_reaches_the_handler_from_before(tmp_path, sentinel_handlers):
    import logging
    import signal
    from types import SimpleNamespace

    from lmke_hf.training import StopAtOnce

    args = SimpleNamespace(output_dir=str(tmp_path))
    accelerator = SimpleNamespace(is_main_process=False)
    with pytest.raises(AssertionError, match="SIGTERM reached the handler from before"):
        with StopAtOnce(args, {"completed_steps": 1, "last_checkpoint": None}, accelerator, logging.getLogger("t")):
            try:
                signal.raise_signal(signal.SIGTERM)
            finally:  # as if a second signal came while the first one's exception unwinds
                signal.raise_signal(signal.SIGTERM)


def test_the_resume_command_replaces_a_typed_checkpoint_and_names_one_latest_would_not_pick(monkeypatch, tmp_path):
    import sys

    from lmke_hf.training import resume_command

    for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:
        monkeypatch.delenv(key)
    out = tmp_path / "run"
    for tag in ("step_4", "step_8"):
        (out / "checkpoints" / tag).mkdir(parents=True)
        (out / "checkpoints" / tag / "model.safetensors").write_bytes(b"")
        for name in ("optimizer.bin", "scheduler.bin"):
            (out / "checkpoints" / tag / name).write_text("")
        (out / "checkpoints" / tag / "trainer_state.json").write_text(json.dumps({"completed_steps": int(tag[5:])}))
    typed = ["--output_dir", str(out), "--resume_from_checkpoint", str(out / "checkpoints" / "step_4"), "--seed", "1"]
    monkeypatch.setattr(sys, "argv", ["examples/train_clmke.py", *typed])
    assert resume_command(out, out / "checkpoints" / "step_8") == (
        f"python examples/train_clmke.py --output_dir {out} --seed 1 --resume_from_checkpoint latest"
    )
    assert resume_command(out, out / "checkpoints" / "step_4").endswith(
        f"--seed 1 --resume_from_checkpoint {out / 'checkpoints' / 'step_4'}"
    )  # latest would take step_8
    monkeypatch.setattr(sys, "argv", ["lmke-hf train-clmke", f"--resume_from_checkpoint={out}/x", "--seed", "2"])
    assert resume_command(out) == "lmke-hf train-clmke --seed 2 --resume_from_checkpoint latest"


def test_library_calls_raise_output_dir_error_and_write_nothing(toy_kg_dir, tmp_path):
    from lmke_hf.kg import load_kg, save_prepared

    mine = _user_folder(tmp_path / "mine")
    before = _snapshot(mine)
    kg = load_kg(toy_kg_dir)
    with pytest.raises(OutputDirError, match="did not write"):
        save_prepared(kg, mine, overwrite=True)
    with pytest.raises(OutputDirError, match="the folder of the source KG"):
        save_prepared(kg, toy_kg_dir)
    assert _snapshot(mine) == before


# ------------------------------------------------------------------------------------ evaluations (item 4)
def _evaluate(*argv):
    script = _load_script("evaluate")
    return script.main(script.parse_args([*map(str, argv), "--no_progress"]))


def test_evaluate_never_writes_into_a_run_and_two_evaluations_never_mix(clmke_run, kg_dir, tmp_path, monkeypatch):
    run, _ = clmke_run
    before = _snapshot(run / "test_metrics")
    with pytest.raises(UsageError, match="^--output_dir .* is the folder of --model"):
        _evaluate("--model", run, "--dataset", kg_dir, "--output_dir", run)
    with pytest.raises(UsageError, match="did not write"):
        _evaluate("--model", run, "--dataset", kg_dir, "--output_dir", _user_folder(tmp_path / "mine"))
    assert _snapshot(run / "test_metrics") == before

    out = tmp_path / "eval"
    full = _evaluate("--model", run, "--dataset", kg_dir, "--output_dir", out)
    ranks = (out / "test_metrics" / "ranks.csv").read_text()
    import lmke_hf.evaluation as evaluation

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    script = _load_script("evaluate")
    monkeypatch.setattr(script, "plot_degree_buckets", full_disk)
    with pytest.raises(OSError, match="No space left"):
        _evaluate("--model", run, "--dataset", kg_dir, "--output_dir", out, "--max_queries", 1)
    assert (out / "test_metrics" / "ranks.csv").read_text() == ranks  # the complete earlier set, not half of each
    assert json.loads((out / "test_results.json").read_text())["num_examples"] == full["num_examples"]
    monkeypatch.setattr(script, "plot_degree_buckets", evaluation.plot_degree_buckets)
    _evaluate("--model", run, "--dataset", kg_dir, "--output_dir", out, "--max_queries", 1)
    assert json.loads((out / "test_results.json").read_text())["num_examples"] == 1
    assert (out / "test_metrics" / "ranks.csv").read_text().count("\n") == 2 + 1  # 1 triple x 2 directions + header
    assert not (out / STAGING_DIR).exists() and not (out / READY_DIR).exists()


def test_evaluating_a_runs_best_folder_writes_beside_it_not_into_it(clmke_script, kg_dir, tiny_bert_dir, tmp_path):
    from lmke_hf.folders import folder_kind as kind_of

    run = tmp_path / "run"
    clmke_script.main(
        clmke_script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, run, "--max_train_steps", 2, "--keep_best"))
    )
    _evaluate("--model", run / "best", "--dataset", kg_dir)
    assert (run / "eval-best" / "test_results.json").is_file() and not (run / "best" / "eval").exists()
    assert kind_of(run / "eval-best") == "evaluation"


def test_the_resume_command_keeps_paths_as_typed_and_hides_tokens(monkeypatch):
    import sys

    from lmke_hf.training import resume_command

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setattr(
        sys,
        "argv",
        [
            "examples/train_clmke.py",
            "--output_dir",
            "/data/runs/my run",
            "--hub_token",
            "hf_secret",
            "--token=hf_other",
        ],
    )
    command = resume_command("/data/runs/my run")
    assert (
        command
        == "python examples/train_clmke.py --output_dir '/data/runs/my run' --hub_token '***' '--token=***' --resume_from_checkpoint latest"
    )
