"""Trained LMKE models through a real (local) Hub server: push, pull, predict, cards, bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import yaml
from _hide_package import HIDE_LMKE_HF
from transformers import AutoModel

import lmke_hf
from lmke_hf import ClmkeForLinkPrediction, LmkeTokenizer
from lmke_hf.modelcard import ModelCard

ENTITIES = ["cat", "dog", "wolf", "animal", "pet"]
DESCRIPTIONS = ["cat, a small feline pet", "dog, a domestic animal", "wolf, a wild dog", "animal, a living thing", ""]


@pytest.fixture(scope="module")
def trained(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = LmkeTokenizer(
        AutoTokenizer.from_pretrained(tiny_bert_dir),
        [f"e{i}" for i in range(5)],
        ["is_a", "likes"],
        ENTITIES,
        DESCRIPTIONS,
        ["is a", "likes"],
        None,
        8,
        4,
        8,
    )
    torch.manual_seed(0)
    model = ClmkeForLinkPrediction.from_encoder_pretrained(tiny_bert_dir, tokenizer)
    model.set_entity_degrees(torch.tensor([3.0, 2.0, 1.0, 0.0, 4.0]))
    model.attach_tokenizer(tokenizer)
    model.build_entity_index()
    return model.eval(), tokenizer


def _card(model_id="test-org/x"):
    results = {"test_mrr": 0.5, "test_mr": 2.0, "test_hits@1": 0.25, "test_hits@3": 0.75, "test_hits@10": 1.0}
    return ModelCard(
        task="link-prediction",
        dataset="toy",
        results=results,
        args={"encoder": "tiny"},
        command="accelerate launch examples/train_clmke.py --dataset toy",
        model_id=model_id,
        degree_features=True,
        degree_buckets={1: {"count": 2, "mrr": 0.5, "hits@1": 0.5, "hits@10": 1.0}},
    )


def test_push_then_from_pretrained_round_trip(trained, local_hub, hub_repo_id, tmp_path):
    model, tokenizer = trained
    folder = tmp_path / "out"
    model.save_pretrained(folder)
    _card(hub_repo_id).save(folder)
    from huggingface_hub import HfApi

    api = HfApi(token="test")
    api.create_repo(hub_repo_id, exist_ok=True)
    api.upload_folder(repo_id=hub_repo_id, folder_path=str(folder))
    files = set(local_hub.list_files(hub_repo_id))
    assert {
        "config.json",
        "model.safetensors",
        "modeling_clmke.py",
        "modeling_base.py",
        "configuration_lmke.py",
        "tokenization_lmke.py",
        "kg_vocab.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "entity_index.safetensors",
        "README.md",
    } <= files
    assert not any(f.endswith(".bin") for f in files)
    card = local_hub.read_file(hub_repo_id, "README.md").decode()
    meta = yaml.safe_load(card.split("---")[1])
    metrics = {m["type"]: m["value"] for m in meta["model-index"][0]["results"][0]["metrics"]}
    assert metrics["mrr"] == 0.5 and metrics["hits@10"] == 1.0

    loaded = AutoModel.from_pretrained(hub_repo_id)
    assert isinstance(loaded, ClmkeForLinkPrediction)
    assert torch.equal(loaded.entity_degrees, model.entity_degrees)
    assert torch.allclose(loaded.load_entity_index().keys, model.entity_index.keys, atol=1e-6)
    ours = model.predict(head="cat", relation="is_a", top_k=5)
    theirs = loaded.predict(head="cat", relation="is_a", top_k=5)
    assert [r["entity_id"] for r in ours] == [r["entity_id"] for r in theirs]
    assert [r["score"] for r in ours] == pytest.approx([r["score"] for r in theirs], abs=1e-6)


def test_model_push_to_hub_mixin_carries_tokenizer_and_index(trained, local_hub, hub_repo_id):
    model, _ = trained
    model.push_to_hub(hub_repo_id, token="test")
    files = set(local_hub.list_files(hub_repo_id))
    assert {"model.safetensors", "kg_vocab.json", "entity_index.safetensors", "modeling_clmke.py"} <= files


def test_trust_remote_code_from_hub_without_lmke_hf(trained, local_hub, hub_repo_id, tmp_path):
    model, _ = trained
    model.push_to_hub(hub_repo_id, token="test")
    expected = model.predict(tail="animal", relation="is_a", top_k=3)
    script = (
        HIDE_LMKE_HF
        + f"""
import sys
sys.path = [p for p in sys.path if 'work/main' not in p and p not in ('', '.')]
try:
    import lmke_hf
    raise SystemExit('lmke_hf importable')
except ImportError:
    pass
