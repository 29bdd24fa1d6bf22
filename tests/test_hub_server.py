"""The local test Hub (tests/hub_server.py) works with the real HF clients over HTTP."""

from __future__ import annotations

import json
import os
import socket
import textwrap
import urllib.request

import pytest
import torch

from hub_server import LocalHub, free_port

TEXTS = ["paris is located in france", "the capital city of germany is berlin"]


def _encode(model, tokenizer):
    batch = tokenizer(TEXTS, padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**batch).last_hidden_state


def _folder_files(folder):
    return {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}


def test_environment_points_at_local_hub(local_hub):
    import datasets.config
    import huggingface_hub.constants as hf_constants

    assert os.environ["HF_ENDPOINT"] == local_hub.url
    assert hf_constants.ENDPOINT == local_hub.url
    assert datasets.config.HF_ENDPOINT == local_hub.url
    assert "HF_TOKEN" not in os.environ
    assert local_hub.start_seconds is not None and local_hub.start_seconds < 20
    print(f"\nLocalHub start: {local_hub.start_seconds:.2f}s at {local_hub.url}")


def test_created_model_repo_loads(local_hub, hub_repo_id, tiny_bert_dir, tmp_path):
    from huggingface_hub import HfApi, snapshot_download
    from transformers import AutoModel, AutoTokenizer

    files = _folder_files(tiny_bert_dir)
    sha = local_hub.create_model_repo(hub_repo_id, files)
    assert local_hub.list_files(hub_repo_id) == sorted(files)

    info = HfApi().model_info(hub_repo_id)
    assert info.sha == sha
    assert sorted(s.rfilename for s in info.siblings) == sorted(files)

    model = AutoModel.from_pretrained(hub_repo_id).eval()
    tokenizer = AutoTokenizer.from_pretrained(hub_repo_id)
    assert type(model).__name__ == "BertModel" and model.config.hidden_size == 32
    assert tokenizer.convert_ids_to_tokens(tokenizer("paris")["input_ids"]) == ["[CLS]", "paris", "[SEP]"]
    local = AutoModel.from_pretrained(tiny_bert_dir).eval()
    local_tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    torch.testing.assert_close(_encode(model, tokenizer), _encode(local, local_tok), rtol=0, atol=0)

    snap = snapshot_download(hub_repo_id, local_dir=tmp_path / "snap")
    got = {k: v.read_bytes() for k, v in _folder_files(tmp_path / "snap").items() if not k.startswith(".cache/")}
    assert got == {k: v.read_bytes() for k, v in files.items()}
    assert str(snap) == str(tmp_path / "snap")


