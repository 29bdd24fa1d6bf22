"""Tests of SimKGC's graph re-ranking (`lmke_hf.evaluation.GraphReranker`): the neighbourhoods against a plain
breadth-first search, the leak guard (a graph holding the ranked split is refused), the ranks of
`rank_link_prediction(reranker=...)` against ranks recomputed by hand, and the `--rerank_*` flags of evaluate.

Tiny and offline: the KG of `helpers.write_tiny_kg` and conftest's `clmke_run` (C-LMKE trained 6 steps on it); its
training graph has diameter 2, so 1 and 2 hops are the cases that differ.
"""

from __future__ import annotations

import json
import re
from collections import Counter, deque

import numpy as np
import pytest
import torch

from lmke_hf import ClmkeForLinkPrediction, LmkeTokenizer
from lmke_hf.errors import UsageError
from lmke_hf.evaluation import GraphReranker, filtered_ranks, rank_link_prediction
from lmke_hf.kg import load_kg

from helpers import _common, _load_script


@pytest.fixture(scope="module")
def kg(kg_dir):
    return load_kg(str(kg_dir))


def _within(kg, splits, given: int, hops: int) -> set[int]:
    """The reference: breadth-first search over the undirected edges of `splits`, the start left out."""
    neighbours: dict[int, set[int]] = {}
    for split in splits:
        for h, _, t in kg.triples(split).tolist():
            neighbours.setdefault(h, set()).add(t)
            neighbours.setdefault(t, set()).add(h)
    seen, frontier = {given}, deque([(given, 0)])
    while frontier:
        node, depth = frontier.popleft()
        if depth == hops:
            continue
        for other in neighbours.get(node, ()):
            if other not in seen:
                seen.add(other)
                frontier.append((other, depth + 1))
    return seen - {given}


@pytest.mark.parametrize("hops", [1, 2])
@pytest.mark.parametrize("splits", [["train"], ["train", "validation"]])
def test_neighbours_are_the_breadth_first_search(kg, splits, hops):
    reranker = GraphReranker(kg, splits, hops=hops, weight=0.05)
    given = torch.arange(kg.num_entities)
    mask = reranker.neighbours(given)
    assert mask.shape == (kg.num_entities, kg.num_entities) and mask.dtype == torch.bool
    for entity in range(kg.num_entities):
        assert set(torch.nonzero(mask[entity]).flatten().tolist()) == _within(kg, splits, entity, hops), entity
    assert not mask.diagonal().any()  # the given entity itself gets no bonus
    edges = {tuple(sorted((h, t))) for split in splits for h, _, t in kg.triples(split).tolist()}
    assert reranker.num_edges == len(edges)


def test_the_bonus_lands_on_the_neighbours_only(kg):
    reranker = GraphReranker(kg, ["train"], hops=1, weight=-0.25)
    scores = torch.randn(3, kg.num_entities, generator=torch.Generator().manual_seed(0))
    given = torch.tensor([0, 5, 0])
    adjusted = reranker(scores, given)
    expected = scores.clone()
    for row, entity in enumerate(given.tolist()):
        for other in _within(kg, ["train"], entity, 1):
            expected[row, other] -= 0.25
    assert torch.equal(adjusted, expected)
    assert reranker.describe() == {"splits": ["train"], "hops": 1, "weight": -0.25}
    with pytest.raises(ValueError, match=r"`scores` has shape \(2, .*expected \(3, "):
        reranker(scores[:2], given)


@pytest.mark.parametrize(
    "graph, ranked, late, fix",
    [
        (["train", "test"], "test", ["test"], "build it from ['train', 'validation']"),
        (["train", "test"], "validation", ["test"], "build it from ['train']"),
        (["validation"], "validation", ["validation"], "build it from ['train']"),
        (["train"], "train", ["train"], "no split comes before 'train': rank another split"),
    ],
)
def test_a_graph_holding_the_ranked_or_a_later_split_is_refused(kg, graph, ranked, late, fix):
    """The leak guard: a graph of the ranked split's own triples puts each gold one hop from its query; one of a later
    split (test while ranking validation) carries facts the ranked split must not see."""
    reranker = GraphReranker(kg, graph, hops=1, weight=0.05)
    message = re.escape(f"holds {late} while {ranked!r} is being ranked") + ".*" + re.escape(fix)
    with pytest.raises(ValueError, match=message):
        reranker.check_split(ranked)
    model = torch.nn.Linear(1, 1)  # no C-LMKE: refused before anything is encoded or scored
    with pytest.raises(ValueError, match=message):
        rank_link_prediction(model, None, kg, ranked, reranker=reranker)