from transformers import AutoModel
m = AutoModel.from_pretrained({hub_repo_id!r}, trust_remote_code=True)
print([r['entity_id'] for r in m.predict(tail='animal', relation='is_a', top_k=3)])
"""
    )
    import os

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1].endswith(str([r["entity_id"] for r in expected]))


def test_predict_by_name_id_and_errors(trained):
    model, _ = trained
    by_name = model.predict(head="cat", relation="is a", top_k=2)
    by_id = model.predict(head="e0", relation="is_a", top_k=2)
    assert by_name == by_id and len(by_name) == 2
    assert by_name[0]["score"] >= by_name[1]["score"]
    with pytest.raises(KeyError, match="Unknown entity 'zebra'"):
        model.predict(head="zebra", relation="is_a")
    with pytest.raises(KeyError, match="Unknown relation"):
        model.predict(head="cat", relation="eats")
    with pytest.raises(ValueError, match="exactly one"):
        model.predict(head="cat", tail="dog", relation="is_a")


def test_ambiguous_name_lists_candidates(tiny_bert_dir):
    from transformers import AutoTokenizer

    tokenizer = LmkeTokenizer(
        AutoTokenizer.from_pretrained(tiny_bert_dir), ["a1", "a2"], ["r"], ["bank", "bank"], None, None, None, 4, 4, 4
    )
    model = ClmkeForLinkPrediction.from_encoder_pretrained(tiny_bert_dir, tokenizer)
    model.attach_tokenizer(tokenizer)
    with pytest.raises(KeyError, match=r"ambiguous: 2 candidates: a1 \(bank\), a2 \(bank\)"):
        model.predict(head="bank", relation="r")


def test_add_entities_is_inductive_and_keeps_old_scores(trained):
    import copy

    model = copy.deepcopy(trained[0])
    model._kg_tokenizer = copy.deepcopy(trained[1])
    before = model.predict(head="cat", relation="is_a", top_k=5)
    new = model.add_entities(["e_new"], ["fox"], ["fox, a wild canine"])
    assert new.tolist() == [5]
    assert model.entity_index.num_entities == 6 and model.config.num_entities == 6
    after = {r["entity_id"]: r["score"] for r in model.predict(head="cat", relation="is_a", top_k=6)}
    assert "e_new" in after
    for r in before:
        assert after[r["entity_id"]] == pytest.approx(r["score"], abs=1e-6)
    assert model.predict(head="fox", relation="likes", top_k=1)


def test_missing_repo_and_revision_are_clear(local_hub, hub_repo_id):
    with pytest.raises(OSError, match="not a valid model identifier|not a local folder"):
        AutoModel.from_pretrained("test-org/does-not-exist")
    local_hub.create_model_repo(hub_repo_id, {"config.json": b'{"model_type": "clmke"}'})
    with pytest.raises(OSError, match="not a valid git identifier|revision"):
        AutoModel.from_pretrained(hub_repo_id, revision="nope")


def test_checkpoint_of_another_model_type_is_refused(trained, tmp_path):
    model, _ = trained
    model.save_pretrained(tmp_path / "c")
    with pytest.raises(ValueError, match=r"does not hold a LmkeForTripleClassification checkpoint .*AutoModel"):
        lmke_hf.LmkeForTripleClassification.from_pretrained(tmp_path / "c")


def test_card_without_metrics_is_an_error():
    card = ModelCard(task="link-prediction", dataset="toy", results={}, args={}, command="x")
    with pytest.raises(ValueError, match="no test metrics"):
        card.render()


def test_revision_pins_tokenizer_and_entity_index_too(trained, local_hub, hub_repo_id):
    """A model loaded at an older revision reads that revision's kg_vocab.json and entity index, not main's."""
    import copy

    from huggingface_hub import HfApi

    model, _ = trained
    first = model.push_to_hub(hub_repo_id, token="test").oid
    newer = copy.deepcopy(model)
    with torch.no_grad():
        newer.key_encoder.embeddings.LayerNorm.weight.mul_(1.5)  # different keys on main
    newer.attach_tokenizer(copy.deepcopy(model.kg_tokenizer))
    newer.add_entities(["e5"], ["fox"], ["fox, a wild animal"])
    newer.push_to_hub(hub_repo_id, token="test")
    assert HfApi().model_info(hub_repo_id).sha != first
    old = AutoModel.from_pretrained(hub_repo_id, revision=first)
    assert old.load_kg_tokenizer().num_entities == 5
    assert torch.allclose(old.load_entity_index().keys, model.entity_index.keys, atol=1e-6)
    latest = AutoModel.from_pretrained(hub_repo_id)
    assert latest.load_kg_tokenizer().num_entities == 6 and latest.load_entity_index().num_entities == 6


def test_save_pretrained_with_push_to_hub_uploads_tokenizer_and_index(trained, local_hub, hub_repo_id, tmp_path):
    model, _ = trained
    folder = tmp_path / "saved"
    model.save_pretrained(folder, push_to_hub=True, repo_id=hub_repo_id, token="test")
    assert (folder / "kg_vocab.json").is_file() and (folder / "entity_index.safetensors").is_file()
    files = set(local_hub.list_files(hub_repo_id))
    assert {
        "model.safetensors",
        "config.json",
        "kg_vocab.json",
        "entity_index.safetensors",
        "modeling_clmke.py",
    } <= files
