"""Graph re-ranking of link-prediction scores: SimKGC's bonus for candidates near the given entity.

SimKGC (Wang et al., ACL 2022, section 3.5 and its `rerank.py`) adds a small constant to the score of every entity
within `n` hops of the query's given entity in the TRAINING graph (edges undirected, relations ignored): answers in
WN18RR and FB15k-237 tend to lie close to the given entity, which a text encoder does not see. SimKGC's published
numbers use it (weight 0.05 on cosine scores; 5 hops on the sparse WN18RR, 2 elsewhere; never in the inductive
setting, where the entities to predict have no training edges).

The bonus depends only on the given entity and the graph of the splits named, never on the gold answer. A graph may
hold only splits that come before the ranked one (train < validation < test): the ranked split's own triples would
put each gold answer one hop from its query, and a later split's would carry test facts into validation.

Two differences from SimKGC's code: the given entity itself gets no bonus (it is the answer only through a
self-loop; C-LMKE's `--self_negatives` / `--own_entity_bias` learn how to score it), and no neighbourhood is
dropped for being large (SimKGC gives no bonus at all past 100,000 entities reached, which only matters on graphs
of millions of entities).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from ..kg import KnowledgeGraph

SPLIT_ORDER = ("train", "validation", "test")  # lmke_hf.kg.SPLITS, not imported: the metrics load without the data code


class GraphReranker:
    """Adds `weight` to the scores of the entities within `hops` undirected hops of each query's given entity.

    Reachability is computed for a whole block of queries at once, one sparse `(N, N) x (N, B)` product a hop: about
    two float `(B, N)` blocks beside the scores, and one copy of the scores for the result.

    Args:
        kg (`KnowledgeGraph`): the graph whose positives of `splits` are the edges.
        splits (`Sequence[str]`): the splits that make the graph; SimKGC uses `["train"]`. No default, so that
            evaluation triples enter only when named.
        hops (`int`): the radius, >= 1 (SimKGC: 5 for WN18RR, 2 otherwise).
        weight (`float`): added to a neighbour's score (SimKGC: 0.05 on cosine scores); a negative weight demotes
            neighbours instead.
        device (*optional*): where the adjacency lives (that of the scores; default CPU).

    Example::

        >>> kg = load_kg("wn18rr", data_dir="/path/to/data")                       # doctest: +SKIP
        >>> reranker = GraphReranker(kg, ["train"], hops=5, weight=0.05)            # doctest: +SKIP
        >>> reranker.check_split("test")                                            # doctest: +SKIP
        >>> scores = reranker(scores, given_entity_ids)  # (B, N) + 0.05 on each neighbour  # doctest: +SKIP
    """

    def __init__(
        self,
        kg: KnowledgeGraph,
        splits: Sequence[str],
        hops: int,
        weight: float,
        device: torch.device | str | None = None,
    ) -> None:
        if isinstance(hops, bool) or not isinstance(hops, (int, np.integer)) or hops < 1:
            raise ValueError(f"`hops` must be an integer >= 1, got {hops!r}; SimKGC uses 2 (5 on WN18RR).")
        if not math.isfinite(weight):
            raise ValueError(f"`weight` must be a finite number, got {weight!r}; SimKGC uses 0.05.")
        self.splits = kg._check_split_list(splits, "splits")
        self.hops, self.weight, self.num_entities = int(hops), float(weight), kg.num_entities
        edges = kg._positives(self.splits)[:, [0, 2]]
        n = kg.num_entities
        # both directions, de-duplicated and sorted by (row, column): a coalesced COO matrix without a check
        keys = np.unique(np.concatenate([edges[:, 0] * n + edges[:, 1], edges[:, 1] * n + edges[:, 0]]))
        indices = torch.from_numpy(np.stack([keys // n, keys % n]))
        self.adjacency = torch.sparse_coo_tensor(
            indices, torch.ones(len(keys)), (n, n), is_coalesced=True, check_invariants=False
        ).to(device if device is not None else "cpu")

    @property
    def num_edges(self) -> int:
        """Undirected edges of the graph, self-loops counted once."""
        rows, cols = self.adjacency.indices()
        return int((rows <= cols).sum())

    def check_split(self, split: str) -> None:
        """Refuses to re-rank `split` with a graph that holds it or a later split (train < validation < test): its
        own triples would put each gold answer one hop from its query, a later split's carry facts it must not see."""
        order = {name: position for position, name in enumerate(SPLIT_ORDER)}
        if split not in order:
            raise ValueError(f"cannot re-rank split {split!r}: the graph's splits are ordered {list(SPLIT_ORDER)}.")
        late = [name for name in self.splits if order.get(name, len(order)) >= order[split]]
        if late:
            allowed = list(SPLIT_ORDER[: order[split]])
            fix = f"build it from {allowed}" if allowed else f"no split comes before {split!r}: rank another split"
            raise ValueError(
                f"the re-ranking graph is made of {self.splits}, which holds {late} while {split!r} is being ranked: "
                f"the gold answers (or facts not yet known) would sit next to their queries; {fix}."
            )

    def neighbours(self, given: torch.Tensor) -> torch.Tensor:
        """`(B, N)` bool: which entities lie within `hops` hops of each given entity `(B,)` (the entity itself not)."""
        given = given.to(self.adjacency.device).long()
        reached = torch.zeros(self.num_entities, given.shape[0], device=self.adjacency.device)
        column = torch.arange(given.shape[0], device=given.device)
        reached[given, column] = 1.0
        for _ in range(self.hops):
            reached.add_(torch.sparse.mm(self.adjacency, reached)).clamp_(max=1.0)
        reached[given, column] = 0.0
        return reached.T.bool()

    def __call__(self, scores: torch.Tensor, given: torch.Tensor) -> torch.Tensor:
        """`scores` `(B, N)` plus `weight` where the candidate is a neighbour of the query's given entity `(B,)`."""
        if scores.shape != (given.shape[0], self.num_entities):
            raise ValueError(
                f"`scores` has shape {tuple(scores.shape)}, expected ({given.shape[0]}, {self.num_entities}): one row "
                "per given entity, one column per entity of the graph."
            )
        adjusted = scores.clone()
        adjusted[self.neighbours(given).to(scores.device)] += self.weight
        return adjusted

    def describe(self) -> dict:
        """The settings, as written next to the metrics they produced."""
        return {"splits": self.splits, "hops": self.hops, "weight": self.weight}


__all__ = ["GraphReranker"]
