"""`lmke_hf.training.run` and `checkpoints`: runs that cannot lose work, mix runs or leak secrets: the output folder's lock and emptiness rule,
resume settings, damaged and partial checkpoints, atomic JSON files, no token or local path in what a run
writes. Tiny and offline (conftest's random BERT, the tiny KG of `helpers.write_tiny_kg`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmke_hf.errors import UsageError
from lmke_hf.run_io import write_json
from lmke_hf.training import LOCK_FILE

from helpers import RESUME_FLAGS, _assert_same_weights, _clmke_argv, _common, _load_script, _steps_differ  # noqa: E402


@pytest.fixture(scope="module")
def script():
    return _load_script("train_clmke")


def _train(script, kg, encoder, out, *extra):
    return script.main(script.parse_args(_clmke_argv(kg, encoder, out, *extra)))


def test_no_token_and_no_local_path_reaches_any_file_of_the_run(script, kg_dir, tiny_bert_dir, tmp_path):  # noqa: F811
    """--with_tracking used to send every flag, --hub_token included, to TensorBoard's hparams files inside
    output_dir (uploaded by --push_to_hub); cards recorded the encoder's and the data's local folders."""
    token = "hf_FAKEtoken1234567890"
    out = tmp_path / "run"
    _train(script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 2, "--with_tracking", "--hub_token", token)
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any("events.out.tfevents" in p.name or p.name == "hparams.yml" for p in files), "the tracker wrote nothing"
    leaked = [str(p.relative_to(out)) for p in files if token.encode() in p.read_bytes()]
    assert not leaked, f"token found in {leaked}"
    for name in ("README.md", "card.json", "training_args.json"):
        text = (out / name).read_text()
        for local in (str(tiny_bert_dir), str(kg_dir), str(tmp_path)):
            assert local not in text, f"{name} holds the local path {local}"
    assert f".../{Path(tiny_bert_dir).name}" in (out / "card.json").read_text()


def test_a_second_run_into_a_locked_folder_stops_naming_the_first(script, kg_dir, tiny_bert_dir, tmp_path):  # noqa: F811
    from filelock import FileLock

    out = tmp_path / "run"
    out.mkdir()
    (out / (LOCK_FILE + ".owner")).write_text("pid 4242 on host, started today")
    with FileLock(str(out / LOCK_FILE)):
        with pytest.raises(UsageError) as info:
            _train(script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 1)
    assert "in use by another run" in str(info.value) and "pid 4242" in str(info.value)


def test_a_fresh_run_refuses_a_folder_holding_a_run_unless_overwrite(script, kg_dir, tiny_bert_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    _train(script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 2, "--checkpointing_steps", 1)
    before = (out / "model.safetensors").read_bytes()
    with pytest.raises(UsageError) as info:
        _train(script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 2, "--seed", 3)
    assert "--overwrite_output_dir" in str(info.value) and "checkpoints" in str(info.value)
    assert (out / "model.safetensors").read_bytes() == before  # nothing was touched
    _train(script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 1, "--seed", 3, "--overwrite_output_dir")
    assert not (
        out / "checkpoints" / "step_2"
    ).exists()  # the old run's checkpoints are gone, `latest` cannot find them
    assert not list(out.glob(LOCK_FILE + "*"))  # the lock goes with the run


def test_a_resume_with_other_settings_stops_naming_each_flag(script, kg_dir, tiny_bert_dir, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    _train(script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 2, *RESUME_FLAGS)
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
            "3e-5",
            "--per_device_train_batch_size",
            2,
            *RESUME_FLAGS,
        )
    message = str(info.value)
    assert "--learning_rate" in message and "--per_device_train_batch_size" in message and "--seed" not in message
    # what may change (the length of the run) may change
    results = _train(
        script, kg_dir, tiny_bert_dir, out, "--max_train_steps", 4, "--resume_from_checkpoint", "latest", *RESUME_FLAGS
    )
    assert results["completed_steps"] == 4


def test_a_run_that_fails_before_training_leaves_no_folder(script, kg_dir, tiny_bert_dir, tmp_path):  # noqa: F811
    broken = tmp_path / "kg"
    shutil.copytree(kg_dir, broken)
    (broken / "test.tsv").unlink()
    out = tmp_path / "never"
    with pytest.raises(UsageError):
        _train(script, broken, tiny_bert_dir, out, "--max_train_steps", 1)
    assert not out.exists()


def test_latest_skips_a_damaged_checkpoint_with_a_warning_and_names_a_damaged_explicit_one(
    script, kg_dir, no_dropout_encoder, tmp_path
):  # noqa: F811
    out = tmp_path / "run"
    _train(script, kg_dir, no_dropout_encoder, out, "--max_train_steps", 4, *RESUME_FLAGS)
    (out / "checkpoints" / "step_4" / "trainer_state.json").write_text("{broken")
    (out / "checkpoints" / "step_6.partial").mkdir()  # an interrupted save
    with pytest.warns(UserWarning, match="Skipping damaged checkpoint .*step_4"):
        results = _train(
            script,
            kg_dir,
            no_dropout_encoder,
            out,
            "--max_train_steps",
            6,
            "--resume_from_checkpoint",
            "latest",
            *RESUME_FLAGS,
        )
    assert results["completed_steps"] == 6
    assert not (out / "checkpoints" / "step_6.partial").exists()
    assert json.loads((out / "checkpoints" / "step_6" / "trainer_state.json").read_text())["completed_steps"] == 6
    (out / "checkpoints" / "step_6" / "optimizer.bin").unlink()
    with pytest.raises(UsageError) as info:
        _train(
            script,
            kg_dir,
            no_dropout_encoder,
            out,
            "--max_train_steps",
            8,
            "--resume_from_checkpoint",
            out / "checkpoints" / "step_6",
            *RESUME_FLAGS,
        )
    assert "step_6" in str(info.value) and "optimizer.bin" in str(info.value)


def test_a_resume_without_random_states_warns_that_it_is_not_exact(script, kg_dir, no_dropout_encoder, tmp_path):  # noqa: F811
    out = tmp_path / "run"
    _train(script, kg_dir, no_dropout_encoder, out, "--max_train_steps", 2, *RESUME_FLAGS)
    (out / "checkpoints" / "step_2" / "random_states_0.pkl").unlink()
    with pytest.warns(UserWarning, match="NOT exactly reproducible"):
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
    state = json.loads((out / "checkpoints" / "step_4" / "trainer_state.json").read_text())
    assert state["exact_resume"] is False
    assert "Not exactly reproducible" in (out / "README.md").read_text()
    assert json.loads((out / "all_results.json").read_text())["exact_resume"] is False


def test_write_json_is_atomic(tmp_path):
    path = tmp_path / "state.json"
    write_json(path, {"step": 1})
    with pytest.raises(TypeError):
        write_json(path, {"step": object()})  # fails half-way through dumping
    assert json.loads(path.read_text()) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temporary file left behind


# ---------------------------------------------------------------------------------------------------- --init_from
@pytest.fixture(scope="module")
def source_run(script, kg_dir, no_dropout_encoder, tmp_path_factory):
    """A finished C-LMKE run (3 steps, no dropout) to start other runs from."""
    out = tmp_path_factory.mktemp("init") / "source"
    results = _train(script, kg_dir, no_dropout_encoder, out, "--max_train_steps", 3, "--own_entity_bias")
    return out, results


def test_init_from_starts_from_the_runs_weights_and_the_card_adds_its_training_time(
    script, kg_dir, no_dropout_encoder, source_run, tmp_path
):  # noqa: F811
    source, source_results = source_run
    tiny_steps = ("--max_train_steps", 1, "--learning_rate", "1e-12", "--head_learning_rate", "1e-12")
    out = tmp_path / "more"
    results = _train(
        script, kg_dir, no_dropout_encoder, out, *tiny_steps, "--own_entity_bias", "--init_from", str(source)
    )
    # one step at a learning rate of 1e-12 moves no weight measurably: what it trained from is the source's weights
    _assert_same_weights(source / "model.safetensors", out / "model.safetensors", atol=1e-6)
    fresh = tmp_path / "fresh"  # the same step from the encoder's weights lands elsewhere: the check can fail
    _train(script, kg_dir, no_dropout_encoder, fresh, *tiny_steps, "--own_entity_bias")
    assert _steps_differ(source / "model.safetensors", fresh / "model.safetensors")
    assert results["init_from"].endswith("source")
    assert results["init_train_runtime_s"] == pytest.approx(source_results["train_runtime_s"])
    saved = json.loads((out / "all_results.json").read_text())
    assert saved["init_train_runtime_s"] == pytest.approx(source_results["train_runtime_s"])
    card = (out / "README.md").read_text()
    total = (results["train_runtime_s"] + source_results["train_runtime_s"]) / 60
    assert "started from the weights of `" in card and f"{total:.1f} min in all" in card
    assert str(source) not in card  # the local path is shortened, as every path a card shows


def test_init_from_a_runs_best_folder_adds_its_training_time_up_to_that_validation(
    script, kg_dir, no_dropout_encoder, tmp_path
):  # noqa: F811
    """A stage 2 started from a run's best/ (a run stopped after its best validation) reported no earlier training
    time: best/ now records the seconds its run had trained when that validation saved it."""
    source = tmp_path / "source"
    source_results = _train(
        script, kg_dir, no_dropout_encoder, source, "--max_train_steps", 3, "--own_entity_bias", "--keep_best"
    )
    state = json.loads((source / "best" / "best_state.json").read_text())
    assert state["step"] == source_results["best_step"] and state["metric"] == source_results["best_eval_mrr"]
    assert 0 < state["train_runtime_s"] <= source_results["train_runtime_s"]
    out = tmp_path / "stage2"
    stage2 = ("--max_train_steps", 1, "--own_entity_bias", "--init_from", str(source / "best"))
    results = _train(script, kg_dir, no_dropout_encoder, out, *stage2)
    assert results["init_train_runtime_s"] == pytest.approx(state["train_runtime_s"])
    total = (results["train_runtime_s"] + state["train_runtime_s"]) / 60
    assert f"{total:.1f} min in all" in (out / "README.md").read_text()


def test_init_from_refuses_another_kg_another_model_type_and_other_shapes_naming_the_difference(
    script, kg_dir, no_dropout_encoder, source_run, toy_kg_dir, tmp_path
):  # noqa: F811
    source, _ = source_run
    cases = {
        "trained on another KG": (toy_kg_dir, ("--own_entity_bias",)),
        "other tensors than the model these flags build": (kg_dir, ()),  # the source has the own-entity offset
        "other tensors": (kg_dir, ("--own_entity_bias", "--matcher_hidden_size", 8)),
    }
    for expected, (kg, flags) in cases.items():
        out = tmp_path / f"run{len(expected)}"
        with pytest.raises(UsageError) as info:
            _train(script, kg, no_dropout_encoder, out, "--max_train_steps", 1, *flags, "--init_from", str(source))
        assert expected in str(info.value) and f"--init_from {source}" in str(info.value), str(info.value)
        assert not out.exists()  # refused before anything was written
    assert "--own_entity_bias" in str(info.value)  # the flags that shape the weights are named
    lmke = _load_script("train_lmke")
    with pytest.raises(UsageError, match="is a 'clmke' model; this command trains 'lmke' models"):
        lmke.main(lmke.parse_args(_common(kg_dir, no_dropout_encoder, tmp_path / "lmke", "--init_from", source)))


def test_init_from_a_folder_without_a_model_or_as_the_output_folder_is_refused_and_the_source_kept(
    script, kg_dir, no_dropout_encoder, source_run, tmp_path
):  # noqa: F811
    source, _ = source_run
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UsageError, match="holds no saved model"):
        _train(script, kg_dir, no_dropout_encoder, tmp_path / "x", "--init_from", empty)
    with pytest.raises(UsageError, match="no such folder here, and no model on the Hub"):
        _train(script, kg_dir, no_dropout_encoder, tmp_path / "y", "--init_from", tmp_path / "typo" / "run")
    before = (source / "model.safetensors").read_bytes()
    with pytest.raises(UsageError) as info:
        _train(
            script,
            kg_dir,
            no_dropout_encoder,
            source,
            "--max_train_steps",
            1,
            "--own_entity_bias",
            "--init_from",
            str(source),
            "--overwrite_output_dir",
        )
    assert "--init_from" in str(info.value)
    assert (source / "model.safetensors").read_bytes() == before


def test_init_from_works_for_lmke_too(no_dropout_encoder, kg_dir, tmp_path):
    lmke = _load_script("train_lmke")

    def train(out, *extra):
        return lmke.main(lmke.parse_args(_common(kg_dir, no_dropout_encoder, out, *extra)))

    source = tmp_path / "source"
    train(source, "--max_train_steps", 2)
    tiny_steps = ("--max_train_steps", 1, "--learning_rate", "1e-12", "--head_learning_rate", "1e-12")
    results = train(tmp_path / "more", *tiny_steps, "--init_from", source)
    _assert_same_weights(source / "model.safetensors", tmp_path / "more" / "model.safetensors", atol=1e-6)
    assert results["init_from"].endswith("source") and results["init_train_runtime_s"] > 0
