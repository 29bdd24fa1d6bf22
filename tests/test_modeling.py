"""Tests of LMKE / C-LMKE as transformers models (`lmke_hf.modeling_lmke`, `modeling_clmke`) and of `LmkeTokenizer`.

Everything is tiny and offline: the encoder is conftest's `tiny_bert_dir` (random BERT, hidden 32, 2 layers,
~100 word pieces, model_max_length 64), the KG has 7 entities and 3 relations. Models and the tokenizer are
built once per session and deep-copied per test; one table of model cases (`MODEL_CASES`) drives the shape,
loss, gradient and save/load tests, other tables drive the loss formula, matcher and error tests.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap

from _hide_package import HIDE_LMKE_HF
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn
from transformers import AutoModel, AutoTokenizer, BertConfig, BertModel, PreTrainedModel

import lmke_hf
from lmke_hf import (
    ClmkeConfig,
    ClmkeForLinkPrediction,
    ClmkeMatcher,
    LinkPredictionOutput,
    LmkeConfig,
    LmkeForTripleClassification,
    LmkeTokenizer,
    TripleClassificationOutput,
)

REPO_ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------------------------------------------- the tiny KG
# Names and descriptions use word pieces of conftest's tiny vocabulary. Q2 has no description, Q4 no name (its
# token is initialised from its description), Q6 a two-piece name.
KG = dict(
    entity_ids=["Q0", "Q1", "Q2", "Q3", "Q4", "Q5", "Q6"],
    entity_names=["paris", "france", "berlin", "germany", "", "italy", "new paris"],
    entity_descriptions=[
        "paris is the capital of france",
        "france is a country",
        "",
        "germany is a big country in the graph",
        "rome is an old city",
        "italy is a country with a capital",
        "new paris is a small city",
    ],
    relation_ids=["P0", "P1", "P2"],
    relation_names=["capital of", "located in", "born in"],
    relation_descriptions=["the capital city of a country", "", "person born in a city"],
)
LENGTHS = dict(max_entity_description_length=8, max_relation_description_length=4, max_key_description_length=12)
NUM_ENTITIES, NUM_RELATIONS = len(KG["entity_ids"]), len(KG["relation_ids"])
DEGREES = [3.0, 0.0, 5.0, 1.0, 2.0, 7.0, 4.0]

# LMKE batch: (h, r, t); Q2's empty description makes the sequences of unequal length (padding is exercised).
TRIPLES = dict(heads=[0, 1, 3, 6], relations=[0, 1, 2, 0], tails=[1, 0, 4, 2])
# C-LMKE batch: query i = (given[i], relation[i], direction[i]); key i = its gold answer gold[i] (all distinct).
QUERIES = dict(
    given=[0, 3, 2, 5, 6, 1],
    relations=[0, 1, 2, 0, 1, 2],
    directions=["tail", "head", "tail", "head", "tail", "head"],
    gold=[1, 2, 4, 0, 3, 5],
)
TINY_ENCODER = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64)


def lmke_batch(tok: LmkeTokenizer) -> dict[str, torch.Tensor]:
    return tok.pad(tok.encode_triples(TRIPLES["heads"], TRIPLES["relations"], TRIPLES["tails"]))


def clmke_batch(tok: LmkeTokenizer) -> dict[str, torch.Tensor]:
    queries = tok.encode_queries(QUERIES["given"], QUERIES["relations"], QUERIES["directions"])
    return {**tok.pad(queries, prefix="query_"), **tok.pad(tok.encode_keys(QUERIES["gold"]), prefix="key_")}


def gold_answer_ids(extra: dict[int, list[int]] | None = None) -> torch.Tensor:
    """(B, 3) known answers padded with -1: the gold entity of each query plus `extra[i]`."""
    rows = [[g, *(extra or {}).get(i, [])] for i, g in enumerate(QUERIES["gold"])]
    return torch.tensor([r + [-1] * (3 - len(r)) for r in rows])


# ---------------------------------------------------------------------------------------------------- model cases
@dataclass(frozen=True)
class ModelCase:
    """One model under test: how to build it, a batch, the loss-bearing arguments and the output shapes."""

    name: str
    model_class: type
    make_batch: Callable[[LmkeTokenizer], dict]
    loss_kwargs: dict[str, Callable[[int], dict]]  # way of asking for a loss -> kwargs (from batch size)
    shapes: dict[str, tuple[str, ...]]  # output field -> symbolic shape (B: batch, H: hidden)
    config_kwargs: dict = field(default_factory=dict)
    degrees: list[float] | None = None


MODEL_CASES = [
    ModelCase(
        name="lmke",
        model_class=LmkeForTripleClassification,
        make_batch=lmke_batch,
        loss_kwargs={"labels": lambda b: {"labels": torch.tensor([1.0, 0.0] * (b // 2))}},
        shapes={
            "logits": ("B",),
            "cls_embeddings": ("B", "H"),
            "head_embeddings": ("B", "H"),
            "relation_embeddings": ("B", "H"),
            "tail_embeddings": ("B", "H"),
        },
    ),
    ModelCase(
        name="clmke",
        model_class=ClmkeForLinkPrediction,
        make_batch=clmke_batch,
        loss_kwargs={
            "answer_ids": lambda b: {"answer_ids": gold_answer_ids()},
            "labels": lambda b: {"labels": torch.eye(b)},
        },
        shapes={
            "logits": ("B", "B"),
            "query_embeddings": ("B", "H"),
            "key_embeddings": ("B", "H"),
            "query_entity_ids": ("B",),
            "key_entity_ids": ("B",),
        },
        degrees=DEGREES,
    ),
    ModelCase(
        name="clmke_nodeg",
        model_class=ClmkeForLinkPrediction,
        make_batch=clmke_batch,
        loss_kwargs={"labels": lambda b: {"labels": torch.eye(b)}},
        shapes={"logits": ("B", "B"), "query_embeddings": ("B", "H"), "key_embeddings": ("B", "H")},
        config_kwargs={"use_degree_features": False},
    ),
]
CASES = {c.name: c for c in MODEL_CASES}
MAIN_CASES = [CASES["lmke"], CASES["clmke"]]
_ids = lambda case: case.name  # noqa: E731


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="session")
def _kg_tokenizer(tiny_bert_dir) -> LmkeTokenizer:
    return LmkeTokenizer(AutoTokenizer.from_pretrained(tiny_bert_dir), **KG, **LENGTHS)


@pytest.fixture
def tok(_kg_tokenizer) -> LmkeTokenizer:
    return copy.deepcopy(_kg_tokenizer)


@pytest.fixture(scope="session")
def _models(tiny_bert_dir, _kg_tokenizer) -> dict[str, PreTrainedModel]:
    models = {}
    for i, case in enumerate(MODEL_CASES):
        torch.manual_seed(i)
        model = case.model_class.from_encoder_pretrained(str(tiny_bert_dir), _kg_tokenizer, **case.config_kwargs)
        if case.degrees is not None:
            model.set_entity_degrees(case.degrees)
        models[case.name] = model.eval()
    return models


@pytest.fixture
def make_model(_models) -> Callable[[str], PreTrainedModel]:
    """`make_model(name)`: a private (deep-copied, eval-mode) model of `MODEL_CASES`."""
    return lambda name: copy.deepcopy(_models[name])


@pytest.fixture(scope="session")
def source_encoder(tiny_bert_dir) -> BertModel:
    return BertModel.from_pretrained(tiny_bert_dir).eval()


def table_grad(model) -> torch.Tensor:
    """Gradient of the whole (vocabulary, dim) token table, whether it is one `nn.Embedding` or word / KG parts."""
    tables = [model.word_embeddings] if isinstance(model.word_embeddings, nn.Embedding) else [
        model.word_embeddings.words, model.word_embeddings.kg
    ]
    return torch.cat([t.weight.grad if t.weight.grad is not None else torch.zeros_like(t.weight) for t in tables])


def tiny_clmke(**config_kwargs) -> ClmkeForLinkPrediction:
    """A C-LMKE on a random tiny encoder built from a config in code (no tokenizer needed)."""
    # pad_token_id is passed explicitly: see test_models_build_from_a_config_without_pad_token_id (xfail)
    config = ClmkeConfig(
        encoder=BertConfig(vocab_size=20, **TINY_ENCODER), num_entities=4, num_relations=2, pad_token_id=0,
        **config_kwargs,
    )
    return ClmkeForLinkPrediction(config).eval()


@pytest.mark.parametrize("model_class", [LmkeForTripleClassification, ClmkeForLinkPrediction])
def test_models_build_from_a_config_without_pad_token_id(model_class):
    config = model_class.config_class(encoder=BertConfig(vocab_size=20, **TINY_ENCODER), num_entities=4, num_relations=2)
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
    expected_type = TripleClassificationOutput if case.model_class is LmkeForTripleClassification else LinkPredictionOutput
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
    tail_pos = 2 + len(tok.entity_pieces[2]) + 1 + len(tok.relation_pieces[1][: LENGTHS["max_relation_description_length"]])
    torch.testing.assert_close(out.head_embeddings, hidden[:, 1])
    torch.testing.assert_close(out.tail_embeddings, hidden[:, tail_pos])


def test_clmke_embeddings_are_outputs_at_mask_and_key_entity(tok, make_model):
    model = make_model("clmke")
    batch = clmke_batch(tok)
    le, lr = LENGTHS["max_entity_description_length"], LENGTHS["max_relation_description_length"]
    mask_pos = [
        1 if d == "head" else 2 + len(tok.entity_pieces[g][:le]) + 1 + len(tok.relation_pieces[r][:lr])
        for g, r, d in zip(QUERIES["given"], QUERIES["relations"], QUERIES["directions"])
    ]
    rows = torch.arange(len(mask_pos))
    assert (batch["query_input_ids"][rows, mask_pos] == tok.entity_mask_token_id).all()
    with torch.no_grad():
        out = model(**batch)
        q_hidden = model.query_encoder(
            inputs_embeds=model.word_embeddings(batch["query_input_ids"]), attention_mask=batch["query_attention_mask"]
        ).last_hidden_state
        k_hidden = model.key_encoder(
            inputs_embeds=model.word_embeddings(batch["key_input_ids"]), attention_mask=batch["key_attention_mask"]
        ).last_hidden_state
    torch.testing.assert_close(out.query_embeddings, q_hidden[rows, mask_pos])
    torch.testing.assert_close(out.key_embeddings, k_hidden[:, 1])
    assert out.query_entity_ids.tolist() == QUERIES["given"]
    assert out.key_entity_ids.tolist() == QUERIES["gold"]
    torch.testing.assert_close(out.logits, model.match(out.query_embeddings, out.query_entity_ids, out.key_embeddings, out.key_entity_ids))


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


# ---------------------------------------------------------------------------------------------------- C-LMKE loss
def paper_loss(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, detach_weights: bool = True):
    """The paper's loss written out per query: mean over positives of -log p, plus sum over negatives of
    w * -log(1 - p), w = softmax over the query's negatives of T * p; averaged over queries; other labels ignored."""
    per_query = []
    for row, lab in zip(logits, labels):
        p = torch.sigmoid(row)
        pos, neg = p[lab == 1], p[lab == 0]
        loss = row.new_zeros(())
        if pos.numel():
            loss = loss - torch.log(pos).mean()
        if neg.numel():
            w = torch.softmax(temperature * (neg.detach() if detach_weights else neg), dim=0)
            loss = loss - (w * torch.log(1 - neg)).sum()
        per_query.append(loss)
    return torch.stack(per_query).mean()