def test_a_graph_of_earlier_splits_is_accepted(kg):
    GraphReranker(kg, ["train", "validation"], hops=1, weight=0.05).check_split("test")
    GraphReranker(kg, ["train"], hops=1, weight=0.05).check_split("validation")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"hops": 0}, ValueError, r"`hops` must be an integer >= 1, got 0"),
        ({"hops": True}, ValueError, r"`hops` must be an integer >= 1, got True"),
        ({"hops": 1.5}, ValueError, r"`hops` must be an integer >= 1, got 1.5"),
        ({"weight": float("nan")}, ValueError, r"`weight` must be a finite number, got nan"),
        ({"splits": ["train", "tset"]}, ValueError, r"`splits`='tset' is not a split"),
        ({"splits": "train"}, TypeError, r"got the string 'train'; write \['train'\]"),
    ],
)
def test_bad_settings_are_named(kg, kwargs, error, match):
    settings = {"splits": ["train"], "hops": 2, "weight": 0.05, **kwargs}
    with pytest.raises(error, match=match):
        GraphReranker(kg, **settings)


@pytest.mark.parametrize("direction", ["tail", "head"])
def test_reranked_ranks_are_the_ranks_of_the_adjusted_scores(clmke_run, kg, direction):
    """`rank_link_prediction(reranker=...)` ranks every query exactly as the model's plain scores plus the bonus on
    the BFS neighbours of THAT query's given entity (head for tail prediction, tail for head prediction) would."""
    out, _ = clmke_run
    model = ClmkeForLinkPrediction.from_pretrained(out).eval()
    tokenizer = LmkeTokenizer.from_pretrained(out)
    weight = 10.0  # above any score gap of the tiny model: every neighbour moves ahead of every other entity
    reranker = GraphReranker(kg, ["train"], hops=1, weight=weight)
    # blocks of 2 queries: the given entities must stay aligned with their rows across length-sorted blocks
    evaluator = rank_link_prediction(
        model, tokenizer, kg, "test", directions=(direction,), reranker=reranker, batch_size=2
    )
    plain = rank_link_prediction(model, tokenizer, kg, "test", directions=(direction,))

    test = kg.triples("test")
    given_col, gold_col = (0, 2) if direction == "tail" else (2, 0)
    batch = tokenizer.pad(tokenizer.encode_queries(test[:, given_col], test[:, 1], direction))
    with torch.no_grad():
        q, q_ent = model.embed_queries(batch["input_ids"], batch["attention_mask"])
        scores = model.score_all(q, q_ent, model.encode_entities(tokenizer=tokenizer))
    for row, given in enumerate(test[:, given_col].tolist()):
        scores[row, sorted(_within(kg, ["train"], given, 1))] += weight
    rows, cols = kg.answer_index(["train", "validation", "test"], direction).pairs(test[:, given_col], test[:, 1])
    ranks = filtered_ranks(scores, torch.as_tensor(test[:, gold_col]), torch.as_tensor(rows), torch.as_tensor(cols))

    def rows_of(table_or_ranks) -> Counter:
        return Counter(zip(table_or_ranks[0].tolist(), table_or_ranks[1].tolist()))

    table = evaluator.ranks_table()
    assert rows_of((table["gold"], table["rank_realistic"])) == rows_of((test[:, gold_col], ranks.realistic))
    assert not np.array_equal(np.sort(table["rank_realistic"]), np.sort(plain.ranks_table()["rank_realistic"]))


# ---------------------------------------------------------------------------------------------------- evaluate flags
@pytest.fixture(scope="module")
def evaluate_script():
    return _load_script("evaluate")


def _evaluate(script, *argv):
    return script.main(script.parse_args([*map(str, argv), "--no_progress"]))


