"""Evaluate a trained LMKE / C-LMKE model (a saved folder or a Hub id) on a split of a knowledge graph.

    accelerate launch examples/evaluate.py --model outputs/clmke-umls --dataset umls --split test

The task follows the checkpoint's `model_type`: `clmke` -> filtered link prediction over all entities
(MR, MRR, Hits@1/3/10 overall, per direction, per relation and per degree bucket, with a degree-bucket plot);
`lmke` -> triple classification (accuracy at the 0.5 threshold and with thresholds tuned on
`--threshold_split`, globally and per relation). Metrics go to `--output_dir/<split>_results.json`.

`--rerank_weight` adds SimKGC's graph re-ranking to link prediction (a bonus for candidates within
`--rerank_hops` of the given entity in the graph of `--rerank_splits`); its results go to files of their own
(`<split>_rerank_results.json`, `<split>_rerank_metrics/`) that record the settings, so they never replace or pass
for the model's plain ranking.

The model scores with the training degrees stored in the checkpoint; the KG only supplies the triples to
rank, the filter and the gold degrees for the bucket table. The KG's entity and relation ids must be the
ones the model was trained with (same order), which the script checks before spending any time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path

import torch
from filelock import FileLock, Timeout

from lmke_hf import ClmkeForLinkPrediction, LmkeForTripleClassification, check_same_kg, load_model
from lmke_hf.errors import UsageError
from lmke_hf.evaluation import (
    GraphReranker,
    classification_report,
    plot_degree_buckets,
    rank_link_prediction,
    score_triples,
)
from lmke_hf.folders import LOCK_FILE, FinalSave, check_output_dir, claim_folder, folder_kind
from lmke_hf.kg import add_classification_negatives, held_out_entities, load_kg, make_inductive_split
from lmke_hf.loading import checkpoint_source, flag_errors, local_folder
from lmke_hf.run_io import write_json
from lmke_hf.training import NON_NEGATIVE_INT, POSITIVE_INT, number, set_cpu_threads

logger = logging.getLogger("evaluate")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = parser.add_argument
    a("--model", required=True, help="Saved output folder or Hub repo id of a trained LMKE / C-LMKE model.")
    a("--revision", default=None, help="Hub revision (branch, tag or commit) of --model.")
    a("--token", default=None, help="Hub token for private repos (default: the cached login).")
    a(
        "--dataset",
        required=True,
        help="KG: a short name (umls, wn18rr, fb15k-237, fb13, ...), a KG-BERT or prepared folder, or a Hub dataset id.",
    )
    a("--data_dir", default=None, help="Where short dataset names are looked up (default: $LMKE_HF_DATA_DIR).")
    a("--split", default="test", choices=["train", "validation", "test"], help="Split to evaluate.")
    a(
        "--output_dir",
        default=None,
        help="Where metrics are written (default: <model folder>/eval, else ./eval-<name>; never the training run's own test_metrics).",
    )
    a(
        "--per_device_eval_batch_size",
        type=POSITIVE_INT,
        default=256,
        help="Queries / triples / entity keys per forward pass.",
    )
    a(
        "--max_queries",
        type=POSITIVE_INT,
        default=None,
        help="Evaluate only the first N triples of the split (quick checks).",
    )
    a(
        "--filter_splits",
        nargs="+",
        default=["train", "validation", "test"],
        help="Known true triples removed from the ranking (link prediction).",
    )
    a(
        "--inductive_fraction",
        type=number(float, 0, 1, strict=True),
        default=None,
        help="Evaluate on the inductive split of --dataset (lmke_hf.kg.make_inductive_split): this share of its entities held out of training with all their triples. The model must have been trained on the same split (prepare --inductive_fraction); one that saw a held-out entity in training is refused.",
    )
    a("--inductive_seed", type=NON_NEGATIVE_INT, default=0, help="Seed of the inductive split (as given to prepare).")
    a(
        "--directions",
        nargs="+",
        default=["tail", "head"],
        choices=["tail", "head"],
        help="Which entity to predict (link prediction).",
    )
    a(
        "--reencode_entities",
        action="store_true",
        help="Encode all entity keys instead of using the checkpoint's entity_index.safetensors.",
    )
    a(
        "--threshold_split",
        default="validation",
        choices=["train", "validation", "test"],
        help="Split on which triple-classification thresholds are tuned.",
    )
    a(
        "--negatives_seed",
        type=NON_NEGATIVE_INT,
        default=0,
        help="Seed of the classification negatives of splits that ship none (train_lmke.py's default: 0).",
    )
    a(
        "--rerank_weight",
        type=number(float),
        default=0.0,
        help="Link prediction: add this to the score of every entity within --rerank_hops of the given entity in the "
        "graph of --rerank_splits (SimKGC's graph re-ranking; it uses 0.05 on cosine scores). 0: off.",
    )
    a(
        "--rerank_hops",
        type=POSITIVE_INT,
        default=None,
        help="With --rerank_weight: radius of the re-ranking neighbourhood, edges undirected (default 2; SimKGC: 5 on "
        "WN18RR, 2 elsewhere).",
    )
    a(
        "--rerank_splits",
        nargs="+",
        default=None,
        help="With --rerank_weight: splits whose triples make the re-ranking graph (default: train); only splits before "
        "the evaluated --split (train < validation < test).",
    )
    a(
        "--score_bf16",
        action="store_true",
        help="Score all entities with bf16 matrix products (GPUs / CPUs with bf16 units; may change ties).",
    )
    a("--no_progress", action="store_true", help="No progress bars.")
    a(
        "--cpu_threads",
        type=POSITIVE_INT,
        default=None,
        help="Torch threads on CPU (default: every core this process may use; `accelerate launch` alone pins one).",
    )
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)  # numeric flags are range-checked by their types


def graph_reranker(args, model, kg, device) -> GraphReranker | None:
    """The `--rerank_*` flags' `GraphReranker` (None without `--rerank_weight`), checked before anything is written."""
    if not args.rerank_weight:
        given = [flag for flag in ("--rerank_hops", "--rerank_splits") if getattr(args, flag[2:]) is not None]
        if given:
            verb = "take" if len(given) > 1 else "takes"
            raise UsageError(f"{' and '.join(given)} {verb} effect only with --rerank_weight (e.g. 0.05); add it.")
        return None
    if not isinstance(model, ClmkeForLinkPrediction):
        raise UsageError(
            f"--rerank_weight {args.rerank_weight:g}: graph re-ranking applies to link prediction (C-LMKE models); "
            f"{args.model} is a {type(model).__name__}. Leave the flag out."
        )
    if kg.report.get("inductive"):
        raise UsageError(
            f"--rerank_weight {args.rerank_weight:g}: {kg.name} ({inductive_flag(args)}) is an inductive split, "
            "whose held-out entities have no training edges; a graph bonus would only lift their competitors. "
            "Leave the flag out."
        )
    if model.config.scorer != "cosine":
        logger.warning(
            "--rerank_weight %g is added to scores of the %r scorer, whose scale is not SimKGC's cosines (where 0.05 "
            "is its setting); tune the weight on validation.",
            args.rerank_weight,
            model.config.scorer,
        )
    with flag_errors("--rerank_splits"):
        splits = ["train"] if args.rerank_splits is None else args.rerank_splits
        reranker = GraphReranker(kg, splits, args.rerank_hops or 2, args.rerank_weight, device)
        reranker.check_split(args.split)
    logger.info("graph re-ranking: %s (%d undirected edges)", reranker.describe(), reranker.num_edges)
    return reranker