def paper_loss_grad(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """d loss / d logits with the weights held constant: -(1 - p) / |K+| at positives, w * p at negatives."""
    p = torch.sigmoid(logits)
    grad = torch.zeros_like(logits)
    for i, lab in enumerate(labels):
        pos, neg = lab == 1, lab == 0
        if pos.any():
            grad[i, pos] = -(1 - p[i, pos]) / pos.sum()
        if neg.any():
            grad[i, neg] = torch.softmax(temperature * p[i, neg], dim=0) * p[i, neg]
    return grad / logits.shape[0]


_I = -100.0
LOSS_LABELS = {
    "one-positive-per-row": torch.eye(5, 6),
    "multi-positive": torch.tensor(
        [[1, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 1], [0, 0, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]], dtype=torch.float
    ),
    "ignored": torch.tensor(
        [[1, _I, 0, 0, _I, 0], [0, 1, _I, 0, 0, 0], [_I, _I, 1, 0, 0, _I], [0, 0, 0, 1, _I, 0], [1, _I, 0, 0, 1, 0]]
    ),
    "row-without-negatives": torch.tensor(
        [[1, 0, 0, 0, 0, 0], [_I, 1, _I, _I, _I, _I], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, _I]]
    ),
}
LOSS_FORMULA_CASES = [(name, t) for name in LOSS_LABELS for t in (1.0, 2.5)]


