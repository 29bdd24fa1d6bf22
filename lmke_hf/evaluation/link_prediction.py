"""Link-prediction results: `LinkPredictionEvaluator` (ranks with per-query metadata, grouped metrics, export),
long-tail degree buckets (paper Fig. 1 / Fig. 4) and their bar chart."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .ranks import (
    DIRECTIONS,
    ArrayLike,
    RankTriple,
    _as_numpy,
    _check_direction,
    _check_index_vector,
    _check_ks,
    filtered_ranks,
    ranking_metrics_from_ranks,
)

# --------------------------------------------------------------------------------------------------
# Degree buckets (paper Fig. 1 / Fig. 4)
# --------------------------------------------------------------------------------------------------


def degree_bucket(degrees: ArrayLike) -> np.ndarray:
    """Long-tail bucket of each degree: ``0`` for degree 0, else ``floor(log2(deg)) + 1``.

    So 0 -> 0, 1 -> 1, 2..3 -> 2, 4..7 -> 3, 8..15 -> 4, ... (the bit length of the degree), exact
    for any integer degree (no floating-point ``log2``).

    Args:
        degrees: non-negative integers (training degrees of entities), of any shape; floats holding whole numbers
            (e.g. a model's `entity_degrees`) count as integers.

    Returns:
        int64 numpy array of bucket ids, the shape of ``degrees``.

    Example:
        >>> degree_bucket([0, 1, 2, 3, 4, 7, 8]).tolist()
        [0, 1, 2, 2, 3, 3, 4]
    """
    arr = _as_numpy(degrees, "degrees")
    whole = np.issubdtype(arr.dtype, np.floating) and bool(np.all(np.isfinite(arr) & (arr == np.round(arr))))
    if arr.size and not (np.issubdtype(arr.dtype, np.integer) or whole):
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
    return f"{2 ** (bucket - 1)}-{2**bucket - 1}"


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
        >>> _ = ev.update(
        ...     s,
        ...     torch.tensor([0, 2]),
        ...     direction="tail",
        ...     relations=torch.tensor([0, 1]),
        ...     gold_degrees=torch.tensor([3, 0]),
        ... )
        >>> ev.compute(ks=(1,))["hits@1"]
        0.5
    """

    def __init__(self) -> None:
        self._chunks: dict[str, list[np.ndarray]] = {name: [] for name in _TABLE_FIELDS}
        self._cache: dict[str, np.ndarray] | None = None

    # ---------------------------------------------------------------- accumulation

    def __len__(self) -> int:
        return int(sum(chunk.shape[0] for chunk in self._chunks["rank_realistic"]))

    def update(
        self,
        scores: torch.Tensor,
        gold: torch.Tensor,
        filter_rows: torch.Tensor | None = None,
        filter_cols: torch.Tensor | None = None,
        direction: str | None = None,
        relations: torch.Tensor | None = None,
        gold_degrees: torch.Tensor | None = None,
        given_degrees: torch.Tensor | None = None,
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
        relations: torch.Tensor | None = None,
        gold_degrees: torch.Tensor | None = None,
        given_degrees: torch.Tensor | None = None,
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

    def merge(self, other: LinkPredictionEvaluator) -> LinkPredictionEvaluator:
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

    def _table(self) -> dict[str, np.ndarray]:
        if self._cache is None:
            if not len(self):
                raise ValueError("The evaluator holds no queries; call `update(...)` or `add_ranks(...)` first.")
            self._cache = {name: np.concatenate(chunks) for name, chunks in self._chunks.items()}
            self._chunks = {name: [arr] for name, arr in self._cache.items()}
        return self._cache

    def ranks_table(self) -> dict[str, np.ndarray]:
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
    def from_ranks_table(cls, table: Mapping[str, ArrayLike]) -> LinkPredictionEvaluator:
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
        columns: dict[str, np.ndarray] = {"direction": (direction == DIRECTIONS[1]).astype(np.int8)}
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
    def _metrics(table: Mapping[str, np.ndarray], ks: tuple[int, ...]) -> dict[str, float]:
        metrics = ranking_metrics_from_ranks(table["rank_realistic"], ks)
        for kind in ("optimistic", "pessimistic"):
            extra = ranking_metrics_from_ranks(table[f"rank_{kind}"], ())
            metrics[f"mr_{kind}"] = extra["mr"]
            metrics[f"mrr_{kind}"] = extra["mrr"]
        return metrics

    def compute(self, ks: Iterable[int] = (1, 3, 10)) -> dict[str, float]:
        """Metrics over all stored queries (both directions pooled, as in the paper).

        Returns:
            ``{"mr", "mrr", "hits@<k>" (realistic ranks), "mr_optimistic", "mrr_optimistic",
            "mr_pessimistic", "mrr_pessimistic", "num_queries"}``.
        """
        ks = _check_ks(ks)
        table = self._table()
        metrics: dict[str, Any] = self._metrics(table, ks)
        metrics["num_queries"] = int(table["rank_realistic"].shape[0])
        return metrics

    def _grouped(
        self, groups: np.ndarray, ks: tuple[int, ...], table: Mapping[str, np.ndarray] | None = None
    ) -> dict[int, dict[str, Any]]:
        table = self._table() if table is None else table
        # One sort groups the queries; slicing the sorted view avoids a mask per group.
        order = np.argsort(groups, kind="stable")
        sorted_groups = groups[order]
        keys, starts, counts = np.unique(sorted_groups, return_index=True, return_counts=True)
        sorted_table = {n: table[n][order] for n in ("rank_realistic", "rank_optimistic", "rank_pessimistic")}
        result: dict[int, dict[str, Any]] = {}
        for key, start, count in zip(keys.tolist(), starts.tolist(), counts.tolist()):
            sl = slice(start, start + count)
            part = {n: arr[sl] for n, arr in sorted_table.items()}
            metrics: dict[str, Any] = self._metrics(part, ks)
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

    def per_direction(self, ks: Iterable[int] = (1, 3, 10)) -> dict[str, dict[str, Any]]:
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
        relation_names: Sequence[str] | Mapping[int, str] | None = None,
        ks: Iterable[int] = (1, 3, 10),
    ) -> dict[int | str, dict[str, Any]]:
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
        named: dict[int | str, dict[str, Any]] = {}
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

    def per_degree_bucket(self, ks: Iterable[int] = (1, 3, 10), by: str = "gold") -> dict[int, dict[str, Any]]:
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
        directory: str | os.PathLike,
        ks: Iterable[int] = (1, 3, 10),
        relation_names: Sequence[str] | Mapping[int, str] | None = None,
    ) -> dict[str, str]:
        """Write ``metrics.json`` plus per-query ranks as ``ranks.npz`` and ``ranks.csv``.

        ``metrics.json`` holds ``{"overall", "per_direction"}`` and, when every query has the metadata,
        ``"per_relation"`` and ``"per_degree_bucket"`` (JSON keys are strings).

        Returns:
            ``{"metrics": path, "npz": path, "csv": path}``.
        """
        ks = _check_ks(ks)
        os.makedirs(directory, exist_ok=True)
        table = self._table()
        report: dict[str, Any] = {"overall": self.compute(ks), "per_direction": self.per_direction(ks)}
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
    def load(cls, directory: str | os.PathLike) -> LinkPredictionEvaluator:
        """Rebuild an evaluator from the ``ranks.npz`` written by :meth:`save`."""
        with np.load(os.path.join(directory, "ranks.npz"), allow_pickle=False) as data:
            return cls.from_ranks_table({name: data[name] for name in data.files})


# --------------------------------------------------------------------------------------------------
# Plot
# --------------------------------------------------------------------------------------------------


def plot_degree_buckets(
    bucket_metrics: Mapping[int | str, Mapping[str, float]],
    path: str | os.PathLike,
    title: str | None = None,
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
        ax.annotate(
            f"n={int(values['count'])}",
            (xi, top),
            xytext=(0, 3),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=7,
        )
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


__all__ = ["degree_bucket", "degree_bucket_label", "LinkPredictionEvaluator", "plot_degree_buckets"]