def results_name(args) -> str:
    """`<split>` for the plain ranking, `<split>_rerank` for the re-ranked one: the prefix of the files written."""
    return f"{args.split}_rerank" if args.rerank_weight else args.split


def evaluate_link_prediction(args, accelerator, model, tokenizer, kg, out_dir: Path, reranker=None) -> dict:
    model.attach_tokenizer(tokenizer)
    keys = None
    if not args.reencode_entities:
        keys = model.load_entity_index()
        if keys is not None:
            logger.info("using the checkpoint's entity index (%d keys)", keys.num_entities)
    evaluator = rank_link_prediction(
        model,
        tokenizer,
        kg,
        args.split,
        filter_splits=tuple(args.filter_splits),
        batch_size=args.per_device_eval_batch_size,
        max_queries=args.max_queries,
        directions=tuple(args.directions),
        entity_embeddings=keys.to(accelerator.device) if keys is not None else None,
        accelerator=accelerator,
        score_dtype=torch.bfloat16 if args.score_bf16 else None,
        progress=not args.no_progress and accelerator.is_main_process,
        reranker=reranker,
    )
    if not accelerator.is_main_process:
        return {}
    metrics = {f"{args.split}_{k}": v for k, v in evaluator.compute().items()}
    metrics["rerank"] = reranker.describe() if reranker is not None else None
    metrics["num_examples"] = len(evaluator) // len(args.directions)  # triples ranked
    for direction, values in evaluator.per_direction().items():
        metrics.update({f"{args.split}_{direction}_{k}": v for k, v in values.items()})
    tables = out_dir / f"{results_name(args)}_metrics"
    evaluator.save(tables, relation_names=list(kg.relations["id"]))  # with every rank (ranks.npz / .csv)
    plot_degree_buckets(
        evaluator.per_degree_bucket(),
        tables / "degree_buckets.png",
        title=f"C-LMKE on {kg.name} ({args.split}{', graph re-ranked' if reranker is not None else ''})",
    )
    return metrics