@pytest.fixture(scope="module")
def _loss_models():
    return {t: tiny_clmke(adversarial_temperature=t) for t in (1.0, 2.5)}


def _fixed_logits() -> torch.Tensor:
    return 3 * torch.randn(5, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


@pytest.mark.parametrize("labels_name,temperature", LOSS_FORMULA_CASES, ids=[f"{n}-T{t}" for n, t in LOSS_FORMULA_CASES])
def test_contrastive_loss_equals_paper_formula(labels_name, temperature, _loss_models):
    model = _loss_models[temperature]
    labels = LOSS_LABELS[labels_name].double()
    logits = _fixed_logits().requires_grad_(True)
    loss = model.contrastive_loss(logits, labels)
    expected = paper_loss(logits.detach(), labels, temperature)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)

    (grad,) = torch.autograd.grad(loss, logits)
    expected_grad = paper_loss_grad(logits.detach(), labels, temperature)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert (grad[labels == _I] == 0).all()
    # The weights are constants: differentiating through them gives a different gradient.
    hand = logits.detach().clone().requires_grad_(True)
    (through,) = torch.autograd.grad(paper_loss(hand, labels, temperature, detach_weights=False), hand)
    if (labels == 0).sum(1).max() > 1:
        assert not torch.allclose(through, expected_grad)


def test_contrastive_loss_ignores_minus_100(_loss_models):
    model = _loss_models[1.0]
    labels = LOSS_LABELS["ignored"].double()
    logits = _fixed_logits()
    changed = logits.masked_fill(labels == _I, 50.0)
    torch.testing.assert_close(model.contrastive_loss(changed, labels), model.contrastive_loss(logits, labels))
    dropped = labels.clone()
    dropped[0, 1] = 0.0  # un-ignoring an entry does change the loss
    assert not torch.isclose(model.contrastive_loss(logits, dropped), model.contrastive_loss(logits, labels))


def test_forward_loss_with_explicit_labels_matches_formula(tok, make_model):
    model = make_model("clmke")
    labels = torch.eye(6)
    labels[0, 3] = -100.0
    labels[2, 5] = 1.0
    with torch.no_grad():
        out = model(**clmke_batch(tok), labels=labels)
    torch.testing.assert_close(out.labels, labels)
    torch.testing.assert_close(out.loss.double(), paper_loss(out.logits.double(), labels.double()), rtol=1e-5, atol=1e-6)


def test_answer_ids_make_in_batch_known_answers_positive(tok, make_model):
    """Key j is positive for query i when key j's entity is among query i's known answers (multi-label)."""
    model = make_model("clmke")
    # query 0 also has answers Q4 (key 2) and Q2 (key 1); query 3 has Q5 (key 5); Q6 (3rd answer of 4) is not a key.
    extra = {0: [4, 2], 3: [5], 4: [6]}
    expected = torch.eye(6)
    expected[0, 2] = expected[0, 1] = expected[3, 5] = 1.0
    with torch.no_grad():
        out = model(**clmke_batch(tok), answer_ids=gold_answer_ids(extra))
    torch.testing.assert_close(out.labels, expected)
    torch.testing.assert_close(out.loss.double(), paper_loss(out.logits.double(), expected.double()), rtol=1e-5, atol=1e-6)


def test_duplicate_gold_entity_in_batch_is_not_a_negative(tok, make_model):
    model = make_model("clmke")
    batch = {
        **tok.pad(tok.encode_queries([0, 3, 2], [0, 0, 1], "tail"), prefix="query_"),
        **tok.pad(tok.encode_keys([1, 1, 4]), prefix="key_"),  # keys 0 and 1 are the same entity
    }
    with torch.no_grad():
        out = model(**batch, answer_ids=torch.full((3, 1), -1))
    assert out.labels[0, 1] == 1 and out.labels[1, 0] == 1


@pytest.mark.parametrize("max_negatives", [1, 2, 3, 10])
def test_max_negatives_per_query_keeps_exactly_that_many(max_negatives, tok, make_model):
    model = make_model("clmke")
    model.config.max_negatives_per_query = max_negatives
    extra = {0: [4], 3: [5, 2]}
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 2] = positives[3, 5] = positives[3, 1] = True
    batch = clmke_batch(tok)
    with torch.no_grad():
        out = model(**batch, answer_ids=gold_answer_ids(extra), generator=torch.Generator().manual_seed(0))
        again = model(**batch, answer_ids=gold_answer_ids(extra), generator=torch.Generator().manual_seed(0))
    labels = out.labels
    assert torch.equal(labels == 1, positives)
    available = (~positives).sum(1)
    assert (labels == 0).sum(1).tolist() == available.clamp(max=max_negatives).tolist()
    assert ((labels == 0) | (labels == 1) | (labels == -100)).all()
    assert torch.equal(labels, again.labels)  # the generator makes the choice reproducible
    torch.testing.assert_close(out.loss.double(), paper_loss(out.logits.double(), labels.double()), rtol=1e-5, atol=1e-6)
    if max_negatives == 1:
        choices = set()
        for seed in range(1, 5):
            with torch.no_grad():
                o = model(**batch, answer_ids=gold_answer_ids(extra), generator=torch.Generator().manual_seed(seed))
            choices.add(tuple(o.labels.flatten().tolist()))
        assert len(choices) > 1  # negatives are sampled, not always the same columns


