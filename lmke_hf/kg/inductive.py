"""Inductive link prediction: entities held out of training with all their triples, ranked by their descriptions
alone (the protocol of SimKGC's Wikidata5M-inductive, on any graph).

`make_inductive_split` draws a seeded share of the entities that occur in triples, half for validation and half
for test. The new training split is the old one without any triple that touches a held-out entity; the new
validation (test) split is every positive triple of any old split that touches a validation (test) entity, and
nothing else. So no held-out entity occurs in training, every evaluation triple has at least one entity the model
never trained on, and the held-out entities keep their rows (ids, names, descriptions), so a model's vocabulary
covers them.
"""

from __future__ import annotations

import dataclasses

import datasets
import numpy as np

from .graph import KnowledgeGraph


def make_inductive_split(kg: KnowledgeGraph, fraction: float = 0.1, seed: int = 0) -> KnowledgeGraph:
    """A copy of `kg` whose validation and test entities never occur in its training split (see the module).

    Args:
        fraction: share of the entities that occur in triples to hold out (half for validation, half for test).
        seed: the draw's seed; the same graph, fraction and seed give the same split.

    Returns:
        A `KnowledgeGraph` named `<name>-inductive` with positive-only splits; `report["inductive"]` holds the
        fraction, the seed, the held-out entity counts and how many triples left training or were dropped.

    Raises:
        ValueError: `fraction` outside (0, 1) or leaving fewer than two entities to hold out or to train on; `kg`
            already inductive (its `report["inductive"]` set, e.g. a folder from `prepare --inductive_fraction`).
    """
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction < 1:
        raise ValueError(
            f"`fraction` (share of entities held out) must lie strictly between 0 and 1, got {fraction!r}."
        )
    if kg.report.get("inductive"):
        done = kg.report["inductive"]
        raise ValueError(
            f"{kg.name} is already an inductive split (fraction {done.get('fraction')}, seed {done.get('seed')}); "
            "splitting it again would hold out entities of its training split too. Use it as it is (leave out "
            "--inductive_fraction), or split the original graph."
        )
    for split in ("train", "validation", "test"):
        kg._check_split(split)
    old = {split: kg.triples(split) for split in ("train", "validation", "test")}
    everything = np.unique(np.concatenate(list(old.values())), axis=0)
    occurring = np.unique(everything[:, [0, 2]])
    count = int(round(fraction * len(occurring)))
    if count < 2 or count > len(occurring) - 2:
        raise ValueError(
            f"`fraction`={fraction} holds out {count} of the {len(occurring)} entities that occur in {kg.name}'s triples; "
            "pick a fraction that leaves at least two for evaluation and two for training."
        )
    held = np.random.default_rng(seed).choice(occurring, size=count, replace=False)
    held_validation, held_test = np.sort(held[: count // 2]), np.sort(held[count // 2 :])

    def touches(triples, entities):
        return np.isin(triples[:, 0], entities) | np.isin(triples[:, 2], entities)

    in_test = touches(everything, held_test)
    in_validation = ~in_test & touches(everything, held_validation)
    train = old["train"][~touches(old["train"], held)]
    splits = datasets.DatasetDict(
        {
            name: datasets.Dataset.from_dict(
                {"head": part[:, 0], "relation": part[:, 1], "tail": part[:, 2]},
                features=datasets.Features({c: datasets.Value("int64") for c in ("head", "relation", "tail")}),
            )
            for name, part in (
                ("train", train),
                ("validation", everything[in_validation]),
                ("test", everything[in_test]),
            )
        }
    )
    unused = ~in_test & ~in_validation
    old_evaluation = np.unique(np.concatenate([old["validation"], old["test"]]), axis=0)
    report = dict(kg.report)
    report["inductive"] = {
        "fraction": float(fraction),
        "seed": int(seed),
        "held_out_validation_entities": len(held_validation),
        "held_out_test_entities": len(held_test),
        "train_triples_removed": int(len(old["train"]) - len(train)),
        "evaluation_triples_dropped": int(_count_rows(old_evaluation, everything[unused])),
    }
    return dataclasses.replace(kg, name=f"{kg.name}-inductive", splits=splits, report=report)


def held_out_entities(kg: KnowledgeGraph) -> np.ndarray:
    """Entities of an inductive graph's validation and test splits that never occur in its training split."""
    train = kg.triples("train")
    seen = np.unique(train[:, [0, 2]])
    evaluation = np.concatenate([kg.triples("validation"), kg.triples("test")])
    return np.setdiff1d(np.unique(evaluation[:, [0, 2]]), seen)


def _count_rows(rows: np.ndarray, among: np.ndarray) -> int:
    """How many of `rows` occur in `among` (both (n, 3) int64)."""
    if not len(rows) or not len(among):
        return 0
    width = max(int(rows.max()), int(among.max())) + 1
    key = lambda t: (t[:, 0] * width + t[:, 1]) * width + t[:, 2]  # noqa: E731
    return int(np.isin(key(rows), key(among)).sum())


__all__ = ["held_out_entities", "make_inductive_split"]
