"""`transformers.pipeline` tasks of lmke_hf, registered when `lmke_hf` is imported.

```python
import lmke_hf
from transformers import pipeline

complete = pipeline("knowledge-graph-completion", model="outputs/clmke-umls")
complete({"head": "acquired_abnormality", "relation": "location_of"}, top_k=5)
# [{"entity": ..., "name": ..., "score": ...}, ...] best first; {"tail": T, "relation": R} asks for heads

classify = pipeline("triple-classification", model="outputs/lmke-umls")
classify({"head": "virus", "relation": "causes", "tail": "disease_or_syndrome"})
# {"score": 0.93, "label": "true"}
```

A single query gives one result, a list of queries a list of results. Entities and relations are given by id or
name (an unknown one gets the did-you-mean error of `model.predict`). The models' own KG tokenizers do the
tokenising, so the pipelines load no word-piece tokenizer of their own.

Saved models (and so training runs) carry their task: `pipeline(task, model=folder_or_hub_id, trust_remote_code=True)`
works without lmke_hf too. The classes live in `pipeline_lmke.py`, the file that saved folders carry.
"""

from __future__ import annotations

from transformers.pipelines import PIPELINE_REGISTRY

from .modeling_clmke import ClmkeForLinkPrediction
from .modeling_lmke import LmkeForTripleClassification
from .pipeline_lmke import (
    CLASSIFICATION_TASK,
    COMPLETION_TASK,
    KnowledgeGraphCompletionPipeline,
    TripleClassificationPipeline,
)


def register_pipelines() -> None:
    """Makes both tasks known to `transformers.pipeline` (done by `import lmke_hf`), and has saved models of each class
    carry their task (`custom_pipelines` in config.json and `pipeline_lmke.py`), so that the pipeline also loads with
    `trust_remote_code=True` where lmke_hf is not installed."""
    for task, pipeline_class, model_class in (
        (COMPLETION_TASK, KnowledgeGraphCompletionPipeline, ClmkeForLinkPrediction),
        (CLASSIFICATION_TASK, TripleClassificationPipeline, LmkeForTripleClassification),
    ):
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=model_class, type="text")
        model_class.register_for_pipeline(task, pipeline_class)


__all__ = [
    "KnowledgeGraphCompletionPipeline",
    "TripleClassificationPipeline",
    "register_pipelines",
    "COMPLETION_TASK",
    "CLASSIFICATION_TASK",
]
