"""`LmkeTokenizer` as a transformers tokenizer (issue 19 item 1): `AutoTokenizer` with lmke_hf imported and with
`trust_remote_code=True` where it is not, `__call__` for the three layouts, `decode`, `save_pretrained` /
`push_to_hub` through transformers' own machinery, and folders saved before (their `tokenizer_config.json` is the
word-piece tokenizer's).

Tiny and offline: conftest's `tok` (the tiny model KG of `helpers.KG` on `tiny_bert_dir`'s word pieces); the Hub
test uses conftest's local test Hub.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from _hide_package import HIDE_LMKE_HF
from transformers import AutoTokenizer, BatchEncoding, DataCollatorWithPadding, PreTrainedTokenizerBase

import lmke_hf
from lmke_hf import LmkeTokenizer

from helpers import QUERIES, TRIPLES, clmke_batch, lmke_batch

REPO_ROOT = Path(__file__).resolve().parent.parent
KG_ATTRIBUTES = (
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
    "base_vocab_size",
    "pad_token_id",
)
# each layout: the `__call__` arguments and what `encode_*` builds from them
LAYOUTS = {
    "triples": (
        dict(heads=TRIPLES["heads"], relations=TRIPLES["relations"], tails=TRIPLES["tails"]),
        lambda t: t.encode_triples(TRIPLES["heads"], TRIPLES["relations"], TRIPLES["tails"]),
    ),
    "queries": (
        dict(given=QUERIES["given"], relations=QUERIES["relations"], direction=QUERIES["directions"]),
        lambda t: t.encode_queries(QUERIES["given"], QUERIES["relations"], QUERIES["directions"]),
    ),
    "keys": (dict(entities=QUERIES["gold"]), lambda t: t.encode_keys(QUERIES["gold"])),
}


def _assert_same_kg(a: LmkeTokenizer, b: LmkeTokenizer) -> None:
    for attr in KG_ATTRIBUTES:
        assert getattr(a, attr) == getattr(b, attr), attr
    for make in (lmke_batch, clmke_batch):
        x, y = make(a), make(b)
        assert x.keys() == y.keys() and all(torch.equal(x[k], y[k]) for k in x)


def _config(folder: Path) -> dict:
    return json.loads((folder / "tokenizer_config.json").read_text())


@pytest.fixture
def run_folder(tok, make_model, tmp_path) -> Path:
    """A saved C-LMKE run (config.json with its auto_map, weights, code) with its KG tokenizer."""
    model = make_model("clmke")
    model.attach_tokenizer(tok)
    model.save_pretrained(tmp_path / "run")
    return tmp_path / "run"


# ---------------------------------------------------------------------------------------------------- a transformers tokenizer
def test_is_a_transformers_tokenizer_with_the_word_piece_specials(tok):
    words = tok.tokenizer
    assert isinstance(tok, PreTrainedTokenizerBase)
    assert len(tok) == tok.vocab_size == tok.total_vocab_size == tok.base_vocab_size + 1 + 3 + 7
    assert tok.base_vocab_size == len(words)
    for name in ("pad_token_id", "cls_token_id", "sep_token_id", "unk_token_id", "mask_token_id", "pad_token"):
        assert getattr(tok, name) == getattr(words, name), name
    assert sorted(tok.all_special_ids) == sorted(words.all_special_ids)
    assert tok.model_max_length == words.model_max_length
    vocab = tok.get_vocab()
    assert (
        len(vocab) == len(tok)
        and vocab["[E:Q3]"] == tok.entity_token_offset + 3
        and vocab["[R:P1]"] == tok.relation_token_offset + 1
    )
    assert vocab["[ENT_MASK]"] == tok.entity_mask_token_id and vocab["paris"] == words.convert_tokens_to_ids("paris")
    assert len(copy.deepcopy(tok)) == len(pickle.loads(pickle.dumps(tok))) == len(tok)  # DataLoader workers, fixtures


@pytest.mark.parametrize("return_tensors", ["pt", "np", None])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_call_equals_encode_and_pad(tok, layout, return_tensors):
    kwargs, encode = LAYOUTS[layout]
    batch = tok(**kwargs, return_tensors=return_tensors)
    expected = tok.pad(encode(tok))
    assert isinstance(batch, BatchEncoding) and list(batch.keys()) == ["input_ids", "attention_mask"]
    kind = {"pt": torch.Tensor, "np": np.ndarray, None: list}[return_tensors]
    for key in batch:
        assert isinstance(batch[key], kind), key
        assert np.array_equal(np.asarray(batch[key]), expected[key].numpy()), key
    assert int(expected["attention_mask"].sum()) < expected["attention_mask"].numel()  # the batch is really padded


def test_call_options_padding_prefix_and_text(tok):
    keys = tok.encode_keys(QUERIES["gold"])["input_ids"]
    ragged = tok(entities=QUERIES["gold"], padding=False)
    assert ragged["input_ids"] == keys and ragged["attention_mask"] == [[1] * len(k) for k in keys]
    longest = max(map(len, keys))
    assert (
        tok(entities=QUERIES["gold"], pad_to_multiple_of=8, return_tensors="pt")["input_ids"].shape[1]
        == -(-longest // 8) * 8
    )
    wide = tok(entities=[0], padding="max_length", max_length=longest + 3, return_tensors="pt")
    assert wide["input_ids"].shape == (1, longest + 3) and int(wide["attention_mask"].sum()) == len(
        keys[QUERIES["gold"].index(0)]
    )
    assert tok(entities=[0], padding="max_length")["input_ids"][0][-1] == tok.pad_token_id  # model_max_length (64)
    assert list(tok(entities=[0], return_attention_mask=False)) == ["input_ids"]
    # C-LMKE's forward takes query_ / key_ inputs; a lone id is a batch of one; direction defaults to "tail"
    query = tok(given="Q1", relations="P0", prefix="query_", return_tensors="pt")
    assert list(query) == ["query_input_ids", "query_attention_mask"]
    assert torch.equal(query["query_input_ids"], tok.pad(tok.encode_queries(["Q1"], ["P0"], "tail"))["input_ids"])
    # plain text is the word-piece tokenizer's
    assert tok("paris is the capital of france").input_ids == tok.tokenizer("paris is the capital of france").input_ids
    assert tok.tokenize("paris city") == ["paris", "city"] and tok.encode("paris") == tok.tokenizer.encode("paris")


def test_pad_takes_what_data_collators_give(tok):
    encoded = tok.encode_keys(QUERIES["gold"])
    rows = [{"input_ids": ids} for ids in encoded["input_ids"]]
    expected = tok(entities=QUERIES["gold"], return_tensors="pt")
    for batch in (tok.pad(rows), DataCollatorWithPadding(tok)(rows)):
        assert torch.equal(batch["input_ids"], expected["input_ids"]) and torch.equal(
            batch["attention_mask"], expected["attention_mask"]
        )
    # a mask that already holds padding keeps its zeros; other keys pass through
    padded = tok.pad({**expected, "labels": [1, 0, 1, 0, 1, 0]}, return_tensors="pt")
    assert torch.equal(padded["attention_mask"], expected["attention_mask"]) and padded["labels"].tolist() == [
        1,
        0,
        1,
        0,
        1,
        0,
    ]
    assert tok.pad(encoded, return_tensors="np")["input_ids"].dtype == np.int64
    assert type(tok.pad(encoded)) is dict  # as before: a saved batch reads back with torch.load(weights_only=True)


CALL_ERRORS = [
    ("text-and-kg", dict(text="paris", entities=[0]), ValueError, r"either `text`.*not both.*'entities'"),
    ("nothing", dict(), ValueError, r"no inputs.*heads \+ relations \+ tails"),
    ("relations-alone", dict(relations=[0]), ValueError, r"\['relations'\]: pass one layout"),
    ("triple-without-tails", dict(heads=[0], relations=[0]), ValueError, r"\['heads', 'relations'\]"),
    (
        "direction-on-keys",
        dict(entities=[0], direction="head"),
        ValueError,
        r"`direction` applies to queries.*not to keys",
    ),
    (
        "text-option-on-kg",
        dict(entities=[0], truncation=True),
        TypeError,
        r"Unexpected arguments \['truncation'\].*text only",
    ),
    (
        "bad-return-tensors",
        dict(entities=[0], return_tensors="tf"),
        ValueError,
        r"`return_tensors` must be 'pt', 'np' or None.*'tf'",
    ),
    ("bad-padding", dict(entities=[0], padding="shortest"), ValueError, r"`padding` must be .*'shortest'"),
    (
        "ragged-tensors",
        dict(entities=[0, 2], padding=False, return_tensors="pt"),
        ValueError,
        r"one length.*padding=True",
    ),
    (
        "max-length-too-short",
        dict(entities=[0], padding="max_length", max_length=3),
        ValueError,
        r"more than the padding length 3.*never truncated",
    ),
    ("unknown-entity", dict(given=["Q9"], relations=["P0"]), KeyError, r"Unknown entity id.*'Q9'"),
]


@pytest.mark.parametrize("name,kwargs,error,match", CALL_ERRORS, ids=[c[0] for c in CALL_ERRORS])
def test_call_errors_name_the_value_and_the_fix(tok, name, kwargs, error, match):
    with pytest.raises(error, match=match):
        tok(**kwargs)


def test_pad_errors(tok):
    with pytest.raises(ValueError, match=r"right-padded.*use 'right'"):
        tok.pad(tok.encode_keys([0]), padding_side="left")
    with pytest.raises(ValueError, match=r"takes a batch.*wrap one sequence as \[ids\]"):
        tok.pad({"input_ids": [1, 2, 3]})
    with pytest.raises(ValueError, match=r"needs a batch holding 'input_ids'.*\['ids'\]"):
        tok.pad({"ids": [[1]]})
    with pytest.raises(ValueError, match=r"empty batch"):
        tok.pad([])
    with pytest.raises(NotImplementedError, match=r"add_entities"):
        tok.add_tokens(["[NEW]"])


# ---------------------------------------------------------------------------------------------------- decode
def test_decode_names_the_kg_tokens(tok):
    batch = tok(given=[3, 2], relations=[2, 0], direction=["head", "tail"], return_tensors="pt")
    text = tok.decode(batch["input_ids"][0])
    # relation texts are "name, description" cut to 4 word pieces, entity texts to 8
    assert text == "[CLS] [ENT_MASK] [R:P2] born in, person [E:Q3] germany is a big country in the graph [SEP]"
    assert (
        tok.decode(batch["input_ids"][1], skip_special_tokens=True) == "[E:Q2] berlin [R:P0] capital of, the [ENT_MASK]"
    )
    assert tok.decode(batch["input_ids"], skip_special_tokens=True)[1].startswith("[E:Q2] berlin")  # a batch
    assert tok.batch_decode(batch["input_ids"].tolist()) == tok.decode(batch["input_ids"])
    tokens = tok.convert_ids_to_tokens(batch["input_ids"][1])
    assert tokens[:4] == ["[CLS]", "[E:Q2]", "berlin", "[R:P0]"] and tokens.count("[PAD]") > 0
    assert tok.convert_ids_to_tokens(tok.entity_token_offset + 6) == "[E:Q6]"
    assert tok.convert_tokens_to_ids(tokens) == batch["input_ids"][1].tolist()
    assert (
        tok.convert_tokens_to_string(["[E:Q1]", "city", "##s", "[R:P0]", "[ENT_MASK]"])
        == "[E:Q1] citys [R:P0] [ENT_MASK]"
    )
    with pytest.raises(IndexError, match=rf"Token id {len(tok)} is outside the vocabulary of {len(tok)} tokens"):
        tok.decode([0, len(tok)])
    with pytest.raises(IndexError, match=r"Token id -1 is outside"):
        tok.convert_ids_to_tokens([-1])
    with pytest.raises(KeyError, match=r"Unknown entity id.*'Q9'.*add_entities"):
        tok.convert_tokens_to_ids("[E:Q9]")


# ---------------------------------------------------------------------------------------------------- save / load
def test_save_writes_auto_map_and_the_code(tok, tmp_path):
    files = tok.save_pretrained(tmp_path / "tok")
    folder = tmp_path / "tok"
    assert {"tokenizer_config.json", "kg_vocab.json", "tokenizer.json"} <= {Path(f).name for f in files}
    assert {"tokenization_lmke.py", "configuration_lmke.py"} <= {p.name for p in folder.glob("*.py")}
    config = _config(folder)
    assert config["tokenizer_class"] == "LmkeTokenizer" and config["base_tokenizer_class"] == "BertTokenizer"
    assert config["auto_map"] == {"AutoTokenizer": ["tokenization_lmke.LmkeTokenizer", None]}
    assert config["do_lower_case"] is True and config["model_max_length"] == 64  # the word-piece settings
    loaded = LmkeTokenizer.from_pretrained(folder)
    _assert_same_kg(tok, loaded)
    # the wrapped tokenizer, saved alone, is a plain word-piece tokenizer again
    loaded.tokenizer.save_pretrained(tmp_path / "words")
    assert "auto_map" not in _config(tmp_path / "words") and "base_tokenizer_class" not in _config(tmp_path / "words")
    with pytest.raises(ValueError, match=r"is a file; give a directory"):
        tok.save_pretrained(folder / "kg_vocab.json")


def test_auto_tokenizer_round_trip_with_lmke_hf_imported(tok, run_folder, tmp_path):
    for folder in (
        run_folder,
        Path(tok.save_pretrained(tmp_path / "alone")[0]).parent,
    ):  # a model run; a tokenizer alone
        loaded = AutoTokenizer.from_pretrained(folder)
        assert type(loaded) is LmkeTokenizer, folder
        _assert_same_kg(tok, loaded)
    assert lmke_hf.load_model(run_folder)[1].entity_ids == tok.entity_ids
    kg = SimpleNamespace(
        entities=dict(id=["a"], name=["a"], description=[""]), relations=dict(id=["r"], name=["r"], description=[""])
    )
    with pytest.raises(TypeError, match=r"is an LmkeTokenizer already.*word-piece tokenizer"):
        LmkeTokenizer.from_kg(str(run_folder), kg)  # a run folder is not an encoder


def test_auto_tokenizer_with_remote_code_where_lmke_hf_is_not_installed(tok, run_folder, tmp_path):
    alone = Path(tok.save_pretrained(tmp_path / "alone")[0]).parent
    expected = tok(given=QUERIES["given"], relations=QUERIES["relations"], direction=QUERIES["directions"])["input_ids"]
    script = (
        HIDE_LMKE_HF
        + f"""
