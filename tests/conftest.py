"""Shared pytest setup for lmke_hf.

At import (pytest imports conftest.py before any test module, hence before any HF library) the
Hugging Face client environment is pointed at a local test Hub (``tests/hub_server.py``) on a port
chosen here, with a throw-away ``HF_HOME`` and no token. huggingface_hub and datasets read these at
import, and transformers keeps the first HfApi it builds, so they cannot be changed later.

Set ``LMKE_TEST_REAL_HUB=1`` to keep the caller's HF environment (for ``-m hub_online`` runs against
the real Hub); the ``local_hub`` fixture then refuses to start.

Fixtures: ``local_hub`` (session; the server starts only when a test asks for it),
``hub_repo_id`` (fresh ``test-org/repo-<uuid8>``), ``tiny_bert_dir`` (session; a tiny random
BertModel + tokenizer saved as a proper pretrained folder); on the KGs of ``tests/helpers.py``:
``toy_kg_dir``, ``kg_dir``, the example scripts, ``no_dropout_encoder``, ``no_network``, the tiny model
KG's ``tok`` / ``kg_tok`` / ``make_model`` / ``source_encoder``, and ``clmke_run`` (a 6-step C-LMKE run).
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import LocalHub, free_port  # noqa: E402

REAL_HUB = os.environ.get("LMKE_TEST_REAL_HUB") == "1"
HUB_PORT = free_port()
HUB_URL = f"http://127.0.0.1:{HUB_PORT}"

os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
if not REAL_HUB:
    _HF_HOME = tempfile.mkdtemp(prefix="lmke_hf_home_")
    atexit.register(shutil.rmtree, _HF_HOME, ignore_errors=True)
    os.environ.update(
        HF_ENDPOINT=HUB_URL,
        HF_HOME=_HF_HOME,
        HF_HUB_DISABLE_XET="1",
        HF_HUB_DISABLE_PROGRESS_BARS="1",
        HF_HUB_DISABLE_IMPLICIT_TOKEN="1",
        HF_DATASETS_DISABLE_PROGRESS_BARS="1",
    )
    for _var in (
        "HF_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_TOKEN_PATH",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_DATASETS_CACHE",
        "TRANSFORMERS_CACHE",
        "HF_MODULES_CACHE",
        "HF_XET_CACHE",
        "HF_ASSETS_CACHE",
        "HF_HUB_ENABLE_HF_TRANSFER",
    ):
        os.environ.pop(_var, None)


@pytest.fixture(scope="session")
def local_hub():
    """A running ``LocalHub`` at ``HF_ENDPOINT`` (started on first use, stopped at session end)."""
    if REAL_HUB:
        pytest.skip("LMKE_TEST_REAL_HUB=1: the HF clients point at the real Hub, not at a LocalHub")
    hub = LocalHub(port=HUB_PORT)
    try:
        hub.start()
        yield hub
    finally:
        hub.stop()


@pytest.fixture
def hub_repo_id() -> str:
    """A fresh repo id ``test-org/repo-<uuid8>`` (not created)."""
    return f"test-org/repo-{uuid.uuid4().hex[:8]}"


TINY_VOCAB_WORDS = (
    "the a an of and to in is was for on with as by at from that this it be are "
    "paris france berlin germany rome italy city country capital located person born "
    "entity relation head tail knowledge graph embedding model link prediction "
    "red blue green one two three new old big small"
).split()


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A pretrained folder (config.json, model.safetensors, tokenizer files) of a random BertModel:
    hidden 32, 2 layers, 4 heads, intermediate 37, ~100-token WordPiece vocab. Built offline."""
    import torch
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces = list("abcdefghijklmnopqrstuvwxyz0123456789.,-")
    suffixes = ["##s", "##ed", "##ing", "##er", "##ly", "##al", "##ion", "##ity"]
    vocab = specials + TINY_VOCAB_WORDS + pieces + suffixes
    vocab = list(dict.fromkeys(vocab))
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # transformers 5: the argument is `vocab` (a vocab.txt path or a dict); `vocab_file` is ignored.
    tokenizer = BertTokenizerFast(vocab=str(out / "vocab.txt"), do_lower_case=True, model_max_length=64)
    assert tokenizer.convert_tokens_to_ids("paris") == vocab.index("paris")

    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        max_position_embeddings=64,
        type_vocab_size=2,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertModel(config).eval()
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)  # tokenizer.json + tokenizer_config.json; vocab.txt stays beside them
    return out


