"""A tiny knowledge graph in the KG-BERT / LMKE file layout, written in code (no real data needed).

``write_toy_kg(root)`` writes the folder and returns its path; ``TOY`` holds the same content as Python
objects so that tests can compute expected values by brute force. Import it from a test module
(``from conftest_data import TOY, write_toy_kg, toy_kg_dir``); the ``toy_kg_dir`` fixture is then usable.

Content: 10 entities ``e0``..``e9``, 3 relations ``r0``..``r2``; ``e8`` occurs only in dev and ``e9`` only
in test (entities unseen in train); ``e7`` has no long description (falls back to its name).
"""

from __future__ import annotations

from pathlib import Path

import pytest

ENTITIES = [f"e{i}" for i in range(10)]
RELATIONS = ["r0", "r1", "r2"]
NAMES = {e: f"entity {e[1:]}" for e in ENTITIES}
DESCRIPTIONS = {e: f"entity {e[1:]} is a thing with a long description number {e[1:]}" for e in ENTITIES if e != "e7"}
RELATION_TEXT = {"r0": "relation zero", "r1": "relation one", "r2": "relation two"}

TRAIN = [
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
DEV = [("e8", "r0", "e1"), ("e0", "r0", "e4"), ("e3", "r1", "e2")]
TEST = [("e9", "r1", "e0"), ("e0", "r0", "e5"), ("e6", "r2", "e8")]

TOY = {
    "entities": ENTITIES,
    "relations": RELATIONS,
    "names": NAMES,
    "descriptions": DESCRIPTIONS,
    "relation_text": RELATION_TEXT,
    "train": TRAIN,
    "validation": DEV,
    "test": TEST,
}


def _rows(rows) -> str:
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
        "train.tsv": _rows(TRAIN),
        "dev.tsv": _rows(DEV),
        "test.tsv": _rows(TEST),
        "entities.txt": "".join(e + "\n" for e in ENTITIES),
        "relations.txt": "".join(r + "\n" for r in RELATIONS),
        "entity2text.txt": _rows(NAMES.items()),
        "entity2textlong.txt": _rows(DESCRIPTIONS.items()),
        "relation2text.txt": _rows(RELATION_TEXT.items()),
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


@pytest.fixture
def toy_kg_dir(tmp_path) -> Path:
    """The toy graph written under ``tmp_path / "toy"``."""
    return write_toy_kg(tmp_path)
