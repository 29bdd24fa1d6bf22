"""The models' Python API refuses what it cannot use: each case used to be accepted and ignored or misread.
Tiny and offline (the tiny model KG of `helpers.KG`, conftest's `kg_tok`, and conftest's random BERT)."""

from __future__ import annotations

import pytest
import torch

from lmke_hf import ClmkeForLinkPrediction, LmkeForTripleClassification

from helpers import KG, clmke_batch, gold_answer_ids, lmke_batch


@pytest.fixture(scope="module")
def clmke(tiny_bert_dir, kg_tok):
    torch.manual_seed(0)
    model = ClmkeForLinkPrediction.from_encoder_pretrained(str(tiny_bert_dir), kg_tok).eval()
    model.attach_tokenizer(kg_tok)
    return model


@pytest.fixture(scope="module")
def lmke(tiny_bert_dir, kg_tok):
    torch.manual_seed(0)
    model = LmkeForTripleClassification.from_encoder_pretrained(str(tiny_bert_dir), kg_tok).eval()
    model.attach_tokenizer(kg_tok)
    return model


class TinyGraph:
    """What `predict(filter_known=...)` reads of a KnowledgeGraph: entity ids and an answer index."""

    def __init__(self, triples, entity_ids):
        import numpy as np

        self.triples_ = np.asarray(triples)
        self.entities = {"id": list(entity_ids)}
        self.num_entities = len(entity_ids)
        self.num_relations = 3

    def answer_index(self, splits, direction):
        from lmke_hf.kg import AnswerIndex

        t = self.triples_
        given, answer = (t[:, 0], t[:, 2]) if direction == "tail" else (t[:, 2], t[:, 0])
        return AnswerIndex(given, t[:, 1], answer, self.num_entities, self.num_relations)


def test_predict_filter_known_leaves_out_known_answers(clmke):
    everything = clmke.predict(head=0, relation=0, top_k=7)
    best = everything[0]["entity_id"]
    graph = TinyGraph([[0, 0, KG["entity_ids"].index(best)]], KG["entity_ids"])
    filtered = clmke.predict(head=0, relation=0, top_k=7, filter_known=graph)
    assert best not in [row["entity_id"] for row in filtered] and len(filtered) == 6
    assert [r["entity_id"] for r in filtered] == [r["entity_id"] for r in everything if r["entity_id"] != best]
    with pytest.raises(TypeError, match="KnowledgeGraph"):
        clmke.predict(head=0, relation=0, filter_known=True)
    with pytest.raises(ValueError, match="entities"):
        clmke.predict(head=0, relation=0, filter_known=TinyGraph([[0, 0, 1]], KG["entity_ids"][::-1]))


def test_unknown_names_get_suggestions_and_relations_are_not_advised_add_entities(clmke):
    with pytest.raises(KeyError, match="Did you mean 'paris'") as info:
        clmke.predict(head="pariss", relation=0)
    assert "add_entities" in str(info.value)
    with pytest.raises(KeyError, match="Did you mean 'capital of'") as info:
        clmke.predict(head=0, relation="capitol of")
    assert "add_entities" not in str(info.value)


@pytest.mark.parametrize("value", [2.0, True, b"paris"])
def test_entities_are_ids_names_or_int_indices_only(clmke, value):
    with pytest.raises((TypeError, ValueError)):
        clmke.predict(head=value, relation=0)


def test_degrees_must_be_finite(tiny_bert_dir, kg_tok):
    model = ClmkeForLinkPrediction.from_encoder_pretrained(str(tiny_bert_dir), kg_tok)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="finite"):
            model.set_entity_degrees([1.0, bad, 0, 0, 0, 0, 0])


def test_labels_outside_their_values_are_refused(clmke, lmke, kg_tok):
    batch = clmke_batch(kg_tok)
    b = batch["query_input_ids"].shape[0]
    with pytest.raises(ValueError, match=r"labels.*\[0, 1, -100\]"):
        clmke(**batch, labels=torch.eye(b) * 2)
    with pytest.raises(ValueError, match=r"labels.*\[0, 1\]"):
        lmke(**lmke_batch(kg_tok), labels=torch.tensor([1.0, 0.5, 0.0, 1.0]))


def test_attention_mask_of_the_wrong_shape_and_float_ids_are_refused(clmke, kg_tok):
    batch = clmke_batch(kg_tok)
    short = {**batch, "query_attention_mask": batch["query_attention_mask"][:, :-1]}
    with pytest.raises(ValueError, match="attention mask has shape"):
        clmke(**short, answer_ids=gold_answer_ids())
    with pytest.raises(TypeError, match="integer tensor"):
        clmke(**{**batch, "query_input_ids": batch["query_input_ids"].float()})
