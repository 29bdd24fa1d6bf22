"""Train C-LMKE for filtered link prediction: `accelerate launch examples/train_clmke.py --dataset umls ...`.

Validation MRR each epoch keeps the best model; test metrics of the best model go to
`output_dir/all_results.json` (test_mrr, test_mr, test_hits@1/3/10) with per-direction, per-relation and
degree-bucket tables in `output_dir/test_metrics/`, and the model + tokenizer are saved to `output_dir`
(`AutoModel.from_pretrained(output_dir)` after `import lmke_hf`).
"""

from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from lmke_hf import ClmkeForLinkPrediction, LmkeTokenizer
from lmke_hf.errors import UsageError
from lmke_hf.evaluation import encode_entities, plot_degree_buckets, rank_link_prediction
from lmke_hf.features import ClmkeCollator, LengthGroupedSampler, link_prediction_examples, tokenize_link_prediction
from lmke_hf.modelcard import ModelCard
from lmke_hf.run_io import describe_hardware, run_resumes, write_json
from lmke_hf.training import (
    ClmkeTrainingArguments,
    StopAtOnce,
    arguments_parser,
    claim_output_dir,
    configure_process,
    finish_run,
    hub_dataset_id,
    parse_training_args,
    prepare_run,
    run_command,
    run_results,
    seeded_generator,
    start_from_trained,
    summary_text,
    train,
)

logger = logging.getLogger("train_clmke")


def build_parser() -> argparse.ArgumentParser:
    return arguments_parser(ClmkeTrainingArguments, description=__doc__)


def parse_args(argv=None) -> ClmkeTrainingArguments:
    """The command line's arguments (default: this process's), parsed and checked (`parse_training_args`)."""
    return parse_training_args(ClmkeTrainingArguments, argv, description=__doc__)


