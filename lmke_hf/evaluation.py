"""Model-agnostic evaluation for knowledge-graph embeddings: filtered ranks, link-prediction metrics,
long-tail (degree-bucket) breakdowns and triple-classification accuracy.

Everything here works on scores and ranks only, so any model that scores a block of queries
against all entities (``(B, N)`` scores, higher = more plausible) can be evaluated.

Rank conventions follow pykeen (Ali et al., "Bringing Light Into the Dark", TPAMI 2021). For a gold
entity with score ``s`` among ``N`` candidates that survive filtering:

* optimistic rank  = 1 + #{candidates with score >  s}     (ties resolved in the gold's favour)
* pessimistic rank =     #{candidates with score >= s}     (ties resolved against it; counts the gold)
* realistic rank   = (optimistic + pessimistic) / 2        (expected rank under random tie-breaking)

Headline metrics (``mr``, ``mrr``, ``hits@k``) use the realistic rank, so a model that gives every
entity the same score gets MR ``(N + 1) / 2`` instead of a perfect 1. The original LMKE code broke
ties arbitrarily, which sits between the optimistic and pessimistic numbers also reported here.

Example:
    >>> import torch
    >>> scores = torch.tensor([[3.0, 2.0, 2.0, 2.0]])  # gold (index 1) ties with 2 others, 1 above
    >>> r = filtered_ranks(scores, torch.tensor([1]))
    >>> r.optimistic.tolist(), r.pessimistic.tolist(), r.realistic.tolist()
    ([2], [4], [3.0])
    >>> ev = LinkPredictionEvaluator()
    >>> _ = ev.update(scores, torch.tensor([1]), direction="tail",
    ...               relations=torch.tensor([0]), gold_degrees=torch.tensor([5]))
    >>> ev.compute()["mr"]
    3.0
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .tokenization_lmke import DIRECTIONS  # one order everywhere: 0 tail, 1 head

__all__ = [
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
]

"""Prediction directions: ``"head"`` ranks candidates for ``(?, r, t)``, ``"tail"`` for ``(h, r, ?)``."""

ArrayLike = Union[torch.Tensor, np.ndarray, Sequence[float]]


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


def _check_direction(direction: Optional[str]) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(
            f"`direction` must be one of {DIRECTIONS} (the element being predicted), got {direction!r}."
        )


def _check_index_vector(name: str, value: Any, length: Optional[int] = None) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        value = torch.as_tensor(value)
    if value.dim() != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {tuple(value.shape)}.")
    if value.dtype in (torch.bool,) or value.dtype.is_floating_point or value.dtype.is_complex:
        raise ValueError(
            f"`{name}` must hold integer indices, got dtype {value.dtype}; pass a long tensor "
            f"(e.g. `{name}.long()`)."
        )
    if length is not None and value.shape[0] != length:
        raise ValueError(f"`{name}` has length {value.shape[0]} but the score block has {length} rows.")
    return value


def filtered_ranks(
    scores: torch.Tensor,
    gold: torch.Tensor,
    filter_rows: Optional[torch.Tensor] = None,
    filter_cols: Optional[torch.Tensor] = None,
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


def _check_ks(ks: Iterable[int]) -> Tuple[int, ...]:
    ks = tuple(ks)
    bad = [k for k in ks if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1]
    if bad:
        raise ValueError(f"`ks` must be positive integers (e.g. (1, 3, 10)), got {ks}.")
    return tuple(int(k) for k in ks)


def ranking_metrics_from_ranks(ranks: ArrayLike, ks: Iterable[int] = (1, 3, 10)) -> Dict[str, float]:
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


# --------------------------------------------------------------------------------------------------
# Degree buckets (paper Fig. 1 / Fig. 4)
# --------------------------------------------------------------------------------------------------


def degree_bucket(degrees: ArrayLike) -> np.ndarray:
    """Long-tail bucket of each degree: ``0`` for degree 0, else ``floor(log2(deg)) + 1``.

    So 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, 8..15 -> 4, ... (the bit length of the degree), exact
    for any integer degree (no floating-point ``log2``).

    Args:
        degrees: ``(Q,)`` non-negative integers (training degrees of entities).

    Returns:
        ``(Q,)`` int64 numpy array of bucket ids.

    Example:
        >>> degree_bucket([0, 1, 2, 3, 4, 7, 8]).tolist()
        [0, 1, 2, 2, 3, 3, 4]
    """
    arr = _as_numpy(degrees, "degrees")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`degrees` must be integers, got dtype {arr.dtype}.")
    arr = arr.astype(np.int64)
    if arr.size and arr.min() < 0:
        raise ValueError(f"`degrees` must be non-negative (>= 0), got min {int(arr.min())}.")
    # frexp(d) = (m, e) with d = m * 2**e, m in [0.5, 1): e is the bit length, i.e. floor(log2 d) + 1.
    return np.frexp(arr.astype(np.float64))[1].astype(np.int64)


def degree_bucket_label(bucket: int) -> str:
    """Human-readable degree range of a bucket: ``0 -> "0"``, ``1 -> "1"``, ``2 -> "2-3"``, ``3 -> "4-7"``."""
    bucket = int(bucket)
    if bucket < 0:
        raise ValueError(f"`bucket` must be >= 0, got {bucket}.")
    if bucket <= 1:
        return str(bucket)
    return f"{2 ** (bucket - 1)}-{2 ** bucket - 1}"


# --------------------------------------------------------------------------------------------------
# Link-prediction accumulator
# --------------------------------------------------------------------------------------------------

_TABLE_FIELDS = (
    "direction",
    "relation",
    "gold",
    "gold_degree",
    "given_degree",
    "rank_optimistic",
    "rank_pessimistic",
    "rank_realistic",
)


class LinkPredictionEvaluator:
    """Accumulates filtered ranks block by block and reports overall and grouped metrics.

    Only ranks and per-query metadata are stored (a few numbers per query), never score blocks, so
    evaluating 40k entities x 6k queries costs kilobytes. Missing metadata is stored as ``-1``.

    Distributed evaluation: either compute ranks on every process, gather the ``(B,)`` rank and
    metadata tensors (e.g. ``accelerator.gather_for_metrics``) and feed them to :meth:`add_ranks` on
    the main process; or keep one evaluator per process and combine them with :meth:`merge`
    (or :meth:`from_ranks_table` on gathered :meth:`ranks_table` dicts).

    Degrees (for :meth:`per_degree_bucket`) must be counted on the training split only; this class
    takes them as given and cannot check their source.

    Example:
        >>> ev = LinkPredictionEvaluator()
        >>> s = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.8, 0.3]])
        >>> _ = ev.update(s, torch.tensor([0, 2]), direction="tail",
        ...               relations=torch.tensor([0, 1]), gold_degrees=torch.tensor([3, 0]))
        >>> ev.compute(ks=(1,))["hits@1"]
        0.5
    """

    def __init__(self) -> None:
        self._chunks: Dict[str, List[np.ndarray]] = {name: [] for name in _TABLE_FIELDS}
        self._cache: Optional[Dict[str, np.ndarray]] = None

    # ---------------------------------------------------------------- accumulation

    def __len__(self) -> int:
        return int(sum(chunk.shape[0] for chunk in self._chunks["rank_realistic"]))

    def update(
        self,
        scores: torch.Tensor,
        gold: torch.Tensor,
        filter_rows: Optional[torch.Tensor] = None,
        filter_cols: Optional[torch.Tensor] = None,
        direction: Optional[str] = None,
        relations: Optional[torch.Tensor] = None,
        gold_degrees: Optional[torch.Tensor] = None,
        given_degrees: Optional[torch.Tensor] = None,
    ) -> RankTriple:
        """Rank a block of queries (see :func:`filtered_ranks`) and store the ranks with metadata.

        Args:
            scores: ``(B, N)`` float scores against all ``N`` entities, higher = better.
            gold: ``(B,)`` long gold entity indices.
            filter_rows, filter_cols: ``(F,)`` long coordinates (row in block, entity) of other known
                answers to filter; both or neither.
            direction: ``"head"`` or ``"tail"``, the element being predicted for the whole block.
                Required (``None`` only keeps the positional order); there is no silent default.
            relations: ``(B,)`` long relation ids; needed for :meth:`per_relation`.
            gold_degrees: ``(B,)`` long training degree of each gold entity; needed for
                :meth:`per_degree_bucket`.
            given_degrees: ``(B,)`` long training degree of the given (unmasked) entity; needed only for
                ``per_degree_bucket(by="either")``, the paper's triple-level grouping.

        Returns:
            The block's :class:`RankTriple` (handy for logging or gathering).
        """
        _check_direction(direction)
        ranks = filtered_ranks(scores, gold, filter_rows, filter_cols)
        self.add_ranks(ranks, gold, direction, relations, gold_degrees, given_degrees)
        return ranks

    def add_ranks(
        self,
        ranks: RankTriple,
        gold: torch.Tensor,
        direction: str,
        relations: Optional[torch.Tensor] = None,
        gold_degrees: Optional[torch.Tensor] = None,
        given_degrees: Optional[torch.Tensor] = None,
    ) -> None:
        """Store precomputed ranks (e.g. gathered across processes) with their metadata.

        Args:
            ranks: :class:`RankTriple` (or any ``(optimistic, pessimistic, realistic)`` triple) of ``(B,)``.
            gold, relations, gold_degrees, given_degrees: ``(B,)`` integer metadata, as in :meth:`update`.
            direction: ``"head"`` or ``"tail"``.
        """
        _check_direction(direction)
        optimistic, pessimistic, realistic = (_as_numpy(r, "ranks") for r in ranks)
        num = optimistic.shape[0]
        if not (optimistic.ndim == pessimistic.ndim == realistic.ndim == 1) or not (
            pessimistic.shape[0] == realistic.shape[0] == num
        ):
            raise ValueError(
                "`ranks` must be three 1-D arrays of equal length, got shapes "
                f"{optimistic.shape}, {pessimistic.shape}, {realistic.shape}."
            )

        def meta(name: str, value: ArrayLike) -> np.ndarray:
            arr = _check_index_vector(name, value if isinstance(value, torch.Tensor) else torch.as_tensor(value))
            if arr.shape[0] != num:
                raise ValueError(f"`{name}` has length {arr.shape[0]} but there are {num} ranks (queries).")
            return arr.detach().cpu().numpy().astype(np.int64)

        columns = {}
        for column, name, value, what in (
            ("gold", "gold", gold, "entity indices"),
            ("relation", "relations", relations, "relation ids"),
            ("gold_degree", "gold_degrees", gold_degrees, "training degrees"),
            ("given_degree", "given_degrees", given_degrees, "training degrees"),
        ):
            if column != "gold" and value is None:
                columns[column] = np.full(num, -1, dtype=np.int64)  # -1 = not given
                continue
            arr = meta(name, value)
            if arr.size and arr.min() < 0:
                raise ValueError(f"`{name}` must hold {what} >= 0, got min {int(arr.min())}.")
            columns[column] = arr

        self._chunks["direction"].append(np.full(num, DIRECTIONS.index(direction), dtype=np.int8))
        for column, arr in columns.items():
            self._chunks[column].append(arr)
        self._chunks["rank_optimistic"].append(optimistic.astype(np.int64))
        self._chunks["rank_pessimistic"].append(pessimistic.astype(np.int64))
        self._chunks["rank_realistic"].append(realistic.astype(np.float64))
        self._cache = None

    def merge(self, other: "LinkPredictionEvaluator") -> "LinkPredictionEvaluator":
        """Append all queries of ``other`` (e.g. another process's evaluator) to this one; returns ``self``."""
        if not isinstance(other, LinkPredictionEvaluator):
            raise TypeError(f"`other` must be a LinkPredictionEvaluator, got {type(other).__name__}.")
        if len(other):
            table = other._table()
            for name in _TABLE_FIELDS:
                self._chunks[name].append(table[name].copy())
            self._cache = None
        return self

    def reset(self) -> None:
        """Forget every stored query."""
        self.__init__()

    # ---------------------------------------------------------------- tables

    def _table(self) -> Dict[str, np.ndarray]:
        if self._cache is None:
            if not len(self):
                raise ValueError("The evaluator holds no queries; call `update(...)` or `add_ranks(...)` first.")
            self._cache = {name: np.concatenate(chunks) for name, chunks in self._chunks.items()}
            self._chunks = {name: [arr] for name, arr in self._cache.items()}
        return self._cache

    def ranks_table(self) -> Dict[str, np.ndarray]:
        """Per-query export, one ``(Q,)`` numpy array per column (``-1`` = metadata not given).

        Returns:
            ``{"direction": str ("head"/"tail"), "relation": int64, "gold": int64, "gold_degree": int64,
            "given_degree": int64, "rank_optimistic": int64, "rank_pessimistic": int64,
            "rank_realistic": float64}``.
        """
        table = {name: arr.copy() for name, arr in self._table().items()}
        table["direction"] = np.asarray(DIRECTIONS)[table["direction"].astype(np.int64)]
        return table

    @classmethod
    def from_ranks_table(cls, table: Mapping[str, ArrayLike]) -> "LinkPredictionEvaluator":
        """Rebuild an evaluator from :meth:`ranks_table` output (or a loaded ``ranks.npz``).

        Columns ``relation``, ``gold_degree`` and ``given_degree`` are optional (``-1`` when missing).
        """
        required = ("direction", "gold", "rank_optimistic", "rank_pessimistic", "rank_realistic")
        missing = [name for name in required if name not in table]
        if missing:
            raise ValueError(f"`table` lacks column(s) {missing}; expected the output of `ranks_table()`.")
        direction = np.asarray(_as_numpy(table["direction"], "direction")).astype(str)
        unknown = sorted(set(direction.tolist()) - set(DIRECTIONS))
        if unknown:
            raise ValueError(f"`table['direction']` must hold {DIRECTIONS}, got {unknown}.")
        num = direction.shape[0]
        columns: Dict[str, np.ndarray] = {"direction": (direction == DIRECTIONS[1]).astype(np.int8)}
        dtypes = {name: np.int64 for name in _TABLE_FIELDS}
        dtypes["rank_realistic"] = np.float64
        for name in _TABLE_FIELDS[1:]:
            if name not in table:
                columns[name] = np.full(num, -1, dtype=np.int64)
                continue
            arr = _as_numpy(table[name], name)
            if arr.shape != (num,):
                raise ValueError(f"`table['{name}']` has shape {arr.shape}, expected ({num},) like `direction`.")
            columns[name] = arr.astype(dtypes[name])
        optimistic, pessimistic = columns["rank_optimistic"], columns["rank_pessimistic"]
        if num and (optimistic.min() < 1 or (pessimistic < optimistic).any()):
            raise ValueError("`table` ranks are invalid: need 1 <= rank_optimistic <= rank_pessimistic.")
        evaluator = cls()
        evaluator._chunks = {name: [columns[name]] for name in _TABLE_FIELDS}
        return evaluator

    # ---------------------------------------------------------------- metrics

    @staticmethod
    def _metrics(table: Mapping[str, np.ndarray], ks: Tuple[int, ...]) -> Dict[str, float]:
        metrics = ranking_metrics_from_ranks(table["rank_realistic"], ks)
        for kind in ("optimistic", "pessimistic"):
            extra = ranking_metrics_from_ranks(table[f"rank_{kind}"], ())
            metrics[f"mr_{kind}"] = extra["mr"]
            metrics[f"mrr_{kind}"] = extra["mrr"]
        return metrics


    def compute(self, ks: Iterable[int] = (1, 3, 10)) -> Dict[str, float]:
        """Metrics over all stored queries (both directions pooled, as in the paper).

        Returns:
            ``{"mr", "mrr", "hits@<k>" (realistic ranks), "mr_optimistic", "mrr_optimistic",
            "mr_pessimistic", "mrr_pessimistic", "num_queries"}``.
        """
        ks = _check_ks(ks)
        table = self._table()
        metrics: Dict[str, Any] = self._metrics(table, ks)
        metrics["num_queries"] = int(table["rank_realistic"].shape[0])
        return metrics

    def _grouped(
        self, groups: np.ndarray, ks: Tuple[int, ...], table: Optional[Mapping[str, np.ndarray]] = None
    ) -> Dict[int, Dict[str, Any]]:
        table = self._table() if table is None else table
        # One sort groups the queries; slicing the sorted view avoids a mask per group.
        order = np.argsort(groups, kind="stable")
        sorted_groups = groups[order]
        keys, starts, counts = np.unique(sorted_groups, return_index=True, return_counts=True)
        sorted_table = {n: table[n][order] for n in ("rank_realistic", "rank_optimistic", "rank_pessimistic")}
        result: Dict[int, Dict[str, Any]] = {}
        for key, start, count in zip(keys.tolist(), starts.tolist(), counts.tolist()):
            sl = slice(start, start + count)
            part = {n: arr[sl] for n, arr in sorted_table.items()}
            metrics: Dict[str, Any] = self._metrics(part, ks)
            metrics["count"] = int(count)
            result[int(key)] = metrics
        return result

    def _require(self, column: str, argument: str, method: str) -> np.ndarray:
        values = self._table()[column]
        missing = int((values < 0).sum())
        if missing:
            raise ValueError(
                f"`{method}` needs `{argument}` for every query, but {missing} of {values.shape[0]} queries "
                f"were added without it; pass `{argument}=` to `update(...)`."
            )
        return values

    def per_direction(self, ks: Iterable[int] = (1, 3, 10)) -> Dict[str, Dict[str, Any]]:
        """Metrics for head and tail prediction separately.

        Returns:
            ``{"head": {...}, "tail": {...}}`` with :meth:`compute`'s metric keys plus ``"count"``
            (``num_queries`` omitted); a direction with no queries is absent.
        """
        ks = _check_ks(ks)
        grouped = self._grouped(self._table()["direction"].astype(np.int64), ks)
        return {DIRECTIONS[key]: value for key, value in grouped.items()}

    def per_relation(
        self,
        relation_names: Optional[Union[Sequence[str], Mapping[int, str]]] = None,
        ks: Iterable[int] = (1, 3, 10),
    ) -> Dict[Union[int, str], Dict[str, Any]]:
        """Metrics per relation (both directions pooled).

        Args:
            relation_names: optional id -> name lookup (list indexed by id, or mapping) used as keys.

        Returns:
            ``{relation id or name: {metric keys..., "count"}}`` in ascending id order.
        """
        ks = _check_ks(ks)
        relations = self._require("relation", "relations", "per_relation")
        grouped = self._grouped(relations, ks)
        if relation_names is None:
            return grouped
        named: Dict[Union[int, str], Dict[str, Any]] = {}
        for rel_id, metrics in grouped.items():
            try:
                name = relation_names[rel_id]
            except (IndexError, KeyError):
                raise ValueError(
                    f"`relation_names` has no entry for relation id {rel_id} "
                    f"({len(relation_names)} names given); pass a name for every relation id."
                ) from None
            named[name] = metrics
        return named

    def per_degree_bucket(self, ks: Iterable[int] = (1, 3, 10), by: str = "gold") -> Dict[int, Dict[str, Any]]:
        """Metrics per long-tail bucket (:func:`degree_bucket`) of training degree, paper Fig. 4.

        Args:
            by: ``"gold"`` buckets each query by its gold entity's degree (each query in exactly one
                bucket). ``"either"`` follows the paper's rule ("a triple is relevant to group i if h or
                t is in group i"): a query counts in the bucket of its gold entity and in that of its
                given entity (once if both agree); needs ``given_degrees``.

        Returns:
            ``{bucket: {metric keys..., "count"}}`` in ascending bucket order; empty buckets absent.
        """
        ks = _check_ks(ks)
        gold_buckets = degree_bucket(self._require("gold_degree", "gold_degrees", "per_degree_bucket"))
        if by == "gold":
            return self._grouped(gold_buckets, ks)
        if by != "either":
            raise ValueError(f"`by` must be 'gold' or 'either', got {by!r}.")
        given_buckets = degree_bucket(self._require("given_degree", "given_degrees", "per_degree_bucket(by='either')"))
        table = self._table()
        # Duplicate each query into its given entity's bucket when that differs from the gold's bucket.
        extra = np.flatnonzero(given_buckets != gold_buckets)
        index = np.concatenate([np.arange(gold_buckets.shape[0]), extra])
        groups = np.concatenate([gold_buckets, given_buckets[extra]])
        expanded = {n: table[n][index] for n in ("rank_realistic", "rank_optimistic", "rank_pessimistic")}
        return self._grouped(groups, ks, expanded)

    # ---------------------------------------------------------------- export

    def save(
        self,
        directory: Union[str, os.PathLike],
        ks: Iterable[int] = (1, 3, 10),
        relation_names: Optional[Union[Sequence[str], Mapping[int, str]]] = None,
    ) -> Dict[str, str]:
        """Write ``metrics.json`` plus per-query ranks as ``ranks.npz`` and ``ranks.csv``.

        ``metrics.json`` holds ``{"overall", "per_direction"}`` and, when every query has the metadata,
        ``"per_relation"`` and ``"per_degree_bucket"`` (JSON keys are strings).

        Returns:
            ``{"metrics": path, "npz": path, "csv": path}``.
        """
        ks = _check_ks(ks)
        os.makedirs(directory, exist_ok=True)
        table = self._table()
        report: Dict[str, Any] = {"overall": self.compute(ks), "per_direction": self.per_direction(ks)}
        if (table["relation"] >= 0).all():
            report["per_relation"] = {str(k): v for k, v in self.per_relation(relation_names, ks).items()}
        if (table["gold_degree"] >= 0).all():
            report["per_degree_bucket"] = {str(k): v for k, v in self.per_degree_bucket(ks).items()}
        paths = {
            "metrics": os.path.join(directory, "metrics.json"),
            "npz": os.path.join(directory, "ranks.npz"),
            "csv": os.path.join(directory, "ranks.csv"),
        }
        with open(paths["metrics"], "w", encoding="utf-8") as handle:
            json.dump(report, handle, indent=2)
        export = self.ranks_table()
        np.savez(paths["npz"], **export)
        with open(paths["csv"], "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(_TABLE_FIELDS)
            writer.writerows(zip(*(export[name].tolist() for name in _TABLE_FIELDS)))
        return paths

    @classmethod
    def load(cls, directory: Union[str, os.PathLike]) -> "LinkPredictionEvaluator":
        """Rebuild an evaluator from the ``ranks.npz`` written by :meth:`save`."""
        with np.load(os.path.join(directory, "ranks.npz"), allow_pickle=False) as data:
            return cls.from_ranks_table({name: data[name] for name in data.files})


# --------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------


def plot_degree_buckets(
    bucket_metrics: Mapping[Union[int, str], Mapping[str, float]],
    path: Union[str, os.PathLike],
    title: Optional[str] = None,
    metrics: Sequence[str] = ("hits@1", "hits@10"),
) -> str:
    """Bar chart of Hits@1 and Hits@10 per degree bucket (paper Fig. 4), query counts annotated.

    Uses :class:`matplotlib.figure.Figure` with the Agg canvas directly, so it never touches pyplot's
    global backend state and works headless.

    Args:
        bucket_metrics: output of :meth:`LinkPredictionEvaluator.per_degree_bucket` (int or str keys,
            e.g. reloaded from ``metrics.json``); each value needs the ``metrics`` keys and ``"count"``.
        path: PNG file to write (parent folders are created).
        title: optional figure title.
        metrics: metric keys to draw side by side.

    Returns:
        ``str(path)``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not bucket_metrics:
        raise ValueError("`bucket_metrics` is empty; nothing to plot.")
    items = sorted(((int(k), v) for k, v in bucket_metrics.items()), key=lambda kv: kv[0])
    for bucket, values in items:
        missing = [m for m in (*metrics, "count") if m not in values]
        if missing:
            raise ValueError(
                f"bucket {bucket} lacks {missing}; compute with ks including "
                f"{[m.split('@')[1] for m in metrics if '@' in m]} and pass per_degree_bucket(...) output."
            )
    labels = [degree_bucket_label(b) for b, _ in items]
    x = np.arange(len(items))
    width = 0.8 / len(metrics)

    fig = Figure(figsize=(max(6.0, 0.6 * len(items) + 2.0), 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, name in enumerate(metrics):
        ax.bar(x + (i - (len(metrics) - 1) / 2) * width, [v[name] for _, v in items], width, label=name)
    tops = [max(v[name] for name in metrics) for _, v in items]
    for xi, top, (_, values) in zip(x, tops, items):
        ax.annotate(f"n={int(values['count'])}", (xi, top), xytext=(0, 3), textcoords="offset points",
                    ha="center", va="bottom", fontsize=7)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=45 if len(items) > 8 else 0)
    ax.set_xlabel("entity training degree")
    ax.set_ylabel("score")
    ax.set_ylim(0.0, 1.1)
    ax.legend()
    if title:
        ax.set_title(title)
    fig.tight_layout()
    directory = os.path.dirname(os.fspath(path))
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, format="png", dpi=120)
    return str(path)


# --------------------------------------------------------------------------------------------------
# Triple classification
# --------------------------------------------------------------------------------------------------


def _check_probabilities(name: str, scores: ArrayLike) -> np.ndarray:
    arr = _as_numpy(scores, name).astype(np.float64)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}.")
    num_nan = int(np.isnan(arr).sum())
    if num_nan:
        raise ValueError(f"`{name}` contains {num_nan} NaN value(s).")
    if arr.size and (arr.min() < 0.0 or arr.max() > 1.0):
        raise ValueError(
            f"`{name}` must be probabilities in [0, 1], got range [{arr.min():.4g}, {arr.max():.4g}]; "
            "apply a sigmoid (or softmax over the two classes) to logits first."
        )
    return arr


def _check_labels(name: str, labels: ArrayLike, length: int, scores_name: str) -> np.ndarray:
    arr = _as_numpy(labels, name)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}.")
    if arr.shape[0] != length:
        raise ValueError(f"`{scores_name}` has length {length} but `{name}` has length {arr.shape[0]}.")
    if arr.size and not np.isin(arr, (0, 1)).all():
        raise ValueError(f"`{name}` must be binary (0/1 or bool), got values {np.unique(arr)[:10].tolist()}.")
    return arr.astype(bool)


def _check_relations(name: str, relations: ArrayLike, length: int, scores_name: str) -> np.ndarray:
    arr = _as_numpy(relations, name)
    if arr.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D, got shape {arr.shape}.")
    if arr.shape[0] != length:
        raise ValueError(f"`{scores_name}` has length {length} but `{name}` has length {arr.shape[0]}.")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"`{name}` must be integer relation ids, got dtype {arr.dtype}.")
    return arr.astype(np.int64)


def tune_thresholds(
    scores: ArrayLike, labels: ArrayLike, groups: Optional[ArrayLike] = None, prefer: float = 0.5
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Accuracy-maximising decision thresholds, one per group, fully vectorised.

    A triple is predicted true when ``score > threshold``. Candidates per group are the midpoints
    between consecutive sorted unique scores, plus "all true" (just below the smallest score) and
    "all false" (the largest score). Each candidate's accuracy comes from cumulative label counts, so
    the cost is one sort, not a loop over thresholds. Ties go to the candidate nearest ``prefer``.

    Args:
        scores: ``(M,)`` float scores.
        labels: ``(M,)`` bool/0-1 labels.
        groups: ``(M,)`` int group ids (e.g. relations); ``None`` = one global group.
        prefer: tie-break target (the untuned threshold).

    Returns:
        ``(group_ids (G,), thresholds (G,), accuracies (G,))``, group ids ascending.
    """
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(labels, dtype=bool)
    g = np.zeros(s.shape[0], dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
    if s.size == 0:
        raise ValueError("Cannot tune a threshold on zero validation triples.")
    order = np.lexsort((s, g))
    s, y, g = s[order], y[order], g[order]
    # Unique (group, score) runs.
    new_run = np.ones(s.shape[0], dtype=bool)
    new_run[1:] = (g[1:] != g[:-1]) | (s[1:] != s[:-1])
    run_id = np.cumsum(new_run) - 1
    num_runs = int(run_id[-1]) + 1
    run_score = s[new_run]
    run_group = g[new_run]
    run_pos = np.bincount(run_id, weights=y, minlength=num_runs)
    run_neg = np.bincount(run_id, weights=~y, minlength=num_runs)

    group_ids, group_start_run, group_num_runs = np.unique(run_group, return_index=True, return_counts=True)
    group_index = np.repeat(np.arange(group_ids.shape[0]), group_num_runs)  # run -> group position
    group_pos = np.bincount(group_index, weights=run_pos)
    group_neg = np.bincount(group_index, weights=run_neg)
    group_size = group_pos + group_neg

    # Within-group cumulative counts up to and including each run.
    cum_pos = np.cumsum(run_pos)
    cum_neg = np.cumsum(run_neg)
    offset_pos = np.concatenate([[0.0], cum_pos])[group_start_run][group_index]
    offset_neg = np.concatenate([[0.0], cum_neg])[group_start_run][group_index]
    pos_le = cum_pos - offset_pos
    neg_le = cum_neg - offset_neg

    # Candidate after run k: everything <= run_score[k] predicted false, the rest true.
    correct_after = neg_le + (group_pos[group_index] - pos_le)
    is_last = np.zeros(num_runs, dtype=bool)
    is_last[group_start_run + group_num_runs - 1] = True
    next_score = np.append(run_score[1:], np.inf)
    thr_after = np.where(is_last, run_score, (run_score + next_score) / 2.0)
    # "All true" candidate per group: threshold just below its smallest score.
    first_score = run_score[group_start_run]
    thr_all_true = np.nextafter(first_score, -np.inf)

    cand_group = np.concatenate([group_index, np.arange(group_ids.shape[0])])
    cand_thr = np.concatenate([thr_after, thr_all_true])
    cand_correct = np.concatenate([correct_after, group_pos])
    # Per group: most correct first, then nearest to `prefer`, then lowest threshold.
    pick = np.lexsort((cand_thr, np.abs(cand_thr - prefer), -cand_correct, cand_group))
    first = np.ones(pick.shape[0], dtype=bool)
    first[1:] = cand_group[pick][1:] != cand_group[pick][:-1]
    best = pick[first]
    return group_ids, cand_thr[best], cand_correct[best] / group_size


def _binary_metrics(predictions: np.ndarray, labels: np.ndarray) -> Dict[str, float]:
    tp = float((predictions & labels).sum())
    fp = float((predictions & ~labels).sum())
    fn = float((~predictions & labels).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


def classification_report(
    test_scores: ArrayLike,
    test_labels: ArrayLike,
    test_relations: Optional[ArrayLike] = None,
    valid_scores: Optional[ArrayLike] = None,
    valid_labels: Optional[ArrayLike] = None,
    valid_relations: Optional[ArrayLike] = None,
    threshold: float = 0.5,
) -> Dict[str, Any]:
    """Triple-classification accuracy at the paper's fixed threshold and with validation-tuned ones.

    Scores must be probabilities in ``[0, 1]`` that a triple is true (sigmoid of a logit, or the
    positive-class probability of a 2-way softmax). A triple is predicted true when
    ``score > threshold``; with the default 0.5 this equals the original LMKE code's 2-way argmax
    (a tie goes to "false"). The paper tunes no threshold; the tuned numbers are extras in the style
    of KG-BERT/NTN evaluation and are labelled as such.

    Without ``valid_scores``/``valid_labels`` the ``*_tuned_*`` and ``threshold_tuned_global`` keys are
    absent. Per-relation keys additionally need both ``test_relations`` and ``valid_relations``;
    relations of the test set missing from validation use the global tuned threshold.

    Args:
        test_scores: ``(M,)`` probabilities for test triples.
        test_labels: ``(M,)`` 0/1 or bool, 1 = true triple.
        test_relations: ``(M,)`` int relation ids (for per-relation thresholds).
        valid_scores, valid_labels, valid_relations: the same for validation triples (``(V,)``).
        threshold: the fixed threshold (paper: 0.5).

    Returns:
        Always: ``"accuracy"``, ``"precision"``, ``"recall"``, ``"f1"`` (all at ``threshold``; precision
        /recall are 0 when undefined), ``"threshold"``, ``"num_test"``.
        With validation: ``"threshold_tuned_global"``, ``"valid_accuracy_tuned_global"``,
        ``"accuracy_tuned_global"``, ``"num_valid"``.
        With validation and both relation arrays: ``"thresholds_per_relation"`` (``{relation id:
        threshold}``), ``"accuracy_tuned_per_relation"``, ``"num_test_relations_fallback"`` (test
        relations absent from validation, which used the global threshold).

    Example:
        >>> classification_report([0.9, 0.4, 0.6], [1, 0, 0])["accuracy"]
        0.6666666666666666
    """
    if not 0.0 <= float(threshold) <= 1.0:
        raise ValueError(f"`threshold` must lie in [0, 1] for probability scores, got {threshold}.")
    s_test = _check_probabilities("test_scores", test_scores)
    y_test = _check_labels("test_labels", test_labels, s_test.shape[0], "test_scores")
    if s_test.size == 0:
        raise ValueError("`test_scores` is empty.")
    r_test = None if test_relations is None else _check_relations(
        "test_relations", test_relations, s_test.shape[0], "test_scores"
    )
    predictions = s_test > threshold
    report: Dict[str, Any] = {"accuracy": float((predictions == y_test).mean())}
    report.update(_binary_metrics(predictions, y_test))
    report["threshold"] = float(threshold)
    report["num_test"] = int(s_test.shape[0])

    if (valid_scores is None) != (valid_labels is None):
        raise ValueError(
            "Pass both `valid_scores` and `valid_labels` to tune thresholds, or neither; got "
            f"valid_scores={'None' if valid_scores is None else 'given'}, "
            f"valid_labels={'None' if valid_labels is None else 'given'}."
        )
    if valid_scores is None:
        if valid_relations is not None:
            raise ValueError("`valid_relations` was given without `valid_scores`/`valid_labels`.")
        return report
    s_valid = _check_probabilities("valid_scores", valid_scores)
    y_valid = _check_labels("valid_labels", valid_labels, s_valid.shape[0], "valid_scores")
    if s_valid.size == 0:
        raise ValueError("`valid_scores` is empty; pass validation triples or leave it None.")

    _, global_thr, global_acc = tune_thresholds(s_valid, y_valid, prefer=threshold)
    report["threshold_tuned_global"] = float(global_thr[0])
    report["valid_accuracy_tuned_global"] = float(global_acc[0])
    report["accuracy_tuned_global"] = float(((s_test > global_thr[0]) == y_test).mean())
    report["num_valid"] = int(s_valid.shape[0])

    if (test_relations is None) != (valid_relations is None):
        raise ValueError(
            "Per-relation thresholds need both `test_relations` and `valid_relations`; got "
            f"test_relations={'None' if test_relations is None else 'given'}, "
            f"valid_relations={'None' if valid_relations is None else 'given'}. Pass both or neither."
        )
    if valid_relations is None:
        return report
    r_valid = _check_relations("valid_relations", valid_relations, s_valid.shape[0], "valid_scores")
    rel_ids, rel_thr, _ = tune_thresholds(s_valid, y_valid, r_valid, prefer=threshold)
    position = np.clip(np.searchsorted(rel_ids, r_test), 0, rel_ids.shape[0] - 1)
    found = rel_ids[position] == r_test
    test_thr = np.where(found, rel_thr[position], global_thr[0])
    report["thresholds_per_relation"] = {int(r): float(t) for r, t in zip(rel_ids.tolist(), rel_thr.tolist())}
    report["accuracy_tuned_per_relation"] = float(((s_test > test_thr) == y_test).mean())
    report["num_test_relations_fallback"] = int(np.unique(r_test[~found]).shape[0])
    return report