def test_one_dimensional_answer_ids_error_names_answer_ids(tok, make_model):
    model = make_model("clmke")
    with pytest.raises(ValueError, match="answer_ids"):
        model(**clmke_batch(tok), answer_ids=torch.tensor(QUERIES["gold"]))


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


def test_clmke_has_one_embedding_table_shared_by_both_encoders(make_model, tiny_bert_dir, source_encoder):
    model = make_model("clmke")
    assert model.query_encoder.embeddings.word_embeddings is None
    assert model.key_encoder.embeddings.word_embeddings is None
    assert model.get_input_embeddings() is model.word_embeddings
    assert model.word_embeddings.num_embeddings == model.config.total_vocab_size
    # every token embedding lives in `model.word_embeddings`; the encoders keep only position / segment tables
    table_params = {id(p) for p in model.word_embeddings.parameters()}
    for encoder in model._encoders():
        assert not table_params & {id(p) for p in encoder.parameters()}
        names = {n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if isinstance(m, nn.Embedding)}
        assert names == {"position_embeddings", "token_type_embeddings"}
    # the encoders are two copies (separate parameters) that start equal to each other and to the source encoder
    q_state, k_state = model.query_encoder.state_dict(), model.key_encoder.state_dict()
    assert q_state.keys() == k_state.keys()
    source = source_encoder.state_dict()
    for name in q_state:
        assert torch.equal(q_state[name], k_state[name]), name
        assert torch.equal(q_state[name], source[name]), name
    assert not {id(p) for p in model.query_encoder.parameters()} & {id(p) for p in model.key_encoder.parameters()}


def test_clmke_built_from_config_starts_with_equal_encoders():
    model = tiny_clmke()
    for (name, q), k in zip(model.query_encoder.state_dict().items(), model.key_encoder.state_dict().values()):
        assert torch.equal(q, k), name
    assert model.query_encoder.embeddings.word_embeddings is None


# ---------------------------------------------------------------------------------------------------- matcher
@dataclass(frozen=True)
class MatcherCase:
    name: str
    use_degree_features: bool
    num_queries: int
    num_keys: int
    memory_mb: float


_M, _H = 16, 8  # matcher width, hidden size; a tile of (queries, _M, keys) floats takes 4 * _M * q * k bytes
MATCHER_CASES = [
    MatcherCase("1x1-tiles", True, 5, 13, 1e-9),
    MatcherCase("1x1-tiles-nodeg", False, 13, 5, 1e-9),
    MatcherCase("key-tiles-of-3", True, 5, 13, 4 * _M * 3 / 2**20),
    MatcherCase("query-tiles-of-2", False, 5, 13, 4 * _M * 13 * 2 / 2**20),
    MatcherCase("query-tiles-of-2-deg", True, 7, 13, 4 * _M * 13 * 2 / 2**20),
    MatcherCase("one-tile", True, 5, 13, 512),
    MatcherCase("one-tile-nodeg", False, 5, 13, 512),
    MatcherCase("keys-over-2048", True, 3, 2500, 512),
    MatcherCase("single-query", True, 1, 13, 1e-3),
]


def naive_pairwise(matcher: ClmkeMatcher, q, k, q_logdeg, k_logdeg) -> torch.Tensor:
    """`matcher.forward` (the concatenation formula) on every (query, key) pair."""
    bq, n = q.shape[0], k.shape[0]
    qq, kk = q[:, None].expand(bq, n, -1), k[None].expand(bq, n, -1)
    if q_logdeg is None:
        return matcher(qq, kk, None, None)
    return matcher(qq, kk, q_logdeg[:, None].expand(bq, n), k_logdeg[None].expand(bq, n))


@pytest.mark.parametrize("case", MATCHER_CASES, ids=lambda c: c.name)
def test_matcher_pairwise_equals_concatenation_formula(case):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    matcher = ClmkeMatcher(_H, _M, case.use_degree_features)
    q = torch.randn(case.num_queries, _H, generator=gen)
    k = torch.randn(case.num_keys, _H, generator=gen)
    q_deg = k_deg = None
    if case.use_degree_features:
        q_deg = torch.log1p(torch.randint(0, 50, (case.num_queries,), generator=gen).float())
        k_deg = torch.log1p(torch.randint(0, 50, (case.num_keys,), generator=gen).float())
    with torch.no_grad():
        got = matcher.pairwise(q, k, q_deg, k_deg, memory_mb=case.memory_mb)
        expected = naive_pairwise(matcher, q, k, q_deg, k_deg)
    assert got.shape == (case.num_queries, case.num_keys)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_matcher_pairwise_with_no_keys_returns_empty_scores():
    matcher = ClmkeMatcher(_H, _M, False)
    assert matcher.pairwise(torch.randn(3, _H), torch.randn(0, _H)).shape == (3, 0)


def _encode_everything(model, tok):
    """Queries of `QUERIES` (6) and keys of all 7 entities: a non-square score matrix."""
    q = tok.pad(tok.encode_queries(QUERIES["given"], QUERIES["relations"], QUERIES["directions"]))
    k = tok.pad(tok.encode_keys(list(range(NUM_ENTITIES))))
    with torch.no_grad():
        q_emb, q_ent = model.encode_queries(q["input_ids"], q["attention_mask"])
        k_emb, k_ent = model.encode_keys(k["input_ids"], k["attention_mask"])
    return q_emb, q_ent, k_emb, k_ent


