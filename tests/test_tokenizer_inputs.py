"""Inputs that cannot fool the tokenizer (issue 14): lone strings, int-vs-str ids, floats and bools, unknown ids
(close matches, names, Unicode normalisation) and a byte-order mark in ``kg_vocab.json``.

Each test that is not a plain guard fails on the code before the fix; its comment says what a user saw then.
The encoder is conftest's tiny offline ``tiny_bert_dir``.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from lmke_hf.tokenization_lmke import LmkeTokenizer

BOM = "\ufeff"
NFC_ID, NFD_ID = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")

LENGTHS = dict(max_entity_description_length=8, max_relation_description_length=4, max_key_description_length=16)
NUMERIC = ["10", "2", "0", "00260881", NFC_ID, "Q_paris"]


@pytest.fixture
def tok(tiny_bert_dir) -> LmkeTokenizer:
    return LmkeTokenizer(
        AutoTokenizer.from_pretrained(tiny_bert_dir),
        NUMERIC,
        ["born_in", "capital_of"],
        entity_names=["ten", "two", "zero", "stool", "cafe", "paris"],
        relation_names=["born in", "capital of"],
        **LENGTHS,
    )


def test_add_entities_takes_a_lone_str_as_one_id(tok):
    # before: five one-letter entities 'n', 'e', 'w', '_', 'x'
    new = tok.add_entities("new_x")
    assert new.tolist() == [len(NUMERIC)] and tok.entity_ids[-1] == "new_x" and tok.entity_names[-1] == "new_x"
    # before: ValueError "`names` has 3 entries for 5 ids"
    new = tok.add_entities("fox", "fox", "a wild canine")
    assert tok.entity_ids[-1] == "fox" and tok.entity_descriptions[-1] == "a wild canine"
    assert tok.entity_to_index("fox").tolist() == new.tolist()
    with pytest.raises(ValueError, match=r"`names` has 1 entries for 2 ids"):
        tok.add_entities(["a", "b"], "one name")


def test_add_entities_refuses_non_str_ids(tok):
    # before: 7 was registered as id '7', while entity_to_index(7) means row 7
    with pytest.raises(TypeError, match=r"`ids` must hold str entity ids, got int 7 .*pass new ids as str, e.g. '7'"):
        tok.add_entities([7])
    assert tok.num_entities == len(NUMERIC)


def test_constructor_takes_lone_str_ids(tiny_bert_dir):
    # before: 'e0' made two entities 'e' and '0'
    tok = LmkeTokenizer(AutoTokenizer.from_pretrained(tiny_bert_dir), "e0", "r0", entity_names="zero", **LENGTHS)
    assert tok.entity_ids == ["e0"] and tok.relation_ids == ["r0"] and tok.entity_names == ["zero"]


def test_numeric_string_ids_are_ids_and_ints_are_indices(tok):
    assert tok.entity_to_index("2").tolist() == [1]  # the id "2" sits in row 1
    assert tok.entity_to_index(2).tolist() == [2]  # row 2 (id "0")
    assert tok.entity_to_index(["0", 0, "10", np.int64(3), "00260881"]).tolist() == [2, 0, 0, 3, 3]
    assert tok.entity_to_index(np.array(["2", "10"])).tolist() == [1, 0]
    assert tok.entity_to_index(np.array([[1], [2]], dtype=np.uint8)).tolist() == [1, 2]
    assert tok.entity_to_index(torch.tensor([5, 4])).tolist() == [5, 4]
    assert tok.entity_to_index(torch.tensor(1)).tolist() == [1]
    assert tok.relation_to_index(["capital_of", 0]).tolist() == [1, 0]
    with pytest.raises(KeyError, match=r"Unknown entity id\(s\) \['260881'\]"):
        tok.entity_to_index("260881")  # a str is never read as a number
    # before: "entity index 260881 is out of range [0, 6) ...; integer ids must index ..."
    with pytest.raises(IndexError, match=r"ints are row indices.*The entity id '00260881' reads as that number"):
        tok.entity_to_index(260881)


@pytest.mark.parametrize(
    "value, match",
    [
        (2.5, r"got float 2.5 \(item 0\)"),
        (2.0, r"got float 2.0"),
        ([0, True], r"got bool True \(item 1\)"),
        (np.bool_(False), r"got bool False"),
        ([None], r"got NoneType None"),
        (b"10", r"got bytes b'10'"),
        (np.array([1.0, 2.0]), r"array of dtype float64"),
        (torch.tensor([True]), r"array of dtype bool"),
        (torch.tensor([0.0]), r"array of dtype float32"),
    ],
)
def test_floats_and_bools_are_refused(tok, value, match):
    # before: True/False were rows 1/0, 2.5 gave "Unknown entity id(s) [2.5]", float arrays KeyErrors
    with pytest.raises(TypeError, match=match):
        tok.entity_to_index(value)


def test_unknown_ids_suggest_close_matches_names_and_normalisation(tok):
    # before: "Unknown entity id(s) ['Q_pari'] (1 in all); the tokenizer knows 6 entitys. ..." with no hint
    with pytest.raises(KeyError) as info:
        tok.entity_to_index(["Q_pari", "Paris", NFD_ID])
    message = info.value.args[0]  # str(KeyError) would add a layer of quotes and escapes
    assert "the tokenizer knows 6 entities" in message
    assert "'Q_pari': did you mean 'Q_paris'?" in message
    assert "'Paris' is the name of entity id 'Q_paris'; pass the id" in message
    assert "'cafe\\u0301' equals the id 'caf\\xe9' only after Unicode NFC normalisation" in message
    with pytest.raises(KeyError, match=r"'capitol_of': did you mean 'capital_of'\?"):
        tok.relation_to_index("capitol_of")
    with pytest.raises(KeyError, match=r"'capital of' is the name of relation id 'capital_of'"):
        tok.encode_queries([0], ["capital of"], "tail")
    with pytest.raises(KeyError) as info:
        tok.entity_to_index("x" * 5000)
    assert "characters in all" in info.value.args[0] and len(info.value.args[0]) < 800


def test_tokenizer_reads_vocab_with_byte_order_mark(tiny_bert_dir, tmp_path):
    tok = LmkeTokenizer(AutoTokenizer.from_pretrained(tiny_bert_dir), ["e0", "e1"], ["r0"], **LENGTHS)
    tok.save_pretrained(tmp_path / "tok")
    vocab = tmp_path / "tok" / "kg_vocab.json"
    vocab.write_text(BOM + vocab.read_text(encoding="utf-8"), encoding="utf-8")
    assert LmkeTokenizer.from_pretrained(tmp_path / "tok").entity_ids == ["e0", "e1"]
