"""Tests of examples/evaluate.py: a saved folder or a Hub id, both tasks, any split, metrics to JSON, bad input.

The models are trained for a few steps by the training scripts on the tiny KG of `tests/helpers.py`; the
evaluation script must reproduce the metrics the training script wrote for the same checkpoint.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from lmke_hf.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import DEV, ENTITIES, TEST, _clmke_argv, _common, _load_script, write_tiny_kg  # noqa: E402

LINK_KEYS = ("mrr", "mr", "hits@1", "hits@3", "hits@10")


@pytest.fixture(scope="module")
def evaluate_script():
    return _load_script("evaluate")


@pytest.fixture(scope="module")
def clmke_out(kg_dir, tiny_bert_dir, tmp_path_factory):
    script = _load_script("train_clmke")
    out = tmp_path_factory.mktemp("eval_clmke") / "run"
    results = script.main(script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 3)))
    return out, results


@pytest.fixture(scope="module")
def lmke_out(kg_dir, tiny_bert_dir, tmp_path_factory):
    script = _load_script("train_lmke")
    out = tmp_path_factory.mktemp("eval_lmke") / "run"
    results = script.main(script.parse_args(_common(kg_dir, tiny_bert_dir, out, "--max_train_steps", 3)))
    return out, results


def _run(script, *argv):
    return script.main(script.parse_args([*map(str, argv), "--no_progress"]))


def test_link_prediction_reproduces_training_metrics(evaluate_script, clmke_out, kg_dir, tmp_path):
    out, trained = clmke_out
    results = _run(evaluate_script, "--model", out, "--dataset", kg_dir, "--output_dir", tmp_path)
    for key in LINK_KEYS:
        assert results[f"test_{key}"] == pytest.approx(trained[f"test_{key}"], abs=1e-6), key
    assert results["task"] == "link-prediction" and results["num_examples"] == len(TEST)
    assert {"test_tail_mrr", "test_head_mrr"} <= set(results)
    saved = json.loads((tmp_path / "test_results.json").read_text())
    assert saved["test_mrr"] == pytest.approx(results["test_mrr"])
    tables = json.loads((tmp_path / "test_metrics" / "metrics.json").read_text())
    assert {"overall", "per_direction", "per_relation", "per_degree_bucket"} <= set(tables)
    assert (tmp_path / "test_metrics" / "ranks.csv").read_text().count("\n") == 2 * len(TEST) + 1
    assert (tmp_path / "test_metrics" / "degree_buckets.png").read_bytes()[:4] == b"\x89PNG"


def test_reencoded_entities_give_the_same_ranks(evaluate_script, clmke_out, kg_dir, tmp_path):
    """The shipped entity_index.safetensors is what the weights encode (no stale index)."""
    from lmke_hf import ClmkeForLinkPrediction

    out, trained = clmke_out
    assert (out / "entity_index.safetensors").is_file()
    loaded = ClmkeForLinkPrediction.from_pretrained(out).eval()
    shipped = loaded.load_or_build_entity_index().keys.clone()
    torch.testing.assert_close(shipped, loaded.encode_entities(), rtol=1e-5, atol=1e-5)
    results = _run(
        evaluate_script, "--model", out, "--dataset", kg_dir, "--output_dir", tmp_path, "--reencode_entities"
    )
    assert results["test_mrr"] == pytest.approx(trained["test_mrr"], abs=1e-6)


def test_validation_split_one_direction_and_max_queries(evaluate_script, clmke_out, kg_dir, tmp_path):
    out, _ = clmke_out
    results = _run(
        evaluate_script,
        "--model",
        out,
        "--dataset",
        kg_dir,
        "--output_dir",
        tmp_path,
        "--split",
        "validation",
        "--directions",
        "tail",
        "--max_queries",
        4,
    )
    assert results["split"] == "validation" and results["validation_num_queries"] == 4
    assert "validation_head_mrr" not in results and 0 < results["validation_tail_mrr"] <= 1
    assert (tmp_path / "validation_results.json").is_file()
    assert len(DEV) > 4


def test_default_output_dir_is_inside_the_model_folder_and_leaves_the_run_alone(evaluate_script, clmke_out, kg_dir):
    out, _ = clmke_out
    before = (out / "test_metrics" / "metrics.json").read_bytes()
    _run(evaluate_script, "--model", out, "--dataset", kg_dir, "--max_queries", 2)
    assert json.loads((out / "eval" / "test_results.json").read_text())["test_mrr"] > 0
    assert (out / "test_metrics" / "metrics.json").read_bytes() == before  # the training run's full-test metrics


def test_triple_classification_reproduces_training_metrics(evaluate_script, lmke_out, kg_dir, tmp_path):
    out, trained = lmke_out
    results = _run(evaluate_script, "--model", out, "--dataset", kg_dir, "--output_dir", tmp_path)
    assert results["task"] == "triple-classification"
    for key in ("test_accuracy", "test_accuracy_tuned_global", "test_accuracy_tuned_per_relation"):
        assert results[key] == pytest.approx(trained[key]), key
    assert results["num_examples"] == 2 * len(TEST)  # positives + the generated negatives of seed 0
    thresholds = json.loads((tmp_path / "test_thresholds.json").read_text())  # tuned per relation on validation
    assert set(thresholds) == {str(r) for _, r, _ in DEV}
    assert thresholds == pytest.approx(
        json.loads((out / "thresholds.json").read_text())
    )  # as the training run tuned them


def test_hub_id_gives_the_same_metrics(evaluate_script, clmke_out, kg_dir, local_hub, hub_repo_id, tmp_path):
    from huggingface_hub import HfApi

    out, trained = clmke_out
    api = HfApi(token="test")
    api.create_repo(hub_repo_id, exist_ok=True)
    api.upload_folder(
        repo_id=hub_repo_id, folder_path=str(out), ignore_patterns=["checkpoints/*", "best/*", "test_metrics/*"]
    )
    results = _run(evaluate_script, "--model", hub_repo_id, "--dataset", kg_dir, "--output_dir", tmp_path)
    assert results["test_mrr"] == pytest.approx(trained["test_mrr"], abs=1e-6)
    assert results["model"] == hub_repo_id


def test_other_kg_stops_before_evaluating(evaluate_script, clmke_out, tmp_path):
    out, _ = clmke_out
    other = write_tiny_kg(tmp_path / "other", name="other")
    (other / "entities.txt").write_text("\n".join(reversed(ENTITIES)) + "\n")  # same ids, other order
    with pytest.raises(UsageError) as info:
        _run(evaluate_script, "--model", out, "--dataset", other, "--output_dir", tmp_path / "o")
    message = str(info.value)
    assert "other entities" in message and "another order" in message


def test_non_lmke_checkpoint_stops(evaluate_script, tiny_bert_dir, kg_dir, tmp_path):
    with pytest.raises(UsageError) as info:
        _run(evaluate_script, "--model", tiny_bert_dir, "--dataset", kg_dir, "--output_dir", tmp_path)
    assert "'bert'" in str(info.value) and "not an LMKE" in str(info.value)


def test_missing_model_stops_with_its_name(evaluate_script, kg_dir, tmp_path, local_hub):
    with pytest.raises(UsageError) as info:
        _run(evaluate_script, "--model", "test-org/does-not-exist", "--dataset", kg_dir, "--output_dir", tmp_path)
    assert "test-org/does-not-exist" in str(info.value)


@pytest.mark.parametrize(
    "flag, value", [("--per_device_eval_batch_size", "0"), ("--max_queries", "0"), ("--split", "dev")]
)
def test_bad_flags_stop_argparse(evaluate_script, kg_dir, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        evaluate_script.parse_args(["--model", str(tmp_path), "--dataset", str(kg_dir), flag, value])
    assert info.value.code == 2
    assert flag in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ run records and cards


def test_run_records_its_arguments_and_card_omits_tokens(kg_dir, tiny_bert_dir, tmp_path, monkeypatch):
    script = _load_script("train_clmke")
    out = tmp_path / "run"
    argv = _clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 1, "--hub_token", "hf_SECRET123")
    monkeypatch.setattr(sys, "argv", ["examples/train_clmke.py", *argv])  # the command line goes into card and JSON
    script.main(script.parse_args(argv))
    info = json.loads((out / "training_args.json").read_text())
    assert info["method"] == "C-LMKE" and info["args"]["max_train_steps"] == 1 and info["num_processes"] == 1
    assert "hub_token" not in info["args"] and "cores" in info["hardware"]
    card = (out / "README.md").read_text()
    assert "hf_SECRET123" not in card and "hf_SECRET123" not in (out / "training_args.json").read_text()
    assert info["hardware"] in card
    assert (
        "--hub_token ***" in card and "--hub_token ***" in info["command"] and "--max_train_steps 1" in info["command"]
    )


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--hub_token", "hf_a", "--seed", "1"], ["--hub_token", "***", "--seed", "1"]),
        (["--hub_token=hf_a"], ["--hub_token=***"]),
        (["--hub_tok", "hf_a"], ["--hub_tok", "***"]),  # argparse accepts unique prefixes
        (["--token", "x", "--hub_model_id", "org/m"], ["--token", "***", "--hub_model_id", "org/m"]),
    ],
)
def test_redact_argv(argv, expected):
    from lmke_hf.training import redact_argv

    assert redact_argv(argv) == expected


def test_export_card_copies_the_generated_files(clmke_out, tmp_path):
    from lmke_hf.modelcard import export_card

    out, _ = clmke_out
    copied = {p.name for p in export_card(out, tmp_path / "cards" / "x")}
    assert {"README.md", "all_results.json", "degree_buckets.png", "metrics.json"} <= copied
    assert (tmp_path / "cards" / "x" / "README.md").read_text() == (out / "README.md").read_text()
    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        export_card(tmp_path / "cards", tmp_path / "y")


@pytest.mark.parametrize("run", ["clmke_out", "lmke_out"])
def test_card_renders_again_from_the_run(run, request, tmp_path):
    """card.json holds what the card says: from_run reproduces README.md exactly, and export_card(rerender=True)
    writes that same text; a run without card.json (older runs) is rebuilt from its other files."""
    import shutil

    from lmke_hf.modelcard import ModelCard, export_card

    out, _ = request.getfixturevalue(run)
    readme = (out / "README.md").read_text()
    assert ModelCard.from_run(out).render() == readme
    assert "hub_token" not in (out / "card.json").read_text()
    export_card(out, tmp_path / "card", rerender=True)
    assert (tmp_path / "card" / "README.md").read_text() == readme
    assert ModelCard.from_run(tmp_path / "card").render() == readme  # model_cards/<name> can be re-rendered too

    legacy = tmp_path / "legacy"
    shutil.copytree(out, legacy, ignore=shutil.ignore_patterns("card.json", "checkpoints", "best", "*.safetensors"))
    info = json.loads((legacy / "training_args.json").read_text())
    assert info["kg"]["name"] == "tinykg" and info["kg"]["description_source"]
    del info["kg"]  # as written before the KG was recorded
    (legacy / "training_args.json").write_text(json.dumps(info))
    rebuilt = ModelCard.from_run(legacy)
    card = ModelCard.from_run(out)
    for name in (
        "task",
        "dataset",
        "results",
        "hardware",
        "description_source",
        "degree_features",
        "train_runtime_s",
        "plot",
    ):
        assert getattr(rebuilt, name) == getattr(card, name), name
    assert rebuilt.command == card.command and rebuilt.command.startswith(
        "python "
    )  # (under pytest: pytest's own argv)
    assert (rebuilt.degree_buckets is None) == (card.degree_buckets is None)
    if card.degree_buckets:
        assert {str(k): v for k, v in rebuilt.degree_buckets.items()} == {
            str(k): v for k, v in card.degree_buckets.items()
        }
    with pytest.raises(FileNotFoundError, match="not a finished training run"):
        ModelCard.from_run(tmp_path / "nothing")


# ------------------------------------------------------------------------------------------------ LMKE predict


def test_lmke_predict_by_id_and_name_matches_batch_scoring(lmke_out):
    import numpy as np
    from transformers import AutoModel

    from lmke_hf import LmkeTokenizer
    from lmke_hf.evaluation import score_triples

    out, _ = lmke_out
    model = AutoModel.from_pretrained(out)
    tokenizer = LmkeTokenizer.from_pretrained(out)
    triples = np.array(TEST)
    expected = score_triples(model, tokenizer, triples)
    heads = [tokenizer.entity_ids[h] for h in triples[:, 0]]
    tails = [tokenizer.entity_names[t] for t in triples[:, 2]]  # names work too (unique here)
    relations = [tokenizer.relation_ids[r] for r in triples[:, 1]]
    got = model.predict(heads, relations, tails, batch_size=4)
    assert [g["head"] for g in got] == heads and [g["tail"] for g in got] == [
        tokenizer.entity_ids[t] for t in triples[:, 2]
    ]
    np.testing.assert_allclose([g["score"] for g in got], expected, rtol=1e-5, atol=1e-6)
    assert [g["is_true"] for g in got] == [p > 0.5 for p in expected]
    single = model.predict(heads[0], relations[0], tails[0], threshold=0.0)
    assert len(single) == 1 and single[0]["is_true"] and single[0]["score"] == pytest.approx(expected[0], abs=1e-6)
    with pytest.raises(KeyError, match="Unknown entity 'atlantis'"):
        model.predict("atlantis", relations[0], tails[0])
    with pytest.raises(ValueError, match="as many heads"):
        model.predict(heads[:2], relations[:1], tails[:2])
    # numpy integers are entity / relation indices, one by one or as arrays
    by_index = model.predict(triples[:, 0], triples[:, 1], triples[:, 2])
    np.testing.assert_allclose([g["score"] for g in by_index], expected, rtol=1e-5, atol=1e-6)
    assert model.predict(triples[0, 0], triples[0, 1], triples[0, 2])[0]["head"] == heads[0]


def test_thresholds_tuned_on_the_evaluated_split_are_refused(evaluate_script, lmke_out, kg_dir, tmp_path):
    out, _ = lmke_out
    with pytest.raises(UsageError, match="--threshold_split validation is the split being evaluated"):
        _run(evaluate_script, "--model", out, "--dataset", kg_dir, "--split", "validation", "--output_dir", tmp_path)


@pytest.mark.parametrize("run", ["clmke_out", "lmke_out"])
def test_card_usage_snippet_runs(run, request):
    """The card's Python block works as written (with the local folder in place of the Hub id)."""
    import re

    out, _ = request.getfixturevalue(run)
    card = (out / "README.md").read_text()
    code = re.search(r"```python\n(.*?)```", card, re.S).group(1)
    model_id = re.search(r'from_pretrained\("([^"]+)"\)', code).group(1)
    namespace: dict = {}
    exec(code.replace(model_id, str(out)), namespace)  # noqa: S102 - the card's own snippet
    assert namespace["model"].name_or_path == str(out)


