"""Numbers and sizes that must not pass silently (issue 18, items 5-7): NaN keys and odd `top_k` in `predict`, a
diverging loss, a configuration too large for the machine, local paths in a saved `config.json`."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from lmke_hf import ClmkeConfig, ClmkeForLinkPrediction
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
    keys = clmke.entity_index.clone()
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
    with pytest.raises(SystemExit, match="diverged at step 12: the loss is 3e\\+15 \\(it started at 2.55\\).*--learning_rate \\(now 1000\\)"):
        guard.check(3e15, 12)
    with pytest.raises(SystemExit, match="diverged at step 13: the loss is nan"):
        guard.check(math.nan, 13)
    with pytest.raises(SystemExit, match="diverged at step 1: the loss is inf"):
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
    torch.testing.assert_close(reloaded.entity_index, clmke.entity_index)
