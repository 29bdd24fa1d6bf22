"""Tests of lmke_hf.kg on a toy graph written in tmp_path; slow tests read /work/shared/data."""

from __future__ import annotations

import importlib.util
import json
import warnings
from pathlib import Path

import datasets
import numpy as np
import pytest

from lmke_hf.kg import (
    DATA_DIR_ENV,
    PREPARED_METADATA,
    SHORT_NAMES,
    AnswerIndex,
    KnowledgeGraph,
    add_classification_negatives,
    generate_negatives,
    load_kg,
    push_prepared_to_hub,
    save_prepared,
)
from lmke_hf.kg.prepared import _load_hub

from helpers import TOY, write_toy_kg  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def _load_quiet(*args, **kwargs) -> KnowledgeGraph:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_kg(*args, **kwargs)


def _load_recording(*args, **kwargs) -> tuple[KnowledgeGraph, str]:
    """Load and return the graph with all warning messages joined by ' | '."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        kg = load_kg(*args, **kwargs)
    return kg, " | ".join(str(w.message) for w in record)


def _ids(kg: KnowledgeGraph, split: str, positives_only: bool = True) -> list[tuple[str, str, str]]:
    entities, relations = kg.entities["id"], kg.relations["id"]
    return [(entities[h], relations[r], entities[t]) for h, r, t in kg.triples(split, positives_only).tolist()]


def _brute_answers(triples: np.ndarray, direction: str) -> dict[tuple[int, int], set[int]]:
    answers: dict[tuple[int, int], set[int]] = {}
    for h, r, t in triples.tolist():
        given, answer = (h, t) if direction == "tail" else (t, h)
        answers.setdefault((given, r), set()).add(answer)
    return answers


# ------------------------------------------------------------------------------------------------ loading


def test_load_toy_folder(toy_kg_dir):
    kg = _load_quiet(str(toy_kg_dir))
    assert kg.name == "toy" and kg.source == str(toy_kg_dir)
    assert kg.num_entities == 10 and kg.num_relations == 3
    assert kg.entities["id"] == TOY["entities"]  # row index = integer id, entities.txt order
    assert kg.entities["name"] == [TOY["names"][e] for e in TOY["entities"]]
    assert kg.description_source == "entity2textlong.txt"
    assert kg.relations["name"] == [TOY["relation_text"][r] for r in TOY["relations"]]
    for split in ("train", "validation", "test"):
        assert _ids(kg, split) == TOY[split]
        features = kg.splits[split].features
        assert {c: features[c].dtype for c in ("head", "relation", "tail")} == dict.fromkeys(
            ("head", "relation", "tail"), "int64"
        )
        assert "label" not in kg.splits[split].column_names
    triples = kg.triples("train")
    assert triples.dtype == np.int64 and triples.shape == (12, 3)
    assert kg.entity_index()["e3"] == 3 and kg.entity_index() is kg.entity_index()
    assert kg.relation_index() == {"r0": 0, "r1": 1, "r2": 2}


def test_missing_description_falls_back_to_name_with_count(toy_kg_dir):
    with pytest.warns(UserWarning, match=r"entity2textlong.txt: 1 of 10 entities have no or an empty description"):
        kg = load_kg(str(toy_kg_dir))
    assert kg.entities["description"][7] == "entity 7"
    assert kg.entities["description"][0] == TOY["descriptions"]["e0"]


def test_empty_description_counts_as_missing(tmp_path):
    text = "".join(f"{e}\t{'' if e in ('e1', 'e2') else 'text of ' + e}\n" for e in TOY["entities"])
    folder = write_toy_kg(tmp_path, overrides={"entity2textlong.txt": text})
    with pytest.warns(UserWarning, match=r"2 of 10 entities have no or an empty description; used their names"):
        kg = load_kg(str(folder))
    assert kg.entities["description"][1] == "entity 1"


def test_crlf_is_tolerated(tmp_path):
    lf = _load_quiet(str(write_toy_kg(tmp_path / "lf")))
    crlf = _load_quiet(str(write_toy_kg(tmp_path / "crlf", crlf=True)))
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(lf.triples(split), crlf.triples(split))
    assert crlf.entities.to_list() == lf.entities.to_list()
    assert crlf.relations.to_list() == lf.relations.to_list()
    assert not any("\r" in text for text in list(crlf.entities["description"]) + list(crlf.entities["id"]))


def test_description_modes(toy_kg_dir):
    by_name = load_kg(str(toy_kg_dir), description="name")
    assert by_name.entities["description"] == by_name.entities["name"]
    assert by_name.description_source == "name"
    short = load_kg(str(toy_kg_dir), description="entity2text.txt")
    assert short.description_source == "entity2text.txt"
    assert short.entities["description"][0] == "entity 0"
    with pytest.raises(FileNotFoundError, match=r"`description`='nope.txt'.*use 'auto', 'name' or one of"):
        load_kg(str(toy_kg_dir), description="nope.txt")


def test_wn18rr_layout_cuts_name_before_first_comma(tmp_path):
    text = "".join(f"{e}\tname{e[1:]}, a definition, with commas\n" for e in TOY["entities"])
    folder = write_toy_kg(tmp_path, "WN18RR", overrides={"entity2text.txt": text, "entity2textlong.txt": None})
    kg = load_kg(str(folder))
    assert kg.name == "wn18rr"
    assert kg.entities["name"][3] == "name3"
    assert kg.entities["description"][3] == "name3, a definition, with commas"
    assert kg.description_source == "entity2text.txt"


def test_fb15k237_stand_in_description_warns(tmp_path):
    text = "".join(f"{e}\t{TOY['names'][e]} -- first sentence.\n" for e in TOY["entities"])
    folder = write_toy_kg(
        tmp_path, "fb15k-237", overrides={"entity2text_firstsentence.txt": text, "entity2textlong.txt": None}
    )
    with pytest.warns(UserWarning, match=r"stand-in for the paper's long descriptions"):
        kg = load_kg(str(folder))
    assert kg.description_source == "entity2text_firstsentence.txt"


def test_graph_without_entity_lists_or_texts(tmp_path):
    folder = write_toy_kg(
        tmp_path,
        "nations",
        overrides={
            n: None
            for n in ("entities.txt", "relations.txt", "entity2text.txt", "entity2textlong.txt", "relation2text.txt")
        },
    )
    kg, messages = _load_recording(str(folder))
    assert "names of all 10 entities are their ids" in messages
    assert "descriptions of all 10 entities are their names" in messages
    assert "names of all 3 relations are their ids" in messages
    assert kg.entities["id"] == sorted(TOY["entities"]) and kg.entities["name"] == kg.entities["id"]
    assert _ids(kg, "test") == TOY["test"]


def test_statistics(toy_kg_dir):
    stats = _load_quiet(str(toy_kg_dir)).statistics()
    assert stats["entities"] == 10 and stats["relations"] == 3
    assert (stats["train"], stats["validation"], stats["test"]) == (12, 3, 3)
    assert stats["entities_unseen_in_train"] == {"validation": 1, "test": 2}  # e8 in dev; e9 and e8 in test
    assert stats["entities_in_triples"] == 10
    words = [len((TOY["descriptions"].get(e) or TOY["names"][e]).split()) for e in TOY["entities"]]
    assert stats["avg_description_words"] == pytest.approx(np.mean(words), abs=0.01)
    assert stats["descriptions_equal_to_name"] == 1
    assert stats["splits"]["train"] == {"triples": 12, "negatives": 0, "labelled": False}


# ------------------------------------------------------------------------------------------ leak guards


def test_degrees_come_from_named_splits_only(toy_kg_dir):
    kg = _load_quiet(str(toy_kg_dir))
    train = np.array([[kg.entity_index()[h], 0, kg.entity_index()[t]] for h, _, t in TOY["train"]])
    expected = np.bincount(train[:, [0, 2]].ravel(), minlength=10)
    degrees = kg.degrees(["train"])
    np.testing.assert_array_equal(degrees, expected)
    assert degrees.dtype == np.int64 and degrees[9] == 0 and degrees[8] == 0  # test/dev-only entities
    everything = kg.degrees(["train", "validation", "test"])
    assert everything[9] == 1 and everything[8] == 2 and everything.sum() == 2 * 18
    with pytest.raises(TypeError):
        kg.degrees()  # no default: evaluation triples cannot leak in silently
    with pytest.raises(TypeError, match=r"write \['train'\]"):
        kg.degrees("train")
    with pytest.raises(ValueError, match=r"`splits`='dev' is not a split"):
        kg.degrees(["dev"])


def test_degree_buckets_match_floor_log2():
    degrees = np.array([0, 1, 2, 3, 4, 7, 8, 9, 1023, 1024, 2**40])
    expected = np.array([0] + [int(np.floor(np.log2(d))) + 1 for d in degrees[1:].tolist()])
    np.testing.assert_array_equal(KnowledgeGraph.degree_buckets(degrees), expected)
    with pytest.raises(ValueError, match="non-negative"):
        KnowledgeGraph.degree_buckets(np.array([-1]))


# ------------------------------------------------------------------------------------------ answer index


@pytest.mark.parametrize("direction", ["tail", "head"])
def test_answer_index_matches_brute_force(direction):
    rng = np.random.default_rng(0)
    num_entities, num_relations = 30, 4
    triples = np.stack(
        [rng.integers(0, num_entities, 400), rng.integers(0, num_relations, 400), rng.integers(0, num_entities, 400)],
        axis=1,
    )
    given, answer = (triples[:, 0], triples[:, 2]) if direction == "tail" else (triples[:, 2], triples[:, 0])
    index = AnswerIndex(given, triples[:, 1], answer, num_entities, num_relations)
    truth = _brute_answers(triples, direction)
    assert index.num_pairs == sum(len(v) for v in truth.values()) and index.num_queries == len(truth)
    assert index.max_answers == max(len(v) for v in truth.values())

    queries_given = rng.integers(0, num_entities, 64)
    queries_relation = rng.integers(0, num_relations, 64)
    for g, r in zip(queries_given.tolist(), queries_relation.tolist()):
        np.testing.assert_array_equal(index.answers(g, r), sorted(truth.get((g, r), set())))

    padded = index.padded(queries_given, queries_relation, pad_value=-7)
    assert padded.dtype == np.int64
    assert padded.shape == (64, max(len(truth.get(q, ())) for q in zip(queries_given, queries_relation)))
    for row, key in zip(padded.tolist(), zip(queries_given.tolist(), queries_relation.tolist())):
        expected = sorted(truth.get(key, set()))
        assert row == expected + [-7] * (padded.shape[1] - len(expected))

    rows, answers = index.pairs(queries_given, queries_relation)
    mask = np.zeros((64, num_entities), dtype=bool)
    mask[rows, answers] = True
    expected_mask = np.zeros_like(mask)
    for i, key in enumerate(zip(queries_given.tolist(), queries_relation.tolist())):
        expected_mask[i, list(truth.get(key, ()))] = True
    np.testing.assert_array_equal(mask, expected_mask)
    np.testing.assert_array_equal(index.counts(queries_given, queries_relation), expected_mask.sum(1))

    probe = rng.integers(0, num_entities, 64)
    expected_contains = [
        a in truth.get(key, ())
        for a, key in zip(probe.tolist(), zip(queries_given.tolist(), queries_relation.tolist()))
    ]
    np.testing.assert_array_equal(index.contains(queries_given, queries_relation, probe), expected_contains)
    assert index.contains(given, triples[:, 1], answer).all()


def test_answer_index_edge_cases():
    index = AnswerIndex(np.array([0]), np.array([1]), np.array([2]), 3, 2)
    assert index.answers(2, 0).size == 0
    assert index.padded(np.array([2]), np.array([0])).shape == (1, 0)
    assert index.padded(np.array([], dtype=np.int64), np.array([], dtype=np.int64)).shape == (0, 0)
    rows, answers = index.pairs(np.array([0, 0]), np.array([1, 1]))
    assert rows.tolist() == [0, 1] and answers.tolist() == [2, 2]
    empty = AnswerIndex(np.array([], dtype=np.int64), np.array([], dtype=np.int64), np.array([], dtype=np.int64), 3, 2)
    assert empty.max_answers == 0 and not empty.contains(0, 0, 0)
    with pytest.raises(ValueError, match=r"`given` holds id 3, outside \[0, 3\)"):
        AnswerIndex(np.array([3]), np.array([0]), np.array([0]), 3, 2)
    with pytest.raises(ValueError, match=r"`relation` holds id -1"):
        index.padded(np.array([0]), np.array([-1]))
    with pytest.raises(ValueError, match="equal length"):
        AnswerIndex(np.array([0, 1]), np.array([0]), np.array([0]), 3, 2)
    with pytest.raises(TypeError, match="must hold integers"):
        index.contains(np.array([0.5]), 0, 0)


def test_kg_answer_index_directions(toy_kg_dir):
    kg = _load_quiet(str(toy_kg_dir))
    idx = kg.entity_index()
    tails = kg.answer_index(["train"], direction="tail")
    assert tails.answers(idx["e0"], 0).tolist() == [idx["e1"], idx["e2"]]
    heads = kg.answer_index(["train"], direction="head")
    assert heads.answers(idx["e2"], 0).tolist() == [idx["e0"], idx["e1"]]
    assert tails.answers(idx["e0"], 0).tolist() == [1, 2]  # test triple (e0, r0, e5) not in a train index
    full = kg.answer_index(["train", "validation", "test"], direction="tail")
    assert full.answers(idx["e0"], 0).tolist() == [1, 2, 4, 5]
    with pytest.raises(ValueError, match=r"`direction`='relation' is not supported"):
        kg.answer_index(["train"], direction="relation")


# ------------------------------------------------------------------------------------------ negatives


def _known(kg: KnowledgeGraph, splits) -> set:
    return {tuple(t) for s in splits for t in kg.triples(s).tolist()}


@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_negatives_are_never_known_triples(toy_kg_dir, split):
    kg = _load_quiet(str(toy_kg_dir))
    known_splits = ["train"] if split == "train" else ["train", "validation", "test"]
    for seed in range(20):
        rows = generate_negatives(kg, split, seed=seed)
        labels = np.asarray(rows["label"])
        triples = np.stack([rows["head"], rows["relation"], rows["tail"]], axis=1)
        assert rows.features["label"].dtype == "int8" and labels.tolist() == [1, 0] * kg.triples(split).shape[0]
        np.testing.assert_array_equal(triples[0::2], kg.triples(split))
        negatives, positives = triples[1::2], triples[0::2]
        known = _known(kg, known_splits) | {tuple(t) for t in positives.tolist()}
        assert not any(tuple(t) in known for t in negatives.tolist())
        # exactly one side replaced, relation kept
        assert (negatives[:, 1] == positives[:, 1]).all()
        assert ((negatives[:, 0] == positives[:, 0]) | (negatives[:, 2] == positives[:, 2])).all()


def test_negatives_deterministic_per_seed_and_differ_across_seeds(toy_kg_dir):
    kg = _load_quiet(str(toy_kg_dir))
    first = generate_negatives(kg, "train", seed=3).to_list()
    assert generate_negatives(kg, "train", seed=3).to_list() == first
    assert generate_negatives(kg, "train", seed=np.random.default_rng(3)).to_list() == first
    assert generate_negatives(kg, "train", seed=4).to_list() != first


def test_negatives_respect_known_splits_argument(toy_kg_dir):
    kg = _load_quiet(str(toy_kg_dir))
    test_triples = _known(kg, ["test"])
    # avoiding train only, a train negative may hit a test triple; avoiding test too, it never does
    hits_train_only, hits_with_test = 0, 0
    for seed in range(200):
        neg = generate_negatives(kg, "train", seed=seed, known_splits=["train"])
        hits_train_only += sum(
            tuple(t) in test_triples for t in zip(neg["head"][1::2], neg["relation"][1::2], neg["tail"][1::2])
        )
        neg = generate_negatives(kg, "train", seed=seed, known_splits=["train", "test"])
        hits_with_test += sum(
            tuple(t) in test_triples for t in zip(neg["head"][1::2], neg["relation"][1::2], neg["tail"][1::2])
        )
    assert hits_train_only > 0 and hits_with_test == 0


def test_negatives_bad_arguments(toy_kg_dir):
    kg = _load_quiet(str(toy_kg_dir))
    with pytest.raises(ValueError, match=r"`known_splits`='dev'"):
        generate_negatives(kg, "train", seed=0, known_splits=["dev"])
    with pytest.raises(TypeError, match=r"`seed`=0.5 must be an int"):
        generate_negatives(kg, "train", seed=0.5)
    with pytest.raises(ValueError, match=r"`seed`=-1 must be non-negative"):
        add_classification_negatives(kg, seed=-1)
    with pytest.raises(ValueError, match=r"`candidate_entities` holds id 10"):
        generate_negatives(kg, "train", seed=0, candidate_entities=np.array([10]))


def test_negatives_give_up_with_a_clear_error(tmp_path):
    # (e0, r0, e0) with e0 as the only candidate: every corruption is the positive itself -> error, no endless loop
    folder = write_toy_kg(tmp_path, overrides={"train.tsv": "e0\tr0\te0\ne1\tr0\te2\n"})
    kg = _load_quiet(str(folder))
    with pytest.raises(RuntimeError, match=r"no negative found for 1 positives of 'train' after 5 rounds"):
        generate_negatives(kg, "train", seed=0, candidate_entities=np.array([0]), max_rounds=5)


def test_add_classification_negatives(toy_kg_dir):
    kg = _load_quiet(str(toy_kg_dir))
    labelled = add_classification_negatives(kg, seed=1)
    assert "label" not in labelled.splits["train"].column_names
    for split in ("validation", "test"):
        assert labelled.splits[split].num_rows == 2 * kg.splits[split].num_rows
        assert labelled.labels(split).tolist() == [1, 0] * kg.splits[split].num_rows
        np.testing.assert_array_equal(labelled.triples(split), kg.triples(split))
    assert "label" not in kg.splits["test"].column_names  # input unchanged
    assert labelled.report["negatives_seed"] == 1
    again = add_classification_negatives(kg, seed=1)
    assert again.splits["test"].to_list() == labelled.splits["test"].to_list()


def test_shipped_negatives_are_kept(tmp_path):
    dev = "e8\tr0\te1\t1\ne8\tr0\te2\t-1\ne0\tr0\te4\t1\ne0\tr0\te9\t-1\n"
    folder = write_toy_kg(tmp_path, overrides={"dev.tsv": dev})
    kg = add_classification_negatives(_load_quiet(str(folder)), seed=0)
    assert kg.labels("validation").tolist() == [1, 0, 1, 0]
    assert kg.triples("validation", positives_only=False).shape == (4, 3)
    assert kg.report["negatives"]["validation"] == "shipped"
    assert kg.statistics()["splits"]["validation"] == {"triples": 2, "negatives": 2, "labelled": True}
    assert kg.degrees(["validation"])[kg.entity_index()["e9"]] == 0  # negatives never count


# ------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "file_name, content, match",
    [
        ("train.tsv", "e0\tr0\te1\ne0\tr0\n", r"train.tsv:2: expected 3 or 4 tab-separated columns"),
        ("train.tsv", "e0\tr0\te1\ne0\tr0\te2\t1\te3\n", r"train.tsv:2: .*found 5"),
        ("dev.tsv", "e0\tr0\te1\t1\ne0\tr0\te2\n", r"dev.tsv:2: .*like the first line \(4 columns\), found 3"),
        ("dev.tsv", "e0\tr0\te1\t1\ne0\tr0\te2\tyes\n", r"dev.tsv:2: label 'yes' is not 1, -1 or 0"),
        ("test.tsv", "e0\tr0\te1\ne0\tr0\tghost\n", r"test.tsv:2: entity 'ghost' is not in entities.txt \(1 rows"),
        ("test.tsv", "e0\tr9\te1\n", r"test.tsv:1: relation 'r9' is not in relations.txt"),
        ("test.tsv", "", r"test.tsv: the split is empty"),
        ("test.tsv", None, r"test.tsv is missing"),
        ("entity2textlong.txt", "e0\tok\ne1 no tab\n", r"entity2textlong.txt:2: expected 2 tab-separated columns"),
        ("entities.txt", "e0\te1\n", r"entities.txt:1: expected one entity id per line"),
    ],
)
def test_bad_input_errors_name_file_and_line(tmp_path, file_name, content, match):
    folder = write_toy_kg(tmp_path, overrides={file_name: content})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises((ValueError, FileNotFoundError), match=match):
            load_kg(str(folder))


def test_non_utf8_file_errors(tmp_path):
    folder = write_toy_kg(tmp_path)
    (folder / "train.tsv").write_bytes(b"e0\tr0\te1\ne0\tr0\xff\te2\n")
    with pytest.raises(ValueError, match=r"train.tsv:2: not valid UTF-8"):
        load_kg(str(folder))


def test_duplicate_rows_are_dropped_with_count(tmp_path):
    train = "".join("\t".join(t) + "\n" for t in TOY["train"] + TOY["train"][:3])
    folder = write_toy_kg(tmp_path, overrides={"train.tsv": train})
    kg, messages = _load_recording(str(folder))
    assert "train.tsv: dropped 3 duplicated rows from the train split" in messages
    assert _ids(kg, "train") == TOY["train"]
    assert kg.report["splits"]["train"]["duplicate_rows_dropped"] == 3


def test_conflicting_labels_are_dropped_with_count(tmp_path):
    dev = "e8\tr0\te1\t1\ne8\tr0\te1\t-1\ne0\tr0\te4\t1\ne0\tr0\te9\t-1\ne3\tr1\te2\t1\ne3\tr1\te2\t-1\n"
    folder = write_toy_kg(tmp_path, overrides={"dev.tsv": dev})
    kg, messages = _load_recording(str(folder))
    assert "dev.tsv: 2 triples are labelled both true and false (first at line 1); dropped their 4 rows" in messages
    assert _ids(kg, "validation", positives_only=False) == [("e0", "r0", "e4"), ("e0", "r0", "e9")]
    assert kg.report["splits"]["validation"]["conflicting_triples_dropped"] == 2


def test_split_empty_after_cleaning_errors(tmp_path):
    folder = write_toy_kg(tmp_path, overrides={"dev.tsv": "e8\tr0\te1\t1\ne8\tr0\te1\t-1\n"})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"dev.tsv: the validation split is empty after cleaning"):
            load_kg(str(folder))


def test_duplicate_entity_ids_and_blank_lines_warn(tmp_path):
    entities = "".join(e + "\n" for e in TOY["entities"] + ["e1", "e2"])
    train = "".join("\t".join(t) + "\n" for t in TOY["train"]).replace("\n", "\n\n", 1)
    folder = write_toy_kg(tmp_path, overrides={"entities.txt": entities, "train.tsv": train})
    kg, messages = _load_recording(str(folder))
    assert "entities.txt: 2 duplicated entity ids removed" in messages
    assert "train.tsv: skipped 1 blank lines" in messages
    assert kg.num_entities == 10 and _ids(kg, "train") == TOY["train"]


# ------------------------------------------------------------------------------------------ resolution


def test_short_name_resolution(tmp_path, monkeypatch):
    write_toy_kg(tmp_path / "root", "UMLS")
    kg = _load_quiet("umls", data_dir=str(tmp_path / "root"))
    assert kg.name == "umls" and kg.source == str(tmp_path / "root" / "UMLS")
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "root"))
    assert _load_quiet("Umls").source == kg.source
    write_toy_kg(tmp_path / "root", "fb15k-237")
    assert _load_quiet("FB15K237").name == "fb15k-237"
    monkeypatch.delenv(DATA_DIR_ENV)
    with pytest.raises(FileNotFoundError, match=rf"data_dir: not set; \${DATA_DIR_ENV}: not set"):
        load_kg("wn18rr")
    with pytest.raises(FileNotFoundError, match=r"no sub-folder 'wn18rr'"):
        load_kg("wn18rr", data_dir=str(tmp_path / "root"))
    assert set(SHORT_NAMES.values()) == {"wn18rr", "fb15k-237", "fb13", "umls", "wn11", "nations", "kinship"}


def test_unknown_name_lists_what_was_tried(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_kg(str(tmp_path / "no" / "such" / "folder"))
    message = str(info.value)
    assert "local folder" in message and "is not one of" in message and "Hub dataset" in message


# ------------------------------------------------------------------------------------------ prepared / Hub


def _assert_same_graph(a: KnowledgeGraph, b: KnowledgeGraph) -> None:
    assert a.entities.to_list() == b.entities.to_list()
    assert a.relations.to_list() == b.relations.to_list()
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(a.triples(split, positives_only=False), b.triples(split, positives_only=False))
        np.testing.assert_array_equal(a.labels(split), b.labels(split))
        assert ("label" in a.splits[split].column_names) == ("label" in b.splits[split].column_names)


def test_parquet_round_trip(toy_kg_dir, tmp_path):
    kg = add_classification_negatives(_load_quiet(str(toy_kg_dir)), seed=5)
    out = save_prepared(kg, tmp_path / "prepared")
    assert (out / "data" / "train.parquet").is_file() and (out / "entities" / "entities.parquet").is_file()
    metadata = json.loads((out / PREPARED_METADATA).read_text())
    assert metadata["name"] == "toy" and metadata["negatives_seed"] == 5
    assert metadata["labelled_splits"] == ["validation", "test"] and metadata["source"] == "toy"
    card = (out / "README.md").read_text()
    assert card.startswith("---\n") and "config_name: triples" in card and "## Licence" in card

    loaded = load_kg(str(out))
    _assert_same_graph(kg, loaded)
    assert loaded.name == "toy" and loaded.description_source == "entity2textlong.txt"
    assert loaded.report["negatives_seed"] == 5

    # the folder is readable without lmke_hf, with original string ids
    triples = datasets.load_dataset(str(out), "triples")
    assert set(triples) == {"train", "validation", "test"}
    assert triples["train"][0] == {"head": "e0", "relation": "r0", "tail": "e1", "label": 1}
    entities = datasets.load_dataset(str(out), "entities", split="train")
    assert entities["id"] == TOY["entities"]
    # the Hub code path (datasets.load_dataset per config) gives the same graph
    _assert_same_graph(kg, _load_hub(str(out), None, "auto"))


def test_prepared_without_negatives_and_name_descriptions(toy_kg_dir, tmp_path):
    kg = _load_quiet(str(toy_kg_dir))
    out = save_prepared(kg, tmp_path / "prepared", card=False)
    assert not (out / "README.md").exists()
    loaded = load_kg(str(out), description="name")
    assert loaded.entities["description"] == loaded.entities["name"]
    assert all("label" not in loaded.splits[s].column_names for s in ("train", "validation", "test"))
    with pytest.raises(ValueError, match=r"`description`='entity2text.txt' names a text file, but .* is a prepared"):
        load_kg(str(out), description="entity2text.txt")


def test_prepared_metadata_from_newer_version_warns(toy_kg_dir, tmp_path):
    out = save_prepared(_load_quiet(str(toy_kg_dir)), tmp_path / "prepared")
    metadata = json.loads((out / PREPARED_METADATA).read_text())
    metadata["shiny_new_field"] = 1
    (out / PREPARED_METADATA).write_text(json.dumps(metadata))
    with pytest.warns(UserWarning, match=r"ignored 1 unknown metadata keys \['shiny_new_field'\]"):
        load_kg(str(out))
    (out / "entities" / "entities.parquet").unlink()
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match=r"entities.parquet is missing"):
        load_kg(str(out))


def test_push_prepared_to_hub_calls_hf_api(toy_kg_dir, tmp_path, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            calls.append(("init", token))

        def create_repo(self, repo_id, **kwargs):
            calls.append(("create_repo", repo_id, kwargs))

        def upload_folder(self, **kwargs):
            calls.append(("upload_folder", kwargs))
            return "commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    out = save_prepared(_load_quiet(str(toy_kg_dir)), tmp_path / "prepared")
    assert push_prepared_to_hub(out, "org/toy", private=True, token="t") == "commit"
    assert calls[0] == ("init", "t")
    assert calls[1] == ("create_repo", "org/toy", {"repo_type": "dataset", "private": True, "exist_ok": True})
    assert calls[2][1]["repo_type"] == "dataset" and calls[2][1]["folder_path"] == str(out)
    with pytest.raises(FileNotFoundError, match=r"lacks \['lmke_hf_kg.json'"):
        push_prepared_to_hub(tmp_path, "org/toy")


def test_hub_round_trip(local_hub, hub_repo_id, toy_kg_dir, tmp_path):
    kg = add_classification_negatives(_load_quiet(str(toy_kg_dir)), seed=2)
    out = save_prepared(kg, tmp_path / "prepared")
    push_prepared_to_hub(out, hub_repo_id)
    loaded = load_kg(hub_repo_id)
    _assert_same_graph(kg, loaded)
    assert loaded.name == "toy" and loaded.source == f"hub:{hub_repo_id}"
    assert loaded.report["negatives_seed"] == 2


# ------------------------------------------------------------------------------------------ example


def _example_module():
    """The program examples/prepare_kg.py runs (`lmke_hf.commands.prepare_kg`), found through the example itself."""
    spec = importlib.util.spec_from_file_location("prepare_kg_example", REPO_ROOT / "examples" / "prepare_kg.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.prepare_kg


def test_prepare_kg_example(toy_kg_dir, tmp_path, capsys):
    example = _example_module()
    args = example.parse_args([str(toy_kg_dir), "--output_dir", str(tmp_path / "out"), "--negatives_seed", "3"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = example.main(args)
    assert json.loads((out / PREPARED_METADATA).read_text())["negatives_seed"] == 3
    assert "wrote" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        example.parse_args(["--help"])
    parser_help = capsys.readouterr().out
    assert "--output_dir" in parser_help and "--push_to_hub" in parser_help and "--negatives_seed" in parser_help


def test_prepare_kg_example_keeps_dashed_flags():
    """The dashed spellings of 0.1.0 parse to the same flags as the underscore ones (for one release)."""
    example = _example_module()
    underscore = [
        "--data_dir",
        "d",
        "--output_dir",
        "o",
        "--negatives_seed",
        "3",
        "--no_negatives",
        "--no_card",
        "--push_to_hub",
        "org/kg",
    ]
    dashed = [flag.replace("_", "-") if flag.startswith("--") else flag for flag in underscore]
    assert vars(example.parse_args(["toy", *dashed])) == vars(example.parse_args(["toy", *underscore]))
    assert example.parse_args(["toy", *underscore]).push_to_hub == "org/kg"


# ------------------------------------------------------------------------------------------ real data (slow)


def _real(name: str) -> Path:
    folder = SHARED_DATA / name
    if not (folder / "train.tsv").is_file():
        pytest.skip(f"real data {folder} is absent (see /work/shared/data/README.md)")
    return folder


@pytest.mark.slow
def test_umls_statistics_match_readme():
    kg = load_kg(str(_real("umls")))
    stats = kg.statistics()
    assert (stats["entities"], stats["relations"]) == (135, 46)
    assert (stats["train"], stats["validation"], stats["test"]) == (5216, 652, 661)
    assert stats["description_source"] == "entity2textlong.txt"
    assert stats["avg_description_words"] == pytest.approx(211.6, abs=0.05)
    assert stats["median_description_words"] == 159
    assert stats["entities_unseen_in_train"] == {"validation": 0, "test": 0}


@pytest.mark.slow
def test_wn18rr_statistics_match_readme():
    kg = load_kg(str(_real("wn18rr")))
    stats = kg.statistics()
    assert (stats["entities"], stats["relations"]) == (40943, 11)
    assert (stats["train"], stats["validation"], stats["test"]) == (86835, 3034, 3134)
    assert stats["entities_unseen_in_train"] == {"validation": 198, "test": 209}
    assert stats["avg_description_words"] == pytest.approx(14.24, abs=0.01)
    assert kg.entities["name"][kg.entity_index()["00260881"]] != ""
    degrees = kg.degrees(["train"])
    assert degrees.sum() == 2 * 86835
    negatives = generate_negatives(kg, "test", seed=0)
    rows = np.stack([negatives["head"], negatives["relation"], negatives["tail"]], axis=1)[1::2]
    index = kg.answer_index(["train", "validation", "test"], direction="tail")
    assert not index.contains(rows[:, 0], rows[:, 1], rows[:, 2]).any()


@pytest.mark.slow
def test_fb13_shipped_negatives_cleaned():
    with pytest.warns(UserWarning, match=r"test.tsv: 12 triples are labelled both true and false"):
        kg = load_kg(str(_real("fb13")))
    stats = kg.statistics()
    assert (stats["entities"], stats["relations"], stats["train"]) == (75043, 13, 316232)
    assert stats["splits"]["validation"] == {"triples": 5907, "negatives": 5907, "labelled": True}
    assert kg.report["splits"]["test"]["duplicate_rows_dropped"] == 2
