"""`lmke-hf index` (issue 20): a trained C-LMKE model's entity index built into its folder in shards and another dtype,
kept when it is already the index of these weights, with a FAISS file and a NumPy export; folders of other files
refused."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from lmke_hf import ClmkeForLinkPrediction
from lmke_hf.commands import build_index
from lmke_hf.entity_index import MANIFEST_FILE, EntityIndex
from lmke_hf.errors import UsageError


def _run(*argv):
    return build_index.main(build_index.parse_args([*map(str, argv), "--no_progress", "--cpu_threads", "1"]))


@pytest.fixture
def run(clmke_run, tmp_path):
    out, _ = clmke_run
    copy = tmp_path / "run"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("checkpoints"))
    return copy


def test_the_index_is_built_into_the_model_folder_in_shards_and_loaded_from_there(run, tmp_path, capsys):
    pytest.importorskip("faiss", reason='FAISS is an optional extra: pip install "lmke_hf[faiss]"')
    assert not _run("--model", run)["built"]  # training saved the index of these weights: kept
    capsys.readouterr()
    summary = _run(
        "--model",
        run,
        "--rebuild",
        "--dtype",
        "float16",
        "--shard_size",
        4,
        "--faiss",
        "flat",
        "--export_numpy",
        tmp_path / "keys.npy",
    )
    assert (
        summary["built"]
        and summary["dtype"] == "float16"
        and json.loads(capsys.readouterr().out)["num_entities"] == summary["num_entities"]
    )
    assert (run / MANIFEST_FILE).is_file() and not (
        run / "entity_index.safetensors"
    ).exists()  # the old single file is gone
    assert (run / "entity_index.faiss").is_file() and (run / "entity_index.faiss.json").is_file()
    model = ClmkeForLinkPrediction.from_pretrained(run).eval()
    index = model.load_entity_index()
    assert index is not None and index.dtype == torch.float16 and len(index._shards) == -(-summary["num_entities"] // 4)
    keys = model.encode_entities()
    torch.testing.assert_close(index.keys.float(), keys, atol=2e-3, rtol=2e-3)
    np.testing.assert_array_equal(np.load(tmp_path / "keys.npy"), index.keys.float().numpy())
    assert not _run("--model", run)["built"]  # the new index is kept too
    assert _run("--model", run, "--rebuild", "--shard_size", 1000)["built"]
    assert sorted(p.name for p in run.glob("entity_index-*")) == [
        "entity_index-00001-of-00001.safetensors"
    ]  # old shards removed
    torch.testing.assert_close(EntityIndex.load(run).keys, keys)


def test_a_folder_of_other_files_and_a_hub_model_without_output_dir_are_refused(run, tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="--output_dir .*busy holds other files \\(notes.txt\\)"):
        _run("--model", run, "--output_dir", tmp_path / "busy")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    with pytest.raises(UsageError, match="--model org/some-model is a Hub model: give --output_dir"):
        _run("--model", "org/some-model")
    summary = _run("--model", run, "--output_dir", tmp_path / "elsewhere")
    assert summary["built"] and EntityIndex.load(tmp_path / "elsewhere").num_entities == summary["num_entities"]