# ---------------------------------------------------------------- examples/own_entity_first.py


@pytest.fixture(scope="module")
def own_first_script():
    return _load_script("own_entity_first")


def _scored_by(rule):
    """A stand-in for `score_all`: one call for the whole split (batch_size >= its size), row i = triple i."""

    def score_all(q, q_ent, keys):
        return rule(torch.zeros(q.shape[0], keys.shape[0]))

    return score_all


@pytest.mark.parametrize("direction", ["tail", "head"])
def test_own_entity_first_counts_after_the_filter(own_first_script, clmke_out, kg_dir, direction, monkeypatch):
    from lmke_hf import load_model
    from lmke_hf.kg import load_kg

    out, _ = clmke_out
    model, tokenizer = load_model(str(out))
    kg = load_kg(str(kg_dir))
    triples = kg.triples("train")
    given, gold = (triples[:, 0], triples[:, 2]) if direction == "tail" else (triples[:, 2], triples[:, 0])
    index = kg.answer_index(["train", "validation", "test"], direction)
    rows, cols = index.pairs(given, triples[:, 1])
    others = [(r, c) for r, c in zip(rows, cols) if c != gold[r]]
    assert others, "the tiny KG must have queries with more than one known answer"
    arange = torch.arange(len(triples))

    def count(rule):
        monkeypatch.setattr(model, "score_all", _scored_by(rule))
        result = own_first_script.own_entity_first(model, tokenizer, kg, "train", direction, batch_size=len(triples))
        assert result["queries"] == len(triples)
        return result["own_entity_first"]

    def given_top(s):
        s[arange, torch.as_tensor(given)] = 1.0
        return s

    def others_above_given(s):  # other known answers outscore the given entity, but are filtered out
        s = given_top(s)
        for r, c in others:
            s[r, c] = 2.0
        return s

    def gold_above_given(s):  # the gold is never filtered
        s = given_top(s)
        s[arange, torch.as_tensor(gold)] = 2.0
        return s

    def everything_above_given(s):  # entities that are no known answer outrank the given one
        return given_top(s + 2.0)

    assert count(given_top) == len(triples)
    assert count(others_above_given) == len(triples)
    assert count(gold_above_given) == 0
    assert count(everything_above_given) == 0


