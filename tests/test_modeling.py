"""Tests of LMKE and C-LMKE as transformers models (`lmke_hf.modeling_base`, `modeling_lmke`, `modeling_clmke`):
what both share (output shapes, when a loss is returned, gradients, save / load and remote code,
`from_encoder_pretrained`, growing the KG, errors, configs) and LMKE's own outputs and loss. C-LMKE's own
(loss formula, matcher, scoring, leak guard) are in tests/test_modeling_clmke.py; the tokenizer in
tests/test_tokenizer.py.

Everything is tiny and offline: the encoder is conftest's `tiny_bert_dir` (random BERT, hidden 32, 2 layers,
~100 word pieces, model_max_length 64), the KG (`helpers.KG`) has 7 entities and 3 relations. Models and the
tokenizer are built once per session and deep-copied per test (conftest's `make_model`, `tok`); one table of model
cases (`helpers.MODEL_CASES`) drives the shape, loss, gradient and save/load tests, another the error tests.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from _hide_package import HIDE_LMKE_HF
from torch import nn
from transformers import AutoModel, BertConfig, PreTrainedModel

import lmke_hf
from lmke_hf import (
    ClmkeConfig,
    ClmkeForLinkPrediction,
    LinkPredictionOutput,
    LmkeConfig,
    LmkeForTripleClassification,
    LmkeTokenizer,
    TripleClassificationOutput,
)

from helpers import (
    DEGREES,
    KG,
    LENGTHS,
    MAIN_CASES,
    MODEL_CASES,
    NUM_ENTITIES,
    NUM_RELATIONS,
    QUERIES,
    TINY_ENCODER,
    TRIPLES,
    _ids,
    clmke_batch,
    lmke_batch,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def table_grad(model) -> torch.Tensor:
    """Gradient of the whole (vocabulary, dim) token table, whether it is one `nn.Embedding` or word / KG parts."""
    tables = (
        [model.word_embeddings]
        if isinstance(model.word_embeddings, nn.Embedding)
        else [model.word_embeddings.words, model.word_embeddings.kg]
    )
    return torch.cat([t.weight.grad if t.weight.grad is not None else torch.zeros_like(t.weight) for t in tables])


@pytest.mark.parametrize("model_class", [LmkeForTripleClassification, ClmkeForLinkPrediction])
def test_models_build_from_a_config_without_pad_token_id(model_class):
    config = model_class.config_class(
        encoder=BertConfig(vocab_size=20, **TINY_ENCODER), num_entities=4, num_relations=2
    )
    model = model_class(config)
    assert model.word_embeddings.num_embeddings == config.total_vocab_size


def test_every_model_class_has_a_case():
    exported = [getattr(lmke_hf, n) for n in lmke_hf.__all__]
    models = {c for c in exported if isinstance(c, type) and issubclass(c, PreTrainedModel) and c.config_class}
    assert models - {c.model_class for c in MODEL_CASES} == set()


# ---------------------------------------------------------------------------------------------------- shapes
def _shape(symbolic, b, h):
    return tuple({"B": b, "H": h}[s] for s in symbolic)


@pytest.mark.parametrize("case", MODEL_CASES, ids=_ids)
def test_output_shapes(case, tok, make_model):
    model = make_model(case.name)
    batch = case.make_batch(tok)
    b, h = len(next(iter(batch.values()))), model.config.encoder.hidden_size
    with torch.no_grad():
        out = model(**batch)
    expected_type = (
        TripleClassificationOutput if case.model_class is LmkeForTripleClassification else LinkPredictionOutput
    )
    assert isinstance(out, expected_type)
    assert out.loss is None
    for name, symbolic in case.shapes.items():
        value = getattr(out, name)
        assert tuple(value.shape) == _shape(symbolic, b, h), name
        assert torch.isfinite(value.float()).all(), name
    with torch.no_grad():
        as_tuple = model(**batch, return_dict=False)
    torch.testing.assert_close(as_tuple[0], out.logits)


def test_lmke_hidden_states(tok, make_model):
    model = make_model("lmke")
    batch = lmke_batch(tok)
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    assert len(out.hidden_states) == model.config.encoder.num_hidden_layers + 1
    torch.testing.assert_close(out.hidden_states[-1][:, 0], out.cls_embeddings)


def test_lmke_embeddings_are_outputs_at_h_r_t_positions(tok, make_model):
    """Positions come from the layout `[CLS] E_h desc(h) R_r desc(r) E_t desc(t) [SEP]` and description lengths."""
    model = make_model("lmke")
    batch = lmke_batch(tok)
    le, lr = LENGTHS["max_entity_description_length"], LENGTHS["max_relation_description_length"]
    head_pos, rel_pos, tail_pos = [], [], []
    for h, r, t in zip(TRIPLES["heads"], TRIPLES["relations"], TRIPLES["tails"]):
        rp = 2 + len(tok.entity_pieces[h][:le])
        head_pos.append(1)
        rel_pos.append(rp)
        tail_pos.append(rp + 1 + len(tok.relation_pieces[r][:lr]))
    rows = torch.arange(len(head_pos))
    ids = batch["input_ids"]
    eo, ro = tok.entity_token_offset, tok.relation_token_offset
    assert ids[rows, head_pos].tolist() == [eo + h for h in TRIPLES["heads"]]
    assert ids[rows, rel_pos].tolist() == [ro + r for r in TRIPLES["relations"]]
    assert ids[rows, tail_pos].tolist() == [eo + t for t in TRIPLES["tails"]]
    with torch.no_grad():
        out = model(**batch)
        hidden = model.encoder(
            inputs_embeds=model.word_embeddings(ids), attention_mask=batch["attention_mask"]
        ).last_hidden_state
    torch.testing.assert_close(out.cls_embeddings, hidden[:, 0])
    torch.testing.assert_close(out.head_embeddings, hidden[rows, head_pos])
    torch.testing.assert_close(out.relation_embeddings, hidden[rows, rel_pos])
    torch.testing.assert_close(out.tail_embeddings, hidden[rows, tail_pos])
    torch.testing.assert_close(out.logits, model.classifier(hidden[:, 0]).squeeze(-1))


def test_lmke_self_loop_head_and_tail_are_different_positions(tok, make_model):
    model = make_model("lmke")
    batch = tok.pad(tok.encode_triples([2], [1], [2]))
    with torch.no_grad():
        out = model(**batch)
        hidden = model.encoder(inputs_embeds=model.word_embeddings(batch["input_ids"])).last_hidden_state
    tail_pos = (
        2 + len(tok.entity_pieces[2]) + 1 + len(tok.relation_pieces[1][: LENGTHS["max_relation_description_length"]])
    )
    torch.testing.assert_close(out.head_embeddings, hidden[:, 1])
    torch.testing.assert_close(out.tail_embeddings, hidden[:, tail_pos])


# ---------------------------------------------------------------------------------------------------- loss presence
LOSS_PRESENCE = [(c, None) for c in MAIN_CASES] + [(c, way) for c in MAIN_CASES for way in c.loss_kwargs]


@pytest.mark.parametrize("case,way", LOSS_PRESENCE, ids=[f"{c.name}-{w or 'no-labels'}" for c, w in LOSS_PRESENCE])
def test_loss_only_when_targets_given(case, way, tok, make_model):
    model = make_model(case.name)
    batch = case.make_batch(tok)
    b = len(next(iter(batch.values())))
    with torch.no_grad():
        out = model(**batch, **(case.loss_kwargs[way](b) if way else {}))
    if way is None:
        assert out.loss is None
    else:
        assert out.loss.shape == () and torch.isfinite(out.loss) and out.loss > 0


def test_lmke_loss_is_binary_cross_entropy(tok, make_model):
    model = make_model("lmke")
    labels = torch.tensor([1.0, 0.0, 0.0, 1.0])
    with torch.no_grad():
        out = model(**lmke_batch(tok), labels=labels)
    p = torch.sigmoid(out.logits.double())
    expected = -(labels * p.log() + (1 - labels) * (1 - p).log()).mean()
    torch.testing.assert_close(out.loss.double(), expected, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("case", MAIN_CASES, ids=_ids)
def test_gradients_reach_kg_rows_and_every_encoder(case, tok, make_model):
    model = make_model(case.name)
    batch = case.make_batch(tok)
    b = len(next(iter(batch.values())))
    way = next(iter(case.loss_kwargs))
    model(**batch, **case.loss_kwargs[way](b)).loss.backward()

    row_norm = table_grad(model).norm(dim=1)
    if case.model_class is LmkeForTripleClassification:
        entities, relations = set(TRIPLES["heads"]) | set(TRIPLES["tails"]), set(TRIPLES["relations"])
    else:
        entities, relations = set(QUERIES["given"]) | set(QUERIES["gold"]), set(QUERIES["relations"])
    for e in range(NUM_ENTITIES):
        used = e in entities
        assert bool(row_norm[tok.entity_token_offset + e] > 0) == used, f"entity {e} (in batch: {used})"
    for r in relations:
        assert row_norm[tok.relation_token_offset + r] > 0, f"relation {r}"
    assert row_norm[tok.pad_token_id] == 0  # padding_idx
    for encoder in model._encoders():
        for name, p in encoder.named_parameters():
            assert p.grad is not None, name
            if not name.endswith("attention.self.key.bias"):  # softmax is shift-invariant: that gradient is ~0
                assert p.grad.abs().sum() > 0, name
    head = model.classifier if case.model_class is LmkeForTripleClassification else model.matcher
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())


# ---------------------------------------------------------------------------------------------------- save / load
def _outputs(model, batch) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = model(**batch)
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


@pytest.mark.parametrize("case", MAIN_CASES, ids=_ids)
def test_save_pretrained_then_auto_model_round_trip(case, tok, make_model, tmp_path):
    model = make_model(case.name)
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    module = {"lmke": "modeling_lmke", "clmke": "modeling_clmke"}[case.name]
    assert {
        "model.safetensors",
        "config.json",
        f"{module}.py",
        "modeling_base.py",
        "configuration_lmke.py",
        "tokenization_lmke.py",
    } <= files
    assert "pytorch_model.bin" not in files
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": f"configuration_lmke.{case.model_class.config_class.__name__}",
        "AutoModel": f"{module}.{case.model_class.__name__}",
    }
    assert config["model_type"] == case.model_class.config_class.model_type

    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert type(loaded) is case.model_class
    without_path = lambda c: {k: v for k, v in c.to_dict().items() if k != "_name_or_path"}  # noqa: E731
    assert without_path(loaded.config) == without_path(model.config)
    batch = case.make_batch(tok)
    expected, got = _outputs(model, batch), _outputs(loaded, batch)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    if case.degrees is not None:
        assert torch.equal(loaded.entity_degrees, torch.tensor(case.degrees))


_CHILD = HIDE_LMKE_HF + textwrap.dedent(
    """
    import os, sys
    repo = os.path.realpath(sys.argv[2])
    sys.path[:] = [p for p in sys.path if not os.path.realpath(p or ".").startswith(repo)]
    try:
        import lmke_hf
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit(f"lmke_hf is importable from {lmke_hf.__file__}")
    import torch
    from transformers import AutoModel

    expected = torch.load(sys.argv[1])
    for name, case in expected.items():
        model = AutoModel.from_pretrained(case["dir"], trust_remote_code=True).eval()
        module = type(model).__module__
        assert not module.startswith("lmke_hf"), module
        assert type(model).__name__ == case["class"], type(model).__name__
        with torch.no_grad():
            out = model(**case["inputs"])
        for key, value in case["outputs"].items():
            torch.testing.assert_close(getattr(out, key), value, rtol=0, atol=0, msg=f"{name}.{key}")
        if "entity_degrees" in case:
            assert torch.equal(model.entity_degrees, case["entity_degrees"])
    print("OK", sorted(expected))
    """
)


def test_auto_model_loads_with_remote_code_without_lmke_hf(tok, make_model, tmp_path):
    expected = {}
    for case in MAIN_CASES:
        model = make_model(case.name)
        folder = tmp_path / case.name
        model.save_pretrained(folder)
        batch = case.make_batch(tok)
        entry = {
            "dir": str(folder),
            "class": case.model_class.__name__,
            "inputs": batch,
            "outputs": _outputs(model, batch),
        }
        if case.degrees is not None:
            entry["entity_degrees"] = model.entity_degrees.clone()
        expected[case.name] = entry
    torch.save(expected, tmp_path / "expected.pt")
    empty = tmp_path / "empty_pythonpath"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(empty), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "expected.pt"), str(REPO_ROOT)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK ['clmke', 'lmke']" in result.stdout


# ---------------------------------------------------------------------------------------------------- from_encoder_pretrained
def _mean_word_embedding(words: torch.Tensor, hf_tokenizer, text: str) -> torch.Tensor:
    pieces = hf_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert pieces
    return words[pieces].mean(0)


def test_from_encoder_pretrained_initialises_kg_rows_from_names(tok, make_model, source_encoder):
    model = make_model("lmke")
    table = model.word_embeddings.weight.detach()
    words = source_encoder.embeddings.word_embeddings.weight.detach()
    hf = tok.tokenizer
    base = tok.base_vocab_size
    assert torch.equal(table[:base], words[:base])
    assert torch.equal(table[tok.entity_mask_token_id], words[hf.mask_token_id])
    eo, ro = tok.entity_token_offset, tok.relation_token_offset
    # one entity exactly: "new paris" -> mean of the embeddings of "new" and "paris"
    assert hf.convert_ids_to_tokens(hf("new paris", add_special_tokens=False)["input_ids"]) == ["new", "paris"]
    torch.testing.assert_close(
        table[eo + 6], (words[hf.convert_tokens_to_ids("new")] + words[hf.convert_tokens_to_ids("paris")]) / 2
    )
    # every KG row is the mean of its name's pieces (the nameless Q4 uses its description), not random noise
    for e, (name, description) in enumerate(zip(KG["entity_names"], KG["entity_descriptions"])):
        torch.testing.assert_close(
            table[eo + e], _mean_word_embedding(words, hf, name or description), msg=f"entity {e}"
        )
    for r, name in enumerate(KG["relation_names"]):
        torch.testing.assert_close(table[ro + r], _mean_word_embedding(words, hf, name), msg=f"relation {r}")
    # the encoder weights are the pretrained ones
    source = source_encoder.state_dict()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, source[name]), name


def test_from_encoder_pretrained_without_text_init_keeps_random_kg_rows(tiny_bert_dir, tok, source_encoder):
    torch.manual_seed(0)
    model = LmkeForTripleClassification.from_encoder_pretrained(str(tiny_bert_dir), tok, init_from_text=False)
    table = model.word_embeddings.weight.detach()
    words = source_encoder.embeddings.word_embeddings.weight.detach()
    eo = tok.entity_token_offset
    assert torch.equal(table[: tok.base_vocab_size], words[: tok.base_vocab_size])
    assert not torch.allclose(table[eo + 6], _mean_word_embedding(words, tok.tokenizer, "new paris"), atol=1e-3)
    assert model.config.num_entities == NUM_ENTITIES and model.config.num_relations == NUM_RELATIONS
    assert model.config.max_entity_description_length == LENGTHS["max_entity_description_length"]


@pytest.fixture
def transformers_records(caplog):
    """caplog that also sees transformers' own records (its library logger does not propagate by default)."""
    from transformers.utils import logging as hf_logging

    hf_logging.enable_propagation()
    try:
        yield caplog
    finally:
        hf_logging.disable_propagation()