def inductive_flag(args) -> str:
    """The flag that made the graph inductive: `--inductive_fraction`, or `--dataset` for a folder prepared so."""
    return "--inductive_fraction" if args.inductive_fraction is not None else f"--dataset {args.dataset}"


def check_never_trained_on(model, entities, kg, args) -> None:
    """Refuses a C-LMKE model whose training degrees (stored with it) count any of `entities`: it was trained on
    triples of entities that the inductive split holds out, so its inductive results would be transductive ones.
    The message names what made the split inductive (`--inductive_fraction`, or a prepared `--dataset`)."""
    degrees = model.entity_degrees.detach().cpu().numpy()
    seen = entities[degrees[entities] > 0]
    if len(seen):
        names = ", ".join(str(kg.entities["id"][int(i)]) for i in seen[:3])
        split = kg.report["inductive"]
        if args.inductive_fraction is None:  # the prepared folder is the right data; the model is not
            fix = f"Train it on this folder: --dataset {args.dataset}."
        else:
            fix = (
                f"Train it on the inductive split: lmke-hf prepare {kg.name.removesuffix('-inductive')} "
                f"--inductive_fraction {split['fraction']} --inductive_seed {split['seed']} --output_dir DIR, "
                "then train with --dataset DIR."
            )
        raise UsageError(
            f"{inductive_flag(args)}: the model was trained on triples of {len(seen)} of the {len(entities)} entities "
            f"this split holds out (e.g. {names}): its results would not be inductive. {fix}"
        )


def evaluate_triple_classification(args, accelerator, model, tokenizer, kg, out_dir: Path) -> dict:
    if args.threshold_split == args.split:
        raise UsageError(
            f"--threshold_split {args.threshold_split} is the split being evaluated: the tuned accuracies would be tuned on the labels they are measured on; pick another split."
        )
    kg = add_classification_negatives(kg, seed=args.negatives_seed)  # the same negatives train_lmke.py scored

    def labelled(split):
        triples, labels = kg.triples(split, positives_only=False), kg.labels(split)
        if (labels == 0).sum() == 0:
            raise UsageError(
                f"Split {split!r} of {kg.name} has no negative triples, so accuracy is undefined; use validation or test."
            )
        return triples, labels

    triples, labels = labelled(args.split)
    if args.max_queries is not None:
        triples, labels = triples[: args.max_queries], labels[: args.max_queries]
    tune_triples, tune_labels = labelled(args.threshold_split)
    scores = score_triples(model, tokenizer, triples, args.per_device_eval_batch_size, accelerator)
    tune_scores = score_triples(model, tokenizer, tune_triples, args.per_device_eval_batch_size, accelerator)
    if not accelerator.is_main_process:
        return {}
    report = classification_report(scores, labels, triples[:, 1], tune_scores, tune_labels, tune_triples[:, 1])
    write_json(out_dir / f"{args.split}_thresholds.json", report.get("thresholds_per_relation", {}), default=float)
    return {
        **{f"{args.split}_{k}": v for k, v in report.items() if not isinstance(v, dict)},
        "num_examples": len(triples),
    }


