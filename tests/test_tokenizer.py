"""Tests of `LmkeTokenizer` (`lmke_hf.tokenization_lmke`): the query / key / triple layouts, save / load, the
errors that name the value and the fix, and a large KG. Input validation (lone strings, int-vs-str ids, floats,
unknown ids) is in tests/test_tokenizer_inputs.py.

Tiny and offline: the tokenizer is conftest's `tok` on the tiny model KG of `helpers.KG` (7 entities, 3 relations)
over the word pieces of conftest's `tiny_bert_dir`.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lmke_hf import LmkeTokenizer

from helpers import LENGTHS, clmke_batch, lmke_batch


# ---------------------------------------------------------------------------------------------------- head / tail queries, keys and triples
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
    assert triple == [
        cls,
        eo + 0,
        *tok.entity_pieces[0][:le],
        ro + 0,
        *tok.relation_pieces[0][:lr],
        eo + 2,
        berlin,
        sep,
    ]


# ---------------------------------------------------------------------------------------------------- save / load
def test_tokenizer_save_and_load_round_trip(tok, tmp_path):
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "kg_vocab.json").is_file()
    loaded = LmkeTokenizer.from_pretrained(tmp_path)
    for attr in (
        "entity_ids",
        "entity_names",
        "entity_descriptions",
        "relation_ids",
        "relation_names",
        "relation_descriptions",
        "max_entity_description_length",
        "max_relation_description_length",
        "max_key_description_length",
        "total_vocab_size",
        "pad_token_id",
    ):
        assert getattr(loaded, attr) == getattr(tok, attr), attr
    for make in (lmke_batch, clmke_batch):
        a, b = make(tok), make(loaded)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    plain = tmp_path / "word_pieces_only"
    tok.tokenizer.save_pretrained(plain)
    with pytest.raises(OSError, match="no kg_vocab.json.*not a saved LmkeTokenizer"):
        LmkeTokenizer.from_pretrained(plain)


# ---------------------------------------------------------------------------------------------------- errors
ERROR_CASES = [
    # ids
    (
        "unknown-entity-string",
        lambda c: c.tok.encode_triples(["Q0"], ["P0"], ["nope"]),
        KeyError,
        r"Unknown entity id.*'nope'.*add_entities",
    ),
    (
        "unknown-relation-string",
        lambda c: c.tok.encode_queries(["Q0"], ["P9"], "tail"),
        KeyError,
        r"Unknown relation id.*'P9'",
    ),
    (
        "entity-index-out-of-range",
        lambda c: c.tok.encode_keys([0, 7]),
        IndexError,
        r"entity index 7 is out of range \[0, 7\)",
    ),
    ("negative-entity-index", lambda c: c.tok.encode_keys([-1]), IndexError, r"entity index -1 is out of range"),
    (
        "relation-index-out-of-range",
        lambda c: c.tok.encode_triples([0], [3], [1]),
        IndexError,
        r"relation index 3 is out of range \[0, 3\)",
    ),
    (
        "bad-direction",
        lambda c: c.tok.encode_queries([0], [0], "left"),
        ValueError,
        r"direction must be 'head' or 'tail'.*left",
    ),
    ("unequal-lengths", lambda c: c.tok.encode_triples([0, 1], [0], [1, 2]), ValueError, r"same length.*'r': 1"),
    (
        "convert-id-outside-vocab",
        lambda c: c.tok.convert_ids_to_tokens([c.tok.total_vocab_size]),
        IndexError,
        r"outside the vocabulary",
    ),
    (
        "duplicate-entity-ids",
        lambda c: LmkeTokenizer(c.tok.tokenizer, ["a", "a"], ["r"], **LENGTHS),
        ValueError,
        r"duplicates",
    ),
    ("add-existing-entity", lambda c: c.tok.add_entities(["Q3"]), ValueError, r"already registered.*Q3"),
    (
        "texts-length-mismatch",
        lambda c: LmkeTokenizer(c.tok.tokenizer, ["a", "b"], ["r"], entity_names=["x"], **LENGTHS),
        ValueError,
        r"`entity_names` has 1 entries for 2 ids",
    ),
    # empty batches
    ("pad-empty", lambda c: c.tok.pad({"input_ids": []}), ValueError, r"empty batch"),
    ("encode-empty", lambda c: c.tok.encode_triples([], [], []), ValueError, r"Empty input"),
    # lengths that do not fit the encoder
    (
        "tokenizer-lengths-exceed-model-max-length",
        lambda c: LmkeTokenizer(c.tok.tokenizer, ["a"], ["r"], max_entity_description_length=40),
        ValueError,
        r"at most 64.*max_entity_description_length",
    ),
    (
        "tokenizer-key-length-exceeds",
        lambda c: LmkeTokenizer(
            c.tok.tokenizer, ["a"], ["r"], max_entity_description_length=4, max_key_description_length=62
        ),
        ValueError,
        r"65 tokens.*at most 64",
    ),
    (
        "tokenizer-negative-length",
        lambda c: LmkeTokenizer(c.tok.tokenizer, ["a"], ["r"], max_relation_description_length=-1),
        ValueError,
        r"max_relation_description_length.*-1",
    ),
]


@pytest.mark.parametrize("name,action,error,match", ERROR_CASES, ids=[e[0] for e in ERROR_CASES])
def test_errors_name_the_value_and_the_fix(name, action, error, match, tok):
    with pytest.raises(error, match=match):
        action(SimpleNamespace(tok=tok))


def test_tokenizer_accepts_lengths_that_fit_exactly(tok):
    # longest triple: 5 + 2 * 29 + 1 = 64 tokens = model_max_length
    t = LmkeTokenizer(
        tok.tokenizer,
        ["a"],
        ["r"],
        max_entity_description_length=29,
        max_relation_description_length=1,
        max_key_description_length=10,
    )
    assert t.max_entity_description_length == 29


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
    assert (
        batch["input_ids"].shape[1]
        <= 5 + 2 * LENGTHS["max_entity_description_length"] + LENGTHS["max_relation_description_length"]
    )
    assert int(batch["input_ids"].max()) < big.total_vocab_size
    ids = batch["input_ids"]
    assert (ids[:, 1] - big.entity_token_offset).tolist() == h.tolist()
    queries = big.encode_queries([f"E{i}" for i in h[:2000]], r[:2000], "head")
    assert len(queries["input_ids"]) == 2000


# ---------------------------------------------------------------------------------------------------- one entity by id or name (issue 21)
def test_entity_row_and_relation_row_take_ids_names_and_rows(tok):
    assert [tok.entity_row(v) for v in ("Q3", "germany", "GERMANY", 3, np.int64(3))] == [3, 3, 3, 3, 3]
    assert tok.entity_row("new paris") == 6 and tok.relation_row("located in") == 1 == tok.relation_row("P1")
    with pytest.raises(KeyError, match=r"Unknown entity 'pariss': .*7 entities\. Did you mean 'paris'.*add_entities"):
        tok.entity_row("pariss")
    with pytest.raises(
        KeyError, match=r"Unknown relation 'capital off'.*Did you mean 'capital of'.*fixed at training time"
    ):
        tok.relation_row("capital off")
    with pytest.raises(TypeError, match="by its id or name .* got 1.5"):
        tok.entity_row(1.5)
    with pytest.raises(IndexError, match="out of range"):
        tok.relation_row(3)
    twins = LmkeTokenizer(tok.tokenizer, ["a1", "a2"], ["r"], ["bank", "Bank"], **LENGTHS)
    with pytest.raises(KeyError, match=r"ambiguous: 2 candidates: a1 \(bank\), a2 \(Bank\)\. Pass the id"):
        twins.entity_row("BANK")
    assert twins.entity_row("Bank") == 1  # an exact name wins over names equal up to case


def test_word_pieces_is_how_texts_are_cut(tok):
    pieces = tok.word_pieces(["paris is the capital of france", ""], 3)
    assert pieces == [tok.tokenizer.encode("paris is the", add_special_tokens=False), []]
    assert tok.name_pieces("entity", rows=[6]) == tok.word_pieces(["new paris"], tok.max_name_length)