def test_keeping_the_first_layers_reports_one_line_not_a_table(
    tiny_bert_dir, tok, source_encoder, transformers_records
):
    import logging

    from transformers.utils import logging as hf_logging

    caplog, verbosity = transformers_records, hf_logging.get_verbosity()
    with caplog.at_level(logging.INFO, logger="lmke_hf"):
        model = LmkeForTripleClassification.from_encoder_pretrained(
            str(tiny_bert_dir), tok, encoder_kwargs={"num_hidden_layers": 1}
        )
    assert model.config.encoder.num_hidden_layers == 1 and len(model.encoder.encoder.layer) == 1
    source = source_encoder.state_dict()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, source[name]), name  # the first layer is the pretrained one
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]
    dropped = len([k for k in source if k.startswith("encoder.layer.1.")])
    assert (
        f"Kept the first 1 layers of {tiny_bert_dir}: {dropped} weights of the later layers not loaded." in caplog.text
    )
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert hf_logging.get_verbosity() == verbosity
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lmke_hf"):  # more layers than pretrained: new weights are a warning
        LmkeForTripleClassification.from_encoder_pretrained(
            str(tiny_bert_dir), tok, encoder_kwargs={"num_hidden_layers": 3}
        )
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.startswith("lmke_hf")]
    assert len(warnings) == 1 and "missing: [" in warnings[0] and "encoder.layer.2." in warnings[0]
    caplog.clear()
    with pytest.raises(RuntimeError):  # a shape mismatch still fails, and the held table says which weights
        LmkeForTripleClassification.from_encoder_pretrained(
            str(tiny_bert_dir), tok, encoder_kwargs={"num_hidden_layers": 1, "intermediate_size": 40}
        )
    assert [r for r in caplog.records if "LOAD REPORT" in r.getMessage() and "intermediate.dense" in r.getMessage()]
    assert not logging.getLogger("transformers.modeling_utils").filters