def test_evaluate_writes_reranked_results_apart_with_their_settings(evaluate_script, clmke_run, kg_dir, tmp_path):
    out, trained = clmke_run
    folder = tmp_path / "eval"
    plain = _evaluate(evaluate_script, "--model", out, "--dataset", kg_dir, "--output_dir", folder)
    reranked = _evaluate(
        evaluate_script,
        *("--model", out, "--dataset", kg_dir, "--output_dir", folder),
        *("--rerank_weight", 10, "--rerank_hops", 1),
    )
    assert plain["rerank"] is None and plain["test_mrr"] == pytest.approx(trained["test_mrr"], abs=1e-6)
    assert reranked["rerank"] == {"splits": ["train"], "hops": 1, "weight": 10.0}
    assert reranked["test_mrr"] != pytest.approx(plain["test_mrr"])
    # the same folder: the re-ranked files sit beside the plain ones and replace none of them
    saved = json.loads((folder / "test_rerank_results.json").read_text())
    assert saved["rerank"] == reranked["rerank"] and saved["test_mrr"] == pytest.approx(reranked["test_mrr"])
    assert json.loads((folder / "test_results.json").read_text())["test_mrr"] == pytest.approx(plain["test_mrr"])
    reranked_tables = json.loads((folder / "test_rerank_metrics" / "metrics.json").read_text())
    plain_tables = json.loads((folder / "test_metrics" / "metrics.json").read_text())
    assert reranked_tables["overall"]["mrr"] == pytest.approx(reranked["test_mrr"])
    assert plain_tables["overall"]["mrr"] == pytest.approx(plain["test_mrr"])


def test_evaluate_defaults_are_simkgcs_two_hops_on_the_training_graph(evaluate_script, clmke_run, kg_dir, tmp_path):
    out, _ = clmke_run
    results = _evaluate(
        evaluate_script, "--model", out, "--dataset", kg_dir, "--output_dir", tmp_path, "--rerank_weight", 0.05
    )
    assert results["rerank"] == {"splits": ["train"], "hops": 2, "weight": 0.05}


@pytest.mark.parametrize(
    "extra, match",
    [
        (("--rerank_weight", 0.05, "--rerank_splits", "train", "test"), r"^--rerank_splits: .*holds \['test'\]"),
        (("--rerank_hops", 3), r"^--rerank_hops takes effect only with --rerank_weight \(e.g. 0.05\); add it"),
        (("--rerank_splits", "train"), r"^--rerank_splits takes effect only with --rerank_weight"),
        (("--rerank_hops", 3, "--rerank_splits", "train"), r"^--rerank_hops and --rerank_splits take effect only"),
        (("--rerank_weight", 0.05, "--inductive_fraction", 0.2), r"^--rerank_weight 0.05: .* is an inductive split"),
    ],
)
def test_evaluate_refuses_bad_rerank_settings_before_writing(
    evaluate_script, clmke_run, kg_dir, tmp_path, extra, match
):
    out, _ = clmke_run
    with pytest.raises(UsageError, match=match):
        _evaluate(evaluate_script, "--model", out, "--dataset", kg_dir, "--output_dir", tmp_path / "eval", *extra)
    assert not (tmp_path / "eval").exists()


def test_evaluate_refuses_reranking_a_classifier(evaluate_script, kg_dir, tiny_bert_dir, tmp_path):
    script = _load_script("train_lmke")
    out = tmp_path / "lmke"
    script.main(script.parse_args(_common(kg_dir, tiny_bert_dir, out, "--max_train_steps", 1)))
    with pytest.raises(UsageError, match=r"^--rerank_weight 0.05: graph re-ranking applies to link prediction"):
        _evaluate(evaluate_script, "--model", out, "--dataset", kg_dir, "--rerank_weight", 0.05)
    assert not (out / "eval").exists()


def test_evaluate_warns_when_the_scorer_is_not_cosine(evaluate_script, clmke_run, kg_dir, tmp_path, caplog):
    out, _ = clmke_run
    assert ClmkeForLinkPrediction.from_pretrained(out).config.scorer != "cosine"  # the paper's matcher
    with caplog.at_level("WARNING"):
        _evaluate(evaluate_script, "--model", out, "--dataset", kg_dir, "--output_dir", tmp_path, "--rerank_weight", 1)
    assert "scale is not SimKGC's cosines" in caplog.text