def default_output_dir(model: str, source) -> Path:
    """`<model folder>/eval`; for a run's `best/` (removed when the run ends) `<run>/eval-best`; for a Hub id
    `./eval-<name>`."""
    folder = Path(source)
    if not folder.is_dir():
        return Path(f"eval-{Path(model).name}")
    if folder.name == "best" and folder_kind(folder.parent) == "training-run":
        return folder.parent / "eval-best"
    return folder / "eval"


def main(args) -> dict:
    from accelerate import Accelerator

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = Accelerator()
    set_cpu_threads(accelerator, args.cpu_threads)
    # user mistakes end with one line naming the flag; a mistyped folder stops before the KG is read
    with flag_errors("--data_dir"):
        if args.data_dir is not None:
            local_folder(args.data_dir, required=True)
    with flag_errors("--model"):
        source = checkpoint_source(args.model)
    out_dir = default_output_dir(args.model, source) if args.output_dir is None else Path(args.output_dir)
    inputs = {
        "--model": source if Path(source).is_dir() else None,
        "--data_dir": args.data_dir,
        "--dataset": args.dataset if Path(args.dataset).exists() else None,
    }
    check_output_dir(
        out_dir, "evaluation", inputs=inputs, reuse=True
    )  # a new folder or one of earlier evaluations; never a run, data or other files
    with flag_errors("--dataset"):
        local_folder(args.dataset)
        kg = load_kg(args.dataset, data_dir=args.data_dir)
    if args.inductive_fraction is not None:
        with flag_errors("--inductive_fraction"):
            kg = make_inductive_split(kg, args.inductive_fraction, args.inductive_seed)
    if args.split not in kg.splits:
        raise UsageError(f"--split {args.split!r}: {kg.name} has splits {sorted(kg.splits)}.")
    with flag_errors("--model"):
        model, tokenizer = load_model(args.model, args.revision, args.token)
        check_same_kg(tokenizer, kg, args.model)
    reranker = graph_reranker(args, model, kg, accelerator.device)
    if isinstance(model, ClmkeForLinkPrediction) and kg.report.get("inductive"):
        check_never_trained_on(model, held_out_entities(kg), kg, args)  # before anything is written
    model.to(accelerator.device)
    if accelerator.is_main_process:
        claim_folder(out_dir, "evaluation", inputs=inputs, reuse=True)
    start = time.perf_counter()
    lock = FileLock(str(out_dir / LOCK_FILE))
    if accelerator.is_main_process:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            raise UsageError(
                f"--output_dir {out_dir} is in use by another evaluation; wait for it or choose another folder."
            ) from None
    try:
        # a split's files (results, tables, ranks, thresholds) are staged and swapped in together: two evaluations
        # never mix their files, and a crash leaves the previous complete set
        with FinalSave(out_dir) if accelerator.is_main_process else contextlib.nullcontext(out_dir) as staging:
            if isinstance(model, ClmkeForLinkPrediction):
                task, results = (
                    "link-prediction",
                    evaluate_link_prediction(args, accelerator, model, tokenizer, kg, staging, reranker),
                )
            elif isinstance(model, LmkeForTripleClassification):
                task, results = (
                    "triple-classification",
                    evaluate_triple_classification(args, accelerator, model, tokenizer, kg, staging),
                )
            else:  # load_model only returns the two
                raise UsageError(f"--model {args.model!r}: unsupported model class {type(model).__name__}.")
            if accelerator.is_main_process:
                results.update(
                    model=args.model,
                    revision=args.revision,
                    dataset=kg.name,
                    split=args.split,
                    task=task,
                    eval_runtime_s=time.perf_counter() - start,
                    num_processes=accelerator.num_processes,
                    device=str(accelerator.device),
                )
                write_json(staging / f"{results_name(args)}_results.json", results, indent=2, default=float)
    finally:
        if lock.is_locked:
            lock.release()
    if accelerator.is_main_process:
        path = out_dir / f"{results_name(args)}_results.json"
        logger.info("metrics written to %s", path)
        shown = {k: v for k, v in results.items() if k.startswith(args.split) or (k == "rerank" and v)}
        print(json.dumps(shown, indent=2, default=float))
    return results


if __name__ == "__main__":
    import sys

    from lmke_hf.cli import run_program

    sys.exit(run_program(sys.modules[__name__]))