def test_keeping_the_first_layers_slices_the_pretrained_encoder(tiny_bert_dir, source_encoder):
    """`num_hidden_layers=N` keeps the pretrained encoder's first N layers themselves: the same weights, the same
    outputs as the full encoder's N-th hidden state, and no log filter left behind."""
    import logging

    from lmke_hf.modeling_base import _load_encoder

    encoder = _load_encoder(str(tiny_bert_dir), {"num_hidden_layers": 1}).eval()
    assert encoder.config.num_hidden_layers == 1 and len(encoder.encoder.layer) == 1
    full = source_encoder.state_dict()
    kept = encoder.state_dict()
    assert set(kept) == {k for k in full if not k.startswith("encoder.layer.1.")}
    for name, value in kept.items():
        assert torch.equal(value, full[name]), name
    ids = torch.tensor([[2, 5, 7, 9, 3]])
    with torch.no_grad():
        expected = source_encoder(ids, output_hidden_states=True).hidden_states[1]
        torch.testing.assert_close(encoder(ids).last_hidden_state, expected, rtol=0, atol=0)
    assert not logging.getLogger("transformers.modeling_utils").filters
    for bad in (0, -1, True, 1.0):
        with pytest.raises(ValueError, match="num_hidden_layers"):
            _load_encoder(str(tiny_bert_dir), {"num_hidden_layers": bad})


