"""Where the code lives: weight names that checkpoints depend on, the evaluation package's exports, and the files a saved model's remote code needs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import BertConfig

import lmke_hf
from lmke_hf import ClmkeConfig, ClmkeForLinkPrediction, LmkeConfig, LmkeForTripleClassification

SNAPSHOT = Path(__file__).parent / "snapshots" / "state_dict_keys.json"
TINY_ENCODER = dict(
    vocab_size=20,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
)
STATE_DICT_CASES = {
    "lmke": (LmkeForTripleClassification, LmkeConfig, {}),
    "clmke": (ClmkeForLinkPrediction, ClmkeConfig, {}),
    "clmke_cosine_infonce_own_entity": (
        ClmkeForLinkPrediction,
        ClmkeConfig,
        {"scorer": "cosine", "loss": "infonce", "own_entity_bias": True},
    ),
}


@pytest.mark.parametrize("name", sorted(STATE_DICT_CASES))
def test_state_dict_names_and_shapes_are_unchanged(name):
    """The snapshot was written before modeling_lmke.py was split: saved checkpoints (and the checkpoints of
    running jobs) load only while every weight keeps its name and shape."""
    model_class, config_class, kwargs = STATE_DICT_CASES[name]
    config = config_class(encoder=BertConfig(**TINY_ENCODER), num_entities=4, num_relations=2, pad_token_id=0, **kwargs)
    got = {k: list(v.shape) for k, v in model_class(config).state_dict().items()}
    expected = json.loads(SNAPSHOT.read_text())[name]
    assert sorted(set(got) - set(expected)) == [] and sorted(set(expected) - set(got)) == []
    assert got == expected


# ---------------------------------------------------------------------------------------------------- old paths
EVALUATION_NAMES = [
    "DIRECTIONS",
    "RankTriple",
    "filtered_ranks",
    "ranking_metrics_from_ranks",
    "degree_bucket",
    "degree_bucket_label",
    "LinkPredictionEvaluator",
    "plot_degree_buckets",
    "classification_report",
    "tune_thresholds",
    "GraphReranker",
]
LOOP_NAMES = ["encode_entities", "rank_link_prediction", "score_triples"]


def test_evaluation_package_exports_the_metrics_and_the_loops():
    import lmke_hf.evaluation as E
    from lmke_hf.evaluation import classification, link_prediction, loops, ranks, rerank

    assert sorted(E.__all__) == sorted(EVALUATION_NAMES + LOOP_NAMES)
    home = {
        **{n: ranks for n in ("DIRECTIONS", "RankTriple", "filtered_ranks", "ranking_metrics_from_ranks")},
        **{
            n: link_prediction
            for n in ("degree_bucket", "degree_bucket_label", "LinkPredictionEvaluator", "plot_degree_buckets")
        },
        **{n: classification for n in ("classification_report", "tune_thresholds")},
        "GraphReranker": rerank,
        **{n: loops for n in LOOP_NAMES},
    }
    for name in E.__all__:
        assert getattr(E, name) is getattr(home[name], name), name
        assert name in dir(E)
    namespace = {}
    exec("from lmke_hf.evaluation import *", namespace)
    assert {n: namespace[n] for n in E.__all__} == {n: getattr(E, n) for n in E.__all__}
    with pytest.raises(AttributeError):
        E.not_a_name  # noqa: B018


def test_metrics_import_without_the_data_code():
    """`import lmke_hf.evaluation` (ranks, metrics, thresholds) does not load the loops, hence neither
    `lmke_hf.features` nor `lmke_hf.kg` (and `datasets`), which the loops need."""
    import subprocess
    import sys

    code = (
        "import sys, lmke_hf.evaluation as E; E.filtered_ranks; E.degree_bucket([1]); "
        "print(sorted(m for m in ('lmke_hf.features', 'lmke_hf.kg', 'lmke_hf.evaluation.loops', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


# ---------------------------------------------------------------------------------------------------- remote code
REMOTE_CODE_PREFIXES = (
    "configuration_",
    "modeling_",
    "tokenization_",
    "entity_index",
    "pipeline_",
)  # entity_index.py: the C-LMKE index; pipeline_lmke.py: the pipeline tasks


@pytest.mark.parametrize(
    "path",
    sorted(p.name for p in Path(lmke_hf.__file__).parent.glob("*.py") if p.name.startswith(REMOTE_CODE_PREFIXES)),
)
def test_remote_code_files_import_only_each_other(path):
    """transformers copies a registered class's file and, recursively, the files of its relative imports into a
    saved checkpoint; anything else of lmke_hf would be missing where it is not installed."""
    import ast

    tree = ast.parse((Path(lmke_hf.__file__).parent / path).read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            assert node.level == 1 and node.module and node.module.startswith(REMOTE_CODE_PREFIXES), (
                path,
                node.lineno,
                node.module,
            )
            assert (Path(lmke_hf.__file__).parent / f"{node.module}.py").is_file(), node.module
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            assert not any(n.split(".")[0] == "lmke_hf" for n in names), (path, node.lineno)


@pytest.mark.parametrize("model_class", [LmkeForTripleClassification, ClmkeForLinkPrediction], ids=lambda c: c.__name__)
def test_saved_folder_carries_every_file_its_code_imports(model_class, tmp_path):
    from transformers.dynamic_module_utils import get_relative_import_files

    config_class = model_class.config_class
    model = model_class(
        config_class(encoder=BertConfig(**TINY_ENCODER), num_entities=4, num_relations=2, pad_token_id=0)
    )
    model.save_pretrained(tmp_path)
    module = model_class.__module__.rsplit(".", 1)[-1]
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    assert auto_map == {
        "AutoConfig": f"configuration_lmke.{config_class.__name__}",
        "AutoModel": f"{module}.{model_class.__name__}",
    }
    needed = {Path(f).name for f in get_relative_import_files(str(tmp_path / f"{module}.py"))}
    assert {"configuration_lmke.py", "modeling_base.py", "tokenization_lmke.py"} <= needed
    saved = {p.name for p in tmp_path.glob("*.py")}
    assert needed | {f"{module}.py", "pipeline_lmke.py"} <= saved
