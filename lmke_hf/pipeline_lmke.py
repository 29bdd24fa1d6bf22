"""The `Pipeline` classes of the tasks "knowledge-graph-completion" (C-LMKE) and "triple-classification" (LMKE).

Self-contained (no relative imports): saved models carry this file and a `custom_pipelines` entry in their
config.json, so that `pipeline(task, model=folder_or_hub_id, trust_remote_code=True)` runs it where lmke_hf is not
installed. Usage and registration: `lmke_hf.pipelines`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from transformers.pipelines import Pipeline

if TYPE_CHECKING:
    from collections.abc import Sequence

COMPLETION_TASK = "knowledge-graph-completion"
CLASSIFICATION_TASK = "triple-classification"


def _check_query(query, allowed: tuple[str, ...], required: tuple[str, ...], example: str) -> dict:
    if not isinstance(query, dict):
        raise TypeError(f"A query is a dict such as {example}, got {type(query).__name__}: {query!r}.")
    unknown = sorted(set(query) - set(allowed))
    missing = [k for k in required if query.get(k) is None]
    if unknown or missing:
        problem = f"unknown keys {unknown}" if unknown else f"missing {missing}"
        raise ValueError(f"Query {query!r}: {problem}; give a dict such as {example}.")
    return query


class _KgPipeline(Pipeline):
    """What both tasks share: no word-piece tokenizer or processor to load (the model's KG tokenizer is attached on
    construction), one query per forward, a dict in gives a result out and a list gives a list."""

    _load_tokenizer = False
    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.model.load_kg_tokenizer()  # the model's KG tokenizer, read now (a missing one fails here, not on a query)

    def __call__(self, inputs: dict[str, Any] | Sequence[dict[str, Any]], **kwargs: Any) -> Any:
        if isinstance(inputs, dict):
            return super().__call__([inputs], **kwargs)[0]
        if not isinstance(inputs, (list, tuple)) or not inputs:
            raise TypeError(f"Give a query dict or a non-empty list of them, got {inputs!r}.")
        return super().__call__(list(inputs), **kwargs)

    def preprocess(self, inputs: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        return self._check(inputs)

    def postprocess(self, model_outputs: Any, **kwargs: Any) -> Any:
        return model_outputs


class KnowledgeGraphCompletionPipeline(_KgPipeline):
    """Ranks every entity of a C-LMKE model for `{"head": H, "relation": R}` (tails) or `{"tail": T, "relation": R}`
    (heads). Call arguments: `top_k` (default 5), `filter_known` (the model's `KnowledgeGraph`: its known answers
    are left out). Returns `[{"entity", "name", "score"}, ...]`, best first."""

    def _sanitize_parameters(self, top_k=None, filter_known=None, **kwargs):
        forward = {}
        if top_k is not None:
            forward["top_k"] = top_k
        if filter_known is not None:
            forward["filter_known"] = filter_known
        return {}, forward, {}

    def _check(self, query) -> dict:
        query = _check_query(query, ("head", "relation", "tail"), ("relation",), '{"head": H, "relation": R}')
        if (query.get("head") is None) == (query.get("tail") is None):
            raise ValueError(f"Query {query!r}: give exactly one of 'head' (to rank tails) or 'tail' (to rank heads).")
        return query

    def _forward(self, query, top_k: int = 5, filter_known=None):
        answers = self.model.predict(
            head=query.get("head"),
            relation=query["relation"],
            tail=query.get("tail"),
            top_k=top_k,
            filter_known=filter_known,
        )
        return [{"entity": a["entity_id"], "name": a["name"], "score": a["score"]} for a in answers]


class TripleClassificationPipeline(_KgPipeline):
    """p(true) of `{"head": H, "relation": R, "tail": T}` with an LMKE model: `{"score", "label"}`, label "true" when
    the score exceeds `threshold` (call argument, default 0.5 as the paper; a run's tuned per-relation thresholds are
    in its `thresholds.json`)."""

    def _sanitize_parameters(self, threshold=None, **kwargs):
        return {}, ({"threshold": float(threshold)} if threshold is not None else {}), {}

    def _check(self, query) -> dict:
        return _check_query(
            query, ("head", "relation", "tail"), ("head", "relation", "tail"), '{"head": H, "relation": R, "tail": T}'
        )

    def _forward(self, query, threshold: float = 0.5):
        (row,) = self.model.predict(query["head"], query["relation"], query["tail"], threshold=threshold)
        return {"score": row["score"], "label": "true" if row["is_true"] else "false"}


__all__ = ["KnowledgeGraphCompletionPipeline", "TripleClassificationPipeline", "COMPLETION_TASK", "CLASSIFICATION_TASK"]