def test_from_encoder_pretrained_passes_config_kwargs(tiny_bert_dir, tok):
    model = ClmkeForLinkPrediction.from_encoder_pretrained(
        str(tiny_bert_dir), tok, use_degree_features=False, matcher_hidden_size=12, max_negatives_per_query=3
    )
    assert model.config.use_degree_features is False
    assert model.matcher.dense.weight.shape == (12, 4 * 32)
    assert model.config.max_negatives_per_query == 3
    assert model.config.max_key_description_length == LENGTHS["max_key_description_length"]
    model.check_tokenizer(tok)


# ---------------------------------------------------------------------------------------------------- errors
@dataclass
class ErrorContext:
    tok: LmkeTokenizer
    make_model: Callable[[str], PreTrainedModel]
    tiny_bert_dir: Path
    tmp_path: Path


def _bigger_tokenizer(c: ErrorContext, extra_entities=1, extra_relations=0) -> LmkeTokenizer:
    kg = copy.deepcopy(KG)
    kg["entity_ids"] += [f"X{i}" for i in range(extra_entities)]
    kg["entity_names"] += ["red"] * extra_entities
    kg["entity_descriptions"] += ["blue"] * extra_entities
    kg["relation_ids"] += [f"R{i}" for i in range(extra_relations)]
    kg["relation_names"] += ["green"] * extra_relations
    kg["relation_descriptions"] += [""] * extra_relations
    return LmkeTokenizer(c.tok.tokenizer, **kg, **LENGTHS)