def test_own_entity_first_cli(own_first_script, clmke_out, kg_dir, capsys):
    out, _ = clmke_out
    result = own_first_script.main(
        own_first_script.parse_args(["--model", str(out), "--dataset", str(kg_dir), "--max_queries", "4"])
    )
    assert result["queries"] == 4 and 0 <= result["own_entity_first"] <= 4
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["queries"] == 4


def test_own_entity_first_refuses_an_lmke_model(own_first_script, lmke_out, kg_dir):
    out, _ = lmke_out
    with pytest.raises(UsageError, match="triple classifier"):
        own_first_script.main(own_first_script.parse_args(["--model", str(out), "--dataset", str(kg_dir)]))


# ---------------------------------------------------------------- user mistakes in both scripts: one line, no Hub

SCRIPTS = ["evaluate", "own_entity_first"]


def _stops(name, *argv) -> str:
    """The one line a script ends with (SystemExit with a message: exit status 1, no traceback)."""
    script = _load_script(name)
    with pytest.raises(UsageError) as info:
        script.main(script.parse_args([*map(str, argv)]))
    message = str(info.value)
    assert isinstance(message, str) and "\n" not in message, message
    return message


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("model", ["./no-such-run", "runs/no/such", "~/no-such-lmke-run", "{tmp}/runs/clmke"])
def test_missing_model_folder_is_named_and_never_asked_of_the_hub(script, model, kg_dir, tmp_path, no_network):
    message = _stops(script, "--model", model.format(tmp=tmp_path), "--dataset", kg_dir)
    assert message.startswith(f"--model {model.format(tmp=tmp_path)!r}: no such folder"), message
    assert no_network == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_mistyped_model_folder_gets_the_close_names(script, clmke_out, kg_dir):
    out, _ = clmke_out
    message = _stops(script, "--model", out.parent / "rnu", "--dataset", kg_dir)
    assert f"Did you mean {str(out)!r}?" in message


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize(
    "layout, expected",
    [
        ("empty", "it is empty"),
        ("kg", "it holds a knowledge graph"),
        ("run-with-best", "the checkpoints inside it: "),
        ("config-only", "is a C-LMKE link predictor checkpoint whose weights or KG tokenizer do not load"),
    ],
)
def test_folder_that_is_no_checkpoint_is_named(script, layout, expected, clmke_out, kg_dir, tmp_path, no_network):
    import shutil

    out, _ = clmke_out
    folder = tmp_path / "model"
    if layout == "kg":
        folder = kg_dir
    else:
        folder.mkdir()
    if layout == "run-with-best":  # a run stopped before its final save (only best/ written)
        (folder / "best").mkdir()
        shutil.copy(out / "config.json", folder / "best" / "config.json")
    if layout == "config-only":
        shutil.copy(out / "config.json", folder / "config.json")
    message = _stops(script, "--model", folder, "--dataset", kg_dir)
    assert message.startswith(f"--model {str(folder)!r}") and expected in message, message
    assert layout == "config-only" or "is a folder but no LMKE / C-LMKE checkpoint" in message
    assert no_network == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_hub_model_is_one_line(script, kg_dir, local_hub):
    message = _stops(script, "--model", "test-org/does-not-exist", "--dataset", kg_dir)
    assert (
        message.startswith("--model 'test-org/does-not-exist' is no local folder")
        and "cannot be read from the Hub" in message
    )