@pytest.mark.parametrize("memory_mb", [1e-9, 4 * 32 * 3 / 2**20, 512])
@pytest.mark.parametrize("name", ["clmke", "clmke_nodeg"])
def test_score_all_equals_concatenation_formula(name, memory_mb, tok, make_model):
    model = make_model(name)
    model.config.scoring_memory_mb = memory_mb
    q_emb, q_ent, k_emb, k_ent = _encode_everything(model, tok)
    assert k_ent.tolist() == list(range(NUM_ENTITIES))
    scores = model.score_all(q_emb, q_ent, k_emb)
    use_deg = model.config.use_degree_features
    degrees = torch.tensor(DEGREES) if use_deg else None
    with torch.no_grad():
        expected = naive_pairwise(
            model.matcher, q_emb, k_emb,
            torch.log1p(degrees[q_ent]) if use_deg else None, torch.log1p(degrees[k_ent]) if use_deg else None,
        )
    assert scores.shape == (len(QUERIES["given"]), NUM_ENTITIES)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.score_all(q_emb, q_ent, k_emb, dtype=torch.bfloat16), scores, rtol=0.1, atol=0.1)


# ---------------------------------------------------------------------------------------------------- leak guard
@pytest.mark.parametrize("changed_entity", [2, 5])
def test_degree_of_an_entity_changes_only_its_column_and_its_queries(changed_entity, tok, make_model):
    model = make_model("clmke")
    q_emb, q_ent, k_emb, _ = _encode_everything(model, tok)
    before = model.score_all(q_emb, q_ent, k_emb)
    degrees = torch.tensor(DEGREES)
    degrees[changed_entity] += 40.0
    model.set_entity_degrees(degrees)
    after = model.score_all(q_emb, q_ent, k_emb)
    affected = torch.zeros_like(before, dtype=torch.bool)
    affected[:, changed_entity] = True
    affected[q_ent == changed_entity] = True
    assert (q_ent == changed_entity).any()  # the entity is also the given entity of one query
    assert torch.equal(before[~affected], after[~affected])
    assert (before[:, changed_entity] != after[:, changed_entity]).all()
    assert (before[q_ent == changed_entity] != after[q_ent == changed_entity]).all()


def test_candidate_score_is_the_same_alone_or_among_all(tok, make_model):
    model = make_model("clmke")
    q_emb, q_ent, k_emb, _ = _encode_everything(model, tok)
    all_scores = model.score_all(q_emb, q_ent, k_emb)
    for j in range(NUM_ENTITIES):
        alone = model.score_all(q_emb, q_ent, k_emb[j : j + 1], torch.tensor([j]))
        torch.testing.assert_close(alone[:, 0], all_scores[:, j], rtol=1e-6, atol=1e-6)
    perm = torch.randperm(NUM_ENTITIES, generator=torch.Generator().manual_seed(1))
    permuted = model.score_all(q_emb, q_ent, k_emb[perm], perm)
    torch.testing.assert_close(permuted, all_scores[:, perm], rtol=1e-6, atol=1e-6)


# ---------------------------------------------------------------------------------------------------- head / tail queries
def test_tokenizer_query_layouts(tok):
    le, lr = LENGTHS["max_entity_description_length"], LENGTHS["max_relation_description_length"]
    cls, sep = tok.tokenizer.cls_token_id, tok.tokenizer.sep_token_id
    mask, eo, ro = tok.entity_mask_token_id, tok.entity_token_offset, tok.relation_token_offset
    given, rel = 3, 2
    ent, rel_pieces = tok.entity_pieces[given][:le], tok.relation_pieces[rel][:lr]
    assert len(ent) == le  # "germany is a big country in the graph" is cut
    head = tok.encode_queries([given], [rel], "head")["input_ids"][0]
    tail = tok.encode_queries(["Q3"], ["P2"], "tail")["input_ids"][0]
    assert head == [cls, mask, ro + rel, *rel_pieces, eo + given, *ent, sep]
    assert tail == [cls, eo + given, *ent, ro + rel, *rel_pieces, mask, sep]
    assert head[1] == mask and head.index(eo + given) == 3 + len(rel_pieces)
    assert tok.convert_ids_to_tokens(head[:3]) == ["[CLS]", "[ENT_MASK]", "[R:P2]"]
    assert tok.convert_ids_to_tokens([tail[1]]) == ["[E:Q3]"]
    key = tok.encode_keys(["Q3"])["input_ids"][0]
    assert key == [cls, eo + given, *tok.entity_pieces[given][: LENGTHS["max_key_description_length"]], sep]
    triple = tok.encode_triples(["Q0"], ["P0"], ["Q2"])["input_ids"][0]
    berlin = tok.tokenizer.convert_tokens_to_ids("berlin")
    assert tok.entity_pieces[2] == [berlin]  # no description: the name alone
    assert triple == [cls, eo + 0, *tok.entity_pieces[0][:le], ro + 0, *tok.relation_pieces[0][:lr], eo + 2, berlin, sep]


@pytest.mark.parametrize("directions", [["head"] * 3, ["tail"] * 3, ["head", "tail", "head"]], ids=["head", "tail", "mixed"])
def test_model_encode_queries_returns_given_entities(directions, tok, make_model):
    model = make_model("clmke")
    given, rels = [6, 0, 4], [1, 2, 0]
    batch = tok.pad(tok.encode_queries(given, rels, directions))
    with torch.no_grad():
        emb, ent = model.encode_queries(batch["input_ids"], batch["attention_mask"])
    assert ent.tolist() == given
    assert emb.shape == (3, model.config.encoder.hidden_size)
    mask_cols = (batch["input_ids"] == tok.entity_mask_token_id).int().argmax(1)
    for d, col, length in zip(directions, mask_cols.tolist(), batch["attention_mask"].sum(1).tolist()):
        assert col == (1 if d == "head" else length - 2)


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
    assert {"model.safetensors", "config.json", f"{module}.py", "modeling_base.py", "configuration_lmke.py", "tokenization_lmke.py"} <= files
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