def _forward_with_new_entity(c: ErrorContext):
    big = _bigger_tokenizer(c)
    c.make_model("lmke")(**big.pad(big.encode_triples(["X0"], ["P0"], ["Q1"])))


def _long_input(c: ErrorContext, name: str):
    model = c.make_model(name)
    ids = torch.full((1, 65), 10)
    ids[0, 1] = c.tok.entity_token_offset
    if name == "lmke":
        ids[0, 2] = c.tok.relation_token_offset
        model(input_ids=ids)
    else:
        query = c.tok.pad(c.tok.encode_queries([0], [0], "tail"), prefix="query_")
        model(**query, key_input_ids=ids)


def _gpt2_folder(c: ErrorContext) -> str:
    from transformers import GPT2Config, GPT2Model

    folder = c.tmp_path / "gpt2"
    GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=120, n_positions=64)).save_pretrained(folder)
    return str(folder)


def _query_from_keys(c: ErrorContext):
    keys = c.tok.pad(c.tok.encode_keys([0, 1]))
    c.make_model("clmke").embed_queries(keys["input_ids"], keys["attention_mask"])


def _forward_query_without_mask(c: ErrorContext):
    keys = c.tok.pad(c.tok.encode_keys([0, 1]))
    c.make_model("clmke")(query_input_ids=keys["input_ids"], key_input_ids=keys["input_ids"])