def test_push_to_hub_round_trip(local_hub, hub_repo_id, tiny_bert_dir, tmp_path):
    from transformers import AutoModel, AutoTokenizer, BertModel

    model = BertModel.from_pretrained(tiny_bert_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model.push_to_hub(hub_repo_id)
    tokenizer.push_to_hub(hub_repo_id)

    model.save_pretrained(tmp_path / "m")
    tokenizer.save_pretrained(tmp_path / "m")
    saved = _folder_files(tmp_path / "m")
    expected = sorted(set(saved) | {".gitattributes", "README.md"})
    assert local_hub.list_files(hub_repo_id) == expected
    for name, path in saved.items():
        assert local_hub.read_file(hub_repo_id, name) == path.read_bytes(), name
    # Like on the Hub, *.safetensors went through git-LFS (pointer in git, object in .git/lfs).
    assert local_hub.is_lfs_pointer(hub_repo_id, "model.safetensors")
    assert not local_hub.is_lfs_pointer(hub_repo_id, "config.json")
    assert b"library_name: transformers" in local_hub.read_file(hub_repo_id, "README.md")

    # Pushing unchanged files again is a no-op (preupload reports remote oids, like the Hub).
    head = local_hub.head(hub_repo_id)
    model.push_to_hub(hub_repo_id)
    assert local_hub.head(hub_repo_id) == head

    loaded = AutoModel.from_pretrained(hub_repo_id).eval()
    loaded_tok = AutoTokenizer.from_pretrained(hub_repo_id)
    torch.testing.assert_close(_encode(loaded, loaded_tok), _encode(model, tokenizer), rtol=0, atol=0)


def test_upload_folder_lfs_and_regular_modes(local_hub, hub_repo_id, tiny_bert_dir):
    from huggingface_hub import HfApi
    from transformers import AutoModel

    api = HfApi()
    api.create_repo(hub_repo_id)
    api.upload_folder(folder_path=tiny_bert_dir, repo_id=hub_repo_id, commit_message="upload via lfs")
    assert local_hub.is_lfs_pointer(hub_repo_id, "model.safetensors")
    assert local_hub.read_file(hub_repo_id, "model.safetensors") == (tiny_bert_dir / "model.safetensors").read_bytes()
    (info,) = api.get_paths_info(hub_repo_id, ["model.safetensors"])
    assert info.lfs is not None and info.lfs.size == (tiny_bert_dir / "model.safetensors").stat().st_size

    other = hub_repo_id + "-regular"
    api.create_repo(other)
    with local_hub.lfs_mode("never"):
        api.upload_folder(folder_path=tiny_bert_dir, repo_id=other)
    assert local_hub.lfs == "auto"
    assert not local_hub.is_lfs_pointer(other, "model.safetensors")
    assert local_hub.read_file(other, "model.safetensors") == (tiny_bert_dir / "model.safetensors").read_bytes()

    loaded = AutoModel.from_pretrained(hub_repo_id)
    local = AutoModel.from_pretrained(tiny_bert_dir)
    for (k, a), (_, b) in zip(loaded.state_dict().items(), local.state_dict().items()):
        assert torch.equal(a, b), k


def test_dataset_upload_folder_and_load_dataset(local_hub, hub_repo_id, tmp_path):
    import datasets
    import pandas as pd
    from huggingface_hub import HfApi

    folder = tmp_path / "ds"
    (folder / "triples").mkdir(parents=True)
    (folder / "entities").mkdir()
    train = pd.DataFrame(
        {"head": ["paris", "berlin"], "relation": ["capital_of", "capital_of"], "tail": ["france", "germany"]}
    )
    test = pd.DataFrame({"head": ["rome"], "relation": ["capital_of"], "tail": ["italy"]})
    ents = pd.DataFrame({"entity": ["paris", "france", "berlin", "germany", "rome", "italy"]})
    train.to_parquet(folder / "triples" / "train-00000-of-00001.parquet", index=False)
    test.to_parquet(folder / "triples" / "test-00000-of-00001.parquet", index=False)
    ents.to_parquet(folder / "entities" / "entities.parquet", index=False)
    (folder / "README.md").write_text(
        textwrap.dedent("""\
        ---
        configs:
        - config_name: triples
          data_files:
          - split: train
            path: triples/train-*.parquet
          - split: test
            path: triples/test-*.parquet
        - config_name: entities
          data_files:
          - split: train
            path: entities/*.parquet
        ---
        # tiny kg
        """)
    )

    api = HfApi()
    url = api.create_repo(hub_repo_id, repo_type="dataset")
    assert url.repo_type == "dataset" and url.repo_id == hub_repo_id
    with pytest.raises(Exception) as exc:
        api.create_repo(hub_repo_id, repo_type="dataset")
    assert exc.value.response.status_code == 409
    api.create_repo(hub_repo_id, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=folder, repo_id=hub_repo_id, repo_type="dataset")
    assert local_hub.list_files(hub_repo_id, repo_type="dataset") == [
        ".gitattributes",
        "README.md",
        "entities/entities.parquet",
        "triples/test-00000-of-00001.parquet",
        "triples/train-00000-of-00001.parquet",
    ]
    assert not local_hub.repo_exists(hub_repo_id, "model")

    triples = datasets.load_dataset(hub_repo_id, "triples")
    assert set(triples) == {"train", "test"}
    assert triples["train"].to_pandas().equals(train)
    assert triples["test"].to_list() == test.to_dict("records")
    entities = datasets.load_dataset(hub_repo_id, "entities", split="train")
    assert entities["entity"] == ents["entity"].tolist()


def test_dataset_push_to_hub(local_hub, hub_repo_id):
    import datasets

    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"head": ["paris", "berlin"], "tail": ["france", "germany"]}),
            "test": datasets.Dataset.from_dict({"head": ["rome"], "tail": ["italy"]}),
        }
    )
    dd.push_to_hub(hub_repo_id, config_name="triples")
    files = local_hub.list_files(hub_repo_id, repo_type="dataset")
    assert "README.md" in files and any(f.startswith("triples/train-") and f.endswith(".parquet") for f in files)
    loaded = datasets.load_dataset(hub_repo_id, "triples")
    assert loaded["train"].to_dict() == dd["train"].to_dict()
    assert loaded["test"].to_dict() == dd["test"].to_dict()


CONFIGURATION_SRC = """
from transformers import PretrainedConfig


class TinyRemoteConfig(PretrainedConfig):
    model_type = "tiny-remote"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)
"""

MODELING_SRC = """
import torch
from transformers import PreTrainedModel

from .configuration_tiny import TinyRemoteConfig


class TinyRemoteModel(PreTrainedModel):
    config_class = TinyRemoteConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def forward(self, x):
        return self.proj(x) * 2
"""


