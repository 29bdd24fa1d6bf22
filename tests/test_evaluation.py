"""Tests for lmke_hf.evaluation: hand-computed ranks, metrics, grouped tables, thresholds and export."""

import json
import math

import numpy as np
import pytest
import torch

from lmke_hf.evaluation import (
    LinkPredictionEvaluator,
    RankTriple,
    classification_report,
    degree_bucket,
    degree_bucket_label,
    filtered_ranks,
    plot_degree_buckets,
    ranking_metrics_from_ranks,
    tune_thresholds,
)


def ranks_list(r: RankTriple):
    return r.optimistic.tolist(), r.pessimistic.tolist(), r.realistic.tolist()


# ---------------------------------------------------------------------------------------- ranks


@pytest.mark.parametrize(
    "row, gold, expected",
    [
        # Higher score = better. The gold (score 2) ties with two others and nothing is above it.
        ([1.0, 2.0, 2.0, 2.0], 1, ([1], [3], [2.0])),
        # One candidate strictly above, two tied with the gold: 2 / 4 / 3.
        ([3.0, 2.0, 2.0, 2.0], 1, ([2], [4], [3.0])),
        # The same ranking as "lower is better" on [1, 2, 2, 2] expressed as higher-is-better.
        ([-1.0, -2.0, -2.0, -2.0], 1, ([2], [4], [3.0])),
        # No ties: all three agree.
        ([0.1, 0.9, 0.5, 0.7], 2, ([3], [3], [3.0])),
        # Gold is the unique best.
        ([0.1, 0.9, 0.5, 0.7], 1, ([1], [1], [1.0])),
    ],
)
def test_tie_conventions(row, gold, expected):
    assert ranks_list(filtered_ranks(torch.tensor([row]), torch.tensor([gold]))) == expected


def test_filter_removes_higher_known_answer_and_keeps_gold():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.7], [0.1, 0.9, 0.5, 0.7]])
    gold = torch.tensor([2, 2])
    before = scores.clone()
    raw = filtered_ranks(scores, gold)
    assert raw.optimistic.tolist() == [3, 3]
    # Row 0: entity 1 (0.9) is another known answer -> gold moves from 3 to 2; row 1 untouched.
    filt = filtered_ranks(scores, gold, torch.tensor([0]), torch.tensor([1]))
    assert ranks_list(filt) == ([2, 3], [2, 3], [2.0, 3.0])
    # Duplicates and the gold itself in the filter list change nothing more.
    filt2 = filtered_ranks(scores, gold, torch.tensor([0, 0, 0, 1]), torch.tensor([1, 1, 2, 2]))
    assert ranks_list(filt2) == ranks_list(filt)
    assert torch.equal(scores, before), "the caller's scores must not be mutated"


def test_gold_in_filter_is_not_removed_under_ties():
    scores = torch.tensor([[2.0, 2.0, 2.0, 1.0]])
    # Filtering the gold (0) would drop it from the >= count; filtering entity 1 (a tie) must count.
    r = filtered_ranks(scores, torch.tensor([0]), torch.tensor([0, 0]), torch.tensor([0, 1]))
    assert ranks_list(r) == ([1], [2], [1.5])


def test_empty_filter_equals_raw():
    scores = torch.randn(3, 5)
    gold = torch.tensor([0, 4, 2])
    empty = torch.zeros(0, dtype=torch.long)
    assert ranks_list(filtered_ranks(scores, gold, empty, empty)) == ranks_list(filtered_ranks(scores, gold))


def test_nan_scores_error_names_count():
    scores = torch.tensor([[0.1, float("nan")], [float("nan"), 0.2]])
    with pytest.raises(ValueError, match="2 NaN"):
        filtered_ranks(scores, torch.tensor([0, 1]))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(gold=torch.tensor([0])), "gold.*length 1.*2 rows"),
        (dict(gold=torch.tensor([0, 3])), r"gold.*\[0, 3\)"),
        (dict(gold=torch.tensor([0.0, 1.0])), "gold.*integer"),
        (dict(filter_rows=torch.tensor([0])), "both"),
        (dict(filter_rows=torch.tensor([0, 1]), filter_cols=torch.tensor([0])), "same length"),
        (dict(filter_rows=torch.tensor([2]), filter_cols=torch.tensor([0])), "filter_rows"),
        (dict(filter_rows=torch.tensor([0]), filter_cols=torch.tensor([5])), "filter_cols"),
    ],
)
def test_filtered_ranks_bad_input(kwargs, match):
    args = dict(scores=torch.rand(2, 3), gold=torch.tensor([0, 1]))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        filtered_ranks(**args)


