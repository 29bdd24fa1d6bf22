#!/usr/bin/env python
"""How often a C-LMKE model puts the query's own given entity at the top of the filtered ranking.

    python examples/own_entity_first.py --model outputs/clmke-wn18rr-sn --dataset wn18rr --data_dir ../shared/data --max_queries 300

A bi-encoder sees the given entity's text in the query, so without negatives that contain it (in-batch keys
almost never do) it learns that the key most like the query is the given entity itself, and ranks it first:
the failure `--self_negatives` of train_clmke.py addresses. The filtered protocol keeps the given entity as a
candidate (it is not a known answer), so this failure costs Hits@1 directly. The top candidate is taken after
removing the other known answers (train, validation and test), the gold answer kept, as in the evaluation.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from lmke_hf import check_same_kg, load_model
from lmke_hf.kg import load_kg
from lmke_hf.loading import flag_errors, local_folder
from lmke_hf.training import POSITIVE_INT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a = parser.add_argument
    a("--model", required=True, help="Saved output folder or Hub repo id of a trained C-LMKE model.")
    a("--revision", default=None, help="Hub revision (branch, tag or commit) of --model.")
    a("--token", default=None, help="Hub token for private repos (default: the cached login).")
    a("--dataset", required=True, help="The KG the model was trained on (short name, folder or Hub dataset id).")
    a("--data_dir", default=None, help="Where short dataset names are looked up (default: $LMKE_HF_DATA_DIR).")
    a("--split", default="test", choices=["train", "validation", "test"], help="Split whose triples are the queries.")
    a("--direction", default="tail", choices=["tail", "head"], help="Which entity the queries ask for.")
    a("--max_queries", type=POSITIVE_INT, default=None, help="Only the first N triples of the split.")
    a("--batch_size", type=POSITIVE_INT, default=64, help="Queries per forward pass.")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    return build_parser().parse_args(argv)  # numeric flags are range-checked by their types


@torch.no_grad()
def own_entity_first(model, tokenizer, kg, split="test", direction="tail", max_queries=None, batch_size=64) -> dict:
    """`{"queries": n, "own_entity_first": k, "rate": k / n}` over the first `max_queries` triples of `split`."""
    model.attach_tokenizer(tokenizer)
    model.eval()
    triples = kg.triples(split)[:max_queries]
    given_col, target_col = (0, 2) if direction == "tail" else (2, 0)
    index = kg.answer_index(["train", "validation", "test"], direction)
    keys = model.load_or_build_entity_index().keys
    first = 0
    for start in range(0, len(triples), batch_size):
        part = triples[start : start + batch_size]
        batch = tokenizer.pad(tokenizer.encode_queries(part[:, given_col], part[:, 1], direction))
        q, q_ent = model.embed_queries(batch["input_ids"].to(model.device), batch["attention_mask"].to(model.device))
        scores = model.score_all(q, q_ent, keys).cpu()
        rows, cols = (torch.as_tensor(x) for x in index.pairs(part[:, given_col], part[:, 1]))
        other = cols != torch.as_tensor(part[:, target_col])[rows]  # the gold answer stays a candidate
        scores[rows[other], cols[other]] = float("-inf")
        first += int((scores.argmax(1) == torch.as_tensor(part[:, given_col])).sum())
    return {"queries": len(triples), "own_entity_first": first, "rate": first / max(len(triples), 1)}


def main(args) -> dict:
    # user mistakes end with one line naming the flag, the cheap checks first
    with flag_errors("--data_dir"):
        if args.data_dir is not None:
            local_folder(args.data_dir, required=True)
    with flag_errors("--dataset"):
        local_folder(args.dataset)
    with flag_errors("--model"):
        model, tokenizer = load_model(args.model, args.revision, args.token, task="link-prediction")
    with flag_errors("--dataset"):
        kg = load_kg(args.dataset, data_dir=args.data_dir)
    with flag_errors("--model"):
        check_same_kg(tokenizer, kg, args.model)
    model.to("cuda" if torch.cuda.is_available() else "cpu")
    result = own_entity_first(model, tokenizer, kg, args.split, args.direction, args.max_queries, args.batch_size)
    print(json.dumps({"model": args.model, "split": args.split, "direction": args.direction, **result}))
    return result


if __name__ == "__main__":
    from lmke_hf.cli import run_program

    sys.exit(run_program(sys.modules[__name__]))
