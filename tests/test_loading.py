"""Tests of lmke_hf.loading without trained models: what counts as a local path, the errors about folders (one
line, the closest names, the Hub never asked), the task argument and the same-KG check.

The checks on real checkpoints (and through the example scripts) are in tests/test_evaluate.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from lmke_hf.errors import UsageError
from lmke_hf.loading import (
    check_same_kg,
    checkpoint_source,
    flag_errors,
    load_model,
    local_folder,
    looks_like_local_path,
    one_line,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.mark.parametrize(
    "name, local",
    [
        ("./runs/clmke", True),
        ("../clmke", True),
        (".hidden", True),
        ("/abs/run", True),
        ("~/runs/clmke", True),
        ("runs/clmke/best", True),  # more than one '/': no Hub id
        ("a b", True),  # no valid Hub id
        ("org/clmke-umls", False),
        ("clmke-umls", False),  # a bare Hub id (like "bert-base-uncased")
    ],
)
def test_looks_like_local_path(name, local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert looks_like_local_path(name) is local


def test_an_existing_path_is_local_whatever_its_shape(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "org" / "clmke").mkdir(parents=True)
    assert looks_like_local_path("org/clmke") and looks_like_local_path("org")


@pytest.mark.parametrize("name", ["./no-such-run", "no/such/run", "~/no-such-run-lmke-test", "{tmp}/runs/none"])
def test_missing_local_path_is_named_and_never_asked_of_the_hub(name, tmp_path, no_network):
    name = name.format(tmp=tmp_path)
    for call in (local_folder, checkpoint_source, load_model):
        with pytest.raises(FileNotFoundError) as info:
            call(name)
        message = str(info.value)
        assert message.startswith(repr(name)) and "no such folder" in message and "\n" not in message
        assert "Hub was not asked" in message
    assert no_network == []


def test_missing_folder_names_the_close_ones(tmp_path):
    (tmp_path / "clmke-umls").mkdir()
    (tmp_path / "lmke-wn18rr").mkdir()
    with pytest.raises(FileNotFoundError, match=r"Did you mean '.*clmke-umls'\?"):
        local_folder(str(tmp_path / "clmke-umsl"))
    with pytest.raises(FileNotFoundError, match="holds no folder of a similar name"):
        local_folder(str(tmp_path / "zzz"))
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'a'} does not exist either"):
        local_folder(str(tmp_path / "a" / "b" / "c"))


def test_required_folder_and_files(tmp_path, no_network):
    assert local_folder("org/name") is None  # a Hub id: not this function's business
    with pytest.raises(FileNotFoundError, match="'data': no such folder"):
        local_folder("data", required=True)  # --data_dir: always a folder
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file, not a folder"):
        local_folder(str(tmp_path / "file.txt"))
    with pytest.raises(ValueError, match="is empty"):
        local_folder("")
    assert local_folder(str(tmp_path)) == tmp_path
    assert no_network == []


@pytest.mark.parametrize(
    "layout, expected",
    [
        ({}, "it is empty"),
        ({"best/config.json": "{}"}, "the checkpoints inside it: '{name}/best'"),
        ({"train.tsv": "a\tr\tb\n"}, "it holds a knowledge graph (train.tsv), not a model"),
        ({"training_args.json": "{}", "checkpoints/step_2/x": ""}, "a training run that has not finished"),
        ({"notes.txt": "x"}, "it has no config.json."),
    ],
)
def test_folder_that_is_no_checkpoint_says_what_it_holds(layout, expected, tmp_path, no_network):
    run = tmp_path / "run"
    run.mkdir()
    for rel, text in layout.items():
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text(text)
    for call in (checkpoint_source, load_model):
        with pytest.raises(ValueError) as info:
            call(str(run))
        message = str(info.value)
        assert "is a folder but no LMKE / C-LMKE checkpoint: it has no config.json" in message
        assert expected.format(name=run) in message and "\n" not in message
    assert no_network == []


def test_foreign_or_broken_config_is_named(tmp_path, no_network):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match=r"is a 'bert' checkpoint, not an LMKE / C-LMKE model"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({"hidden_size": 8}))
    with pytest.raises(ValueError, match="names no model_type"):
        load_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json cannot be read"):
        load_model(str(tmp_path))
    assert no_network == []


def test_unknown_task_is_refused_before_anything_is_read(no_network):
    with pytest.raises(
        ValueError,
        match=r"task='link_prediction' is unknown; use one of \['link-prediction', 'triple-classification'\]",
    ):
        load_model("./no-such-run", task="link_prediction")
    assert no_network == []


def test_flag_errors_is_one_line_with_the_flag():
    with pytest.raises(UsageError) as info, flag_errors("--model"):
        raise FileNotFoundError("'./x': no such folder\n  (more)")
    assert str(info.value) == "--model './x': no such folder (more)"
    with pytest.raises(UsageError) as info, flag_errors("--dataset"):
        raise ValueError("Could not load 'umsl'.")
    assert str(info.value) == "--dataset: Could not load 'umsl'."
    with pytest.raises(UsageError) as info, flag_errors("--dataset"):  # names its flag already: unchanged
        raise UsageError("--inductive_fraction: too large")
    assert str(info.value) == "--inductive_fraction: too large"
    with pytest.raises(KeyError), flag_errors("--model"):  # a bug is no user mistake: its traceback stays
        raise KeyError("x")
    assert one_line(OSError("a\n\tb  c")) == "a b c"


def _kg(entities, relations=("r",), name="kg"):
    return SimpleNamespace(name=name, entities={"id": list(entities)}, relations={"id": list(relations)})


@pytest.mark.parametrize(
    "entities, relations, expected",
    [
        (["b", "a"], ["r"], r"other entities than the KG 'kg' \(2 vs 2 entities; same ids in another order\)"),
        (["a", "c"], ["r"], r"unknown to the model: \['c'\]; not in the KG: \['b'\]"),
        (["a", "b"], ["s"], r"other relations than the KG"),
    ],
)
def test_check_same_kg(entities, relations, expected):
    tokenizer = SimpleNamespace(entity_ids=["a", "b"], relation_ids=["r"])
    check_same_kg(tokenizer, _kg(["a", "b"]), "m")  # the same KG passes
    with pytest.raises(ValueError, match=expected) as info:
        check_same_kg(tokenizer, _kg(entities, relations), "m")
    assert str(info.value).startswith("'m' was trained on")
    with pytest.raises(ValueError, match="^The model was trained on"):
        check_same_kg(tokenizer, _kg(entities, relations))


def test_the_package_exports_them():
    import lmke_hf

    assert lmke_hf.load_model is load_model and lmke_hf.check_same_kg is check_same_kg
    assert {"load_model", "check_same_kg"} <= set(lmke_hf.__all__)


def test_hub_id_that_is_nowhere_names_both_places_and_a_close_local_folder(tmp_path, monkeypatch, local_hub):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "clmke-umls").mkdir(parents=True)
    with pytest.raises(OSError) as info:
        load_model("runs/clmke-umsl")  # an 'org/name' shape: the Hub is asked, and knows no such repo
    message = str(info.value)
    assert message.startswith("'runs/clmke-umsl' is no local folder") and "cannot be read from the Hub" in message
    assert "Did you mean 'runs/clmke-umls'?" in message and "\n" not in message
