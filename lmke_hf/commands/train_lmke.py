"""Train LMKE for triple classification: `accelerate launch examples/train_lmke.py --dataset umls ...`.

Training negatives: one corrupted triple per positive (head or tail replaced by a uniformly drawn entity, never
a known training triple), drawn once per run from `--seed` as in the original code, or anew each epoch with
`--resample_negatives`. Evaluation uses the dataset's fixed negatives
(FB13/WN11 ship them; for the others `add_classification_negatives` generates them once, seeded). Validation
accuracy each epoch keeps the best model; test accuracy at the paper's 0.5 threshold and with thresholds tuned on
validation (global and per relation) goes to `output_dir/all_results.json`.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from torch.utils.data import DataLoader

from lmke_hf import LmkeForTripleClassification, LmkeTokenizer
from lmke_hf.evaluation import classification_report, score_triples
from lmke_hf.features import LengthGroupedSampler, LmkeCollator, TrainingTriples
from lmke_hf.kg import add_classification_negatives
from lmke_hf.modelcard import ModelCard
from lmke_hf.run_io import describe_hardware, run_resumes, write_json
from lmke_hf.training import (
    LmkeTrainingArguments,
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
    start_from_trained,
    summary_text,
    train,
)

logger = logging.getLogger("train_lmke")


def build_parser() -> argparse.ArgumentParser:
    return arguments_parser(LmkeTrainingArguments, description=__doc__)


def parse_args(argv=None) -> LmkeTrainingArguments:
    """The command line's arguments (default: this process's), parsed and checked (`parse_training_args`)."""
    return parse_training_args(LmkeTrainingArguments, argv, description=__doc__)


def _labelled(kg, split):
    return kg.triples(split, positives_only=False), kg.labels(split)


def _run(args) -> dict:
    accelerator, kg = prepare_run(args, "LMKE")
    kg = add_classification_negatives(kg, seed=args.negatives_seed)
    tokenizer = LmkeTokenizer.from_kg(
        args.encoder,
        kg,
        max_entity_description_length=args.max_entity_description_length,
        max_relation_description_length=args.max_relation_description_length,
        max_key_description_length=0,
    )
    encoder_kwargs = {"num_hidden_layers": args.encoder_layers} if args.encoder_layers else {}
    model = LmkeForTripleClassification.from_encoder_pretrained(args.encoder, tokenizer, encoder_kwargs=encoder_kwargs)
    init = (
        start_from_trained(model, tokenizer, args.init_from, logger, load=not args.resume_from_checkpoint)
        if args.init_from
        else {}
    )

    # training set: positives + one negative each; with --resample_negatives redrawn per epoch by the loop's
    # set_epoch (seeded: the same in every process and after a resume)
    train_set = TrainingTriples(
        kg, tokenizer, seed=args.seed, resample=args.resample_negatives, corruption=args.negative_sampling
    )
    sampler = (
        LengthGroupedSampler(train_set, args.per_device_train_batch_size, seed=args.seed)
        if args.group_by_length
        else None
    )
    train_dataloader = DataLoader(
        train_set,
        batch_size=args.per_device_train_batch_size,
        sampler=sampler,
        shuffle=sampler is None,
        collate_fn=LmkeCollator(tokenizer.pad_token_id),
        drop_last=False,
    )
    valid_triples, valid_labels = _labelled(kg, "validation")
    if args.eval_max_queries:
        valid_triples, valid_labels = valid_triples[: args.eval_max_queries], valid_labels[: args.eval_max_queries]

    def evaluate(model):
        scores = score_triples(model, tokenizer, valid_triples, args.per_device_eval_batch_size, accelerator)
        return {"accuracy": float(((scores > 0.5) == (valid_labels == 1)).mean())}

    def save(model, directory):
        model.save_pretrained(directory)
        tokenizer.save_pretrained(directory)

    summary = train(args, accelerator, model, train_dataloader, evaluate, "accuracy", save, logger)
    accelerator.wait_for_everyone()
    with StopAtOnce(args, summary, accelerator, logger):  # a signal now: the last checkpoint resumes into the test
        best = LmkeForTripleClassification.from_pretrained(Path(args.output_dir) / "best").to(accelerator.device)
        all_valid, all_valid_labels = _labelled(kg, "validation")
        test_triples, test_labels = _labelled(kg, "test")
        valid_scores = score_triples(best, tokenizer, all_valid, args.per_device_eval_batch_size, accelerator)
        test_scores = score_triples(best, tokenizer, test_triples, args.per_device_eval_batch_size, accelerator)
    if not accelerator.is_main_process:
        return {}
    report = classification_report(
        test_scores, test_labels, test_triples[:, 1], valid_scores, all_valid_labels, all_valid[:, 1]
    )
    results = {f"test_{k}": v for k, v in report.items() if not isinstance(v, dict)}
    results.update(init)
    results.update(run_results(summary, "accuracy", accelerator))
    out = Path(args.output_dir)
    card = ModelCard(
        task="triple-classification",
        dataset=kg.name,
        results=results,
        args={**vars(args), **summary["schedule"]},
        command=run_command("examples/train_lmke.py", args.output_dir),
        resumes=run_resumes(args.output_dir),
        hardware=describe_hardware(accelerator.device),
        model_id=args.hub_model_id or f"your-org/{out.name}",
        description_source=kg.description_source,
        train_runtime_s=summary["train_runtime_s"],
        dataset_id=hub_dataset_id(kg),
    )
    text = summary_text(
        "LMKE",
        kg.name,
        results,
        summary,
        "accuracy",
        out,
        "accuracy on the test positives and their fixed negatives; 'tuned' thresholds from validation",
    )

    def write_thresholds(folder: Path) -> None:  # staged with the model: the folder changes as a whole
        write_json(folder / "thresholds.json", report.get("thresholds_per_relation", {}), default=float)

    return finish_run(
        args, accelerator, best, results, summary, card, text, save_fn=save, write_extras=write_thresholds
    )


def train_lmke(args: LmkeTrainingArguments) -> dict:
    """Trains LMKE as `args` say, tests the best model and saves it with its card in `args.output_dir`; returns
    the results (test_accuracy, ..., as in `all_results.json`). The output folder is locked for the run and removed if it
    fails before anything worth keeping was written (`lmke_hf.training.claim_output_dir`). Mistakes in the
    arguments raise `lmke_hf.errors.UsageError`; a run stopped by SIGTERM / SIGINT raises `TrainingStopped` after
    saving a checkpoint, or at once during the test evaluation after training (naming the last step's
    checkpoint).

        from lmke_hf import LmkeTrainingArguments, train_lmke

        results = train_lmke(LmkeTrainingArguments(dataset="umls", output_dir="outputs/lmke-umls", mixed_precision="auto"))
    """
    args.check_inputs()
    configure_process(args)
    with claim_output_dir(args):
        return _run(args)


main = train_lmke  # the command line's entry (`lmke_hf.cli.run_program`)

if __name__ == "__main__":
    import sys

    from lmke_hf.cli import run_program

    sys.exit(run_program(sys.modules[__name__]))