# ---------------------------------------------------------------------------------------- metrics


def test_ranking_metrics_hand_computed():
    m = ranking_metrics_from_ranks(torch.tensor([1, 2, 4, 10, 20]), ks=(1, 3, 10))
    assert m["mr"] == pytest.approx(7.4)
    assert m["mrr"] == pytest.approx((1 + 0.5 + 0.25 + 0.1 + 0.05) / 5)
    assert m["hits@1"] == pytest.approx(0.2)
    assert m["hits@3"] == pytest.approx(0.4)
    assert m["hits@10"] == pytest.approx(0.8)
    # Fractional realistic ranks: 1.5 is not a Hit@1.
    assert ranking_metrics_from_ranks(np.array([1.5, 1.0]), ks=(1,))["hits@1"] == 0.5


@pytest.mark.parametrize("ranks, ks, match", [([], (1,), "empty"), ([0, 1], (1,), ">= 1"), ([1], (0,), "ks")])
def test_ranking_metrics_bad_input(ranks, ks, match):
    with pytest.raises(ValueError, match=match):
        ranking_metrics_from_ranks(np.asarray(ranks), ks)


@pytest.mark.parametrize(
    "degree, bucket", [(0, 0), (1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (7, 3), (8, 4), (1023, 10), (1024, 11)]
)
def test_degree_bucket(degree, bucket):
    assert degree_bucket([degree]).tolist() == [bucket]
    assert degree_bucket(torch.tensor([degree])).tolist() == [bucket]


def test_degree_bucket_takes_whole_floats_and_the_graph_name_is_the_same_function():
    from lmke_hf.kg import KnowledgeGraph

    degrees = np.array([[0.0, 1.0, 3.0], [4.0, 8.0, 2.0**40]])  # a model's float entity_degrees, any shape
    expected = degree_bucket(degrees.astype(np.int64))
    np.testing.assert_array_equal(degree_bucket(degrees), expected)
    np.testing.assert_array_equal(degree_bucket(torch.tensor(degrees, dtype=torch.float32)), expected)
    np.testing.assert_array_equal(KnowledgeGraph.degree_buckets(degrees), expected)
    for bad, match in (([1.5], "must be integers"), ([float("nan")], "must be integers"), ([-1.0], "non-negative")):
        with pytest.raises(ValueError, match=match):
            degree_bucket(bad)
        with pytest.raises(ValueError, match=match):
            KnowledgeGraph.degree_buckets(np.array(bad))


def test_degree_bucket_labels_and_errors():
    assert [degree_bucket_label(b) for b in range(5)] == ["0", "1", "2-3", "4-7", "8-15"]
    with pytest.raises(ValueError, match="degrees"):
        degree_bucket([-1])


# ---------------------------------------------------------------------------------------- evaluator


def tiny_evaluator():
    """Four queries with hand-known realistic ranks [1, 3, 2, 1.5].

    q0 tail, rel 0, gold deg 0: scores [.9,.1,.5], gold 0                    -> 1/1/1
    q1 tail, rel 1, gold deg 1: scores [.9,.8,.1], gold 2                    -> 3/3/3
    q2 head, rel 0, gold deg 5: scores [.3,.6,.9], gold 1, filter (0,0)=.3   -> 2/2/2
    q3 head, rel 1, gold deg 2: scores [.7,.7,.1], gold 1, filter (1,2) gold -> 1/2/1.5
    """
    ev = LinkPredictionEvaluator()
    ev.update(
        torch.tensor([[0.9, 0.1, 0.5], [0.9, 0.8, 0.1]]),
        torch.tensor([0, 2]),
        direction="tail",
        relations=torch.tensor([0, 1]),
        gold_degrees=torch.tensor([0, 1]),
        given_degrees=torch.tensor([5, 2]),
    )
    ev.update(
        torch.tensor([[0.3, 0.6, 0.9], [0.7, 0.7, 0.1]]),
        torch.tensor([1, 1]),
        torch.tensor([0, 1]),
        torch.tensor([0, 1]),
        direction="head",
        relations=torch.tensor([0, 1]),
        gold_degrees=torch.tensor([5, 2]),
        given_degrees=torch.tensor([0, 1]),
    )
    return ev


def test_evaluator_overall():
    m = tiny_evaluator().compute()
    assert m["num_queries"] == 4
    assert m["mr"] == pytest.approx((1 + 3 + 2 + 1.5) / 4)
    assert m["mrr"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 1.5) / 4)
    assert m["hits@1"] == pytest.approx(0.25)
    assert m["hits@3"] == pytest.approx(1.0)
    assert m["hits@10"] == pytest.approx(1.0)
    assert m["mr_optimistic"] == pytest.approx((1 + 3 + 2 + 1) / 4)
    assert m["mr_pessimistic"] == pytest.approx((1 + 3 + 2 + 2) / 4)
    assert m["mrr_optimistic"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1) / 4)
    assert m["mrr_pessimistic"] == pytest.approx((1 + 1 / 3 + 1 / 2 + 1 / 2) / 4)


