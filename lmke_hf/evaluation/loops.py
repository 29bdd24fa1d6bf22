"""Evaluation loops: filtered link prediction over all entities (C-LMKE) and triple scoring (LMKE), multi-process
aware (each process takes a shard, the results are gathered).

Ranking never sees the gold answer while scoring: entity keys are encoded once (an `EntityIndex`), every query
block is scored against all keys with `ClmkeForLinkPrediction.score_all` (whose inputs are the query, the candidates
and their own training degrees), and only then are the scores handed to the evaluator together with the gold ids.
A block holds as many queries as `scores_memory_mb` allows, so memory does not grow with the number of queries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from ..entity_index import EntityIndex
from ..modeling_base import in_eval_mode
from ..tokenization_lmke import LmkeTokenizer, pad_sequences
from .link_prediction import LinkPredictionEvaluator

if TYPE_CHECKING:
    from collections.abc import Sequence

    from accelerate import Accelerator

    from ..kg import KnowledgeGraph
    from ..modeling_clmke import ClmkeForLinkPrediction
    from ..modeling_lmke import LmkeForTripleClassification
    from ..tokenization_lmke import KgElements
    from .rerank import GraphReranker


def _length_sorted_batches(lengths: np.ndarray, batch_size: int):
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        yield order[start : start + batch_size]


def _device(model) -> torch.device:
    return next(model.parameters()).device


def _shard(n: int, accelerator) -> np.ndarray:
    if accelerator is None or accelerator.num_processes == 1:
        return np.arange(n)
    return np.array_split(np.arange(n), accelerator.num_processes)[accelerator.process_index]


def _gather_rows(local: torch.Tensor, accelerator) -> torch.Tensor:
    """Concatenates per-process row shards (made by `_shard`) in process order."""
    if accelerator is None or accelerator.num_processes == 1:
        return local
    from accelerate.utils import gather_object

    parts = gather_object([local.cpu()])
    return torch.cat(parts, 0).to(local.device)


@torch.no_grad()
def encode_entities(
    model: ClmkeForLinkPrediction,
    tokenizer: LmkeTokenizer,
    entities: KgElements | None = None,
    batch_size: int = 256,
    accelerator: Accelerator | None = None,
    progress: bool = False,
) -> torch.Tensor:
    """Key embeddings `(N, hidden)` of `entities` (default: all), encoded once, batched by length
    (`ClmkeForLinkPrediction.encode_entities` with an explicit tokenizer).

    With an `accelerator` of several processes, each process encodes a shard and all get the full matrix.
    """
    entities = np.arange(tokenizer.num_entities) if entities is None else tokenizer.entity_to_index(entities)
    shard = entities[_shard(len(entities), accelerator)]
    keys = model.encode_entities(shard, batch_size, tokenizer=tokenizer, progress=progress)
    return _gather_rows(keys, accelerator)


@torch.no_grad()
@in_eval_mode
def rank_link_prediction(
    model: ClmkeForLinkPrediction,
    tokenizer: LmkeTokenizer,
    kg: KnowledgeGraph,
    split: str,
    filter_splits: Sequence[str] = ("train", "validation", "test"),
    degree_splits: Sequence[str] = ("train",),
    batch_size: int = 256,
    max_queries: int | None = None,
    directions: Sequence[str] = ("tail", "head"),
    entity_embeddings: EntityIndex | torch.Tensor | None = None,
    accelerator: Accelerator | None = None,
    score_dtype: torch.dtype | None = None,
    progress: bool = False,
    scores_memory_mb: float = 1024,
    reranker: GraphReranker | None = None,
) -> LinkPredictionEvaluator:
    """Filtered ranking of the gold entity of every (h, r, ?) and (?, r, t) query of `split` among all entities.

    Args:
        kg (`KnowledgeGraph`): supplies the split, the filter (all known true triples of `filter_splits`) and
            the degrees of the gold entities for the degree-bucket table (counted on `degree_splits`; the model
            uses its own stored training degrees for scoring).
        max_queries (`int`, *optional*): rank only the first `max_queries` triples (for quick validation).
        entity_embeddings (*optional*): the `EntityIndex` of all entities, or their keys as a tensor (else encoded here).
        score_dtype (*optional*): matcher compute dtype (`torch.bfloat16` speeds up CPUs with bf16 units).
        scores_memory_mb: at most this many MiB of `(queries, entities)` scores at a time: blocks of
            `min(batch_size, scores_memory_mb / (4 N))` queries (at least one).
        reranker (`GraphReranker`, *optional*): SimKGC's graph re-ranking, applied to each block's scores before
            ranking; refused when its graph holds `split` or a later split.

    Returns:
        A `LinkPredictionEvaluator` holding every rank (realistic = tie-averaged) with direction, relation and
        degree metadata; call `.compute()`, `.per_relation()`, `.per_degree_bucket()`.
    """
    triples = kg.triples(split)
    if max_queries is not None:
        triples = triples[:max_queries]
    if len(triples) == 0:
        raise ValueError(f"Split {split!r} has no positive triples to rank.")
    if reranker is not None:
        reranker.check_split(split)
    if entity_embeddings is None:
        entity_embeddings = encode_entities(model, tokenizer, None, batch_size, accelerator, progress)
    index = entity_embeddings if isinstance(entity_embeddings, EntityIndex) else EntityIndex(entity_embeddings)
    device = _device(model)
    block_rows = max(1, min(batch_size, int(scores_memory_mb * 2**20 / 4 / max(index.num_entities, 1))))
    degrees = torch.as_tensor(kg.degrees(list(degree_splits)), dtype=torch.long)
    evaluator = LinkPredictionEvaluator()
    for direction in directions:
        given_col, target_col = (0, 2) if direction == "tail" else (2, 0)
        answers = kg.answer_index(list(filter_splits), direction)
        rows = _shard(len(triples), accelerator)
        part = triples[rows]
        queries = tokenizer.encode_queries(part[:, given_col], part[:, 1], direction)["input_ids"]
        lengths = np.fromiter((len(x) for x in queries), dtype=np.int64, count=len(queries))
        block = LinkPredictionEvaluator()
        for batch_rows in _length_sorted_batches(lengths, block_rows):
            ids, mask = pad_sequences([queries[i] for i in batch_rows], tokenizer.pad_token_id)
            q, q_ent = model.embed_queries(ids.to(device), mask.to(device))
            # scored without the gold; ranked right away so that only one (block x entities) score matrix is alive
            scores = index.scores(model, q, q_ent, dtype=score_dtype)
            sub = part[batch_rows]
            if reranker is not None:
                scores = reranker(scores, torch.as_tensor(sub[:, given_col]))
            f_rows, f_cols = answers.pairs(sub[:, given_col], sub[:, 1])
            gold = torch.as_tensor(sub[:, target_col], device=scores.device)
            block.update(
                scores,
                gold,
                torch.as_tensor(f_rows, device=scores.device),
                torch.as_tensor(f_cols, device=scores.device),
                direction=direction,
                relations=torch.as_tensor(sub[:, 1]),
                gold_degrees=degrees[sub[:, target_col]],
                given_degrees=degrees[sub[:, given_col]],
            )
        if accelerator is not None and accelerator.num_processes > 1:
            from accelerate.utils import gather_object

            for other in gather_object([block]):
                evaluator.merge(other)
        else:
            evaluator.merge(block)
    return evaluator


@torch.no_grad()
@in_eval_mode
def score_triples(
    model: LmkeForTripleClassification,
    tokenizer: LmkeTokenizer,
    triples: np.ndarray,
    batch_size: int = 256,
    accelerator: Accelerator | None = None,
) -> np.ndarray:
    """p(u) = sigmoid(logit) of each `(h, r, t)` row, `(n,)` float, batched by length."""
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    rows = _shard(len(triples), accelerator)
    encoded = (
        tokenizer.encode_triples(triples[rows, 0], triples[rows, 1], triples[rows, 2])["input_ids"] if len(rows) else []
    )
    lengths = np.fromiter((len(x) for x in encoded), dtype=np.int64, count=len(encoded))
    device = _device(model)
    probs = torch.empty(len(rows), device=device)
    for batch_rows in _length_sorted_batches(lengths, batch_size):
        ids, mask = pad_sequences([encoded[i] for i in batch_rows], tokenizer.pad_token_id)
        probs[torch.as_tensor(batch_rows, device=device)] = torch.sigmoid(
            model(ids.to(device), mask.to(device)).logits.float()
        )
    return _gather_rows(probs.unsqueeze(1), accelerator).squeeze(1).cpu().numpy()


__all__ = ["encode_entities", "rank_link_prediction", "score_triples"]