ERROR_CASES = [
    # tokenizer / model vocabulary disagreement
    (
        "check-tokenizer-more-entities",
        lambda c: c.make_model("lmke").check_tokenizer(_bigger_tokenizer(c)),
        ValueError,
        r"disagree.*model \(\d+, 3, 7\), tokenizer \(\d+, 3, 8\)",
    ),
    (
        "check-tokenizer-more-relations",
        lambda c: c.make_model("clmke").check_tokenizer(_bigger_tokenizer(c, 0, 1)),
        ValueError,
        r"disagree",
    ),
    (
        "forward-token-outside-vocab",
        _forward_with_new_entity,
        ValueError,
        r"token id \d+ outside the vocabulary of \d+ tokens.*check_tokenizer",
    ),
    # empty batches
    (
        "lmke-empty-input",
        lambda c: c.make_model("lmke")(input_ids=torch.zeros(0, 5, dtype=torch.long)),
        ValueError,
        r"batch_size > 0.*\(0, 5\)",
    ),
    (
        "clmke-empty-input",
        lambda c: c.make_model("clmke")(
            query_input_ids=torch.zeros(0, 5, dtype=torch.long), key_input_ids=torch.zeros(0, 5, dtype=torch.long)
        ),
        ValueError,
        r"query_input_ids.*batch_size > 0",
    ),
    # too long
    (
        "lmke-input-too-long",
        lambda c: _long_input(c, "lmke"),
        ValueError,
        r"`input_ids` has 65 tokens but the encoder allows 64",
    ),
    (
        "clmke-key-too-long",
        lambda c: _long_input(c, "clmke"),
        ValueError,
        r"`key_input_ids` has 65 tokens but the encoder allows 64",
    ),
    # malformed inputs
    ("query-without-ent-mask", _query_from_keys, ValueError, r"\[ENT_MASK\]"),
    ("forward-query-without-ent-mask", _forward_query_without_mask, ValueError, r"\[ENT_MASK\]"),
    (
        "key-without-entity",
        lambda c: c.make_model("clmke").embed_keys(c.tok.pad(c.tok.encode_queries([0], [0], "head"))["input_ids"]),
        ValueError,
        r"Keys must start",
    ),
    (
        "lmke-labels-shape",
        lambda c: c.make_model("lmke")(**lmke_batch(c.tok), labels=torch.ones(5)),
        ValueError,
        r"`labels` has 5 values for a batch of 4",
    ),
    (
        "clmke-labels-shape",
        lambda c: c.make_model("clmke")(**clmke_batch(c.tok), labels=torch.eye(6, 5)),
        ValueError,
        r"`labels` has shape \(6, 5\), expected \(6, 6\)",
    ),
    (
        "clmke-queries-vs-keys",
        lambda c: c.make_model("clmke")(
            **{**clmke_batch(c.tok), **c.tok.pad(c.tok.encode_keys([0, 1]), prefix="key_")}
        ),
        ValueError,
        r"6 queries and 2 keys",
    ),
    (
        "lmke-no-kg-tokens",
        lambda c: c.make_model("lmke")(input_ids=torch.tensor([[2, 10, 11, 3]])),
        ValueError,
        r"entity and relation tokens",
    ),
    (
        "degrees-wrong-size",
        lambda c: c.make_model("clmke").set_entity_degrees([1.0, 2.0]),
        ValueError,
        r"2 degrees for 7 entities",
    ),
    ("degrees-negative", lambda c: c.make_model("clmke").set_entity_degrees([-1.0] * 7), ValueError, r">= 0"),
    ("resize-negative", lambda c: c.make_model("lmke").resize_entity_embeddings(-1), ValueError, r"num_entities.*-1"),
    # from_encoder_pretrained
    (
        "encoder-not-bert-family",
        lambda c: LmkeForTripleClassification.from_encoder_pretrained(_gpt2_folder(c), c.tok),
        ValueError,
        r"GPT2Model.*not a BERT-family encoder",
    ),
    # configs
    (
        "config-negative-entities",
        lambda c: LmkeConfig(num_entities=-1),
        ValueError,
        r"`num_entities` must be a non-negative int, got -1",
    ),
    ("config-float-entities", lambda c: ClmkeConfig(num_entities=2.5), ValueError, r"`num_entities`.*2\.5"),
    ("config-negative-relations", lambda c: ClmkeConfig(num_relations=-3), ValueError, r"`num_relations`.*-3"),
    (
        "config-zero-negatives",
        lambda c: ClmkeConfig(max_negatives_per_query=0),
        ValueError,
        r"`max_negatives_per_query` must be None .* or >= 1, got 0",
    ),
    (
        "config-negative-negatives",
        lambda c: ClmkeConfig(max_negatives_per_query=-4),
        ValueError,
        r"max_negatives_per_query.*-4",
    ),
    (
        "config-negative-temperature",
        lambda c: ClmkeConfig(adversarial_temperature=-1.0),
        ValueError,
        r"adversarial_temperature.*-1",
    ),
    ("config-zero-memory", lambda c: ClmkeConfig(scoring_memory_mb=0), ValueError, r"scoring_memory_mb.*> 0"),
    ("config-encoder-dict-without-type", lambda c: LmkeConfig(encoder={"hidden_size": 8}), ValueError, r"model_type"),
    (
        "config-encoder-wrong-type",
        lambda c: LmkeConfig(encoder=42),
        TypeError,
        r"`encoder` must be a PretrainedConfig or a dict, got int",
    ),
]