def test_evaluator_grouped_tables():
    ev = tiny_evaluator()
    by_dir = ev.per_direction()
    assert set(by_dir) == {"head", "tail"}
    assert by_dir["tail"]["count"] == 2 and by_dir["tail"]["mr"] == pytest.approx(2.0)
    assert by_dir["head"]["count"] == 2 and by_dir["head"]["mr"] == pytest.approx(1.75)

    by_rel = ev.per_relation()
    assert list(by_rel) == [0, 1]
    assert by_rel[0]["count"] == 2 and by_rel[0]["mr"] == pytest.approx(1.5)
    assert by_rel[1]["mr"] == pytest.approx(2.25)
    named = ev.per_relation(relation_names=["hypernym", "part_of"])
    assert list(named) == ["hypernym", "part_of"]
    with pytest.raises(ValueError, match="relation_names"):
        ev.per_relation(relation_names=["only_one"])

    # Gold degrees 0, 1, 5, 2 -> buckets 0, 1, 3, 2: one query each.
    by_deg = ev.per_degree_bucket()
    assert list(by_deg) == [0, 1, 2, 3]
    assert [v["count"] for v in by_deg.values()] == [1, 1, 1, 1]
    assert [v["mr"] for v in by_deg.values()] == pytest.approx([1.0, 3.0, 1.5, 2.0])
    assert by_deg[0]["hits@1"] == 1.0 and by_deg[2]["hits@1"] == 0.0

    # Paper rule: a query counts for both its gold's and its given entity's bucket.
    # q0 {0,3} q1 {1,2} q2 {3,0} q3 {2,1} -> every bucket holds two queries.
    either = ev.per_degree_bucket(by="either")
    assert [v["count"] for v in either.values()] == [2, 2, 2, 2]
    assert either[0]["mr"] == pytest.approx((1 + 2) / 2)
    with pytest.raises(ValueError, match="by"):
        ev.per_degree_bucket(by="head")


def test_missing_metadata_errors():
    ev = LinkPredictionEvaluator()
    with pytest.raises(ValueError, match="no queries"):
        ev.compute()
    ev.update(torch.rand(2, 4), torch.tensor([0, 1]), None, None, "tail")  # positional order works
    assert ev.compute()["num_queries"] == 2
    with pytest.raises(ValueError, match="2 of 2 queries.*relations="):
        ev.per_relation()
    with pytest.raises(ValueError, match="gold_degrees="):
        ev.per_degree_bucket()
    with pytest.raises(ValueError, match="direction"):
        ev.update(torch.rand(1, 4), torch.tensor([0]), direction="both")
    with pytest.raises(ValueError, match="direction.*None"):
        ev.update(torch.rand(1, 4), torch.tensor([0]))  # no silent default direction
    with pytest.raises(ValueError, match="relations.*>= 0"):
        ev.update(torch.rand(1, 4), torch.tensor([0]), direction="head", relations=torch.tensor([-1]))
    assert len(ev) == 2, "failed updates must not store anything"
    with pytest.raises(ValueError, match="gold_degrees.*>= 0"):
        ev.update(torch.rand(1, 4), torch.tensor([0]), direction="tail", gold_degrees=torch.tensor([-2]))


