"""EntityIndex (issue 20): streamed, sharded, resumable builds; memory-mapped loading in every storage dtype; exact
top-k in bounded tiles equal to ranking the full score matrix; FAISS searchers; ranking from a sharded index."""

from __future__ import annotations

import os
import socket
import sys

import numpy as np
import pytest
import torch
from transformers import AutoTokenizer

from lmke_hf import ClmkeForLinkPrediction, LmkeTokenizer
from lmke_hf import entity_index as entity_index_module
from lmke_hf.entity_index import MANIFEST_FILE, EntityIndex, EntityIndexError, FaissSearcher, shard_file_name

WORDS = "city river country capital old small big north south island lake mountain king queen river war peace".split()


def _graph_tokenizer(tiny_bert_dir, n: int = 41, seed: int = 0) -> LmkeTokenizer:
    rng = np.random.default_rng(seed)
    names = [" ".join(rng.choice(WORDS, 2)) for _ in range(n)]
    descriptions = [" ".join(rng.choice(WORDS, int(rng.integers(0, 9)))) for _ in range(n)]
    return LmkeTokenizer(
        AutoTokenizer.from_pretrained(tiny_bert_dir),
        [f"E{i}" for i in range(n)],
        ["R0", "R1"],
        names,
        descriptions,
        relation_names=["r zero", "r one"],
        max_entity_description_length=8,
        max_relation_description_length=4,
        max_key_description_length=10,
    )


def _graph_model(tiny_bert_dir, scorer: str):
    """A C-LMKE model of 41 entities, with degrees (cosine: with a non-zero own-entity offset)."""
    tokenizer = _graph_tokenizer(tiny_bert_dir)
    kwargs = {"scorer": "cosine", "own_entity_bias": True} if scorer == "cosine" else {}
    torch.manual_seed(0)
    model = ClmkeForLinkPrediction.from_encoder_pretrained(str(tiny_bert_dir), tokenizer, **kwargs).eval()
    model.set_entity_degrees(torch.arange(41) % 7)
    if scorer == "cosine":
        with torch.no_grad():
            model.own_entity_offset.fill_(-0.3)
    model.attach_tokenizer(tokenizer)
    return model


@pytest.fixture(scope="module", params=["matcher", "cosine"])
def graph_model(request, tiny_bert_dir):
    """The 41-entity model for each scorer."""
    return _graph_model(tiny_bert_dir, request.param)


def _queries(model, n: int = 9, seed: int = 1):
    rng = np.random.default_rng(seed)
    tokenizer = model.kg_tokenizer
    given, relations = rng.integers(0, tokenizer.num_entities, n), rng.integers(0, 2, n)
    batch = tokenizer.pad(tokenizer.encode_queries(given, relations, "tail"))
    with torch.no_grad():
        return model.embed_queries(batch["input_ids"], batch["attention_mask"])


def _mapped_from(tensor: torch.Tensor, folder) -> bool:
    """Whether the tensor's memory lies in a mapping of a file of `folder` (/proc/self/maps)."""
    address = tensor.data_ptr()
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split()
            low, high = (int(x, 16) for x in fields[0].split("-"))
            if low <= address < high:
                return len(fields) > 5 and fields[5].startswith(str(folder))
    return False


# ------------------------------------------------------------------------------------------------ building
def test_a_streamed_build_in_shards_equals_encoding_all_entities_at_once(graph_model):
    whole = graph_model.encode_entities()
    index = EntityIndex.build(graph_model, shard_size=7, batch_size=4)
    assert index.num_entities == 41 and index.hidden_size == whole.shape[1] and len(index._shards) == 6
    torch.testing.assert_close(index.keys, whole)
    assert index.ids == [f"E{i}" for i in range(41)]
    assert torch.equal(index.degrees, graph_model.entity_degrees.float())
    assert index.weights_sha256 == graph_model.weights_fingerprint()