@pytest.mark.parametrize("name,action,error,match", ERROR_CASES, ids=[e[0] for e in ERROR_CASES])
def test_errors_name_the_value_and_the_fix(name, action, error, match, tok, make_model, tiny_bert_dir, tmp_path):
    with pytest.raises(error, match=match):
        action(ErrorContext(tok, make_model, tiny_bert_dir, tmp_path))


# ---------------------------------------------------------------------------------------------------- configs
def test_config_round_trips_through_dict():
    config = ClmkeConfig(encoder=BertConfig(**TINY_ENCODER), num_entities=5, num_relations=2, max_negatives_per_query=3)
    again = ClmkeConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert again.encoder.hidden_size == 32 and again.encoder.model_type == "bert"
    assert again.entity_token_offset == config.encoder.vocab_size + 1 + 2
    assert again.total_vocab_size == config.encoder.vocab_size + 1 + 2 + 5


# ---------------------------------------------------------------------------------------------------- growing the KG
@pytest.mark.parametrize("case", MAIN_CASES, ids=_ids)
def test_add_entities_and_resize_keep_old_tokens(case, tok, make_model):
    model = make_model(case.name)
    before_batch = case.make_batch(tok)
    before_out = _outputs(model, before_batch)
    old_table = model.word_embeddings.weight.detach().clone()
    old_total = tok.total_vocab_size

    new = tok.add_entities(["N0", "N1"], names=["berlin city", "red"], descriptions=["a new city", ""])
    assert new.tolist() == [NUM_ENTITIES, NUM_ENTITIES + 1]
    assert tok.total_vocab_size == old_total + 2
    assert tok.entity_to_index(["N1", "Q3"]).tolist() == [NUM_ENTITIES + 1, 3]
    assert tok.encode_keys(["N1"])["input_ids"][0][1] == old_total + 1  # new tokens at the end
    after_batch = case.make_batch(tok)
    assert all(torch.equal(before_batch[k], after_batch[k]) for k in before_batch)  # old token ids unchanged

    with pytest.raises(ValueError, match="disagree"):
        model.check_tokenizer(tok)
    model.resize_entity_embeddings(tok.num_entities)
    model.check_tokenizer(tok)
    assert model.config.num_entities == NUM_ENTITIES + 2
    assert model.word_embeddings.num_embeddings == old_total + 2
    assert torch.equal(model.word_embeddings.weight[:old_total], old_table)
    model.init_kg_embeddings(tok, entities=new)
    table = model.word_embeddings.weight.detach()
    assert torch.equal(table[:old_total], old_table)  # initialising the new rows leaves the old ones alone
    words = table[: tok.base_vocab_size]
    torch.testing.assert_close(table[old_total], _mean_word_embedding(words, tok.tokenizer, "berlin city"))

    after_out = _outputs(model, after_batch)
    for name in before_out:
        assert torch.equal(before_out[name], after_out[name]), name
    if case.model_class is ClmkeForLinkPrediction:
        assert model.entity_degrees.tolist() == DEGREES + [0.0, 0.0]
        q = tok.pad(tok.encode_queries(["N0"], ["P1"], "tail"), prefix="query_")
        k = tok.pad(tok.encode_keys(["N1"]), prefix="key_")
        with torch.no_grad():
            out = model(**q, **k)
        assert out.query_entity_ids.tolist() == [NUM_ENTITIES] and out.key_entity_ids.tolist() == [NUM_ENTITIES + 1]
    else:
        with torch.no_grad():
            out = model(**tok.pad(tok.encode_triples(["N0"], ["P0"], ["N1"])))
        assert out.logits.shape == (1,)


