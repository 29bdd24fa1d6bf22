"""Numbers and sizes that must not pass silently (issue 18, items 5-7): NaN keys and odd `top_k` in `predict`, a
diverging loss, a configuration too large for the machine, local paths in a saved `config.json`."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lmke_hf import ClmkeConfig, ClmkeForLinkPrediction
from lmke_hf.errors import TrainingDiverged
from lmke_hf.training.loop import DivergenceGuard


@pytest.fixture
def clmke(make_model, tok):
    model = make_model("clmke")
    model.attach_tokenizer(tok)
    return model


@pytest.mark.parametrize("top_k", [2.5, True, "5", None])
def test_predict_refuses_a_top_k_that_is_not_a_whole_number(clmke, top_k):
    with pytest.raises(TypeError, match="`top_k` must be a whole number"):
        clmke.predict(head=0, relation=0, top_k=top_k)


def test_predict_refuses_nan_keys_instead_of_ranking_them_first(clmke, tok):
    keys = clmke.load_or_build_entity_index().keys.clone()
    keys[2] = float("nan")
    clmke.entity_index = keys
    with pytest.raises(ValueError, match=f"1 keys with NaN or inf values \\(entities {tok.entity_ids[2]}\\)"):
        clmke.predict(head=0, relation=0, top_k=3)
    clmke.build_entity_index()
    assert len(clmke.predict(head=0, relation=0, top_k=3)) == 3


def test_a_diverging_loss_stops_the_run_with_a_message():
    args = SimpleNamespace(learning_rate=1e3, head_learning_rate=1e-3)
    guard = DivergenceGuard(args)
    for step in range(1, 11):
        guard.check(2.0 + 0.1 * step, step)
    guard.check(50.0, 11)  # a spike, not a divergence
    with pytest.raises(
        TrainingDiverged,
        match="diverged at step 12: the loss is 3e\\+15 \\(it started at 2.55\\).*--learning_rate \\(now 1000\\)",
    ):
        guard.check(3e15, 12)
    with pytest.raises(TrainingDiverged, match="diverged at step 13: the loss is nan"):
        guard.check(math.nan, 13)
    with pytest.raises(TrainingDiverged, match="diverged at step 1: the loss is inf"):
        DivergenceGuard(args).check(math.inf, 1)


def test_a_config_too_large_for_the_machine_is_refused_before_allocating(tiny_bert_dir):
    from transformers import AutoConfig

    encoder = AutoConfig.from_pretrained(tiny_bert_dir)
    encoder.num_hidden_layers = 10_000_000  # a typo of 10 layers: ~65B parameters on this tiny shape
    config = ClmkeConfig(encoder=encoder, num_entities=7, num_relations=3)
    with pytest.raises(ValueError, match="10000000 layers .* more than the .* GiB of memory available"):
        ClmkeForLinkPrediction(config)


def test_a_saved_config_names_no_local_folder(clmke, tiny_bert_dir, tmp_path):
    clmke.config.encoder._name_or_path = str(tiny_bert_dir)
    clmke.save_pretrained(tmp_path / "saved")
    text = (tmp_path / "saved" / "config.json").read_text()
    assert str(tiny_bert_dir) not in text and str(tmp_path) not in text
    assert f'"_name_or_path": "{tiny_bert_dir.name}"' in text
    reloaded = ClmkeForLinkPrediction.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(reloaded.load_or_build_entity_index().keys, clmke.load_or_build_entity_index().keys)


# ------------------------------------------------------------------------------------ damaged files: one line each
@pytest.fixture
def saved_clmke(clmke, tmp_path):
    clmke.build_entity_index()
    clmke.save_pretrained(tmp_path / "saved")
    return tmp_path / "saved"


@pytest.mark.parametrize("bad", [None, "", float("nan")])
def test_a_kg_vocab_with_a_missing_id_is_refused_naming_its_row(saved_clmke, bad):
    import json

    from lmke_hf import LmkeTokenizer

    vocab = json.loads((saved_clmke / "kg_vocab.json").read_text())
    vocab["entity_ids"][3] = bad
    (saved_clmke / "kg_vocab.json").write_text(json.dumps(vocab))
    with pytest.raises(ValueError, match="`entity_ids` row 3 is .*: every entity and relation needs a non-empty id"):
        LmkeTokenizer.from_pretrained(saved_clmke)
    (saved_clmke / "kg_vocab.json").write_text('{"entity_ids": [')
    with pytest.raises(ValueError, match="kg_vocab.json is damaged"):
        LmkeTokenizer.from_pretrained(saved_clmke)


@pytest.mark.parametrize("case", ["wrong width", "3-D", "ints", "missing key", "garbage"])
def test_a_malformed_entity_index_is_ignored_with_a_warning_and_encoded_again(saved_clmke, caplog, case):
    from safetensors.torch import save_file

    path = saved_clmke / "entity_index.safetensors"
    n, width = 7, ClmkeForLinkPrediction.from_pretrained(saved_clmke).config.encoder.hidden_size
    if case == "garbage":
        path.write_bytes(b"\x00garbage" * 10)
    else:
        keys = {
            "wrong width": torch.ones(n, width + 1),
            "3-D": torch.ones(n, width, 2),
            "ints": torch.ones(n, width, dtype=torch.int64),
        }.get(case)
        save_file({"keys": keys} if keys is not None else {"other": torch.ones(n, width)}, str(path))
    model = ClmkeForLinkPrediction.from_pretrained(saved_clmke)
    with caplog.at_level("WARNING"):
        assert model.load_entity_index() is None
    assert "ignoring it; the entity keys are encoded again" in caplog.text
    assert (
        model.load_or_build_entity_index().keys.shape == (n, width)
        and len(model.predict(head=0, relation=0, top_k=2)) == 2
    )


def test_torn_weights_and_a_config_of_another_shape_are_one_line_errors(saved_clmke):
    import json

    weights = saved_clmke / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="are damaged \\(a save cut short"):
        ClmkeForLinkPrediction.from_pretrained(saved_clmke)
    weights.write_bytes(data)
    config = json.loads((saved_clmke / "config.json").read_text())
    config["encoder"]["intermediate_size"] += 8
    (saved_clmke / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError) as info:
        ClmkeForLinkPrediction.from_pretrained(saved_clmke)
    assert "\n" not in str(info.value) and (
        "disagree on tensor shapes" in str(info.value) or "does not hold" in str(info.value)
    )


def test_a_run_stopped_before_it_wrote_anything_is_started_again_without_a_flag(
    clmke_script, kg_dir, tiny_bert_dir, tmp_path
):
    from lmke_hf.folders import claim_folder

    from helpers import _clmke_argv

    out = claim_folder(tmp_path / "run", "training-run")
    (out / "training_args.json").write_text(
        '{"method": "C-LMKE", "args": {}}'
    )  # what a run killed while tokenising leaves
    results = clmke_script.main(
        clmke_script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 1))
    )
    assert results["completed_steps"] == 1


def test_a_full_disk_at_a_checkpoint_says_so_and_removes_the_partial_save(
    clmke_script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch
):
    import shutil
    from collections import namedtuple

    from accelerate import Accelerator

    from helpers import RESUME_FLAGS, _clmke_argv

    out = tmp_path / "run"
    clmke_script.main(
        clmke_script.parse_args(
            _clmke_argv(
                kg_dir, no_dropout_encoder, out, "--max_train_steps", 4, "--checkpoints_total_limit", 2, *RESUME_FLAGS
            )
        )
    )
    real_save = Accelerator.save_state

    def full_disk(self, output_dir=None, **kwargs):
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        (Path(output_dir) / "model.safetensors").write_bytes(b"half")
        raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos 4480 vs 4376")

    from pathlib import Path

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(Accelerator, "save_state", full_disk)
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, 10 << 30, 1 << 20))
    with pytest.raises(OSError, match="No space left on device while saving checkpoint step_6 into .*\\(1 MiB free\\)"):
        clmke_script.main(
            clmke_script.parse_args(
                _clmke_argv(
                    kg_dir,
                    no_dropout_encoder,
                    out,
                    "--max_train_steps",
                    8,
                    "--checkpoints_total_limit",
                    2,
                    "--resume_from_checkpoint",
                    "latest",
                    *RESUME_FLAGS,
                )
            )
        )
    names = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert names == ["step_4"]  # room was made first (step_2 went), the partial step_6 is gone, step_4 stays
    monkeypatch.setattr(Accelerator, "save_state", real_save)
