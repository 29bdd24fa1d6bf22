"""Inputs that cannot fool `lmke_hf.kg`: byte-order marks, CR-only line endings, long lines, Unicode
normalisation, header lines, typos in evaluation files and misspelt names.

Data files (``lmke_hf.kg``); the tokenizer's share is in ``test_tokenizer_inputs.py``. Each test that is not
a plain guard fails on the code before the fix; its comment says what a user saw then. Tiny and offline: KG
folders are written in ``tmp_path`` (``helpers.write_toy_kg``).
"""

from __future__ import annotations

import unicodedata
import warnings

import numpy as np
import pytest

from lmke_hf.kg import PREPARED_METADATA, SHORT_NAMES, load_kg, save_prepared
from lmke_hf.kg import load as load_module

from helpers import TOY, write_toy_kg  # noqa: E402

BOM = "\ufeff"
NO_LISTS = {"entities.txt": None, "relations.txt": None}  # nations / kinship layout: ids come from the triples


def _rows(rows) -> str:
    return "".join("\t".join(row) + "\n" for row in rows)


def _load(*args, **kwargs):
    """Load and return the graph with all warning messages joined by ' | '."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        kg = load_kg(*args, **kwargs)
    return kg, " | ".join(str(w.message) for w in record)


def _raises(exception, *args, **kwargs) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(exception) as info:
            load_kg(*args, **kwargs)
    return str(info.value)


# ------------------------------------------------------------------------------- 1. byte-order marks


def test_byte_order_mark_is_not_part_of_the_first_id(tmp_path):
    # before: "train.tsv:1: entity 'e0' is not in entities.txt" (the list held '\ufeffe0'), and a BOM in a text
    # file silently turned e0's description into its name
    plain, _ = _load(str(write_toy_kg(tmp_path / "plain")))
    files = (
        "train.tsv",
        "dev.tsv",
        "test.tsv",
        "entities.txt",
        "relations.txt",
        "entity2text.txt",
        "entity2textlong.txt",
        "relation2text.txt",
    )
    folder = write_toy_kg(tmp_path / "bom")
    for name in files:
        (folder / name).write_bytes(BOM.encode("utf-8") + (folder / name).read_bytes())
    kg, messages = _load(str(folder))
    assert kg.entities.to_list() == plain.entities.to_list()
    assert kg.relations.to_list() == plain.relations.to_list()
    assert kg.entities["description"][0] == TOY["descriptions"]["e0"]
    assert "1 of 10 entities have no or an empty description" in messages  # e7 only, as without BOMs
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(kg.triples(split), plain.triples(split))


def test_byte_order_mark_in_text_file_keeps_first_description(tmp_path):
    # before: e0 (first line) lost its description silently; only the count in a warning changed (1 -> 2)
    text = BOM + _rows((e, d) for e, d in TOY["descriptions"].items())
    kg, messages = _load(str(write_toy_kg(tmp_path, overrides={"entity2textlong.txt": text})))
    assert kg.entities["description"][0] == TOY["descriptions"]["e0"]
    assert "1 of 10 entities" in messages


def test_byte_order_mark_after_invalid_utf8_keeps_line_numbers(tmp_path):
    folder = write_toy_kg(tmp_path)
    (folder / "train.tsv").write_bytes(BOM.encode("utf-8") + b"e0\tr0\te1\ne0\tr0\xff\te2\n")
    assert "train.tsv:2: not valid UTF-8" in _raises(ValueError, str(folder))


def test_byte_order_mark_in_prepared_metadata(tmp_path):
    # before: json.decoder.JSONDecodeError "Unexpected UTF-8 BOM"
    kg, _ = _load(str(write_toy_kg(tmp_path)))
    out = save_prepared(kg, tmp_path / "prepared")
    metadata = (out / PREPARED_METADATA).read_text(encoding="utf-8")
    (out / PREPARED_METADATA).write_text(BOM + metadata, encoding="utf-8")
    assert _load(str(out))[0].name == "toy"


# ------------------------------------------------------------------------------- 2. CR-only line endings, excerpts


def test_cr_only_line_endings_are_named_in_a_short_message(tmp_path):
    # before: "expected 3 or 4 tab-separated columns ..., found 2401 in 'e0\tr0\te1\re0...'" holding the whole file
    folder = write_toy_kg(tmp_path)
    (folder / "train.tsv").write_bytes(_rows(TOY["train"] * 200).replace("\n", "\r").encode("utf-8"))
    message = _raises(ValueError, str(folder))
    assert "train.tsv: CR-only line endings" in message and "2,400 carriage returns" in message
    assert "LF line endings" in message and "mac2unix" in message
    assert len(message) < 600


def test_a_cr_only_break_inside_an_lf_file_names_its_line(tmp_path):
    entities = "e0\ne1\ne2\re3\ne4\ne5\ne6\ne7\ne8\ne9\n"
    message = _raises(ValueError, str(write_toy_kg(tmp_path, overrides={"entities.txt": entities})))
    assert "entities.txt:3: a carriage return" in message and "CR-only line endings" in message


def test_crlf_still_reads(tmp_path):
    kg, _ = _load(str(write_toy_kg(tmp_path, crlf=True)))
    assert kg.entities["id"] == TOY["entities"]


@pytest.mark.parametrize(
    "file_name, content",
    [
        ("train.tsv", "e0\tr0\te1\ne0\t" + "x" * 10_000 + "\n"),  # wrong column count
        ("test.tsv", "e0\tr0\t" + "y" * 10_000 + "\n"),  # unknown entity
        ("dev.tsv", "e0\tr0\te1\t" + "1" * 10_000 + "\n"),  # bad label
        ("entities.txt", "e0\t" + "z" * 10_000 + "\n"),  # tab in an id list
    ],
    ids=["columns", "unknown-entity", "label", "id-list-tab"],
)
def test_errors_quote_only_an_excerpt_of_a_line(tmp_path, file_name, content):
    # before: the 10,000 characters were all in the message
    message = _raises(ValueError, str(write_toy_kg(tmp_path, overrides={file_name: content})))
    assert f"{file_name}:" in message and "characters in all" in message
    assert len(message) < 800


# ------------------------------------------------------------------------------- 3. Unicode normalisation

NFC_ID, NFD_ID = unicodedata.normalize("NFC", "café"), unicodedata.normalize("NFD", "café")


def test_id_differing_only_in_normalisation_is_named(tmp_path):
    # before: "train.tsv:1: entity 'café' is not in entities.txt" (both spellings look the same)
    entities = "".join(e + "\n" for e in [NFC_ID] + TOY["entities"][1:])
    train = _rows(TOY["train"]).replace("e0", NFD_ID)
    message = _raises(ValueError, str(write_toy_kg(tmp_path, overrides={"entities.txt": entities, "train.tsv": train})))
    assert "train.tsv:1: entity" in message and "not in entities.txt" in message
    assert "Unicode NFC" in message and "'cafe\\u0301' (NFD) in train.tsv" in message
    assert "'caf\\xe9' (NFC) in entities.txt" in message and "unicodedata.normalize('NFC'" in message


def test_text_file_ids_differing_only_in_normalisation_warn(tmp_path):
    # before: only "2 of 10 entities have no or an empty description" (an info log named the ignored line)
    entities = "".join(e + "\n" for e in [NFC_ID] + TOY["entities"][1:])
    train = _rows(TOY["train"]).replace("e0", NFC_ID)
    long_text = _rows(TOY["descriptions"].items()).replace("e0\t", NFD_ID + "\t")
    folder = write_toy_kg(
        tmp_path,
        overrides={
            "entities.txt": entities,
            "train.tsv": train,
            "dev.tsv": _rows(TOY["validation"]).replace("e0", NFC_ID),
            "test.tsv": _rows(TOY["test"]).replace("e0", NFC_ID),
            "entity2textlong.txt": long_text,
        },
    )
    _, messages = _load(str(folder))
    assert "entity2textlong.txt: 1 lines name entity ids that match no id of this graph exactly" in messages
    assert "(NFD) in entity2textlong.txt" in messages


# ------------------------------------------------------------------------------- 4. headers and evaluation-only ids


@pytest.mark.parametrize(
    "header", ["head\trelation\ttail", "H\tR\tT", "subject\tpredicate\tobject\tlabel", "#head_id\trelation\ttail_id"]
)
def test_header_line_is_refused_without_id_lists(tmp_path, header):
    # before: loaded with exit 0, 'head' / 'tail' / 'relation' became an entity and a relation of the graph
    train = header + "\n" + _rows(TOY["train"])
    folder = write_toy_kg(tmp_path, "nations", overrides={**NO_LISTS, "train.tsv": train})
    message = _raises(ValueError, str(folder))
    assert "train.tsv:1: the first line" in message and "looks like a header" in message
    assert "sed -i 1d" in message


def test_header_line_is_refused_with_id_lists(tmp_path):
    # before: "dev.tsv:1: entity 'head' is not in entities.txt"
    folder = write_toy_kg(tmp_path, overrides={"dev.tsv": "head\trelation\ttail\n" + _rows(TOY["validation"])})
    assert "dev.tsv:1: the first line 'head\\trelation\\ttail' looks like a header" in _raises(ValueError, str(folder))


def test_listed_ids_that_look_like_column_names_are_a_triple(tmp_path):
    entities = "".join(e + "\n" for e in TOY["entities"] + ["h", "t"])
    train = "h\tr\tt\n" + _rows(TOY["train"])
    folder = write_toy_kg(
        tmp_path, overrides={"entities.txt": entities, "relations.txt": "r0\nr1\nr2\nr\n", "train.tsv": train}
    )
    kg, _ = _load(str(folder))
    assert kg.triples("train").shape == (13, 3)


def test_ids_only_in_evaluation_files_warn_without_id_lists(tmp_path):
    # before: 'e55' and 'rr2' became an entity and a relation silently (exit 0)
    test = "e9\tr1\te0\ne0\tr0\te55\ne6\trr2\te8\n"
    folder = write_toy_kg(tmp_path, "nations", overrides={**NO_LISTS, "test.tsv": test})
    kg, messages = _load(str(folder))
    assert (
        "no entities.txt, so the entity ids are gathered from the triples, and 3 of them occur only in dev.tsv / "
        "test.tsv, never in train.tsv: 'e55' (test.tsv:2), 'e8' (dev.tsv:1), 'e9' (test.tsv:1)"
    ) in messages
    assert "1 of them occur only in dev.tsv / test.tsv, never in train.tsv: 'rr2' (test.tsv:3)" in messages
    assert "list every relation id in relations.txt" in messages
    assert kg.report["evaluation_only_ids"] == {"entity": 3, "relation": 1}


def test_listed_unseen_entities_do_not_warn(toy_kg_dir):
    _, messages = _load(str(toy_kg_dir))  # e8 and e9 are listed in entities.txt: unseen on purpose
    assert "occur only in" not in messages


# ------------------------------------------------------------------------------- 6. misspelt names


def test_misspelt_short_name_suggests_and_lists_choices(tmp_path, monkeypatch):
    # before: "... is not one of [...]; Hub dataset 'wn18r': ConnectionError ..." after the Hub's retries
    calls = []  # recorded, not raised: the loader's own `except Exception` would turn a raise into its message

    def no_hub(repo_id, *args, **kwargs):
        calls.append(repo_id)
        raise ConnectionError("offline")

    monkeypatch.setattr(load_module, "_load_hub", no_hub)
    write_toy_kg(tmp_path, "wn18rr")
    message = _raises(FileNotFoundError, "wn18r", data_dir=str(tmp_path))
    assert calls == [], "a near-miss of a short name must not be looked up on the Hub"
    assert message.startswith("Could not load 'wn18r' (did you mean 'wn18rr'") and "Hub dataset: not tried" in message
    assert str(sorted(SHORT_NAMES)) in message


def test_unrelated_name_still_tries_the_hub(monkeypatch):
    calls = []

    def fake_hub(repo_id, revision, description):
        calls.append(repo_id)
        raise ConnectionError("offline")

    monkeypatch.setattr(load_module, "_load_hub", fake_hub)
    message = _raises(FileNotFoundError, "some-org/some-graph")
    assert calls == ["some-org/some-graph"] and "did you mean" not in message


def test_misspelt_folder_and_description_file_suggest(tmp_path):
    folder = write_toy_kg(tmp_path, "umls")
    assert "does not exist (did you mean 'umls'?)" in _raises(FileNotFoundError, str(tmp_path / "umsl"))
    message = _raises(FileNotFoundError, str(folder), description="entity2textlon.txt")
    assert "(did you mean 'entity2textlong.txt'" in message
    assert "(it holds ['umls'])" in _raises(FileNotFoundError, "wn18rr", data_dir=str(tmp_path))
