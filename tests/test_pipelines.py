"""`transformers.pipeline` tasks (issue 19 item 2) on tiny trained runs, offline."""

from __future__ import annotations

import pytest
from transformers import pipeline

import lmke_hf  # noqa: F401  (registers the tasks)


@pytest.fixture(scope="module")
def lmke_run(lmke_script, kg_dir, tiny_bert_dir, tmp_path_factory):
    from helpers import _common

    out = tmp_path_factory.mktemp("lmke_pipe") / "run"
    lmke_script.main(lmke_script.parse_args(_common(kg_dir, tiny_bert_dir, out, "--max_train_steps", 2)))
    return out


def test_completion_pipeline_ranks_tails_and_heads_like_predict(clmke_run, no_network):
    run, _ = clmke_run
    complete = pipeline("knowledge-graph-completion", model=str(run))
    model = complete.model
    head, relation = model.kg_tokenizer.entity_ids[0], model.kg_tokenizer.relation_ids[0]
    answers = complete({"head": head, "relation": relation}, top_k=3)
    expected = model.predict(head=head, relation=relation, top_k=3)
    assert [a["entity"] for a in answers] == [e["entity_id"] for e in expected]
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    assert set(answers[0]) == {"entity", "name", "score"}
    heads = complete({"tail": head, "relation": relation}, top_k=2)
    assert [a["entity"] for a in heads] == [e["entity_id"] for e in model.predict(tail=head, relation=relation, top_k=2)]
    both = complete([{"head": head, "relation": relation}, {"tail": head, "relation": relation}], top_k=2)
    assert len(both) == 2 and [a["entity"] for a in both[1]] == [a["entity"] for a in heads]
    assert not no_network
    card = (run / "README.md").read_text()
    assert "pipeline_tag: knowledge-graph-completion" in card and 'pipeline("knowledge-graph-completion"' in card


def test_completion_pipeline_refuses_bad_queries_in_one_line(clmke_run):
    run, _ = clmke_run
    complete = pipeline("knowledge-graph-completion", model=str(run))
    relation = complete.model.kg_tokenizer.relation_ids[0]
    with pytest.raises(ValueError, match="exactly one of 'head'"):
        complete({"relation": relation})
    with pytest.raises(ValueError, match="unknown keys \\['heed'\\]"):
        complete({"heed": "x", "relation": relation})
    with pytest.raises(KeyError, match="Unknown entity 'no such thing'"):
        complete({"head": "no such thing", "relation": relation})


def test_classification_pipeline_scores_a_triple(lmke_run):
    classify = pipeline("triple-classification", model=str(lmke_run))
    kg = classify.model.kg_tokenizer
    triple = {"head": kg.entity_ids[0], "relation": kg.relation_ids[0], "tail": kg.entity_ids[1]}
    out = classify(triple)
    (expected,) = classify.model.predict(triple["head"], triple["relation"], triple["tail"])
    assert out == {"score": expected["score"], "label": "true" if expected["score"] > 0.5 else "false"}
    assert classify(triple, threshold=1.0)["label"] == "false"
    assert classify([triple, triple]) == [out, out]
    assert "pipeline_tag: triple-classification" in (lmke_run / "README.md").read_text()
    with pytest.raises(ValueError, match="missing \\['tail'\\]"):
        classify({"head": triple["head"], "relation": triple["relation"]})
