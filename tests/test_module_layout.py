"""Where the code lives: weight names that checkpoints depend on, and the import paths kept for compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import BertConfig

from lmke_hf import ClmkeConfig, ClmkeForLinkPrediction, LmkeConfig, LmkeForTripleClassification

SNAPSHOT = Path(__file__).parent / "snapshots" / "state_dict_keys.json"
TINY_ENCODER = dict(vocab_size=20, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
                    max_position_embeddings=64)
STATE_DICT_CASES = {
    "lmke": (LmkeForTripleClassification, LmkeConfig, {}),
    "clmke": (ClmkeForLinkPrediction, ClmkeConfig, {}),
    "clmke_cosine_infonce_own_entity": (
        ClmkeForLinkPrediction, ClmkeConfig, {"scorer": "cosine", "loss": "infonce", "own_entity_bias": True}
    ),
}


@pytest.mark.parametrize("name", sorted(STATE_DICT_CASES))
def test_state_dict_names_and_shapes_are_unchanged(name):
    """The snapshot was written before modeling_lmke.py was split: saved checkpoints (and the checkpoints of
    running jobs) load only while every weight keeps its name and shape."""
    model_class, config_class, kwargs = STATE_DICT_CASES[name]
    config = config_class(encoder=BertConfig(**TINY_ENCODER), num_entities=4, num_relations=2, pad_token_id=0, **kwargs)
    got = {k: list(v.shape) for k, v in model_class(config).state_dict().items()}
    expected = json.loads(SNAPSHOT.read_text())[name]
    assert sorted(set(got) - set(expected)) == [] and sorted(set(expected) - set(got)) == []
    assert got == expected