def test_tokenizer_save_and_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "kg_vocab.json").is_file()
    loaded = LmkeTokenizer.from_pretrained(tmp_path)
    for attr in ("entity_ids", "entity_names", "entity_descriptions", "relation_ids", "relation_names",
                 "relation_descriptions", "max_entity_description_length", "max_relation_description_length",
                 "max_key_description_length", "total_vocab_size", "pad_token_id"):
        assert getattr(loaded, attr) == getattr(tok, attr), attr
    for make in (lmke_batch, clmke_batch):
        a, b = make(tok), make(loaded)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plain = tmp_path / "word_pieces_only"
    tok.tokenizer.save_pretrained(plain)
    with pytest.raises(OSError, match="no kg_vocab.json.*not a saved LmkeTokenizer"):
        LmkeTokenizer.from_pretrained(plain)


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
        entry = {"dir": str(folder), "class": case.model_class.__name__, "inputs": batch, "outputs": _outputs(model, batch)}
        if case.degrees is not None:
            entry["entity_degrees"] = model.entity_degrees.clone()
        expected[case.name] = entry
    torch.save(expected, tmp_path / "expected.pt")
    empty = tmp_path / "empty_pythonpath"
    empty.mkdir()
    env = {**os.environ, "PYTHONPATH": str(empty), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", _CHILD, str(tmp_path / "expected.pt"), str(REPO_ROOT)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
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
    torch.testing.assert_close(table[eo + 6], (words[hf.convert_tokens_to_ids("new")] + words[hf.convert_tokens_to_ids("paris")]) / 2)
    # every KG row is the mean of its name's pieces (the nameless Q4 uses its description), not random noise
    for e, (name, description) in enumerate(zip(KG["entity_names"], KG["entity_descriptions"])):
        torch.testing.assert_close(table[eo + e], _mean_word_embedding(words, hf, name or description), msg=f"entity {e}")
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


def test_keeping_the_first_layers_reports_one_line_not_a_table(tiny_bert_dir, tok, source_encoder, transformers_records):
    import logging

    from transformers.utils import logging as hf_logging

    caplog, verbosity = transformers_records, hf_logging.get_verbosity()
    with caplog.at_level(logging.INFO, logger="lmke_hf"):
        model = LmkeForTripleClassification.from_encoder_pretrained(str(tiny_bert_dir), tok, encoder_kwargs={"num_hidden_layers": 1})
    assert model.config.encoder.num_hidden_layers == 1 and len(model.encoder.encoder.layer) == 1
    source = source_encoder.state_dict()
    for name, value in model.encoder.state_dict().items():
        assert torch.equal(value, source[name]), name  # the first layer is the pretrained one
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]
    dropped = len([k for k in source if k.startswith("encoder.layer.1.")])
    assert f"Kept the first 1 layers of {tiny_bert_dir}: {dropped} weights of the later layers not loaded." in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert hf_logging.get_verbosity() == verbosity
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="lmke_hf"):  # more layers than pretrained: new weights are a warning
        LmkeForTripleClassification.from_encoder_pretrained(str(tiny_bert_dir), tok, encoder_kwargs={"num_hidden_layers": 3})
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
    c.make_model("clmke").encode_queries(keys["input_ids"], keys["attention_mask"])


def _forward_query_without_mask(c: ErrorContext):
    keys = c.tok.pad(c.tok.encode_keys([0, 1]))
    c.make_model("clmke")(query_input_ids=keys["input_ids"], key_input_ids=keys["input_ids"])


