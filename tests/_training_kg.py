"""A tiny knowledge graph for the training-script tests (tests/test_training.py), written in code.

12 entities (named with words of the tiny BERT vocabulary of ``conftest.tiny_bert_dir``), 3 relations, 40
training triples, 6 dev and 6 test triples, in the KG-BERT layout: train.tsv, dev.tsv, test.tsv, entities.txt,
relations.txt, entity2text.txt, relation2text.txt. Every entity occurs in train. Deterministic.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = ["paris", "france", "berlin", "germany", "rome", "italy", "red", "blue", "green", "one", "two", "three"]
ENTITIES = [f"/m/e{i:02d}" for i in range(len(WORDS))]
RELATIONS = ["/r/located", "/r/capital", "/r/born"]
RELATION_TEXT = {"/r/located": "located in", "/r/capital": "capital of", "/r/born": "born in"}
DESCRIPTION_TAILS = ["is a city", "is a country", "is a new city", "is an old country", "is a big thing", "is a small thing"]


def _triples(seed: int = 0, n_train: int = 40, n_dev: int = 6, n_test: int = 6):
    rng = np.random.default_rng(seed)
    E, R = len(ENTITIES), len(RELATIONS)
    chosen: list[tuple[int, int, int]] = []
    seen = set()
    # a ring first so that every entity occurs in train
    for i in range(E):
        t = (i, i % R, (i + 1) % E)
        seen.add(t)
        chosen.append(t)
    while len(chosen) < n_train + n_dev + n_test:
        h, r, t = int(rng.integers(E)), int(rng.integers(R)), int(rng.integers(E))
        if h == t or (h, r, t) in seen:
            continue
        seen.add((h, r, t))
        chosen.append((h, r, t))
    train = chosen[:n_train]
    dev = chosen[n_train : n_train + n_dev]
    test = chosen[n_train + n_dev :]
    return train, dev, test


TRAIN, DEV, TEST = _triples()


def _rows(rows) -> str:
    return "".join("\t".join(map(str, row)) + "\n" for row in rows)


def _named(triples):
    return [(ENTITIES[h], RELATIONS[r], ENTITIES[t]) for h, r, t in triples]


def write_tiny_kg(root: Path, name: str = "tinykg", test=None, drop=()) -> Path:
    """Writes the graph to ``root / name`` and returns the folder.

    Args:
        test: integer triples to write as test.tsv instead of ``TEST`` (e.g. with relabelled gold answers).
        drop: file names not to write (e.g. ``("dev.tsv",)``).
    """
    folder = Path(root) / name
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train.tsv": _rows(_named(TRAIN)),
        "dev.tsv": _rows(_named(DEV)),
        "test.tsv": _rows(_named(TEST if test is None else test)),
        "entities.txt": "".join(e + "\n" for e in ENTITIES),
        "relations.txt": "".join(r + "\n" for r in RELATIONS),
        "entity2text.txt": _rows(
            (e, f"{w} {DESCRIPTION_TAILS[i % len(DESCRIPTION_TAILS)]} of {WORDS[(i + 3) % len(WORDS)]}")
            for i, (e, w) in enumerate(zip(ENTITIES, WORDS))
        ),
        "relation2text.txt": _rows(RELATION_TEXT.items()),
    }
    for file_name, content in files.items():
        if file_name in drop:
            continue
        (folder / file_name).write_text(content, encoding="utf-8")
    return folder


def train_degrees() -> np.ndarray:
    """Occurrences of each entity as head or tail in TRAIN (what C-LMKE must store)."""
    t = np.asarray(TRAIN)
    return np.bincount(t[:, [0, 2]].reshape(-1), minlength=len(ENTITIES))