_DTYPE_TOLERANCE = {
    "float32": {},
    "float16": {"rtol": 2e-3, "atol": 2e-3},
    "bfloat16": {"rtol": 1.6e-2, "atol": 1.6e-2},
}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_a_saved_build_is_sharded_memory_mapped_and_reloads_in_its_dtype(graph_model, tmp_path, dtype):
    index = EntityIndex.build(graph_model, shard_size=10, dtype=dtype, save_directory=tmp_path)
    files = sorted(os.listdir(tmp_path))
    assert files == sorted([MANIFEST_FILE] + [shard_file_name(i, 5) for i in range(1, 6)])
    loaded = EntityIndex.load(tmp_path)
    assert loaded.dtype == getattr(torch, dtype) and loaded.num_entities == 41 and len(loaded._shards) == 5
    assert all(_mapped_from(shard, tmp_path) for shard in loaded._shards)  # the file's pages, not a copy
    assert torch.equal(loaded.keys, index.keys)  # the files hold exactly what was built
    # Encoding 10 entities at a time and 41 at once may round differently (the CPU's matmul kernels depend on the
    # batch shape): equal up to float32 rounding, then cast to the index's dtype.
    whole = graph_model.encode_entities()
    torch.testing.assert_close(index.keys.float(), whole, **_DTYPE_TOLERANCE[dtype])
    assert torch.equal(loaded.degrees, graph_model.entity_degrees.float())
    assert loaded.weights_sha256 == graph_model.weights_fingerprint()


def test_an_interrupted_build_resumes_from_its_finished_shards(graph_model, tmp_path, monkeypatch, caplog):
    EntityIndex.build(graph_model, shard_size=10, save_directory=tmp_path)
    (tmp_path / MANIFEST_FILE).unlink()  # stopped before the manifest: shards 1-4 finished, shard 5 lost
    (tmp_path / shard_file_name(5, 5)).unlink()
    encoded = []
    original = graph_model.encode_entities

    def recording(entities, *args, **kwargs):
        encoded.append(np.asarray(entities).tolist())
        return original(entities, *args, **kwargs)

    monkeypatch.setattr(graph_model, "encode_entities", recording)
    with caplog.at_level("INFO", logger="lmke_hf.entity_index"):
        resumed = EntityIndex.build(graph_model, shard_size=10, save_directory=tmp_path)
    assert encoded == [list(range(40, 41))]  # only the lost shard was encoded again
    assert caplog.text.count("finished by an earlier build with these weights; kept") == 4
    torch.testing.assert_close(resumed.keys, original())


def test_shards_encoded_by_other_weights_are_encoded_again(graph_model, tmp_path):
    EntityIndex.build(graph_model, shard_size=20, save_directory=tmp_path)
    changed = _copy_with_offset(graph_model, 0.01)
    rebuilt = EntityIndex.build(changed, shard_size=20, save_directory=tmp_path)
    assert rebuilt.weights_sha256 == changed.weights_fingerprint()
    torch.testing.assert_close(rebuilt.keys, changed.encode_entities())


def _copy_with_offset(model, delta):
    import copy

    changed = copy.deepcopy(model)
    with torch.no_grad():
        for p in changed.parameters():
            p.add_(delta)
    changed.attach_tokenizer(model.kg_tokenizer)
    return changed


@pytest.mark.parametrize("bad", [{"dtype": "int8"}, {"shard_size": 0}])
def test_bad_build_options_name_the_value(graph_model, bad):
    with pytest.raises(ValueError, match="int8|shard_size must be >= 1"):
        EntityIndex.build(graph_model, **bad)