ERROR_CASES = [
    # tokenizer: ids
    ("unknown-entity-string", lambda c: c.tok.encode_triples(["Q0"], ["P0"], ["nope"]), KeyError, r"Unknown entity id.*'nope'.*add_entities"),
    ("unknown-relation-string", lambda c: c.tok.encode_queries(["Q0"], ["P9"], "tail"), KeyError, r"Unknown relation id.*'P9'"),
    ("entity-index-out-of-range", lambda c: c.tok.encode_keys([0, 7]), IndexError, r"entity index 7 is out of range \[0, 7\)"),
    ("negative-entity-index", lambda c: c.tok.encode_keys([-1]), IndexError, r"entity index -1 is out of range"),
    ("relation-index-out-of-range", lambda c: c.tok.encode_triples([0], [3], [1]), IndexError, r"relation index 3 is out of range \[0, 3\)"),
    ("bad-direction", lambda c: c.tok.encode_queries([0], [0], "left"), ValueError, r"direction must be 'head' or 'tail'.*left"),
    ("unequal-lengths", lambda c: c.tok.encode_triples([0, 1], [0], [1, 2]), ValueError, r"same length.*'r': 1"),
    ("convert-id-outside-vocab", lambda c: c.tok.convert_ids_to_tokens([c.tok.total_vocab_size]), IndexError, r"outside the vocabulary"),
    ("duplicate-entity-ids", lambda c: LmkeTokenizer(c.tok.tokenizer, ["a", "a"], ["r"], **LENGTHS), ValueError, r"duplicates"),
    ("add-existing-entity", lambda c: c.tok.add_entities(["Q3"]), ValueError, r"already registered.*Q3"),
    ("texts-length-mismatch", lambda c: LmkeTokenizer(c.tok.tokenizer, ["a", "b"], ["r"], entity_names=["x"], **LENGTHS), ValueError, r"`entity_names` has 1 entries for 2 ids"),
    # tokenizer / model vocabulary disagreement
    ("check-tokenizer-more-entities", lambda c: c.make_model("lmke").check_tokenizer(_bigger_tokenizer(c)), ValueError, r"disagree.*model \(\d+, 3, 7\), tokenizer \(\d+, 3, 8\)"),
    ("check-tokenizer-more-relations", lambda c: c.make_model("clmke").check_tokenizer(_bigger_tokenizer(c, 0, 1)), ValueError, r"disagree"),
    ("forward-token-outside-vocab", _forward_with_new_entity, ValueError, r"token id \d+ outside the vocabulary of \d+ tokens.*check_tokenizer"),
    # empty batches
    ("pad-empty", lambda c: c.tok.pad({"input_ids": []}), ValueError, r"empty batch"),
    ("encode-empty", lambda c: c.tok.encode_triples([], [], []), ValueError, r"Empty input"),
    ("lmke-empty-input", lambda c: c.make_model("lmke")(input_ids=torch.zeros(0, 5, dtype=torch.long)), ValueError, r"batch_size > 0.*\(0, 5\)"),
    ("clmke-empty-input", lambda c: c.make_model("clmke")(query_input_ids=torch.zeros(0, 5, dtype=torch.long), key_input_ids=torch.zeros(0, 5, dtype=torch.long)), ValueError, r"query_input_ids.*batch_size > 0"),
    # too long
    ("tokenizer-lengths-exceed-model-max-length", lambda c: LmkeTokenizer(c.tok.tokenizer, ["a"], ["r"], max_entity_description_length=40), ValueError, r"at most 64.*max_entity_description_length"),
    ("tokenizer-key-length-exceeds", lambda c: LmkeTokenizer(c.tok.tokenizer, ["a"], ["r"], max_entity_description_length=4, max_key_description_length=62), ValueError, r"65 tokens.*at most 64"),
    ("tokenizer-negative-length", lambda c: LmkeTokenizer(c.tok.tokenizer, ["a"], ["r"], max_relation_description_length=-1), ValueError, r"max_relation_description_length.*-1"),
    ("lmke-input-too-long", lambda c: _long_input(c, "lmke"), ValueError, r"`input_ids` has 65 tokens but the encoder allows 64"),
    ("clmke-key-too-long", lambda c: _long_input(c, "clmke"), ValueError, r"`key_input_ids` has 65 tokens but the encoder allows 64"),
    # malformed inputs
    ("query-without-ent-mask", _query_from_keys, ValueError, r"\[ENT_MASK\]"),
    ("forward-query-without-ent-mask", _forward_query_without_mask, ValueError, r"\[ENT_MASK\]"),
    ("key-without-entity", lambda c: c.make_model("clmke").encode_keys(c.tok.pad(c.tok.encode_queries([0], [0], "head"))["input_ids"]), ValueError, r"Keys must start"),
    ("lmke-labels-shape", lambda c: c.make_model("lmke")(**lmke_batch(c.tok), labels=torch.ones(5)), ValueError, r"`labels` has 5 values for a batch of 4"),
    ("clmke-labels-shape", lambda c: c.make_model("clmke")(**clmke_batch(c.tok), labels=torch.eye(6, 5)), ValueError, r"`labels` has shape \(6, 5\), expected \(6, 6\)"),
    ("clmke-queries-vs-keys", lambda c: c.make_model("clmke")(**{**clmke_batch(c.tok), **c.tok.pad(c.tok.encode_keys([0, 1]), prefix="key_")}), ValueError, r"6 queries and 2 keys"),
    ("lmke-no-kg-tokens", lambda c: c.make_model("lmke")(input_ids=torch.tensor([[2, 10, 11, 3]])), ValueError, r"entity and relation tokens"),
    ("degrees-wrong-size", lambda c: c.make_model("clmke").set_entity_degrees([1.0, 2.0]), ValueError, r"2 degrees for 7 entities"),
    ("degrees-negative", lambda c: c.make_model("clmke").set_entity_degrees([-1.0] * 7), ValueError, r">= 0"),
    ("resize-negative", lambda c: c.make_model("lmke").resize_entity_embeddings(-1), ValueError, r"num_entities.*-1"),
    # from_encoder_pretrained
    ("encoder-not-bert-family", lambda c: LmkeForTripleClassification.from_encoder_pretrained(_gpt2_folder(c), c.tok), ValueError, r"GPT2Model.*not a BERT-family encoder"),
    # configs
    ("config-negative-entities", lambda c: LmkeConfig(num_entities=-1), ValueError, r"`num_entities` must be a non-negative int, got -1"),
    ("config-float-entities", lambda c: ClmkeConfig(num_entities=2.5), ValueError, r"`num_entities`.*2\.5"),
    ("config-negative-relations", lambda c: ClmkeConfig(num_relations=-3), ValueError, r"`num_relations`.*-3"),
    ("config-zero-negatives", lambda c: ClmkeConfig(max_negatives_per_query=0), ValueError, r"`max_negatives_per_query` must be None .* or >= 1, got 0"),
    ("config-negative-negatives", lambda c: ClmkeConfig(max_negatives_per_query=-4), ValueError, r"max_negatives_per_query.*-4"),
    ("config-negative-temperature", lambda c: ClmkeConfig(adversarial_temperature=-1.0), ValueError, r"adversarial_temperature.*-1"),
    ("config-zero-memory", lambda c: ClmkeConfig(scoring_memory_mb=0), ValueError, r"scoring_memory_mb.*> 0"),
    ("config-encoder-dict-without-type", lambda c: LmkeConfig(encoder={"hidden_size": 8}), ValueError, r"model_type"),
    ("config-encoder-wrong-type", lambda c: LmkeConfig(encoder=42), TypeError, r"`encoder` must be a PretrainedConfig or a dict, got int"),
]


@pytest.mark.parametrize("name,action,error,match", ERROR_CASES, ids=[e[0] for e in ERROR_CASES])
def test_errors_name_the_value_and_the_fix(name, action, error, match, tok, make_model, tiny_bert_dir, tmp_path):
    with pytest.raises(error, match=match):
        action(ErrorContext(tok, make_model, tiny_bert_dir, tmp_path))


def test_tokenizer_accepts_lengths_that_fit_exactly(tok):
    # longest triple: 5 + 2 * 29 + 1 = 64 tokens = model_max_length
    t = LmkeTokenizer(tok.tokenizer, ["a"], ["r"], max_entity_description_length=29,
                      max_relation_description_length=1, max_key_description_length=10)
    assert t.max_entity_description_length == 29


def test_config_round_trips_through_dict():
    config = ClmkeConfig(encoder=BertConfig(**TINY_ENCODER), num_entities=5, num_relations=2, max_negatives_per_query=3)
    again = ClmkeConfig.from_dict(config.to_dict())
    assert again.to_dict() == config.to_dict()
    assert again.encoder.hidden_size == 32 and again.encoder.model_type == "bert"
    assert again.entity_token_offset == config.encoder.vocab_size + 1 + 2
    assert again.total_vocab_size == config.encoder.vocab_size + 1 + 2 + 5