import json, sys
sys.path = [p for p in sys.path if not p.startswith({str(REPO_ROOT)!r}) and p not in ('', '.')]
try:
    import lmke_hf
    raise SystemExit('lmke_hf importable')
except ImportError:
    pass
from transformers import AutoTokenizer
try:
    AutoTokenizer.from_pretrained({str(run_folder)!r}, trust_remote_code=False)
    refused = False
except ValueError as err:
    refused = 'custom code' in str(err)
out = {{"refused": refused}}
for name, folder in (("run", {str(run_folder)!r}), ("alone", {str(alone)!r})):
    tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
    ids = tok(given={QUERIES["given"]!r}, relations={QUERIES["relations"]!r}, direction={QUERIES["directions"]!r})["input_ids"]
    out[name] = [type(tok).__name__, type(tok).__module__, ids, tok.decode(ids[0])]
out["lmke_hf_modules"] = sorted(m for m in sys.modules if m.startswith("lmke_hf"))
print(json.dumps(out))
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["refused"] and out["lmke_hf_modules"] == []
    for name in ("run", "alone"):
        class_name, module, ids, text = out[name]
        assert (
            class_name == "LmkeTokenizer"
            and module.startswith("transformers_modules.")
            and module.endswith("tokenization_lmke")
        )
        assert ids == expected and text == tok.decode(expected[0])


