"""Round trips against the real Hugging Face Hub: opt-in, never in the default run.

    LMKE_TEST_REAL_HUB=1 HF_TOKEN=hf_... python -m pytest -m hub_online tests/test_hub_online.py

Each test creates a private repo named `<your user>/lmke-hf-test-<uuid8>` and deletes it at the end, pass or
fail. Without `LMKE_TEST_REAL_HUB=1` (conftest then points every client at the local test server) or without a
token, the tests skip with the reason.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import REAL_HUB  # noqa: E402
from test_hub_models import trained  # noqa: E402,F401  (a fixture)

pytestmark = pytest.mark.hub_online


@pytest.fixture
def real_repo():
    if not REAL_HUB:
        pytest.skip(
            "set LMKE_TEST_REAL_HUB=1 to talk to the real Hub (conftest points the clients at a local server otherwise)"
        )
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    from huggingface_hub import HfApi, get_token

    token = token or get_token()
    if not token:
        pytest.skip("no Hugging Face token (HF_TOKEN or `hf auth login`)")
    api = HfApi(token=token)
    try:
        user = api.whoami()["name"]
    except Exception as err:  # noqa: BLE001 - no network / bad token: nothing to test against
        pytest.skip(f"the Hub is unreachable or the token is refused: {err}")
    repo_ids = []

    def make(repo_type: str = "model") -> str:
        repo_id = f"{user}/lmke-hf-test-{uuid.uuid4().hex[:8]}"
        api.create_repo(repo_id, repo_type=repo_type, private=True)
        repo_ids.append((repo_id, repo_type))
        return repo_id

    yield api, make
    for repo_id, repo_type in repo_ids:
        api.delete_repo(repo_id, repo_type=repo_type, missing_ok=True)


def test_model_push_and_load_from_the_real_hub(trained, real_repo):
    from transformers import AutoModel

    api, make = real_repo
    model, _ = trained
    repo_id = make()
    model.push_to_hub(repo_id, token=api.token, private=True)
    files = set(api.list_repo_files(repo_id))
    assert {
        "config.json",
        "model.safetensors",
        "modeling_clmke.py",
        "modeling_base.py",
        "kg_vocab.json",
        "entity_index.safetensors",
    } <= files
    loaded = AutoModel.from_pretrained(repo_id, token=api.token)
    assert torch.allclose(loaded.load_or_build_entity_index().keys, model.load_or_build_entity_index().keys, atol=1e-6)
    ours = model.predict(head="cat", relation="is_a", top_k=5)
    theirs = loaded.predict(head="cat", relation="is_a", top_k=5)
    assert [r["entity_id"] for r in ours] == [r["entity_id"] for r in theirs]


def test_prepared_dataset_push_and_load_from_the_real_hub(real_repo, tmp_path):
    from lmke_hf.kg import load_kg, push_prepared_to_hub, save_prepared

    from helpers import write_tiny_kg

    api, make = real_repo
    kg = load_kg(str(write_tiny_kg(tmp_path)))
    repo_id = make("dataset")
    push_prepared_to_hub(save_prepared(kg, tmp_path / "prepared"), repo_id, private=True, token=api.token)
    back = load_kg(repo_id)
    for split in ("train", "validation", "test"):
        np.testing.assert_array_equal(back.triples(split), kg.triples(split))
