"""Tests of the evaluation loops (`lmke_hf.evaluation.loops`): `encode_entities` with an explicit tokenizer (also
on a shard of the entities), and the leak guard of `rank_link_prediction` and all-entity scoring on a trained run:
the scores do not depend on the gold answers, and each candidate is scored with its own training degree.

Tiny and offline: conftest's `make_model` / `tok` (the tiny model KG of `helpers.KG`) and `clmke_run` (C-LMKE
trained 6 steps on the tiny KG of `helpers.write_tiny_kg`).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lmke_hf import ClmkeForLinkPrediction, LmkeTokenizer
from lmke_hf.kg import load_kg

from helpers import DEV, ENTITIES, TEST, TRAIN, train_degrees, write_tiny_kg


# ---------------------------------------------------------------------------------------------------- encode_entities
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


# ---------------------------------------------------------------------------------------------------- leak guard: rank_link_prediction and the scores of a trained run
def _relabelled(direction: str) -> list[tuple[int, int, int]]:
    """TEST with the gold entity of `direction` replaced by another entity, keeping every triple new."""
    known = set(TRAIN) | set(DEV)
    out = []
    for h, r, t in TEST:
        for shift in range(1, len(ENTITIES)):
            if direction == "tail":
                triple = (h, r, (t + shift) % len(ENTITIES))
            else:
                triple = ((h + shift) % len(ENTITIES), r, t)
            if triple[0] != triple[2] and triple not in known and triple not in out and triple not in TEST:
                out.append(triple)
                break
    assert len(out) == len(TEST)
    return out


@pytest.mark.parametrize("direction", ["tail", "head"])
def test_scores_do_not_depend_on_gold_answers(clmke_run, kg_dir, tmp_path, direction):
    """Relabelling the gold answer of every test triple leaves the (B, N) score blocks of that direction's
    queries unchanged: the ranker scores without looking at the gold (or at test-split degrees)."""
    from lmke_hf.evaluation import rank_link_prediction

    out, _ = clmke_run
    model = ClmkeForLinkPrediction.from_pretrained(out)
    tokenizer = LmkeTokenizer.from_pretrained(out)
    kg = load_kg(str(kg_dir))
    kg_relabelled = load_kg(str(write_tiny_kg(tmp_path, name="relabelled", test=_relabelled(direction))))
    gold_col = 2 if direction == "tail" else 0
    assert (kg.triples("test")[:, gold_col] != kg_relabelled.triples("test")[:, gold_col]).all()
    assert not np.array_equal(
        kg.degrees(["train", "validation", "test"]), kg_relabelled.degrees(["train", "validation", "test"])
    )

    recorded: list[list[torch.Tensor]] = []
    original = model.score_all

    def recording(*args, **kwargs):
        scores = original(*args, **kwargs)
        recorded[-1].append(scores.detach().clone())
        return scores

    model.score_all = recording
    evaluators = []
    for graph in (kg, kg_relabelled):
        recorded.append([])
        evaluators.append(rank_link_prediction(model, tokenizer, graph, "test", directions=(direction,), batch_size=4))
    first, second = recorded
    assert len(first) == len(second) == math.ceil(len(TEST) / 4)
    for a, b in zip(first, second):
        assert a.shape[1] == len(ENTITIES)
        assert torch.equal(a, b)
    golds = [ev.ranks_table()["gold"] for ev in evaluators]
    assert not np.array_equal(np.sort(golds[0]), np.sort(golds[1]))


def test_scores_use_each_candidates_own_training_degree(clmke_run, kg_dir):
    """score_all(q, all keys) equals the matcher on explicit (query, candidate) pairs with the query's and the
    candidate's own stored degrees: no gold enters a candidate's score."""
    from lmke_hf.evaluation import encode_entities

    out, _ = clmke_run
    model = ClmkeForLinkPrediction.from_pretrained(out).eval()
    tokenizer = LmkeTokenizer.from_pretrained(out)
    keys = encode_entities(model, tokenizer)
    test = np.asarray(TEST)
    batch = tokenizer.pad(tokenizer.encode_queries(test[:, 0], test[:, 1], "tail"))
    with torch.no_grad():
        q, q_ent = model.embed_queries(batch["input_ids"], batch["attention_mask"])
        scores = model.score_all(q, q_ent, keys)
        n = len(ENTITIES)
        logdeg = torch.log1p(torch.as_tensor(train_degrees(), dtype=torch.float32))
        explicit = model.matcher(
            q.unsqueeze(1).expand(-1, n, -1),
            keys.unsqueeze(0).expand(len(test), -1, -1),
            logdeg[q_ent].unsqueeze(1).expand(-1, n),
            logdeg.unsqueeze(0).expand(len(test), -1),
        )
    torch.testing.assert_close(scores, explicit, atol=1e-5, rtol=1e-5)