def test_a_damaged_manifest_or_a_missing_shard_is_a_named_error(graph_model, tmp_path):
    EntityIndex.build(graph_model, shard_size=10, save_directory=tmp_path)
    (tmp_path / shard_file_name(3, 5)).unlink()
    with pytest.raises(
        EntityIndexError, match="entity_index-00003-of-00005.safetensors.*missing: the index is incomplete"
    ):
        EntityIndex.load(tmp_path)
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(EntityIndexError, match="is not an entity-index manifest"):
        EntityIndex.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="No entity index"):
        EntityIndex.load(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------------ the model's index
def test_a_model_saves_and_loads_a_sharded_index_and_predicts_the_same(graph_model, tmp_path, monkeypatch):
    monkeypatch.setattr(entity_index_module, "DEFAULT_SHARD_SIZE", 16)
    graph_model.build_entity_index()
    graph_model.save_pretrained(tmp_path / "run")
    assert (tmp_path / "run" / MANIFEST_FILE).is_file() and not (tmp_path / "run" / "entity_index.safetensors").exists()
    loaded = ClmkeForLinkPrediction.from_pretrained(tmp_path / "run").eval()
    index = loaded.load_entity_index()
    assert index is not None and len(index._shards) == 3
    torch.testing.assert_close(index.keys, graph_model.entity_index.keys)
    assert loaded.predict(head="E3", relation="R1", top_k=5) == graph_model.predict(head="E3", relation="R1", top_k=5)
    monkeypatch.setattr(entity_index_module, "DEFAULT_SHARD_SIZE", 1000)
    loaded.save_pretrained(tmp_path / "run")  # over its own memory-mapped shards: back to one file, the shards removed
    assert sorted(p.name for p in (tmp_path / "run").glob("entity_index*")) == [
        "entity_index.py",
        "entity_index.safetensors",
    ]
    again = ClmkeForLinkPrediction.from_pretrained(tmp_path / "run").load_entity_index()
    torch.testing.assert_close(again.keys, graph_model.entity_index.keys)


def test_add_entities_appends_to_a_sharded_index(graph_model, tmp_path, monkeypatch):
    import copy

    model = copy.deepcopy(graph_model)
    model.attach_tokenizer(copy.deepcopy(graph_model.kg_tokenizer))
    model.entity_index = EntityIndex.build(model, shard_size=10, save_directory=tmp_path)
    model.add_entities(["NEW"], ["new lake"], ["a lake in the north"])
    assert model.entity_index.num_entities == 42 and model.entity_index.ids[-1] == "NEW"
    torch.testing.assert_close(model.entity_index.keys, model.encode_entities())


# ------------------------------------------------------------------------------------------------ exact search
@pytest.mark.parametrize("memory_mb, query_batch_size", [(256, 256), (0.0005, 2)])
def test_tiled_search_equals_the_top_k_of_the_full_score_matrix(graph_model, memory_mb, query_batch_size):
    q, q_ent = _queries(graph_model)
    index = EntityIndex.build(graph_model, shard_size=9)
    full = graph_model.score_all(q, q_ent, graph_model.encode_entities())
    if memory_mb < 1:
        assert index._key_tile_rows(query_batch_size, memory_mb) < 9  # tiles smaller than a shard: tiling is exercised
    values, rows = index.search(graph_model, q, q_ent, top_k=6, memory_mb=memory_mb, query_batch_size=query_batch_size)
    expected_values, expected_rows = full.topk(6, dim=1)
    torch.testing.assert_close(values, expected_values)
    assert torch.equal(rows, expected_rows)


def test_search_leaves_out_excluded_rows_and_pads_past_the_candidates(graph_model):
    q, q_ent = _queries(graph_model, n=2)
    index = EntityIndex.build(graph_model, shard_size=9)
    full = graph_model.score_all(q, q_ent, index.keys)
    excluded = [full[0].topk(3).indices.tolist(), list(range(41))[:38]]
    values, rows = index.search(graph_model, q, q_ent, top_k=5, exclude=excluded, memory_mb=0.002)
    masked = full.clone()
    masked[0, excluded[0]] = float("-inf")
    assert rows[0].tolist() == masked[0].topk(5).indices.tolist()
    assert rows[1].tolist()[:3] == masked[1, 38:].topk(3).indices.add(38).tolist() and rows[1].tolist()[3:] == [-1, -1]
    assert torch.isinf(values[1, 3:]).all()
    with pytest.raises(ValueError, match="top_k must be >= 1"):
        index.search(graph_model, q, q_ent, top_k=0)


def test_ranking_from_a_sharded_memory_mapped_index_equals_ranking_from_one_tensor(graph_model, tmp_path):
    from lmke_hf.evaluation import rank_link_prediction
    from lmke_hf.kg import load_kg

    from helpers import write_tiny_kg

    kg = load_kg(str(write_tiny_kg(tmp_path / "kg")))
    tokenizer = LmkeTokenizer.from_kg(
        graph_model.kg_tokenizer.tokenizer,
        kg,
        max_entity_description_length=8,
        max_relation_description_length=4,
        max_key_description_length=10,
    )
    torch.manual_seed(0)
    model = ClmkeForLinkPrediction.from_encoder_pretrained(
        graph_model.config.encoder._name_or_path, tokenizer, scorer=graph_model.config.scorer
    ).eval()
    model.attach_tokenizer(tokenizer)
    sharded = EntityIndex.build(model, shard_size=3, save_directory=tmp_path / "index")
    keys = sharded.keys.clone()  # the same numbers in one ordinary tensor: only the tiled, mapped path differs
    torch.testing.assert_close(keys, model.encode_entities())
    one = rank_link_prediction(model, tokenizer, kg, "test", entity_embeddings=keys).ranks_table()
    tiled = rank_link_prediction(
        model, tokenizer, kg, "test", entity_embeddings=sharded, scores_memory_mb=1e-4
    ).ranks_table()
    assert one.keys() == tiled.keys()
    for column in one:
        np.testing.assert_array_equal(one[column], tiled[column])


def test_a_cosine_index_normalises_its_keys_once_and_ranks_as_before(tiny_bert_dir, monkeypatch):
    model = _graph_model(tiny_bert_dir, "cosine")
    q, q_ent = _queries(model, n=5)
    index = EntityIndex.build(model, shard_size=16)  # 3 shards
    full = model.score_all(
        q, q_ent, torch.cat([tile for _, tile in index.tiles()])
    )  # the stored keys, normalised by the model
    expected_values, expected_rows = full.topk(6, dim=1)
    normalised, key_rows = [], []
    real_unit, real_normalize = entity_index_module._unit_keys, torch.nn.functional.normalize
    monkeypatch.setattr(
        entity_index_module, "_unit_keys", lambda shard: normalised.append(shard.shape[0]) or real_unit(shard)
    )
    monkeypatch.setattr(
        torch.nn.functional, "normalize", lambda x, *a, **k: key_rows.append(x.shape[0]) or real_normalize(x, *a, **k)
    )
    for _ in range(2):
        values, rows = index.search(model, q, q_ent, top_k=6, memory_mb=0.002)
        torch.testing.assert_close(values, expected_values)
        assert torch.equal(rows, expected_rows)
    torch.testing.assert_close(index.scores(model, q, q_ent), full)
    assert normalised == [16, 16, 9]  # each shard once, for two searches and the scores
    assert [n for n in key_rows if n != q.shape[0]] == [16, 16, 9]  # and nothing normalises a tile of keys again
    grown = index.append(model.encode_entities([0, 1]))
    grown.search(model, q, q_ent, top_k=3)
    assert normalised == [16, 16, 9, 2]  # the grown index normalises its new rows only
    matcher = _graph_model(tiny_bert_dir, "matcher")
    EntityIndex.build(matcher, shard_size=16).search(matcher, *_queries(matcher), top_k=3)
    assert normalised == [16, 16, 9, 2]  # the matcher reads the stored keys


# ------------------------------------------------------------------------------------------------ FAISS
@pytest.mark.parametrize("kind", ["flat", "hnsw", "ivf"])
def test_faiss_search_re_scores_exactly_and_agrees_with_exact_search(graph_model, kind, tmp_path):
    pytest.importorskip("faiss", reason='FAISS is an optional extra: pip install "lmke_hf[faiss]"')
    q, q_ent = _queries(graph_model)
    index = EntityIndex.build(graph_model, shard_size=16)
    searcher = index.build_faiss(kind, nlist=4, nprobe=4)  # nprobe = nlist: every cluster is searched
    searcher.save(tmp_path / "keys.faiss")
    searcher = FaissSearcher.load(tmp_path / "keys.faiss")
    exact_values, exact_rows = index.search(graph_model, q, q_ent, top_k=5)
    values, rows = searcher.search(graph_model, index, q, q_ent, top_k=5, shortlist=41)  # the shortlist is every entity
    assert torch.equal(rows, exact_rows)
    torch.testing.assert_close(values, exact_values)
    excluded = [r[:2].tolist() for r in exact_rows]
    values, rows = searcher.search(graph_model, index, q, q_ent, top_k=3, exclude=excluded, shortlist=41)
    assert torch.equal(rows, exact_rows[:, 2:5])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_faiss_re_scoring_of_a_half_precision_index_gives_exact_search_s_own_scores(graph_model, dtype):
    """Exact search ranks an fp16 / bf16 index's stored unit keys; the FAISS re-score must score those same keys
    (not the raw keys normalised again), or its scores differ by the storage rounding and near-ties swap."""
    pytest.importorskip("faiss", reason='FAISS is an optional extra: pip install "lmke_hf[faiss]"')
    q, q_ent = _queries(graph_model)
    index = EntityIndex.build(graph_model, shard_size=16, dtype=dtype)
    exact_values, exact_rows = index.search(graph_model, q, q_ent, top_k=5)
    values, rows = index.build_faiss("flat").search(graph_model, index, q, q_ent, top_k=5, shortlist=41)
    assert torch.equal(rows, exact_rows)
    torch.testing.assert_close(values, exact_values, rtol=1e-6, atol=1e-6)  # storage rounding is ~1e-3 (fp16)


def test_predict_with_a_faiss_searcher_returns_the_exact_answers_when_its_shortlist_holds_them(graph_model):
    pytest.importorskip("faiss", reason='FAISS is an optional extra: pip install "lmke_hf[faiss]"')
    graph_model.build_entity_index()
    searcher = graph_model.entity_index.build_faiss("flat")
    exact = graph_model.predict(head="E5", relation="R0", top_k=4)
    # the default shortlist, max(4 x top_k, 50), holds all 41 entities: exact for either scorer (the matcher's
    # shortlist is by key similarity, then re-scored)
    assert graph_model.predict(head="E5", relation="R0", top_k=4, searcher=searcher) == exact
    wide = searcher.search(graph_model, graph_model.entity_index, *_queries(graph_model, 1), top_k=4, shortlist=41)
    assert wide[1].shape == (1, 4)


def test_a_faiss_index_of_other_weights_is_refused_naming_both_fingerprints_and_the_fix(graph_model, tmp_path):
    pytest.importorskip("faiss", reason='FAISS is an optional extra: pip install "lmke_hf[faiss]"')
    import json

    index = EntityIndex.build(graph_model, shard_size=16)
    index.build_faiss("flat").save(tmp_path / "keys.faiss")
    assert json.loads((tmp_path / "keys.faiss.json").read_text())["weights_sha256"] == graph_model.weights_fingerprint()
    assert FaissSearcher.load(tmp_path / "keys.faiss", index).weights_sha256 == index.weights_sha256
    changed = _copy_with_offset(graph_model, 0.01)
    other = EntityIndex.build(changed, shard_size=16)
    stale = f"weights_sha256 {index.weights_sha256}\\).*weights_sha256 {other.weights_sha256}\\).*lmke-hf index --model <model> --faiss flat"
    with pytest.raises(ValueError, match=stale):
        FaissSearcher.load(tmp_path / "keys.faiss", other)
    searcher = FaissSearcher.load(tmp_path / "keys.faiss")
    with pytest.raises(ValueError, match=stale):
        searcher.search(changed, other, *_queries(changed, 2), top_k=3)
    changed.entity_index = other
    with pytest.raises(ValueError, match=stale):
        changed.predict(head="E1", relation="R0", top_k=3, searcher=searcher)


def test_configure_changes_the_search_breadth_in_place_and_refuses_settings_of_another_kind(graph_model, tmp_path):
    faiss = pytest.importorskip("faiss", reason='FAISS is an optional extra: pip install "lmke_hf[faiss]"')
    index = EntityIndex.build(graph_model, shard_size=16)
    hnsw = index.build_faiss("hnsw", ef_search=8)
    assert hnsw.configure(ef_search=40) is hnsw
    assert hnsw.index.hnsw.efSearch == 40 and hnsw.params["ef_search"] == 40
    hnsw.save(tmp_path / "keys.faiss")
    assert FaissSearcher.load(tmp_path / "keys.faiss").index.hnsw.efSearch == 40  # saved as configured
    ivf = index.build_faiss("ivf", nlist=4, nprobe=1)
    ivf.configure(nprobe=4)
    assert faiss.extract_index_ivf(ivf.index).nprobe == 4 and ivf.params["nprobe"] == 4
    with pytest.raises(ValueError, match="`nprobe` tunes ivf indexes; this FAISS index is 'hnsw'"):
        hnsw.configure(nprobe=4)
    with pytest.raises(ValueError, match="`ef_search` must be a positive integer, got 0"):
        hnsw.configure(ef_search=0)


def test_an_unknown_faiss_kind_is_named(graph_model):
    pytest.importorskip("faiss")
    with pytest.raises(ValueError, match="'lsh' is not one of 'flat', 'ivf', 'hnsw'"):
        EntityIndex.build(graph_model, shard_size=16).build_faiss("lsh")


# ------------------------------------------------------------------------------------------------ two processes
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_build_the_same_index_as_one(tiny_bert_dir, tmp_path):
    graph_model = _graph_model(tiny_bert_dir, "matcher")  # one scorer: the build does not depend on it
    graph_model.save_pretrained(tmp_path / "model")
    graph_model.kg_tokenizer.save_pretrained(tmp_path / "model")
    sys.path.insert(0, os.path.dirname(__file__))
    from _entity_index_dist import run_worker

    torch.multiprocessing.spawn(
        run_worker, args=(2, _free_port(), str(tmp_path / "model"), str(tmp_path)), nprocs=2, join=True
    )
    single = EntityIndex.build(graph_model, shard_size=5)
    for rank in range(2):
        gathered = torch.load(tmp_path / f"rank{rank}.pt")
        torch.testing.assert_close(gathered["memory"], single.keys)
        torch.testing.assert_close(gathered["saved"], single.keys)
    assert len(list((tmp_path / "index").glob("entity_index-*-of-00009.safetensors"))) == 9
