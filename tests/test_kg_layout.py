"""The layout of ``lmke_hf.kg``: no import cycles, warnings that name the caller, prepared folders."""

from __future__ import annotations

import ast
import json
import warnings
from pathlib import Path

import lmke_hf.kg
from lmke_hf.kg import PREPARED_METADATA, load_kg, save_prepared

from helpers import write_toy_kg  # noqa: E402

KG_DIR = Path(lmke_hf.kg.__file__).parent


def test_kg_modules_import_each_other_without_cycles():
    graph = {}
    for path in KG_DIR.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[path.stem] = {
            (node.module or "").split(".")[0]
            for node in tree.body  # module level only: a function-level import cannot make an import cycle
            if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module
        }
    assert all(graph[name] <= set(graph) for name in graph), graph
    visiting, done = set(), set()

    def visit(name, chain):
        assert name not in visiting, f"import cycle: {' -> '.join(chain + [name])}"
        if name in done:
            return
        visiting.add(name)
        for target in graph[name]:
            visit(target, chain + [name])
        visiting.discard(name)
        done.add(name)

    for name in graph:
        visit(name, [])
    assert "__init__" not in {t for targets in graph.values() for t in targets}


def _recorded(*args, **kwargs):
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        load_kg(*args, **kwargs)
    return record


def test_warnings_name_the_callers_line_not_a_kg_module(tmp_path):
    # _warn skips every frame of lmke_hf.kg, whichever of its modules the warning comes from
    folder = write_toy_kg(tmp_path, overrides={"relation2text.txt": None})
    record = _recorded(str(folder))  # kgbert -> _common._warn
    assert any("no relation2text.txt" in str(w.message) for w in record)
    assert {w.filename for w in record} == {__file__}

    out = save_prepared(_quiet_load(folder), tmp_path / "prepared")
    metadata = json.loads((out / PREPARED_METADATA).read_text(encoding="utf-8"))
    (out / PREPARED_METADATA).write_text(json.dumps({**metadata, "from_the_future": 1}), encoding="utf-8")
    record = _recorded(str(out))  # prepared -> _common._warn
    assert any("unknown metadata keys ['from_the_future']" in str(w.message) for w in record)
    assert {w.filename for w in record} == {__file__}


def _quiet_load(folder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_kg(str(folder))
