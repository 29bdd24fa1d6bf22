"""Filtered ranks of gold entities and the link-prediction metrics computed from them (MR, MRR, Hits@k).

Rank conventions follow pykeen (Ali et al., "Bringing Light Into the Dark", TPAMI 2021); see `lmke_hf.evaluation`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch

# prediction directions, one order everywhere (0 tail, 1 head): "tail" ranks candidates for (h, r, ?), "head" for (?, r, t)
from ..tokenization_lmke import DIRECTIONS

ArrayLike = torch.Tensor | np.ndarray | Sequence[float]


# --------------------------------------------------------------------------------------------------
# Ranks
# --------------------------------------------------------------------------------------------------


class RankTriple(NamedTuple):
    """Ranks of the gold entity of each query in a block.

    Attributes:
        optimistic: ``(B,)`` long, ``1 + #(score > gold score)``.
        pessimistic: ``(B,)`` long, ``#(score >= gold score)``, the gold itself included.
        realistic: ``(B,)`` float64, ``(optimistic + pessimistic) / 2``.
    """

    optimistic: torch.Tensor
    pessimistic: torch.Tensor
    realistic: torch.Tensor


def _check_direction(direction: str | None) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f"`direction` must be one of {DIRECTIONS} (the element being predicted), got {direction!r}.")


def _check_index_vector(name: str, value: Any, length: int | None = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if value.dim() != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {tuple(value.shape)}.")
    if value.dtype in (torch.bool,) or value.dtype.is_floating_point or value.dtype.is_complex:
        raise ValueError(
            f"`{name}` must hold integer indices, got dtype {value.dtype}; pass a long tensor (e.g. `{name}.long()`)."
        )
    if length is not None and value.shape[0] != length:
        raise ValueError(f"`{name}` has length {value.shape[0]} but the score block has {length} rows.")
    return value


def filtered_ranks(
    scores: torch.Tensor,
    gold: torch.Tensor,
    filter_rows: torch.Tensor | None = None,
    filter_cols: torch.Tensor | None = None,
) -> RankTriple:
    """Filtered ranks of the gold entities in a block of queries scored against all entities.

    Filtering removes *other* known true answers (from train/valid/test, as the caller decides) from
    the candidate list: their contributions are subtracted from the counts, so ``scores`` is never
    modified and no ``(B, N)`` mask is built. The gold entity of a row is never filtered, even when
    its coordinate appears in the filter list, so a caller may pass every known answer without
    removing the gold first. Duplicate filter coordinates are harmless.

    Args:
        scores: ``(B, N)`` float, higher = more plausible; ``B`` queries, ``N`` candidate entities.
        gold: ``(B,)`` long, index in ``[0, N)`` of each query's correct entity.
        filter_rows: ``(F,)`` long, row (query index within this block) of each filtered coordinate.
        filter_cols: ``(F,)`` long, entity index of each filtered coordinate. Pass both or neither
            (neither = the "raw" setting).

    Returns:
        :class:`RankTriple` of ``(B,)`` tensors on ``scores.device``.

    Raises:
        ValueError: on NaN scores (with their count), bad shapes/dtypes, out-of-range indices.

    Example:
        >>> s = torch.tensor([[0.1, 0.9, 0.5], [0.3, 0.2, 0.1]])
        >>> r = filtered_ranks(s, torch.tensor([2, 0]), torch.tensor([0]), torch.tensor([1]))
        >>> r.optimistic.tolist()  # row 0: the 0.9 answer is filtered, so 0.5 ranks first
        [1, 1]
    """
    if not isinstance(scores, torch.Tensor) or scores.dim() != 2:
        shape = tuple(scores.shape) if isinstance(scores, torch.Tensor) else type(scores).__name__
        raise ValueError(f"`scores` must be a 2-D (B, N) tensor, got {shape}.")
    if not scores.dtype.is_floating_point:
        raise ValueError(f"`scores` must be floating point, got dtype {scores.dtype}; call `scores.float()`.")
    num_rows, num_entities = scores.shape
    gold = _check_index_vector("gold", gold, num_rows).to(scores.device)
    if bool(torch.isnan(scores).any()):  # count only on the error path; `any` is the cheaper pass
        num_nan = int(torch.isnan(scores).sum())
        raise ValueError(
            f"`scores` contains {num_nan} NaN value(s) (block shape {tuple(scores.shape)}); ranks would be "
            "undefined. Check the model for overflow or invalid inputs."
        )
    if num_rows and (int(gold.min()) < 0 or int(gold.max()) >= num_entities):
        raise ValueError(
            f"`gold` indices must lie in [0, {num_entities}), got min {int(gold.min())}, max {int(gold.max())}."
        )

    rows_ar = torch.arange(num_rows, device=scores.device)
    gold_scores = scores[rows_ar, gold].unsqueeze(1)  # (B, 1)
    # int32 accumulation is ~1.5x faster than the default int64 on CPU; N < 2**31 always holds.
    num_greater = (scores > gold_scores).sum(dim=1, dtype=torch.int32).long()  # (B,)
    num_greater_equal = (scores >= gold_scores).sum(dim=1, dtype=torch.int32).long()  # (B,)

    if (filter_rows is None) != (filter_cols is None):
        raise ValueError(
            "Pass both `filter_rows` and `filter_cols` (coordinates of known true answers) or neither; "
            f"got filter_rows={'None' if filter_rows is None else 'a tensor'}, "
            f"filter_cols={'None' if filter_cols is None else 'a tensor'}."
        )
    if filter_rows is not None:
        filter_rows = _check_index_vector("filter_rows", filter_rows).to(scores.device)
        filter_cols = _check_index_vector("filter_cols", filter_cols).to(scores.device)
        if filter_rows.shape != filter_cols.shape:
            raise ValueError(
                f"`filter_rows` (length {filter_rows.shape[0]}) and `filter_cols` (length "
                f"{filter_cols.shape[0]}) must have the same length: one entry per filtered coordinate."
            )
        if filter_rows.numel():
            if int(filter_rows.min()) < 0 or int(filter_rows.max()) >= num_rows:
                raise ValueError(
                    f"`filter_rows` must lie in [0, {num_rows}) (rows of this block), got min "
                    f"{int(filter_rows.min())}, max {int(filter_rows.max())}. Offset global query indices "
                    "by the block start."
                )
            if int(filter_cols.min()) < 0 or int(filter_cols.max()) >= num_entities:
                raise ValueError(
                    f"`filter_cols` must lie in [0, {num_entities}), got min {int(filter_cols.min())}, "
                    f"max {int(filter_cols.max())}."
                )
            # Subtract the filtered candidates' contributions instead of masking the whole (B, N) block:
            # F << B * N. Deduplicate first so a coordinate listed twice is removed once.
            flat = torch.unique(filter_rows.long() * num_entities + filter_cols.long())
            f_rows, f_cols = flat // num_entities, flat % num_entities
            not_gold = f_cols != gold[f_rows]  # the gold is never filtered
            f_scores = scores[f_rows, f_cols]
            f_gold = gold_scores[f_rows, 0]
            num_greater -= torch.zeros_like(num_greater).index_add_(0, f_rows, ((f_scores > f_gold) & not_gold).long())
            num_greater_equal -= torch.zeros_like(num_greater_equal).index_add_(
                0, f_rows, ((f_scores >= f_gold) & not_gold).long()
            )

    optimistic = num_greater + 1
    pessimistic = num_greater_equal
    realistic = (optimistic + pessimistic).to(torch.float64) / 2.0
    return RankTriple(optimistic, pessimistic, realistic)


def _as_numpy(value: ArrayLike, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except Exception as err:  # pragma: no cover - defensive
        raise ValueError(f"`{name}` could not be converted to an array: {err}") from err


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    ks = tuple(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if bad:
        raise ValueError(f"`ks` must be positive integers (e.g. (1, 3, 10)), got {ks}.")
    return tuple(int(k) for k in ks)


def ranking_metrics_from_ranks(ranks: ArrayLike, ks: Iterable[int] = (1, 3, 10)) -> dict[str, float]:
    """Mean rank, mean reciprocal rank and Hits@k from a vector of ranks.

    Args:
        ranks: ``(Q,)`` ranks ``>= 1`` (integer or fractional realistic ranks), tensor or array.
        ks: cut-offs for Hits@k; a query hits when ``rank <= k``.

    Returns:
        ``{"mr": float, "mrr": float, "hits@<k>": float for k in ks}``.

    Raises:
        ValueError: when ``ranks`` is empty, not 1-D, NaN or below 1.

    Example:
        >>> m = ranking_metrics_from_ranks([1, 2, 4], ks=(1, 3))
        >>> {k: round(v, 4) for k, v in m.items()}
        {'mr': 2.3333, 'mrr': 0.5833, 'hits@1': 0.3333, 'hits@3': 0.6667}
    """
    ks = _check_ks(ks)
    arr = _as_numpy(ranks, "ranks").astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`ranks` must be 1-D, got shape {arr.shape}.")
    if arr.size == 0:
        raise ValueError("`ranks` is empty: there are no queries to compute metrics over.")
    num_nan = int(np.isnan(arr).sum())
    if num_nan or arr.min() < 1:
        raise ValueError(f"`ranks` must be >= 1 and not NaN, got min {arr.min()} ({num_nan} NaN).")
    metrics = {"mr": float(arr.mean()), "mrr": float((1.0 / arr).mean())}
    for k in ks:
        metrics[f"hits@{k}"] = float((arr <= k).mean())
    return metrics


__all__ = ["DIRECTIONS", "RankTriple", "filtered_ranks", "ranking_metrics_from_ranks"]