# ---------------------------------------------------------------------------------------------------- tokenizer scale
def test_tokenizer_builds_many_triples_for_a_large_kg(tok):
    """40k entities with random short descriptions, 10k triples (a speed sanity run; time is not asserted)."""
    rng = np.random.default_rng(0)
    words = np.array(["the", "a", "city", "country", "capital", "person", "born", "red", "blue", "new", "old", "big"])
    n_ent, n_rel, n_triples = 40_000, 50, 10_000
    picks, sizes = words[rng.integers(0, len(words), (n_ent, 8))].tolist(), rng.integers(0, 9, n_ent).tolist()
    descriptions = [" ".join(row[:k]) for row, k in zip(picks, sizes)]
    big = LmkeTokenizer(
        tok.tokenizer,
        entity_ids=[f"E{i}" for i in range(n_ent)],
        relation_ids=[f"R{i}" for i in range(n_rel)],
        entity_descriptions=descriptions,
        **LENGTHS,
    )
    h, r, t = rng.integers(0, n_ent, n_triples), rng.integers(0, n_rel, n_triples), rng.integers(0, n_ent, n_triples)
    triples = big.encode_triples(h, r, t)
    batch = big.pad(triples)
    assert batch["input_ids"].shape[0] == n_triples
    assert batch["input_ids"].shape[1] <= 5 + 2 * LENGTHS["max_entity_description_length"] + LENGTHS["max_relation_description_length"]
    assert int(batch["input_ids"].max()) < big.total_vocab_size
    ids = batch["input_ids"]
    assert (ids[:, 1] - big.entity_token_offset).tolist() == h.tolist()
    queries = big.encode_queries([f"E{i}" for i in h[:2000]], r[:2000], "head")
    assert len(queries["input_ids"]) == 2000


# ---------------------------------------------------------------------------------------------------- growing the KG
def test_evaluation_encode_entities_is_the_models_with_an_explicit_tokenizer(tok, make_model):
    """`lmke_hf.evaluation.encode_entities(model, tokenizer)` (the loop, also per process shard) runs
    `ClmkeForLinkPrediction.encode_entities` with that tokenizer: the same keys as with the tokenizer attached."""
    from lmke_hf.evaluation import encode_entities

    model = make_model("clmke").train()
    keys = encode_entities(model, tok, batch_size=3)
    assert model.training  # restored
    model.attach_tokenizer(tok)
    assert torch.equal(keys, model.encode_entities(batch_size=3))
    part = encode_entities(model, tok, entities=[5, "Q1", 2], batch_size=2)  # a subset, as one process's shard
    torch.testing.assert_close(part, keys[[5, 1, 2]], rtol=1e-5, atol=1e-6)
    assert encode_entities(model, tok, entities=[]).shape == (0, model.config.encoder.hidden_size)


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


# ---------------------------------------------------------------------------------------------------- self-negatives
def test_extra_keys_are_matched_and_labelled_by_entity(tok, make_model):
    """Self-negatives: the keys of the queries' own given entities are appended after the in-batch keys; the
    logits of those columns equal a direct match, and a given entity is positive only where it is a known answer."""
    model = make_model("clmke")
    batch = clmke_batch(tok)
    own = tok.pad(tok.encode_keys(QUERIES["given"]), prefix="extra_key_")
    extra = {2: [QUERIES["given"][2]]}  # query 2's given entity is also one of its known answers: (x, r, x)
    with torch.no_grad():
        out = model(**batch, **own, answer_ids=gold_answer_ids(extra))
        k_own, k_own_ent = model.encode_keys(own["extra_key_input_ids"], own["extra_key_attention_mask"])
        q, q_ent = model.encode_queries(batch["query_input_ids"], batch["query_attention_mask"])
        direct = model.match(q, q_ent, k_own, k_own_ent)
    b = len(QUERIES["given"])
    assert out.logits.shape == (b, 2 * b)
    torch.testing.assert_close(out.logits[:, b:], direct, rtol=1e-5, atol=1e-6)
    given, gold = torch.tensor(QUERIES["given"]), torch.tensor(QUERIES["gold"])
    own_is_gold = (given.view(1, -1) == gold.view(-1, 1)).float()  # another query's given entity is my gold
    expected = torch.cat([torch.eye(b), own_is_gold], 1)
    expected[2, b:][given == given[2]] = 1.0
    expected[2, :b][gold == given[2]] = 1.0  # ... and so is the in-batch key holding that entity
    assert 0 < own_is_gold.sum() < b * b and expected[:, b:].diagonal().sum() == 1  # both cases occur
    torch.testing.assert_close(out.labels, expected)
    torch.testing.assert_close(out.loss.double(), paper_loss(out.logits.double(), expected.double()), rtol=1e-5, atol=1e-6)


def test_collator_self_negatives_are_the_given_entities_keys(tok):
    from lmke_hf.features import ClmkeCollator

    features = [
        {"query_input_ids": q, "key_input_ids": k, "given": g, "relation": r, "target": t, "direction": 0}
        for q, k, g, r, t in zip(
            tok.encode_queries(QUERIES["given"], QUERIES["relations"], "tail")["input_ids"],
            tok.encode_keys(QUERIES["gold"])["input_ids"], QUERIES["given"], QUERIES["relations"], QUERIES["gold"],
        )
    ]
    batch = ClmkeCollator(tok.pad_token_id, self_negatives=tok)(features)
    expected = tok.pad(tok.encode_keys(QUERIES["given"]))
    torch.testing.assert_close(batch["extra_key_input_ids"], expected["input_ids"])
    torch.testing.assert_close(batch["extra_key_attention_mask"], expected["attention_mask"])
    assert "extra_key_input_ids" not in ClmkeCollator(tok.pad_token_id)(features)


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