def _run(args) -> dict:
    accelerator, kg = prepare_run(args, "C-LMKE")
    tokenizer = LmkeTokenizer.from_kg(
        args.encoder,
        kg,
        max_entity_description_length=args.max_entity_description_length,
        max_relation_description_length=args.max_relation_description_length,
        max_key_description_length=args.max_key_description_length,
    )
    encoder_kwargs = {"num_hidden_layers": args.encoder_layers} if args.encoder_layers else {}
    model = ClmkeForLinkPrediction.from_encoder_pretrained(
        args.encoder,
        tokenizer,
        encoder_kwargs=encoder_kwargs,
        use_degree_features=not args.no_degree_features,
        adversarial_temperature=args.adversarial_temperature,
        max_negatives_per_query=args.max_negatives_per_query,
        matcher_hidden_size=args.matcher_hidden_size,
        pooling=args.pooling,
        scorer=args.scorer,
        loss=args.loss,
        infonce_temperature=args.infonce_temperature,
        learn_temperature=not args.fixed_temperature,
        infonce_margin=args.infonce_margin,
        key_queue_size=args.key_queue_size,
        freeze_layers=args.freeze_layers,
        own_entity_bias=args.own_entity_bias,
        symmetric_loss=args.symmetric_loss,
    )
    init = (
        start_from_trained(model, tokenizer, args.init_from, logger, load=not args.resume_from_checkpoint)
        if args.init_from
        else {}
    )
    model.set_entity_degrees(kg.degrees(["train"]))  # training degrees only: the leak-free setting

    with accelerator.main_process_first():
        train_set = tokenize_link_prediction(link_prediction_examples(kg.triples("train")), tokenizer, args.num_proc)
    collator = ClmkeCollator(
        tokenizer.pad_token_id,
        kg.answer_index(["train"], "tail"),
        kg.answer_index(["train"], "head"),
        self_negatives=args.self_negatives,
        tokenizer=tokenizer,
    )
    sampler = (
        LengthGroupedSampler(train_set, args.per_device_train_batch_size, seed=args.seed)
        if args.group_by_length
        else None
    )
    train_dataloader = DataLoader(
        train_set,
        batch_size=args.per_device_train_batch_size,
        shuffle=sampler is None,
        sampler=sampler,
        collate_fn=collator,
        drop_last=True,
    )
    if len(train_dataloader) == 0:
        raise UsageError(
            f"--per_device_train_batch_size {args.per_device_train_batch_size} exceeds the {len(train_set)} training queries."
        )
    score_dtype = torch.bfloat16 if args.score_bf16 else None

    def evaluate(model):
        ev = rank_link_prediction(
            model,
            tokenizer,
            kg,
            "validation",
            batch_size=args.per_device_eval_batch_size,
            max_queries=args.eval_max_queries,
            accelerator=accelerator,
            score_dtype=score_dtype,
        )
        return ev.compute()

    def save(model, directory):
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    forward_kwargs = {}
    if accelerator.num_processes > 1:
        forward_kwargs["gather_keys"] = True  # in-batch negatives from every process
    if args.max_negatives_per_query:  # which negatives each query keeps: seeded, and restored at resume
        forward_kwargs["generator"] = seeded_generator(args.seed, accelerator)
    summary = train(
        args, accelerator, model, train_dataloader, evaluate, "mrr", save, logger, forward_kwargs=forward_kwargs
    )
    accelerator.wait_for_everyone()
    if args.no_test_eval:  # benchmarks: the validation history is the result; no test ranking, no final folder
        if accelerator.is_main_process:
            write_json(Path(args.output_dir) / "train_history.json", summary["history"], indent=2, default=float)
        return {k: summary[k] for k in ("train_runtime_s", "completed_steps", "best_epoch", "best_eval_mrr", "history")}

    with StopAtOnce(args, summary, accelerator, logger):  # a signal now: the last checkpoint resumes into the test
        best = ClmkeForLinkPrediction.from_pretrained(Path(args.output_dir) / "best").to(accelerator.device)
        best.attach_tokenizer(tokenizer)
        best.entity_index = encode_entities(
            best,
            tokenizer,
            batch_size=args.per_device_eval_batch_size,
            accelerator=accelerator,
            progress=not args.no_progress and accelerator.is_main_process,
        )  # saved as entity_index.safetensors: predictions need no re-encoding after loading
        evaluator = rank_link_prediction(
            best,
            tokenizer,
            kg,
            "test",
            batch_size=args.per_device_eval_batch_size,
            accelerator=accelerator,
            entity_embeddings=best.entity_index,
            score_dtype=score_dtype,
        )
    if not accelerator.is_main_process:
        return {}
    results = {f"test_{k}": v for k, v in evaluator.compute().items()}
    results.update(init)
    results.update(run_results(summary, "mrr", accelerator))
    out = Path(args.output_dir)

    def write_test_tables(folder: Path) -> None:  # staged with the model: the folder changes as a whole
        evaluator.save(folder / "test_metrics", relation_names=list(kg.relations["id"]))
        plot_degree_buckets(
            evaluator.per_degree_bucket(),
            folder / "test_metrics" / "degree_buckets.png",
            title=f"C-LMKE on {kg.name} (test)",
        )
        shutil.copy(folder / "test_metrics" / "degree_buckets.png", folder / "degree_buckets.png")

    card = ModelCard(
        task="link-prediction",
        dataset=kg.name,
        results=results,
        args={**vars(args), **summary["schedule"]},
        command=run_command("examples/train_clmke.py", args.output_dir),
        resumes=run_resumes(args.output_dir),
        hardware=describe_hardware(accelerator.device),
        model_id=args.hub_model_id or f"your-org/{out.name}",
        description_source=kg.description_source,
        degree_features=not args.no_degree_features,
        train_runtime_s=summary["train_runtime_s"],
        plot="degree_buckets.png",
        degree_buckets=evaluator.per_degree_bucket(),
        dataset_id=hub_dataset_id(kg),
    )
    text = summary_text(
        "C-LMKE",
        kg.name,
        results,
        summary,
        "mrr",
        out,
        "filtered ranks of every test triple in both directions, ties at their realistic rank",
    )
    # save_pretrained writes the tokenizer and entity index with the model
    return finish_run(
        args,
        accelerator,
        best,
        results,
        summary,
        card,
        text,
        save_fn=lambda model, folder: model.save_pretrained(folder),
        write_extras=write_test_tables,
    )


def train_clmke(args: ClmkeTrainingArguments) -> dict:
    """Trains C-LMKE as `args` say, tests the best model and saves it with its card in `args.output_dir`; returns
    the results (test_mrr, test_hits@10, ..., as in `all_results.json`). The output folder is locked for the run and removed if it
    fails before anything worth keeping was written (`lmke_hf.training.claim_output_dir`). Mistakes in the
    arguments raise `lmke_hf.errors.UsageError`; a run stopped by SIGTERM / SIGINT raises `TrainingStopped` after
    saving a checkpoint, or at once during the test evaluation after training (naming the last step's
    checkpoint).

        from lmke_hf import ClmkeTrainingArguments, train_clmke

        results = train_clmke(ClmkeTrainingArguments(dataset="umls", output_dir="outputs/clmke-umls", mixed_precision="auto"))
    """
    args.check_inputs()
    configure_process(args)
    with claim_output_dir(args):
        return _run(args)


main = train_clmke  # the command line's entry (`lmke_hf.cli.run_program`)

if __name__ == "__main__":
    import sys

    from lmke_hf.cli import run_program

    sys.exit(run_program(sys.modules[__name__]))