# ---------------------------------------------------------------------------------------------------- keyword arguments
@pytest.mark.parametrize("case", MAIN_CASES, ids=_ids)
def test_forward_refuses_unknown_keyword_arguments(case, tok, make_model):
    """A misspelt input (e.g. `attention_mask` for C-LMKE, whose masks are query_/key_ prefixed) must not be
    ignored silently; `num_items_in_batch` (passed by transformers' Trainer) is accepted."""
    model = make_model(case.name)
    batch = case.make_batch(tok)
    with torch.no_grad():
        model(**batch, num_items_in_batch=4)
        with pytest.raises(TypeError, match=r"unexpected arguments \['atention_mask'\]"):
            model(**batch, atention_mask=torch.ones(1))


# ------------------------------------------------------------------------------------ issue 21: attributes do no I/O, methods load
def test_kg_tokenizer_is_read_by_load_kg_tokenizer_and_the_attribute_then_reads_nothing(
    tok, make_model, tmp_path, monkeypatch
):
    import warnings

    model = make_model("clmke")
    model.attach_tokenizer(tok)
    model.save_pretrained(tmp_path / "saved")
    loaded = ClmkeForLinkPrediction.from_pretrained(tmp_path / "saved")
    with pytest.warns(FutureWarning, match=r"call `model.load_kg_tokenizer\(\)`"):
        assert loaded.kg_tokenizer.entity_ids == tok.entity_ids  # the old way still works, and says what to call
    fresh = ClmkeForLinkPrediction.from_pretrained(tmp_path / "saved")
    attached = fresh.load_kg_tokenizer()
    assert attached.entity_ids == tok.entity_ids and fresh.load_kg_tokenizer() is attached
    monkeypatch.setattr(LmkeTokenizer, "from_pretrained", lambda *a, **k: pytest.fail("read the tokenizer again"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert fresh.kg_tokenizer is attached
    bare = make_model("clmke")  # built in code: no checkpoint to read one from
    with pytest.raises(ValueError, match=r"No KG tokenizer attached .*attach_tokenizer"):
        bare.load_kg_tokenizer()


def test_entity_index_is_loaded_or_built_by_a_method_and_the_attribute_then_encodes_nothing(
    tok, make_model, monkeypatch
):
    import warnings

    model = make_model("clmke")
    model.attach_tokenizer(tok)
    with pytest.warns(FutureWarning, match=r"call `model.load_or_build_entity_index\(\)`"):
        keys = model.entity_index.keys  # the old way still encodes, and says what to call
    torch.testing.assert_close(keys, model.encode_entities())
    other = make_model("clmke")
    other.attach_tokenizer(tok)
    index = other.load_or_build_entity_index()
    assert other.load_or_build_entity_index() is index
    monkeypatch.setattr(type(other), "encode_entities", lambda *a, **k: pytest.fail("encoded again"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        assert other.entity_index is index
        assert len(other.predict(head=0, relation=0, top_k=2)) == 2


def test_predict_loads_the_tokenizer_and_the_saved_index_itself(tok, make_model, tmp_path, monkeypatch):
    import warnings

    model = make_model("clmke")
    model.attach_tokenizer(tok)
    model.build_entity_index()
    model.save_pretrained(tmp_path / "saved")
    loaded = ClmkeForLinkPrediction.from_pretrained(tmp_path / "saved").eval()
    expected = model.predict(head="paris", relation="P0", top_k=3)
    monkeypatch.setattr(type(loaded), "encode_entities", lambda *a, **k: pytest.fail("encoded instead of loaded"))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated attribute on the way
        assert loaded.predict(head="paris", relation="P0", top_k=3) == expected
    torch.testing.assert_close(loaded.entity_index.keys, model.entity_index.keys)  # the saved keys, attached


@pytest.mark.parametrize("call", ["encode_queries", "encode_text", "encode_entities"])
def test_the_encode_methods_give_the_model_back_in_its_mode_when_they_raise(call, tok, make_model):
    model = make_model("clmke")
    model.attach_tokenizer(tok)
    model.train()
    bad = {
        "encode_queries": lambda: model.encode_queries(["no such entity"], "P0"),
        "encode_text": lambda: model.encode_text([3]),
        "encode_entities": lambda: model.encode_entities(["no such entity"]),
    }[call]
    with pytest.raises((KeyError, TypeError)):
        bad()
    assert model.training
