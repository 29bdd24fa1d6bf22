"""The dataset card (``README.md``) that :func:`lmke_hf.kg.save_prepared` writes, and its licence and source notes.

:data:`_LICENCE_NOTES` and :data:`_SOURCE_NOTES` hold, per short name, the licence (Hub ``license:`` value and
prose) and provenance of each benchmark graph; :func:`_dataset_card` renders the card with the YAML ``configs:``
block that lets :func:`datasets.load_dataset` read the three configs.
"""

from __future__ import annotations

from pathlib import Path

from ._common import _PREPARED_FILES, PREPARED_METADATA, SPLITS
from .graph import KnowledgeGraph

_LICENCE_NOTES = {
    "wn18rr": (
        "other",
        "WordNet 3.0 licence (Princeton University), see `Wordnet3.0-LICENSE`. Splits from ConvE (MIT), "
        "texts from LMKE (no licence file).",
    ),
    "wn11": (
        "other",
        "WordNet 3.0 licence (Princeton University), see `Wordnet3.0-LICENSE`; files from KG-BERT "
        "(Apache-2.0) and OpenKE (MIT).",
    ),
    "fb15k-237": (
        "other",
        "Microsoft Research Data License Agreement (see `MSR-LA_Data_Full_Rights_FB15K-237.docx`): "
        "non-commercial or research use only, redistribution under the same terms, modified files must carry "
        "a notice of the change and its date (see *Changes* below). The Freebase FB15k portion is CC-BY 2.5; "
        "description text derived from Wikipedia is CC BY-SA.",
    ),
    "fb13": (
        "unknown",
        "No licence statement found for FB13 (Socher et al. 2013); files from LMKE/KG-BERT "
        "(Apache-2.0) and OpenKE (MIT). Entity texts derived from Wikipedia are CC BY-SA.",
    ),
    "umls": (
        "unknown",
        "No licence statement found for UMLS (Kok & Domingos 2007); descriptions come from "
        "Wikipedia via KG-BERT's `wiki.py` (CC BY-SA).",
    ),
    "nations": ("unknown", "No licence statement found for Nations (Kok & Domingos 2007); files from ConvE (MIT)."),
    "kinship": ("unknown", "No licence statement found for Kinship (Kok & Domingos 2007); files from ConvE (MIT)."),
}

_SOURCE_NOTES = {
    "wn18rr": "Neph0s/LMKE `data/WN18RR/` (splits byte-identical to ConvE's WN18RR).",
    "fb15k-237": "Neph0s/LMKE `data/fb15k-237/` (train from ConvE, identical to KG-BERT's); "
    "`entity2text_firstsentence.txt` from StAR_KGC is a stand-in for the paper's descriptions.",
    "fb13": "Neph0s/LMKE `data/FB13/` (train rebuilt from OpenKE, byte-identical to KG-BERT's).",
    "umls": "Neph0s/LMKE `data/umls/` (triple sets equal ConvE's umls).",
    "wn11": "yao8839836/kg-bert `data/WN11/` (train rebuilt from OpenKE, byte-identical to KG-BERT's).",
    "nations": "TimDettmers/ConvE `nations.tar.gz`.",
    "kinship": "TimDettmers/ConvE `kinship.tar.gz`.",
}


def _public_source(source: str) -> str:
    """The source without the local part of a folder path (the card and metadata may be published)."""
    return source if source.startswith("hub:") else Path(source).name


def _card_yaml(name: str, licence: str) -> str:
    lines = [
        "---",
        f"pretty_name: {name} (lmke_hf)",
        f"license: {licence}",
        "tags:",
        "- knowledge-graph",
        "- link-prediction",
        "- triple-classification",
        "- lmke-hf",
        "configs:",
    ]
    for config, files in _PREPARED_FILES.items():
        lines.append(f"- config_name: {config}")
        if config == "triples":
            lines.append("  default: true")
        lines.append("  data_files:")
        for split, path in files.items():
            lines += [f"  - split: {split}", f"    path: {path}"]
    lines.append("---")
    return "\n".join(lines)


def _dataset_card(kg: KnowledgeGraph, statistics: dict, prepared_at: str) -> str:
    from ..configuration_lmke import CITATION  # here: reading a KG needs no transformers

    inductive = kg.report.get("inductive")
    original = kg.name.removesuffix("-inductive") if inductive else kg.name  # an inductive split keeps its licence
    licence, licence_text = _LICENCE_NOTES.get(
        original, ("unknown", "No licence information is recorded for this graph; check its source.")
    )
    splits = statistics["splits"]
    rows = [
        "| | entities | relations | train | validation | test |",
        "|---|---|---|---|---|---|",
        f"| triples | {statistics['entities']:,} | {statistics['relations']:,} | "
        + " | ".join(
            f"{splits[s]['triples']:,}" + (f" + {splits[s]['negatives']:,} negatives" if splits[s]["labelled"] else "")
            for s in SPLITS
        )
        + " |",
    ]
    negatives = kg.report.get("negatives", {})
    held_out = (
        [
            f"- Inductive split (`make_inductive_split`, fraction {inductive['fraction']}, seed {inductive['seed']}): "
            f"{inductive['held_out_validation_entities']:,} validation and {inductive['held_out_test_entities']:,} test "
            "entities never occur in `train`, and every positive validation and test triple touches one of them."
        ]
        if inductive
        else []
    )
    cleaning = [
        f"- `{split}`: {info.get('duplicate_rows_dropped', 0)} duplicated rows and "
        f"{info.get('conflicting_triples_dropped', 0)} triples labelled both true and false dropped"
        for split, info in kg.report.get("splits", {}).items()
    ]
    return "\n".join(
        [
            _card_yaml(kg.name, licence),
            "",
            f"# {kg.name} for LMKE / C-LMKE",
            "",
            "Knowledge-graph triples with entity and relation texts, prepared by `lmke_hf.kg.save_prepared` for "
            "LMKE (Wang et al., *Language Models as Knowledge Embeddings*, IJCAI 2022).",
            "",
            "## Statistics",
            "",
            *rows,
            "",
            f"- Entity descriptions: `{statistics['description_source']}`, "
            f"{statistics['avg_description_words']} words on average "
            f"(median {statistics['median_description_words']}).",
            f"- Entities unseen in train: {statistics['entities_unseen_in_train']}.",
            *held_out,
            *(f"- Negatives of `{split}`: {how}." for split, how in negatives.items()),
            "",
            "## Usage",
            "",
            "```python",
            "from datasets import load_dataset",
            'triples = load_dataset("<repo_id>", "triples")      # head, relation, tail as original ids, label',
            'entities = load_dataset("<repo_id>", "entities", split="train")  # id, name, description',
            "",
            "from lmke_hf.kg import load_kg",
            'kg = load_kg("<repo_id>")  # integer-coded, row index of entities = entity id',
            "```",
            "",
            "`label` is 1 for true and 0 for false triples; splits listed without negatives hold positives only "
            f"(`label` is 1 everywhere). `{PREPARED_METADATA}` records the description source and negatives seed"
            + (" and the inductive split." if inductive else "."),
            "",
            "## Source",
            "",
            f"Read from `{_public_source(kg.source)}`. "
            + _SOURCE_NOTES.get(original, "See the original release of this graph for provenance."),
            "",
            "## Licence",
            "",
            licence_text,
            "",
            "## Changes",
            "",
            f"Converted to parquet by lmke_hf on {prepared_at}: string ids kept, KG-BERT labels 1/-1 mapped to 1/0.",
            *cleaning,
            "",
            "## Citation",
            "",
            "```bibtex",
            CITATION,
            "```",
            "",
        ]
    )