def test_trust_remote_code(local_hub, hub_repo_id):
    from safetensors.torch import save
    from transformers import AutoConfig, AutoModel

    weight, bias = torch.randn(4, 4), torch.randn(4)
    config = {
        "model_type": "tiny-remote",
        "width": 4,
        "architectures": ["TinyRemoteModel"],
        "auto_map": {"AutoConfig": "configuration_tiny.TinyRemoteConfig", "AutoModel": "modeling_tiny.TinyRemoteModel"},
    }
    local_hub.create_model_repo(
        hub_repo_id,
        {
            "config.json": json.dumps(config),
            "configuration_tiny.py": CONFIGURATION_SRC,
            "modeling_tiny.py": MODELING_SRC,
            "model.safetensors": save({"proj.weight": weight, "proj.bias": bias}, metadata={"format": "pt"}),
        },
    )
    cfg = AutoConfig.from_pretrained(hub_repo_id, trust_remote_code=True)
    assert type(cfg).__name__ == "TinyRemoteConfig" and cfg.width == 4
    model = AutoModel.from_pretrained(hub_repo_id, trust_remote_code=True)
    assert type(model).__name__ == "TinyRemoteModel"
    assert type(model).__module__.startswith("transformers_modules.")
    x = torch.randn(2, 4)
    torch.testing.assert_close(model(x), (x @ weight.T + bias) * 2)


def test_errors(local_hub, hub_repo_id, tiny_bert_dir):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    from transformers import AutoConfig, AutoModel

    local_hub.create_model_repo(hub_repo_id, {"config.json": (tiny_bert_dir / "config.json").read_bytes()})
    missing = "test-org/does-not-exist-0000"

    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(missing, "config.json")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo_id, "config.json", revision="no-such-rev")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "no-such-file.json")
    with pytest.raises(RepositoryNotFoundError):
        HfApi().model_info(missing)
    with pytest.raises(RevisionNotFoundError):
        HfApi().model_info(hub_repo_id, revision="no-such-rev")

    # transformers turns these into OSError (the huggingface_hub error is the __cause__), as on the Hub.
    with pytest.raises(OSError, match="is not a local folder and is not a valid model identifier") as exc:
        AutoModel.from_pretrained(missing)
    assert isinstance(exc.value.__cause__, RepositoryNotFoundError)
    with pytest.raises(OSError, match="no-such-rev is not a valid git identifier") as exc:
        AutoModel.from_pretrained(hub_repo_id, revision="no-such-rev")
    assert isinstance(exc.value.__cause__, RevisionNotFoundError)
    with pytest.raises(OSError, match="does not appear to have a file named"):
        AutoModel.from_pretrained(hub_repo_id)  # config.json only, no weights

    # A tag works as a revision; writes to a missing repo fail like on the Hub.
    local_hub.create_tag(hub_repo_id, "v1")
    assert AutoConfig.from_pretrained(hub_repo_id, revision="v1").hidden_size == 32
    with pytest.raises(RepositoryNotFoundError):
        HfApi().upload_file(path_or_fileobj=b"x", path_in_repo="x.txt", repo_id=missing)


def test_refs_commits_and_deletes(local_hub, hub_repo_id):
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError

    api = HfApi()
    api.create_repo(hub_repo_id)
    api.upload_file(path_or_fileobj=b"v1", path_in_repo="a/x.txt", repo_id=hub_repo_id, commit_message="add x")
    api.create_branch(hub_repo_id, branch="dev")
    api.upload_file(path_or_fileobj=b"v2", path_in_repo="a/x.txt", repo_id=hub_repo_id, revision="dev")
    api.create_tag(hub_repo_id, tag="v1.0", revision="main")
    refs = api.list_repo_refs(hub_repo_id)
    assert {b.name for b in refs.branches} == {"main", "dev"} and [t.name for t in refs.tags] == ["v1.0"]
    assert open(hf_hub_download(hub_repo_id, "a/x.txt", revision="dev"), "rb").read() == b"v2"
    assert open(hf_hub_download(hub_repo_id, "a/x.txt", revision="v1.0"), "rb").read() == b"v1"
    assert [c.title for c in api.list_repo_commits(hub_repo_id)] == ["add x", "initial commit"]
    api.upload_file(path_or_fileobj=b"v3", path_in_repo="a/x.txt", repo_id=hub_repo_id)
    assert open(hf_hub_download(hub_repo_id, "a/x.txt"), "rb").read() == b"v3"  # no stale olah cache

    api.delete_branch(hub_repo_id, branch="dev")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(hub_repo_id, "a/x.txt", revision="dev")
    api.delete_folder("a", repo_id=hub_repo_id)
    assert local_hub.list_files(hub_repo_id) == [".gitattributes"]
    with pytest.raises(EntryNotFoundError):
        api.delete_file("a/x.txt", repo_id=hub_repo_id)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(hub_repo_id, "a/x.txt")


def test_start_stop_cleanly():
    hub = LocalHub(port=free_port()).start()
    root, port = hub.root, hub.port
    with urllib.request.urlopen(f"{hub.url}/api/whoami-v2", timeout=5) as r:
        assert json.load(r)["name"] == "test-user"
    hub.stop()
    hub.stop()  # idempotent
    assert not root.exists()
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