OLD_FORMATS = {
    # what save_pretrained wrote before: the word-piece tokenizer's config, its class as tokenizer_class
    "word-piece-config": lambda c: (
        {k: v for k, v in c.items() if k not in ("auto_map", "base_tokenizer_class", "tokenizer_class")}
        | {"tokenizer_class": c["base_tokenizer_class"]}
    ),
    "no-auto-map-no-tokenizer-class": lambda c: {
        k: v for k, v in c.items() if k not in ("auto_map", "tokenizer_class")
    },
    "no-class-at-all": lambda c: {
        k: v for k, v in c.items() if k not in ("auto_map", "tokenizer_class", "base_tokenizer_class")
    },
}


@pytest.mark.parametrize("old", sorted(OLD_FORMATS))
def test_old_saved_runs_still_load(tok, run_folder, old, caplog):
    config_file = run_folder / "tokenizer_config.json"
    config_file.write_text(json.dumps(OLD_FORMATS[old](_config(run_folder))))
    with caplog.at_level(logging.WARNING):
        loaded = LmkeTokenizer.from_pretrained(run_folder)
    _assert_same_kg(tok, loaded)
    assert ("names no word-piece tokenizer class" in caplog.text) == (old == "no-class-at-all")
    model, tokenizer = lmke_hf.load_model(run_folder)
    _assert_same_kg(tok, tokenizer)
    assert model.load_kg_tokenizer().entity_ids == tok.entity_ids
    if old == "word-piece-config":  # AutoTokenizer reads the class the folder names: the word pieces, until saved again
        assert not isinstance(AutoTokenizer.from_pretrained(run_folder), LmkeTokenizer)
        loaded.save_pretrained(run_folder)
        assert isinstance(AutoTokenizer.from_pretrained(run_folder), LmkeTokenizer)