@pytest.mark.parametrize("script", SCRIPTS)
def test_misspelt_dataset_name_is_one_line(script, clmke_out, tmp_path, local_hub):
    out, _ = clmke_out
    message = _stops(script, "--model", out, "--dataset", "umsl", "--data_dir", tmp_path)
    assert message.startswith("--dataset") and "'umsl'" in message


@pytest.mark.parametrize("script", SCRIPTS)
def test_missing_dataset_folder_is_named_and_never_asked_of_the_hub(script, clmke_out, tmp_path, no_network):
    out, _ = clmke_out
    message = _stops(script, "--model", out, "--dataset", tmp_path / "kgs" / "tinykg")
    assert message.startswith(f"--dataset {str(tmp_path / 'kgs' / 'tinykg')!r}: no such folder"), message
    assert no_network == []


@pytest.mark.parametrize("script", SCRIPTS)
@pytest.mark.parametrize("dataset", ["umls", "kg_dir"])  # a short name looked up there, or a folder that ignores it
def test_missing_data_dir_is_named(script, dataset, clmke_out, kg_dir, tmp_path, no_network):
    out, _ = clmke_out
    message = _stops(
        script, "--model", out, "--dataset", kg_dir if dataset == "kg_dir" else dataset, "--data_dir", tmp_path / "data"
    )
    assert message.startswith(f"--data_dir {str(tmp_path / 'data')!r}: no such folder"), message
    assert no_network == []


