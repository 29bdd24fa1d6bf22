"""Inductive link prediction (issue 20 item 5): `make_inductive_split` holds entities out of training with all their
triples; `evaluate --inductive_fraction` ranks them by their descriptions and refuses a model that trained on them."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lmke_hf.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lmke_hf.kg import held_out_entities, load_kg, make_inductive_split, save_prepared  # noqa: E402
from lmke_hf.kg.prepared import _load_hub  # noqa: E402

from helpers import _clmke_argv, _load_script  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def umls():
    if not (SHARED_DATA / "umls").is_dir():
        pytest.skip(f"UMLS is not at {SHARED_DATA / 'umls'} (the project's shared data folder)")
    return load_kg("umls", data_dir=str(SHARED_DATA))


def _rows(triples) -> set:
    return set(map(tuple, np.asarray(triples).tolist()))


def test_held_out_entities_never_occur_in_training_and_every_evaluation_triple_touches_one(umls):
    split = make_inductive_split(umls, fraction=0.2, seed=3)
    info = split.report["inductive"]
    held = held_out_entities(split)
    assert (
        len(held)
        == info["held_out_validation_entities"] + info["held_out_test_entities"]
        == round(0.2 * umls.num_entities)
    )
    train = split.triples("train")
    assert not np.isin(train[:, [0, 2]], held).any()
    for name in ("validation", "test"):
        part = split.triples(name)
        assert len(part) and np.isin(part[:, [0, 2]], held).any(1).all()
    # training is the old training split less the triples of held-out entities; nothing is invented
    assert _rows(train) <= _rows(umls.triples("train"))
    assert len(umls.triples("train")) - len(train) == info["train_triples_removed"]
    old = _rows(np.concatenate([umls.triples(s) for s in ("train", "validation", "test")]))
    assert _rows(split.triples("validation")) | _rows(split.triples("test")) <= old
    assert not _rows(split.triples("validation")) & _rows(split.triples("test"))
    assert (
        split.name == "umls-inductive" and split.num_entities == umls.num_entities
    )  # held-out entities keep their rows


def test_the_split_is_a_function_of_the_seed(umls):
    a, b, c = (make_inductive_split(umls, 0.1, seed) for seed in (0, 0, 1))
    assert np.array_equal(a.triples("test"), b.triples("test"))
    assert not np.array_equal(held_out_entities(a), held_out_entities(c))


@pytest.mark.parametrize("fraction", [0, 1, 1.5, -0.1, True, 0.001])
def test_a_fraction_that_leaves_nothing_to_hold_out_or_train_is_refused(umls, fraction):
    with pytest.raises(ValueError, match="fraction"):
        make_inductive_split(umls, fraction)


def test_evaluate_refuses_a_model_trained_on_held_out_entities_and_ranks_an_inductive_one(
    kg_dir, tiny_bert_dir, tmp_path
):
    from lmke_hf import ClmkeForLinkPrediction

    train = _load_script("train_clmke")
    evaluate = _load_script("evaluate")
    out = tmp_path / "transductive"
    train.main(train.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 1)))
    argv = ["--model", str(out), "--dataset", str(kg_dir), "--inductive_fraction", "0.4", "--no_progress"]
    with pytest.raises(
        UsageError,
        match="trained on triples of .* entities this split holds out .* "
        "lmke-hf prepare tinykg --inductive_fraction 0.4 --inductive_seed 0 --output_dir DIR",
    ):
        evaluate.main(evaluate.parse_args([*argv, "--output_dir", str(tmp_path / "eval-refused")]))
    assert not (tmp_path / "eval-refused").exists()  # refused before the output folder is claimed

    # the same weights with the training degrees of the inductive split: accepted, and only inductive triples ranked
    split = make_inductive_split(load_kg(str(kg_dir)), 0.4, 0)
    model = ClmkeForLinkPrediction.from_pretrained(out / "best" if (out / "best").is_dir() else out)
    model.set_entity_degrees(torch.as_tensor(split.degrees(["train"]), dtype=torch.float32))
    inductive = tmp_path / "inductive"
    model.save_pretrained(inductive)
    for name in ("kg_vocab.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (out / name).is_file():
            (inductive / name).write_bytes((out / name).read_bytes())
    argv[1] = str(inductive)
    results = evaluate.main(evaluate.parse_args([*argv, "--output_dir", str(tmp_path / "eval")]))
    assert results["dataset"] == "tinykg-inductive" and results["num_examples"] == len(split.triples("test"))
    assert 0 < results["test_mrr"] <= 1

    # the same split written by `prepare --inductive_fraction` keeps the guards: the transductive model is refused,
    # the inductive one ranks the same test triples, graph re-ranking is refused, and the split is not split again
    prepare = _load_script("prepare_kg")
    prepared = prepare.main(
        prepare.parse_args(
            [str(kg_dir), "--output_dir", str(tmp_path / "ind"), "--inductive_fraction", "0.4", "--no_negatives"]
        )
    )
    on_prepared = ["--dataset", str(prepared), "--no_progress"]
    refused = f"{re.escape(f'--dataset {prepared}')}: the model was trained on triples of .* holds out .* "
    refused += re.escape(f"Train it on this folder: --dataset {prepared}.")
    with pytest.raises(UsageError, match=refused):
        evaluate.main(evaluate.parse_args(["--model", str(out), *on_prepared, "--output_dir", str(tmp_path / "e1")]))
    assert not (tmp_path / "e1").exists()  # refused before the output folder is claimed
    again = evaluate.main(
        evaluate.parse_args(["--model", str(inductive), *on_prepared, "--output_dir", str(tmp_path / "e2")])
    )
    assert again["dataset"] == "tinykg-inductive" and again["test_mrr"] == pytest.approx(results["test_mrr"])
    with pytest.raises(
        UsageError, match=re.escape(f"--rerank_weight 0.05: tinykg-inductive (--dataset {prepared}) is an inductive")
    ):
        evaluate.main(
            evaluate.parse_args(
                [
                    "--model",
                    str(inductive),
                    *on_prepared,
                    "--rerank_weight",
                    "0.05",
                    "--output_dir",
                    str(tmp_path / "e3"),
                ]
            )
        )
    with pytest.raises(
        UsageError,
        match="--inductive_fraction: tinykg-inductive is already an inductive split \\(fraction 0.4, seed 0\\)",
    ):
        evaluate.main(
            evaluate.parse_args(
                [
                    "--model",
                    str(inductive),
                    *on_prepared,
                    "--inductive_fraction",
                    "0.4",
                    "--output_dir",
                    str(tmp_path / "e4"),
                ]
            )
        )


def test_prepare_writes_the_inductive_split_that_load_kg_reads_back(kg_dir, tmp_path):
    prepare = _load_script("prepare_kg")
    out = prepare.main(
        prepare.parse_args(
            [str(kg_dir), "--output_dir", str(tmp_path / "ind"), "--inductive_fraction", "0.4", "--no_negatives"]
        )
    )
    written = load_kg(str(out))
    expected = make_inductive_split(load_kg(str(kg_dir)), 0.4, 0)
    for name in ("train", "validation", "test"):
        assert _rows(written.triples(name)) == _rows(expected.triples(name))
    # the split says it is inductive once written and read back (evaluate's guards read it), and its card says so
    assert written.report["inductive"] == expected.report["inductive"] and written.name == "tinykg-inductive"
    info = expected.report["inductive"]
    assert (
        f"{info['held_out_validation_entities']:,} validation and {info['held_out_test_entities']:,} test entities "
        "never occur in `train`" in (out / "README.md").read_text()
    )
    assert _load_hub(str(out), None, "auto").report["inductive"] == info  # the Hub dataset reader too
    # the default path adds classification negatives after the split: the record stays, the card counts positives
    with_negatives = prepare.main(
        prepare.parse_args([str(kg_dir), "--output_dir", str(tmp_path / "ind-neg"), "--inductive_fraction", "0.4"])
    )
    assert load_kg(str(with_negatives)).report["inductive"] == info
    assert "every positive validation and test triple" in (with_negatives / "README.md").read_text()
    # a transductive folder records nothing and its card says nothing about held-out entities
    plain = prepare.main(prepare.parse_args([str(kg_dir), "--output_dir", str(tmp_path / "plain"), "--no_negatives"]))
    assert "inductive" not in json.loads((plain / "lmke_hf_kg.json").read_text())
    assert "Inductive split" not in (plain / "README.md").read_text() and "inductive" not in load_kg(str(plain)).report
    # an inductive folder is not split again
    with pytest.raises(UsageError, match="--inductive_fraction: tinykg-inductive is already an inductive split"):
        prepare.main(
            prepare.parse_args([str(out), "--output_dir", str(tmp_path / "twice"), "--inductive_fraction", "0.4"])
        )
    with pytest.raises(UsageError, match="--inductive_fraction: .*fraction.* holds out"):  # leaves too few entities
        prepare.main(
            prepare.parse_args([str(kg_dir), "--output_dir", str(tmp_path / "bad"), "--inductive_fraction", "0.999"])
        )
    with pytest.raises(SystemExit):  # argparse: must be <= 1
        prepare.parse_args([str(kg_dir), "--output_dir", str(tmp_path / "bad"), "--inductive_fraction", "2"])


def test_a_prepared_folder_without_its_inductive_record_warns_and_a_malformed_record_is_refused(kg_dir, tmp_path):
    folder = save_prepared(make_inductive_split(load_kg(str(kg_dir)), 0.4, 0), tmp_path / "ind")
    metadata_path = folder / "lmke_hf_kg.json"
    metadata = json.loads(metadata_path.read_text())
    # as a folder prepared before the record existed: named inductive, recording nothing, so the guards are off
    metadata_path.write_text(json.dumps({k: v for k, v in metadata.items() if k != "inductive"}))
    with pytest.warns(UserWarning, match="tinykg-inductive records no inductive split .* Prepare it again"):
        assert "inductive" not in load_kg(str(folder)).report
    for bad in (True, {"fraction": 0.4}, [0.4, 0]):
        metadata_path.write_text(json.dumps({**metadata, "inductive": bad}))
        with pytest.raises(
            ValueError, match=r"lmke_hf_kg.json\): `inductive` must be a mapping with `fraction` and `seed`"
        ):
            load_kg(str(folder))


def test_an_inductive_split_of_a_known_graph_keeps_its_source_and_licence_notes(umls, tmp_path):
    card = (save_prepared(make_inductive_split(umls, 0.2, 3), tmp_path / "umls-ind") / "README.md").read_text()
    assert "# umls-inductive for LMKE" in card
    assert "Neph0s/LMKE `data/umls/`" in card and "No licence statement found for UMLS" in card
