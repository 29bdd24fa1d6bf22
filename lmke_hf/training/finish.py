"""The end of a training run, shared by both scripts: the best model saved as the final one in `output_dir`
with its card and results, `best/` removed unless `--keep_best`, one summary for a person, and the push."""

from __future__ import annotations

import shutil
from pathlib import Path

from ..folders import FinalSave
from ..modelcard import ModelCard
from ..run_io import write_json
from .loop import format_metrics

# what `--push_to_hub` leaves out of the output folder: resumable state, the second copy of the model, raw
# per-query ranks, the run's lock and half-written files
PUSH_IGNORE = [
    "checkpoints/*",
    "best/*",
    "test_metrics/ranks.*",
    ".lmke_hf.lock*",
    ".*.tmp",
    ".lmke_hf_folder.json",
    ".final.*/*",
    ".final.*",
]


def hub_dataset_id(kg) -> str | None:
    """The Hub dataset id a KG was loaded from (`load_kg("owner/name")`), for the card's metadata; None for a folder."""
    source = getattr(kg, "source", "") or ""
    return source[len("hub:") :].split("@", 1)[0] if source.startswith("hub:") else None


def run_results(summary: dict, metric_name: str, accelerator) -> dict:
    """The training facts every `all_results.json` carries beside the test metrics."""
    return {
        "train_runtime_s": summary["train_runtime_s"],
        "completed_steps": summary["completed_steps"],
        "exact_resume": summary["exact_resume"],
        "best_epoch": summary["best_epoch"],
        "best_step": summary.get("best_step"),
        "mixed_precision": summary.get("mixed_precision", accelerator.mixed_precision),
        f"best_eval_{metric_name}": summary[f"best_eval_{metric_name}"],
        "num_processes": accelerator.num_processes,
        "device": str(accelerator.device),
    }


def summary_text(
    method: str, dataset: str, results: dict, summary: dict, metric_name: str, output_dir, protocol: str
) -> str:
    """The lines a person reads at the end of a run: what trained for how long, the headline test metrics with
    their protocol named, where the model is and how to load it."""
    minutes = summary.get("train_runtime_s")
    took = f" in {minutes / 60:.1f} min of training" if minutes is not None else ""
    best = summary.get(f"best_eval_{metric_name}")
    best_text = (
        f" (best validation {metric_name} {best:.4f} at epoch {summary.get('best_epoch')})"
        if isinstance(best, float)
        else ""
    )
    test = {
        k[len("test_") :]: v for k, v in results.items() if k.startswith("test_")
    }  # format_metrics keeps the numbers
    out = Path(output_dir)
    return "\n".join(
        [
            f"{method} on {dataset}: {summary['completed_steps']} steps{took}{best_text}.",
            f"Test ({protocol}): {format_metrics(test)}",
            f"Saved in {out}: model, tokenizer, card (README.md), all_results.json, train_history.json.",
            f'Load it with `import lmke_hf; AutoModel.from_pretrained("{out}")`.',
        ]
    )


def finish_run(
    args, accelerator, model, results: dict, summary: dict, card: ModelCard, text: str, save_fn, write_extras=None
) -> dict:
    """Writes the final folder (main process only) as one transaction (`lmke_hf.folders.FinalSave`): `save_fn(model,
    folder)` (weights, code, tokenizer), the card, `all_results.json`, `train_history.json` and `write_extras(folder)`
    (a script's own files: test tables, plots, thresholds) are staged, then swapped in together, so a crash leaves
    the previous complete model or the new one, never a mix. Removes `best/` unless `--keep_best`; prints `text`
    once; pushes the folder with `--push_to_hub`. Returns `results`."""
    if not accelerator.is_main_process:
        return results
    out = Path(args.output_dir)
    with FinalSave(out) as staging:
        save_fn(model, staging)
        card.save(staging)
        write_json(staging / "all_results.json", results, indent=2, default=float)
        write_json(staging / "train_history.json", summary["history"], indent=2, default=float)
        if write_extras is not None:
            write_extras(staging)
    if not getattr(args, "keep_best", False):  # the final folder holds the same weights
        shutil.rmtree(out / "best", ignore_errors=True)
    print(text, flush=True)
    if args.push_to_hub:  # the saved folder as is: weights, code, tokenizer, entity index, card, plot
        from huggingface_hub import HfApi

        api = HfApi(token=args.hub_token)
        repo_id = api.create_repo(args.hub_model_id or out.name, exist_ok=True).repo_id
        api.upload_folder(repo_id=repo_id, folder_path=str(out), ignore_patterns=PUSH_IGNORE)
    return results