def test_blockwise_equals_full_evaluation():
    gen = torch.Generator().manual_seed(0)
    num_queries, num_entities = 10, 7
    # Integer-valued scores force plenty of ties.
    scores = torch.randint(0, 4, (num_queries, num_entities), generator=gen).float()
    gold = torch.randint(0, num_entities, (num_queries,), generator=gen)
    rows = torch.randint(0, num_queries, (15,), generator=gen)
    cols = torch.randint(0, num_entities, (15,), generator=gen)
    relations = torch.randint(0, 3, (num_queries,), generator=gen)
    degrees = torch.randint(0, 20, (num_queries,), generator=gen)

    full = LinkPredictionEvaluator()
    full.update(scores, gold, rows, cols, direction="tail", relations=relations, gold_degrees=degrees)

    blocks = LinkPredictionEvaluator()
    for start, stop in ((0, 4), (4, num_queries)):
        keep = (rows >= start) & (rows < stop)
        blocks.update(
            scores[start:stop],
            gold[start:stop],
            rows[keep] - start,
            cols[keep],
            direction="tail",
            relations=relations[start:stop],
            gold_degrees=degrees[start:stop],
        )
    assert blocks.compute() == full.compute()
    assert blocks.per_relation() == full.per_relation()
    assert blocks.per_degree_bucket() == full.per_degree_bucket()
    for name, column in full.ranks_table().items():
        np.testing.assert_array_equal(blocks.ranks_table()[name], column)

    # Brute-force reference: per-query Python loop over the filtered candidates.
    for q in range(num_queries):
        filtered = {int(c) for r, c in zip(rows, cols) if int(r) == q} - {int(gold[q])}
        cand = [float(scores[q, e]) for e in range(num_entities) if e not in filtered]
        g = float(scores[q, gold[q]])
        assert full.ranks_table()["rank_optimistic"][q] == 1 + sum(c > g for c in cand)
        assert full.ranks_table()["rank_pessimistic"][q] == sum(c >= g for c in cand)

    # Gathering across processes: merging two half evaluators matches too.
    first, second = LinkPredictionEvaluator(), LinkPredictionEvaluator()
    first.update(scores[:4], gold[:4], direction="tail", relations=relations[:4], gold_degrees=degrees[:4])
    second.update(scores[4:], gold[4:], direction="tail", relations=relations[4:], gold_degrees=degrees[4:])
    merged = first.merge(second)
    raw = LinkPredictionEvaluator()
    raw.update(scores, gold, direction="tail", relations=relations, gold_degrees=degrees)
    assert merged.compute() == raw.compute() and len(merged) == num_queries


def test_ranks_table_save_and_load(tmp_path):
    ev = tiny_evaluator()
    table = ev.ranks_table()
    assert table["direction"].tolist() == ["tail", "tail", "head", "head"]
    assert table["relation"].tolist() == [0, 1, 0, 1]
    assert table["gold"].tolist() == [0, 2, 1, 1]
    assert table["rank_realistic"].tolist() == [1.0, 3.0, 2.0, 1.5]

    paths = ev.save(tmp_path / "eval", relation_names=["a", "b"])
    report = json.loads(open(paths["metrics"]).read())
    assert report["overall"]["num_queries"] == 4
    assert set(report) == {"overall", "per_direction", "per_relation", "per_degree_bucket"}
    assert set(report["per_relation"]) == {"a", "b"}
    assert open(paths["csv"]).readline().strip().split(",")[0] == "direction"
    assert len(open(paths["csv"]).read().strip().splitlines()) == 5

    again = LinkPredictionEvaluator.load(tmp_path / "eval")
    assert again.compute() == ev.compute()
    assert again.per_degree_bucket(by="either") == ev.per_degree_bucket(by="either")

    # The plot also accepts the string keys of a reloaded metrics.json.
    png = plot_degree_buckets(report["per_degree_bucket"], tmp_path / "plots" / "deg.png", title="tiny")
    with open(png, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plot_degree_buckets(tmp_path):
    path = tmp_path / "buckets.png"
    plot_degree_buckets(tiny_evaluator().per_degree_bucket(), path)
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="hits@10"):
        plot_degree_buckets({0: {"hits@1": 1.0, "count": 1}}, tmp_path / "bad.png")


# ---------------------------------------------------------------------------------------- classification


def test_classification_fixed_threshold_hand_computed():
    # preds at 0.5 (strict >): [1, 0, 1, 0, 0]; labels [1, 1, 0, 0, 0]
    report = classification_report(torch.tensor([0.9, 0.4, 0.6, 0.1, 0.5]), torch.tensor([1, 1, 0, 0, 0]))
    assert report["accuracy"] == pytest.approx(3 / 5)
    assert report["precision"] == pytest.approx(1 / 2)
    assert report["recall"] == pytest.approx(1 / 2)
    assert report["f1"] == pytest.approx(1 / 2)
    assert report["threshold"] == 0.5 and report["num_test"] == 5
    # Without validation, no tuned keys at all.
    assert not any("tuned" in key for key in report)
    assert "thresholds_per_relation" not in report


