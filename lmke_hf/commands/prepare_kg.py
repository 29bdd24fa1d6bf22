"""Convert a KG-BERT / LMKE data folder into a Hub-ready dataset folder (and optionally push it).

Example::

    python examples/prepare_kg.py umls --data_dir /path/to/data --output_dir outputs/umls-kg
    python examples/prepare_kg.py wn18rr --data_dir /path/to/data --output_dir outputs/wn18rr-kg \\
        --push_to_hub my-org/wn18rr-lmke

Flags are spelled as in the other scripts (`--output_dir`); the dashed spellings of version 0.1.0
(`--output-dir`, `--push-to-hub`, ...) are still accepted and go in the next release.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from lmke_hf.errors import UsageError
from lmke_hf.folders import check_output_dir
from lmke_hf.kg import add_classification_negatives, load_kg, make_inductive_split, push_prepared_to_hub, save_prepared
from lmke_hf.training import NON_NEGATIVE_INT, number


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "name_or_path",
        help="KG-BERT folder, prepared folder, short name (wn18rr, fb15k-237, fb13, umls, wn11, nations, kinship) "
        "or Hub dataset repo id.",
    )
    parser.add_argument(
        "--data_dir",
        "--data-dir",
        default=None,
        help="Folder holding one sub-folder per short name (default: $LMKE_HF_DATA_DIR).",
    )
    parser.add_argument(
        "--description",
        default="auto",
        help="'auto' (longest description file available), 'name' (names only) or a text file name in the folder.",
    )
    parser.add_argument("--revision", default=None, help="Hub revision when name_or_path is a Hub repo id.")
    parser.add_argument(
        "--output_dir", "--output-dir", required=True, help="Folder to write the prepared dataset into."
    )
    parser.add_argument(
        "--negatives_seed",
        "--negatives-seed",
        type=int,
        default=0,
        help="Seed of the validation/test negatives generated for splits that ship without labels.",
    )
    parser.add_argument(
        "--no_negatives",
        "--no-negatives",
        action="store_true",
        help="Do not generate validation/test negatives; unlabelled splits stay positives only.",
    )
    parser.add_argument(
        "--inductive_fraction",
        type=number(float, 0, 1, strict=True),
        default=None,
        help="Write the inductive split instead (lmke_hf.kg.make_inductive_split): this share of the entities held out "
        "of training with all their triples, half for validation, half for test.",
    )
    parser.add_argument("--inductive_seed", type=NON_NEGATIVE_INT, default=0, help="Seed of the inductive split.")
    parser.add_argument("--no_card", "--no-card", action="store_true", help="Do not write the README.md dataset card.")
    parser.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="Replace a dataset that this command prepared earlier in --output_dir (any other non-empty folder is refused).",
    )
    parser.add_argument(
        "--push_to_hub",
        "--push-to-hub",
        default=None,
        metavar="REPO_ID",
        help="Upload the folder to this Hub dataset repo (token from HF_TOKEN or `huggingface-cli login`).",
    )
    parser.add_argument("--private", action="store_true", help="Create the Hub repo as private.")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> Path:
    source = Path(args.name_or_path) if Path(args.name_or_path).exists() else None
    inputs = {"--data_dir": args.data_dir or os.environ.get("LMKE_HF_DATA_DIR"), "name_or_path": source}
    # refused before the KG is read; save_prepared checks again before it writes
    check_output_dir(
        args.output_dir,
        "prepared-dataset",
        inputs=inputs,
        replace_flag="--overwrite_output_dir",
        replace=args.overwrite_output_dir,
    )
    kg = load_kg(args.name_or_path, data_dir=args.data_dir, description=args.description, revision=args.revision)
    if args.inductive_fraction is not None:
        try:
            kg = make_inductive_split(kg, args.inductive_fraction, args.inductive_seed)
        except ValueError as err:
            raise UsageError(f"--inductive_fraction: {err}") from None
    if not args.no_negatives:
        kg = add_classification_negatives(kg, seed=args.negatives_seed)
    out = save_prepared(kg, args.output_dir, card=not args.no_card, overwrite=args.overwrite_output_dir, inputs=inputs)
    statistics = kg.statistics()
    print(json.dumps({k: v for k, v in statistics.items() if k != "report"}, indent=2))
    print(f"wrote {out}")
    if args.push_to_hub:
        commit = push_prepared_to_hub(out, args.push_to_hub, private=args.private)
        print(f"pushed to {args.push_to_hub}: {getattr(commit, 'commit_url', commit)}")
    return out


if __name__ == "__main__":
    import sys

    from lmke_hf.cli import run_program

    sys.exit(run_program(sys.modules[__name__]))