# ------------------------------------------------------------------------------------------------ shared KGs and scripts (tests/helpers.py)

import copy  # noqa: E402
import json  # noqa: E402
import socket  # noqa: E402
from collections.abc import Callable  # noqa: E402

import torch  # noqa: E402
from transformers import AutoTokenizer, BertModel, PreTrainedModel  # noqa: E402

from lmke_hf import LmkeTokenizer  # noqa: E402

from helpers import (  # noqa: E402  (after the HF environment is set)
    KG,
    LENGTHS,
    MODEL_CASES,
    RESUME_FLAGS,
    _clmke_argv,
    _load_script,
    write_tiny_kg,
    write_toy_kg,
)


@pytest.fixture
def toy_kg_dir(tmp_path) -> Path:
    """The toy graph written under ``tmp_path / "toy"``."""
    return write_toy_kg(tmp_path)


@pytest.fixture(scope="module")
def clmke_script():
    return _load_script("train_clmke")


@pytest.fixture(scope="module")
def lmke_script():
    return _load_script("train_lmke")


@pytest.fixture(scope="module")
def kg_dir(tmp_path_factory) -> Path:
    return write_tiny_kg(tmp_path_factory.mktemp("kg"))


@pytest.fixture(scope="module")
def no_dropout_encoder(tiny_bert_dir, tmp_path_factory) -> Path:
    """The tiny BERT with all dropout set to 0 (so a training step is a deterministic function of the batch)."""
    folder = tmp_path_factory.mktemp("bert_nodrop") / "bert"
    shutil.copytree(tiny_bert_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.fixture
def no_network(monkeypatch):
    """Every connection this process tries is recorded and refused: a test asserts the list stays empty. (The local
    test Hub runs in a process of its own, so its server is not affected; its clients here are.)"""
    attempts = []

    def refuse(sock, address, *args):
        attempts.append(address)
        raise ConnectionRefusedError(f"test: no network ({address})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


# ---------------------------------------------------------------------------------------------------- the tiny model KG: tokenizer and models (helpers.KG, helpers.MODEL_CASES)
@pytest.fixture(scope="session")
def _kg_tokenizer(tiny_bert_dir) -> LmkeTokenizer:
    return LmkeTokenizer(AutoTokenizer.from_pretrained(tiny_bert_dir), **KG, **LENGTHS)


@pytest.fixture
def tok(_kg_tokenizer) -> LmkeTokenizer:
    return copy.deepcopy(_kg_tokenizer)


@pytest.fixture(scope="session")
def _models(tiny_bert_dir, _kg_tokenizer) -> dict[str, PreTrainedModel]:
    models = {}
    for i, case in enumerate(MODEL_CASES):
        torch.manual_seed(i)
        model = case.model_class.from_encoder_pretrained(str(tiny_bert_dir), _kg_tokenizer, **case.config_kwargs)
        if case.degrees is not None:
            model.set_entity_degrees(case.degrees)
        models[case.name] = model.eval()
    return models


@pytest.fixture
def make_model(_models) -> Callable[[str], PreTrainedModel]:
    """`make_model(name)`: a private (deep-copied, eval-mode) model of `MODEL_CASES`."""
    return lambda name: copy.deepcopy(_models[name])


@pytest.fixture(scope="module")
def kg_tok(_kg_tokenizer) -> LmkeTokenizer:
    """The tokenizer of the tiny model KG, one per test module (for module-scoped models built on it)."""
    return copy.deepcopy(_kg_tokenizer)


@pytest.fixture(scope="session")
def source_encoder(tiny_bert_dir) -> BertModel:
    return BertModel.from_pretrained(tiny_bert_dir).eval()


# ---------------------------------------------------------------------------------------------------- a trained C-LMKE run
@pytest.fixture(scope="module")
def clmke_run(clmke_script, kg_dir, tiny_bert_dir, tmp_path_factory):
    """C-LMKE trained 6 steps (checkpoints every 2, constant LR, dropout on): run A of the resume test too."""
    out = tmp_path_factory.mktemp("clmke") / "run_A"
    results = clmke_script.main(
        clmke_script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 6, *RESUME_FLAGS))
    )
    return out, results