# ---------------------------------------------------------------------------------------------------- models and the Hub
def test_call_feeds_the_models(tok, make_model):
    lmke = make_model("lmke")
    ours = lmke(
        **tok(heads=TRIPLES["heads"], relations=TRIPLES["relations"], tails=TRIPLES["tails"], return_tensors="pt")
    )
    assert torch.allclose(ours.logits, lmke(**lmke_batch(tok)).logits)
    clmke = make_model("clmke")
    queries = tok(
        given=QUERIES["given"],
        relations=QUERIES["relations"],
        direction=QUERIES["directions"],
        prefix="query_",
        return_tensors="pt",
    )
    keys = tok(entities=QUERIES["gold"], prefix="key_", return_tensors="pt")
    assert torch.allclose(clmke(**queries, **keys).logits, clmke(**clmke_batch(tok)).logits)
    with pytest.raises(TypeError, match=r"needs its LmkeTokenizer, got BertTokenizer"):
        clmke.attach_tokenizer(tok.tokenizer)


def test_push_to_hub_and_auto_tokenizer_from_the_hub(tok, local_hub, hub_repo_id, tmp_path):
    tok.push_to_hub(hub_repo_id, token="test")
    files = set(local_hub.list_files(hub_repo_id))
    assert {
        "tokenizer_config.json",
        "tokenizer.json",
        "kg_vocab.json",
        "tokenization_lmke.py",
        "configuration_lmke.py",
    } <= files
    assert (
        json.loads(local_hub.read_file(hub_repo_id, "tokenizer_config.json"))["auto_map"]["AutoTokenizer"][0]
        == "tokenization_lmke.LmkeTokenizer"
    )
    loaded = AutoTokenizer.from_pretrained(hub_repo_id)
    assert type(loaded) is LmkeTokenizer
    _assert_same_kg(tok, loaded)
    grown = copy.deepcopy(tok)
    grown.add_entities(["Q7"], ["rome"], ["rome is an old city"])
    grown.save_pretrained(tmp_path / "grown", push_to_hub=True, repo_id=hub_repo_id, token="test")
    assert LmkeTokenizer.from_pretrained(hub_repo_id).num_entities == 8
