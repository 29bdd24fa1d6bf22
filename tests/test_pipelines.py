"""`transformers.pipeline` tasks (issue 19 item 2) on tiny trained runs, offline."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from _hide_package import HIDE_LMKE_HF
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
    head, relation = model.load_kg_tokenizer().entity_ids[0], model.load_kg_tokenizer().relation_ids[0]
    answers = complete({"head": head, "relation": relation}, top_k=3)
    expected = model.predict(head=head, relation=relation, top_k=3)
    assert [a["entity"] for a in answers] == [e["entity_id"] for e in expected]
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    assert set(answers[0]) == {"entity", "name", "score"}
    heads = complete({"tail": head, "relation": relation}, top_k=2)
    assert [a["entity"] for a in heads] == [
        e["entity_id"] for e in model.predict(tail=head, relation=relation, top_k=2)
    ]
    both = complete([{"head": head, "relation": relation}, {"tail": head, "relation": relation}], top_k=2)
    assert len(both) == 2 and [a["entity"] for a in both[1]] == [a["entity"] for a in heads]
    assert not no_network
    card = (run / "README.md").read_text()
    assert "pipeline_tag: knowledge-graph-completion" in card and 'pipeline("knowledge-graph-completion"' in card


def test_completion_pipeline_refuses_bad_queries_in_one_line(clmke_run):
    run, _ = clmke_run
    complete = pipeline("knowledge-graph-completion", model=str(run))
    relation = complete.model.load_kg_tokenizer().relation_ids[0]
    with pytest.raises(ValueError, match="exactly one of 'head'"):
        complete({"relation": relation})
    with pytest.raises(ValueError, match="unknown keys \\['heed'\\]"):
        complete({"heed": "x", "relation": relation})
    with pytest.raises(KeyError, match="Unknown entity 'no such thing'"):
        complete({"head": "no such thing", "relation": relation})


def test_classification_pipeline_scores_a_triple(lmke_run):
    classify = pipeline("triple-classification", model=str(lmke_run))
    kg = classify.model.load_kg_tokenizer()
    triple = {"head": kg.entity_ids[0], "relation": kg.relation_ids[0], "tail": kg.entity_ids[1]}
    out = classify(triple)
    (expected,) = classify.model.predict(triple["head"], triple["relation"], triple["tail"])
    assert out == {"score": expected["score"], "label": "true" if expected["score"] > 0.5 else "false"}
    assert classify(triple, threshold=1.0)["label"] == "false"
    assert classify([triple, triple]) == [out, out]
    assert "pipeline_tag: triple-classification" in (lmke_run / "README.md").read_text()
    with pytest.raises(ValueError, match="missing \\['tail'\\]"):
        classify({"head": triple["head"], "relation": triple["relation"]})


# ---------------------------------------------------------------------------------------------------- remote code
REMOTE_PIPELINES = (
    HIDE_LMKE_HF
    + """
import json
import sys

sys.path = [p for p in sys.path if 'work/main' not in p and p not in ('', '.')]
try:
    import lmke_hf
    raise SystemExit('lmke_hf importable')
except ImportError:
    pass
from transformers import pipeline

out = {}
for task, folder, query, kwargs in json.loads(sys.argv[1]):
    try:
        pipeline(task, model=folder)
        out[task + ' refused'] = None
    except ValueError as err:
        out[task + ' refused'] = str(err)
    run = pipeline(task, model=folder, trust_remote_code=True)
    out[task] = [type(run).__module__.split('.')[0], run(query, **kwargs)]
print('\\nRESULT', json.dumps(out))  # after the [y/N] prompt that transformers prints without a newline
"""
)


def test_saved_runs_carry_their_task_only(clmke_run, lmke_run):
    """C-LMKE runs carry knowledge-graph-completion, LMKE runs triple-classification: a custom_pipelines entry in
    config.json and the pipeline file (which imports nothing of lmke_hf)."""
    for run, task, impl in (
        (clmke_run[0], "knowledge-graph-completion", "KnowledgeGraphCompletionPipeline"),
        (lmke_run, "triple-classification", "TripleClassificationPipeline"),
    ):
        config = json.loads((run / "config.json").read_text())
        assert config["custom_pipelines"] == {
            task: {"impl": f"pipeline_lmke.{impl}", "pt": ["AutoModel"], "tf": [], "type": "text"}
        }
        assert (run / "pipeline_lmke.py").is_file()


def test_pipelines_load_with_trust_remote_code_without_lmke_hf(clmke_run, lmke_run, tmp_path):
    """`pipeline(task, model=run, trust_remote_code=True)` where lmke_hf cannot be imported gives what lmke_hf's own
    pipeline gives; without trust_remote_code transformers refuses with its own message."""
    complete = pipeline("knowledge-graph-completion", model=str(clmke_run[0]))
    kg = complete.model.load_kg_tokenizer()
    query = {"head": kg.entity_ids[0], "relation": kg.relation_ids[0]}
    classify = pipeline("triple-classification", model=str(lmke_run))
    lkg = classify.model.load_kg_tokenizer()
    triple = {"head": lkg.entity_ids[0], "relation": lkg.relation_ids[0], "tail": lkg.entity_ids[1]}
    cases = [
        ["knowledge-graph-completion", str(clmke_run[0]), query, {"top_k": 3}],
        ["triple-classification", str(lmke_run), triple, {}],
    ]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"HF_HUB_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", REMOTE_PIPELINES, json.dumps(cases)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, (result.stdout[-2000:], result.stderr[-2000:])
    out = json.loads(lines[-1].removeprefix("RESULT "))

    for task in ("knowledge-graph-completion", "triple-classification"):
        assert "trust_remote_code=True" in out[task + " refused"], out[task + " refused"]
        assert out[task][0] == "transformers_modules"  # the folder's copy of the code, not an installed lmke_hf
    remote, ours = out["knowledge-graph-completion"][1], complete(query, top_k=3)
    assert [a["entity"] for a in remote] == [a["entity"] for a in ours] and [a["name"] for a in remote] == [
        a["name"] for a in ours
    ]
    assert [a["score"] for a in remote] == pytest.approx([a["score"] for a in ours], abs=1e-5)
    remote, ours = out["triple-classification"][1], classify(triple)
    assert remote["label"] == ours["label"] and remote["score"] == pytest.approx(ours["score"], abs=1e-5)
    # where lmke_hf is imported, its registered task is used, with or without trust_remote_code
    trusted = pipeline("triple-classification", model=str(lmke_run), trust_remote_code=True)
    assert type(trusted) is type(classify) and trusted(triple) == ours