def test_classification_tuned_global_beats_fixed():
    # A model whose probabilities are all shifted low: true triples score 0.3-0.4.
    valid_s, valid_y = [0.1, 0.15, 0.2, 0.3, 0.35, 0.4], [0, 0, 0, 1, 1, 1]
    test_s, test_y = [0.12, 0.18, 0.32, 0.38], [0, 0, 1, 1]
    report = classification_report(test_s, test_y, valid_scores=valid_s, valid_labels=valid_y)
    assert report["accuracy"] == pytest.approx(0.5)
    assert report["threshold_tuned_global"] == pytest.approx(0.25)
    assert report["valid_accuracy_tuned_global"] == pytest.approx(1.0)
    assert report["accuracy_tuned_global"] == pytest.approx(1.0)
    assert "accuracy_tuned_per_relation" not in report


def test_classification_per_relation_opposite_thresholds():
    # Relation 0 needs a high threshold (0.75), relation 1 a low one (0.25).
    valid_s = [0.6, 0.7, 0.8, 0.9, 0.1, 0.2, 0.3, 0.4]
    valid_y = [0, 0, 1, 1, 0, 0, 1, 1]
    valid_r = [0, 0, 0, 0, 1, 1, 1, 1]
    test_s = [0.65, 0.85, 0.15, 0.35, 0.9, 0.05]
    test_y = [0, 1, 0, 1, 1, 0]
    test_r = [0, 0, 1, 1, 2, 2]  # relation 2 is unseen in validation -> global threshold
    report = classification_report(test_s, test_y, test_r, valid_s, valid_y, valid_r)
    assert report["thresholds_per_relation"] == {0: pytest.approx(0.75), 1: pytest.approx(0.25)}
    assert report["valid_accuracy_tuned_global"] == pytest.approx(0.75)
    assert report["accuracy_tuned_per_relation"] == pytest.approx(1.0)
    assert report["accuracy_tuned_per_relation"] > report["accuracy_tuned_global"]
    assert report["num_test_relations_fallback"] == 1


def test_tune_thresholds_matches_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 10, 60) / 10.0  # many ties
    labels = rng.random(60) < scores
    groups = rng.integers(0, 4, 60)
    ids, thr, acc = tune_thresholds(scores, labels, groups)
    for gid, t, a in zip(ids, thr, acc):
        s, y = scores[groups == gid], labels[groups == gid]
        best = max(((s > c) == y).mean() for c in np.concatenate([s, s - 1e-9, [-1.0, 2.0]]))
        assert a == pytest.approx(best)
        assert ((s > t) == y).mean() == pytest.approx(a)


def test_tune_thresholds_single_class():
    _, thr, acc = tune_thresholds([0.0, 0.2], [1, 1])
    assert acc[0] == 1.0 and thr[0] < 0.0  # everything predicted true, even a score of exactly 0
    _, thr, acc = tune_thresholds([0.7, 1.0], [0, 0])
    assert acc[0] == 1.0 and thr[0] == 1.0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(test_labels=[1, 0]), "test_scores` has length 3 but `test_labels` has length 2"),
        (dict(test_relations=[0]), "length 3 but `test_relations` has length 1"),
        (dict(valid_scores=[0.5, 0.2], valid_labels=[1]), "valid_scores` has length 2 but `valid_labels` has length 1"),
        (dict(valid_scores=[0.5]), "both `valid_scores` and `valid_labels`"),
        (dict(test_scores=[0.1, 1.5, 0.2]), r"probabilities in \[0, 1\]"),
        (dict(test_scores=[0.1, float("nan"), 0.2]), "1 NaN"),
        (dict(test_labels=[0, 2, 1]), "binary"),
        (dict(valid_scores=[0.5], valid_labels=[1], valid_relations=[0]), "test_relations"),
    ],
)
def test_classification_bad_input(kwargs, match):
    args = dict(test_scores=[0.1, 0.9, 0.6], test_labels=[0, 1, 1])
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        classification_report(**args)


def test_classification_accepts_tensors_and_bools():
    report = classification_report(torch.tensor([0.2, 0.8]), torch.tensor([False, True]))
    assert report["accuracy"] == 1.0 and not math.isnan(report["f1"])
