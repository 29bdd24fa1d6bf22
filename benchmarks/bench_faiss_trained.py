#!/usr/bin/env python
"""FAISS against exact top-10 search on the entity keys of a trained C-LMKE model (bench_scale measures untrained keys).

Encodes the model's entity index (bf16 autocast, fp16 storage) unless `--index` already holds it, then searches
`--queries` random tail queries exactly and through FAISS (one HNSW graph searched at each `--ef_search`, one IVF
index at each `--nprobe`), all in one process: ms per query, recall@10 against exact, speed-up, build time; and the
spread of the keys (mean and std of the pairwise cosine of 2,000 of them).

Example::

    python benchmarks/bench_faiss_trained.py --model ~/lmke-runs/clmke-wn18rr-6l-bf16 --index /tmp/wn18rr-index --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from lmke_hf import load_model
from lmke_hf.entity_index import EntityIndex


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="A trained C-LMKE folder.")
    p.add_argument("--index", required=True, help="Folder of its entity index (built there when missing).")
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ef_search", type=int, nargs="+", default=[128, 64, 32, 16], help="HNSW search breadths.")
    p.add_argument("--nprobe", type=int, nargs="+", default=[32, 16, 8], help="IVF clusters searched.")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    import faiss

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    model, tok = load_model(args.model, task="link-prediction")
    model.eval().attach_tokenizer(tok)
    t0 = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        index = EntityIndex.build(model, dtype="float16", save_directory=args.index)
    out = {"num_entities": index.num_entities, "encode_s": time.perf_counter() - t0}
    keys = torch.nn.functional.normalize(index.keys[:2000].float(), dim=-1)
    cos = keys @ keys.T
    out.update(mean_cosine=float(cos.mean()), std_cosine=float(cos.std()))
    rng = np.random.default_rng(1)
    batch = tok.pad(
        tok.encode_queries(
            rng.integers(0, index.num_entities, args.queries), rng.integers(0, tok.num_relations, args.queries), "tail"
        )
    )
    with torch.no_grad():
        q, q_ent = model.embed_queries(batch["input_ids"], batch["attention_mask"])
    index.search(model, q[:2], q_ent[:2], 10)  # warm-up
    t0 = time.perf_counter()
    _, exact = index.search(model, q, q_ent, 10)
    out["exact_ms"] = (time.perf_counter() - t0) * 1000 / args.queries
    truth = [set(r) for r in exact.tolist()]
    for kind, name, values in (("hnsw", "ef_search", args.ef_search), ("ivf", "nprobe", args.nprobe)):
        t0 = time.perf_counter()
        searcher = index.build_faiss(kind)
        build_s = time.perf_counter() - t0
        for value in values:  # one build, searched at each breadth
            searcher.configure(**{name: value})
            searcher.search(model, index, q[:2], q_ent[:2], 10)
            t0 = time.perf_counter()
            _, found = searcher.search(model, index, q, q_ent, 10)
            ms = (time.perf_counter() - t0) * 1000 / args.queries
            recall = float(np.mean([len(truth[i] & set(r)) / 10 for i, r in enumerate(found.tolist())]))
            out[f"{kind} {searcher.params}"] = {
                "ms": ms,
                "recall_at_10": recall,
                "speedup": out["exact_ms"] / ms,
                "build_s": build_s,
            }
            print(kind, searcher.params, out[f"{kind} {searcher.params}"], flush=True)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(out, handle, indent=1)
    return out


if __name__ == "__main__":
    main()