@pytest.mark.parametrize("script", SCRIPTS)
def test_a_mistake_ends_the_process_with_one_line_and_status_1(script, clmke_out, tmp_path):
    import subprocess

    out, _ = clmke_out
    missing = tmp_path / "data"
    proc = subprocess.run(
        [
            sys.executable,
            str(Path(__file__).resolve().parents[1] / "examples" / f"{script}.py"),
            "--model",
            str(out),
            "--dataset",
            "umls",
            "--data_dir",
            str(missing),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"--data_dir {str(missing)!r}: no such folder")


# ---------------------------------------------------------------- numeric flags: range-checked at parse time

BAD_NUMBERS = {
    "evaluate": [
        ("--per_device_eval_batch_size", "0"),
        ("--per_device_eval_batch_size", "-4"),
        ("--per_device_eval_batch_size", "8.5"),
        ("--max_queries", "0"),
        ("--max_queries", "ten"),
        ("--negatives_seed", "-1"),
        ("--negatives_seed", "1e3"),
        ("--cpu_threads", "0"),
        ("--cpu_threads", "nan"),
        ("--inductive_fraction", "0"),
        ("--inductive_fraction", "1.5"),
        ("--inductive_fraction", "nan"),
        ("--inductive_seed", "-1"),
        ("--rerank_weight", "nan"),
        ("--rerank_weight", "a bit"),
        ("--rerank_hops", "0"),
        ("--rerank_hops", "1.5"),
    ],
    "own_entity_first": [
        ("--max_queries", "0"),
        ("--max_queries", "-3"),
        ("--max_queries", "2.5"),
        ("--batch_size", "0"),
        ("--batch_size", "ten"),
        ("--batch_size", "inf"),
    ],
}


@pytest.mark.parametrize("script, flag, value", [(s, f, v) for s, cases in BAD_NUMBERS.items() for f, v in cases])
def test_bad_numbers_stop_argparse_naming_the_flag(script, flag, value, kg_dir, tmp_path, capsys):
    module = _load_script(script)
    with pytest.raises(SystemExit) as info:
        module.parse_args(["--model", str(tmp_path), "--dataset", str(kg_dir), flag, value])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}:" in err and value in err, err


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_flag_is_range_checked_and_in_the_table(script):
    """A numeric flag uses one of lmke_hf.training's checked types (POSITIVE_INT, ..., number()), never a bare
    int / float, and BAD_NUMBERS tries it."""
    parser = _load_script(script).build_parser()
    numeric = {
        action.option_strings[0]: action.type
        for action in parser._actions
        if action.type in (int, float)
        or str(getattr(action.type, "__module__", "")).startswith("lmke_hf.training")
        or (isinstance(action.default, (int, float)) and not isinstance(action.default, bool))
    }
    assert numeric, "the scripts have numeric flags"
    unchecked = [
        flag
        for flag, kind in numeric.items()
        if not str(getattr(kind, "__module__", "")).startswith("lmke_hf.training")
    ]
    assert not unchecked, f"{script}.py: {unchecked} are not range-checked"
    assert set(numeric) == {flag for flag, _ in BAD_NUMBERS[script]}
