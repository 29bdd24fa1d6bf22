"""What several test modules share, in one place: two knowledge graphs written in code, the example scripts
loaded as modules with their command lines, and weight comparisons. Fixtures built on them live in conftest.py.

- The *toy* KG (`TOY`, `write_toy_kg`; fixture `toy_kg_dir`), for the data and input tests: 10 entities
  ``e0``..``e9``, 3 relations ``r0``..``r2``; ``e8`` occurs only in dev and ``e9`` only in test (entities unseen in
  train); ``e7`` has no long description (falls back to its name). `TOY` holds the same content as Python objects
  so that tests can compute expected values by brute force.
- The *tiny* KG (`write_tiny_kg`, `TRAIN` / `DEV` / `TEST`, `ENTITIES`, `RELATIONS`; fixture `kg_dir`), for the
  training-script tests: 12 entities named with words of the tiny BERT vocabulary of `conftest.tiny_bert_dir`, 3
  relations, 40 training triples, 6 dev and 6 test triples, in the KG-BERT layout. Every entity occurs in train.
  Deterministic.
- `_load_script`, `_common`, `_clmke_argv`, `RESUME_FLAGS`: the command programs and their flags in the tests.
- The tiny *model* KG (`KG`, `LENGTHS`, `TRIPLES`, `QUERIES`, `DEGREES`; batches `lmke_batch`, `clmke_batch`,
  `gold_answer_ids`; `MODEL_CASES`; fixtures `tok`, `make_model`, `kg_tok` in conftest.py), for the model,
  tokenizer, feature and evaluation-loop tests: 7 entities ``Q0``..``Q6`` and 3 relations ``P0``..``P2`` given
  as Python lists to `LmkeTokenizer` (no files).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from lmke_hf import ClmkeForLinkPrediction, LmkeForTripleClassification, LmkeTokenizer

# ------------------------------------------------------------------------------------------------ the toy KG


_TOY_ENTITIES = [f"e{i}" for i in range(10)]
_TOY_RELATIONS = ["r0", "r1", "r2"]
_TOY_NAMES = {e: f"entity {e[1:]}" for e in _TOY_ENTITIES}
_TOY_DESCRIPTIONS = {
    e: f"entity {e[1:]} is a thing with a long description number {e[1:]}" for e in _TOY_ENTITIES if e != "e7"
}
_TOY_RELATION_TEXT = {"r0": "relation zero", "r1": "relation one", "r2": "relation two"}

_TOY_TRAIN = [
    ("e0", "r0", "e1"),
    ("e0", "r0", "e2"),
    ("e0", "r1", "e3"),
    ("e1", "r0", "e2"),
    ("e1", "r2", "e4"),
    ("e2", "r1", "e5"),
    ("e3", "r2", "e6"),
    ("e4", "r0", "e7"),
    ("e5", "r1", "e0"),
    ("e6", "r2", "e1"),
    ("e7", "r0", "e3"),
    ("e2", "r0", "e6"),
]
_TOY_DEV = [("e8", "r0", "e1"), ("e0", "r0", "e4"), ("e3", "r1", "e2")]
_TOY_TEST = [("e9", "r1", "e0"), ("e0", "r0", "e5"), ("e6", "r2", "e8")]

TOY = {
    "entities": _TOY_ENTITIES,
    "relations": _TOY_RELATIONS,
    "names": _TOY_NAMES,
    "descriptions": _TOY_DESCRIPTIONS,
    "relation_text": _TOY_RELATION_TEXT,
    "train": _TOY_TRAIN,
    "validation": _TOY_DEV,
    "test": _TOY_TEST,
}


def _toy_rows(rows) -> str:
    return "".join("\t".join(map(str, row)) + "\n" for row in rows)


def write_toy_kg(root: Path, folder_name: str = "toy", crlf: bool = False, overrides: dict | None = None) -> Path:
    """Write the toy graph to ``root / folder_name`` and return that folder.

    Args:
        root: parent folder (e.g. ``tmp_path``).
        folder_name: folder name; a short name such as ``"wn18rr"`` selects that dataset's text layout.
        crlf: write every file with ``\\r\\n`` line endings.
        overrides: file name -> content that replaces (or, with ``None``, removes) the default file.
    """
    folder = root / folder_name
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train.tsv": _toy_rows(_TOY_TRAIN),
        "dev.tsv": _toy_rows(_TOY_DEV),
        "test.tsv": _toy_rows(_TOY_TEST),
        "entities.txt": "".join(e + "\n" for e in _TOY_ENTITIES),
        "relations.txt": "".join(r + "\n" for r in _TOY_RELATIONS),
        "entity2text.txt": _toy_rows(_TOY_NAMES.items()),
        "entity2textlong.txt": _toy_rows(_TOY_DESCRIPTIONS.items()),
        "relation2text.txt": _toy_rows(_TOY_RELATION_TEXT.items()),
    }
    for name, content in (overrides or {}).items():
        files[name] = content
    for name, content in files.items():
        if content is None:
            continue
        if crlf:
            content = content.replace("\n", "\r\n")
        (folder / name).write_bytes(content.encode("utf-8"))
    return folder


# ------------------------------------------------------------------------------------------------ the tiny KG


WORDS = ["paris", "france", "berlin", "germany", "rome", "italy", "red", "blue", "green", "one", "two", "three"]
ENTITIES = [f"/m/e{i:02d}" for i in range(len(WORDS))]
RELATIONS = ["/r/located", "/r/capital", "/r/born"]
RELATION_TEXT = {"/r/located": "located in", "/r/capital": "capital of", "/r/born": "born in"}
DESCRIPTION_TAILS = [
    "is a city",
    "is a country",
    "is a new city",
    "is an old country",
    "is a big thing",
    "is a small thing",
]


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


# ------------------------------------------------------------------------------------------------ the example scripts

REPO = Path(__file__).resolve().parents[1]
LINK_PREDICTION_KEYS = ("test_mrr", "test_mr", "test_hits@1", "test_hits@3", "test_hits@10")


def _load_script(name: str):
    """The program behind a command (`lmke_hf.commands.<name>`: train_clmke, train_lmke, evaluate, prepare_kg), or
    an example of `examples/` that is only an example (own_entity_first), imported once by path."""
    if importlib.util.find_spec(f"lmke_hf.commands.{name}") is not None:
        return importlib.import_module(f"lmke_hf.commands.{name}")
    module_name = f"_lmke_example_{name}"
    if module_name not in sys.modules:
        spec = importlib.util.spec_from_file_location(module_name, REPO / "examples" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    return sys.modules[module_name]


def _common(kg_dir, encoder, output_dir, *extra) -> list[str]:
    return [
        "--dataset",
        str(kg_dir),
        "--encoder",
        str(encoder),
        "--output_dir",
        str(output_dir),
        "--max_entity_description_length",
        "8",
        "--max_relation_description_length",
        "4",
        "--per_device_train_batch_size",
        "4",
        "--per_device_eval_batch_size",
        "16",
        "--no_progress",
        "--seed",
        "7",
        *map(str, extra),
    ]


def _clmke_argv(kg_dir, encoder, output_dir, *extra) -> list[str]:
    return _common(kg_dir, encoder, output_dir, "--max_key_description_length", "8", *extra)


RESUME_FLAGS = ("--lr_scheduler_type", "constant", "--checkpointing_steps", "2")
"""Constant LR and a checkpoint every 2 steps: 40 training triples -> 80 queries -> 20 batches of 4 per epoch, so 6 steps end mid-epoch."""


def _assert_same_weights(path_a: Path, path_b: Path, atol: float = 1e-6) -> None:
    a, b = load_file(str(path_a)), load_file(str(path_b))
    assert sorted(a) == sorted(b)
    worst = {k: (a[k].float() - b[k].float()).abs().max().item() for k in a}
    bad = {k: v for k, v in worst.items() if v > atol}
    assert not bad, f"{len(bad)} tensors differ, worst {max(bad.items(), key=lambda kv: kv[1])}"


def _steps_differ(path_a: Path, path_b: Path) -> bool:
    a, b = load_file(str(path_a)), load_file(str(path_b))
    return any(not torch.equal(a[k], b[k]) for k in a)


# ---------------------------------------------------------------------------------------------------- the tiny model KG
# Names and descriptions use word pieces of conftest's tiny vocabulary. Q2 has no description, Q4 no name (its
# token is initialised from its description), Q6 a two-piece name.
KG = dict(
    entity_ids=["Q0", "Q1", "Q2", "Q3", "Q4", "Q5", "Q6"],
    entity_names=["paris", "france", "berlin", "germany", "", "italy", "new paris"],
    entity_descriptions=[
        "paris is the capital of france",
        "france is a country",
        "",
        "germany is a big country in the graph",
        "rome is an old city",
        "italy is a country with a capital",
        "new paris is a small city",
    ],
    relation_ids=["P0", "P1", "P2"],
    relation_names=["capital of", "located in", "born in"],
    relation_descriptions=["the capital city of a country", "", "person born in a city"],
)


LENGTHS = dict(max_entity_description_length=8, max_relation_description_length=4, max_key_description_length=12)


NUM_ENTITIES, NUM_RELATIONS = len(KG["entity_ids"]), len(KG["relation_ids"])


DEGREES = [3.0, 0.0, 5.0, 1.0, 2.0, 7.0, 4.0]


# LMKE batch: (h, r, t); Q2's empty description makes the sequences of unequal length (padding is exercised).
TRIPLES = dict(heads=[0, 1, 3, 6], relations=[0, 1, 2, 0], tails=[1, 0, 4, 2])


# C-LMKE batch: query i = (given[i], relation[i], direction[i]); key i = its gold answer gold[i] (all distinct).
QUERIES = dict(
    given=[0, 3, 2, 5, 6, 1],
    relations=[0, 1, 2, 0, 1, 2],
    directions=["tail", "head", "tail", "head", "tail", "head"],
    gold=[1, 2, 4, 0, 3, 5],
)


TINY_ENCODER = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64
)


def lmke_batch(tok: LmkeTokenizer) -> dict[str, torch.Tensor]:
    return tok.pad(tok.encode_triples(TRIPLES["heads"], TRIPLES["relations"], TRIPLES["tails"]))


def clmke_batch(tok: LmkeTokenizer) -> dict[str, torch.Tensor]:
    queries = tok.encode_queries(QUERIES["given"], QUERIES["relations"], QUERIES["directions"])
    return {**tok.pad(queries, prefix="query_"), **tok.pad(tok.encode_keys(QUERIES["gold"]), prefix="key_")}


def gold_answer_ids(extra: dict[int, list[int]] | None = None) -> torch.Tensor:
    """(B, 3) known answers padded with -1: the gold entity of each query plus `extra[i]`."""
    rows = [[g, *(extra or {}).get(i, [])] for i, g in enumerate(QUERIES["gold"])]
    return torch.tensor([r + [-1] * (3 - len(r)) for r in rows])


# ---------------------------------------------------------------------------------------------------- model cases
@dataclass(frozen=True)
class ModelCase:
    """One model under test: how to build it, a batch, the loss-bearing arguments and the output shapes."""

    name: str
    model_class: type
    make_batch: Callable[[LmkeTokenizer], dict]
    loss_kwargs: dict[str, Callable[[int], dict]]  # way of asking for a loss -> kwargs (from batch size)
    shapes: dict[str, tuple[str, ...]]  # output field -> symbolic shape (B: batch, H: hidden)
    config_kwargs: dict = field(default_factory=dict)
    degrees: list[float] | None = None


MODEL_CASES = [
    ModelCase(
        name="lmke",
        model_class=LmkeForTripleClassification,
        make_batch=lmke_batch,
        loss_kwargs={"labels": lambda b: {"labels": torch.tensor([1.0, 0.0] * (b // 2))}},
        shapes={
            "logits": ("B",),
            "cls_embeddings": ("B", "H"),
            "head_embeddings": ("B", "H"),
            "relation_embeddings": ("B", "H"),
            "tail_embeddings": ("B", "H"),
        },
    ),
    ModelCase(
        name="clmke",
        model_class=ClmkeForLinkPrediction,
        make_batch=clmke_batch,
        loss_kwargs={
            "answer_ids": lambda b: {"answer_ids": gold_answer_ids()},
            "labels": lambda b: {"labels": torch.eye(b)},
        },
        shapes={
            "logits": ("B", "B"),
            "query_embeddings": ("B", "H"),
            "key_embeddings": ("B", "H"),
            "query_entity_ids": ("B",),
            "key_entity_ids": ("B",),
        },
        degrees=DEGREES,
    ),
    ModelCase(
        name="clmke_nodeg",
        model_class=ClmkeForLinkPrediction,
        make_batch=clmke_batch,
        loss_kwargs={"labels": lambda b: {"labels": torch.eye(b)}},
        shapes={"logits": ("B", "B"), "query_embeddings": ("B", "H"), "key_embeddings": ("B", "H")},
        config_kwargs={"use_degree_features": False},
    ),
]


CASES = {c.name: c for c in MODEL_CASES}


MAIN_CASES = [CASES["lmke"], CASES["clmke"]]


_ids = lambda case: case.name  # noqa: E731


def cli_refusal(capsys, argv) -> str:
    """Runs `lmke-hf argv`, checks that it refused (exit status 1, a message on stderr and nothing on stdout, no
    traceback) and returns the message."""
    from lmke_hf import cli

    capsys.readouterr()
    assert cli.main([str(a) for a in argv]) == 1
    printed = capsys.readouterr()
    assert printed.out == "" and "Traceback" not in printed.err and printed.err.strip(), printed
    return printed.err.strip()


def counting_trained_steps(monkeypatch) -> list[int]:
    """Records, for each training step the loop takes from now on, how many steps were completed before it: a
    resumed segment that really continued from step k records [k, k + 1, ...], one that silently trained from
    scratch records [0, 1, ...] (its weights could still match an uninterrupted run's)."""
    from lmke_hf.training import loop

    steps, original = [], loop.TrainingLoop.train_step

    def train_step(self, batch):
        steps.append(self.state.completed_steps)
        return original(self, batch)

    monkeypatch.setattr(loop.TrainingLoop, "train_step", train_step)
    return steps
