"""Tests of `lmke_hf.features`: the C-LMKE collator's self-negatives, `TrainingTriples` (LMKE's positives with
one corrupted triple each, redrawn per epoch or drawn once) and the tokenizer fingerprint that keys the
`datasets` cache of tokenised columns.

Tiny and offline: conftest's `tiny_bert_dir`, the tiny model KG of `helpers.KG` (fixtures `tok`, `kg_tok`) and the
tiny KG of `helpers.write_tiny_kg` (fixture `kg_dir`).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmke_hf import LmkeTokenizer
from lmke_hf.kg import generate_negatives, load_kg

from helpers import QUERIES, TRAIN


# ---------------------------------------------------------------------------------------------------- ClmkeCollator
def test_collator_self_negatives_are_the_given_entities_keys(tok):
    from lmke_hf.features import ClmkeCollator

    features = [
        {"query_input_ids": q, "key_input_ids": k, "given": g, "relation": r, "target": t, "direction": 0}
        for q, k, g, r, t in zip(
            tok.encode_queries(QUERIES["given"], QUERIES["relations"], "tail")["input_ids"],
            tok.encode_keys(QUERIES["gold"])["input_ids"],
            QUERIES["given"],
            QUERIES["relations"],
            QUERIES["gold"],
        )
    ]
    batch = ClmkeCollator(tok.pad_token_id, self_negatives=True, tokenizer=tok)(features)
    expected = tok.pad(tok.encode_keys(QUERIES["given"]))
    torch.testing.assert_close(batch["extra_key_input_ids"], expected["input_ids"])
    torch.testing.assert_close(batch["extra_key_attention_mask"], expected["attention_mask"])
    assert "extra_key_input_ids" not in ClmkeCollator(tok.pad_token_id)(features)


# ---------------------------------------------------------------------------------------------------- TrainingTriples
def test_training_triples_redraw_negatives_each_epoch(kg_dir, tiny_bert_dir):
    from lmke_hf.features import TrainingTriples

    kg = load_kg(str(kg_dir))
    tokenizer = LmkeTokenizer.from_kg(
        str(tiny_bert_dir),
        kg,
        max_entity_description_length=8,
        max_relation_description_length=4,
        max_key_description_length=0,
    )
    train = {tuple(t) for t in kg.triples("train").tolist()}
    data = TrainingTriples(kg, tokenizer, seed=3, resample=True)
    assert len(data) == 2 * len(TRAIN) and data.labels.tolist() == [1, 0] * len(TRAIN)
    epochs = {}
    for epoch in (0, 1, 0):
        data.set_epoch(epoch)
        positives, negatives = data.triples[0::2], data.triples[1::2]
        assert [tuple(t) for t in positives.tolist()] == [tuple(t) for t in kg.triples("train").tolist()]
        assert not train & {tuple(t) for t in negatives.tolist()}  # never a known training triple
        changed = (positives != negatives).sum(1)
        assert (changed == 1).all() and (positives[:, 1] == negatives[:, 1]).all()  # head or tail, not both
        epochs.setdefault(epoch, negatives.copy())
        np.testing.assert_array_equal(negatives, epochs[epoch])  # epoch e's negatives are reproducible
    assert not np.array_equal(epochs[0], epochs[1])
    other = TrainingTriples(kg, tokenizer, seed=3, resample=True)  # another process, or a resumed run
    other.set_epoch(1)
    np.testing.assert_array_equal(other.triples[1::2], epochs[1])
    fixed = TrainingTriples(kg, tokenizer, seed=3)  # the default: the original code's one draw per run
    fixed.set_epoch(1)
    np.testing.assert_array_equal(fixed.triples[1::2], epochs[0])
    np.testing.assert_array_equal(
        fixed.triples,
        np.asarray(
            generate_negatives(kg, "train", seed=3, known_splits=["train"]).to_pandas()[["head", "relation", "tail"]]
        ),
    )
    items = data.__getitems__([0, 3, 5])
    expected = tokenizer.encode_triples(
        data.triples[[0, 3, 5], 0], data.triples[[0, 3, 5], 1], data.triples[[0, 3, 5], 2]
    )["input_ids"]
    assert [x["input_ids"] for x in items] == expected and [x["label"] for x in items] == [1, 0, 0]
    assert data[3] == items[1]
    with pytest.raises(ValueError, match="seed"):
        TrainingTriples(kg, tokenizer, seed=-1)


# ---------------------------------------------------------------------------------------------------- the datasets cache key
def test_tokenizer_fingerprint_is_stable_across_processes_and_sees_every_description(kg_tok):
    """The `datasets` cache key of tokenised columns: the same in a fresh interpreter (Python's `hash()` of
    strings is salted per process), and different when any description changes, not only the first 50."""
    import copy
    import subprocess
    import sys

    from lmke_hf.features import _tokenizer_fingerprint

    here = _tokenizer_fingerprint(kg_tok)
    code = (
        "import sys, pickle; sys.path.insert(0, 'tests'); from lmke_hf.features import _tokenizer_fingerprint; "
        "print(_tokenizer_fingerprint(pickle.load(sys.stdin.buffer)))"
    )
    import pickle

    other = (
        subprocess.run(
            [sys.executable, "-c", code],
            input=pickle.dumps(kg_tok),
            capture_output=True,
            check=True,
            env={**__import__("os").environ, "PYTHONHASHSEED": "random"},
        )
        .stdout.decode()
        .strip()
    )
    assert other == here
    changed = copy.deepcopy(kg_tok)
    changed.entity_descriptions[-1] = changed.entity_descriptions[-1] + " changed"
    assert _tokenizer_fingerprint(changed) != here


def test_self_negatives_need_the_tokenizer_that_encodes_them():
    from lmke_hf.features import ClmkeCollator

    with pytest.raises(ValueError, match="pass tokenizer="):
        ClmkeCollator(0, self_negatives=True)
