"""Tokenised datasets and collators for LMKE (triple classification) and C-LMKE (link prediction).

C-LMKE examples are tokenised once with a batched `Dataset.map`; LMKE training triples (`TrainingTriples`, whose
negatives can change every epoch) are tokenised on access, a batch at a time. Collators pad dynamically and, for
C-LMKE, attach each query's known training answers so that in-batch keys that are true answers become
positives (multi-label), also for keys gathered from other processes.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import datasets
import numpy as np
import torch

from .kg.negatives import _rng, generate_negatives
from .tokenization_lmke import DIRECTIONS, LmkeTokenizer, pad_sequences

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import Protocol

    from .kg import AnswerIndex, KnowledgeGraph

    class _HasLengths(Protocol):
        """A dataset that counts its own examples' word pieces (`TrainingTriples`)."""

        def __len__(self) -> int: ...

        def lengths(self) -> np.ndarray: ...


DIRECTION_NAMES = DIRECTIONS  # values of the `direction` column: indices into it
TAIL, HEAD = DIRECTIONS.index("tail"), DIRECTIONS.index("head")


def _fingerprint(*parts) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:16]


def _tokenizer_fingerprint(tokenizer: LmkeTokenizer) -> str:
    """What the tokenised columns depend on: the word-piece tokenizer, the lengths and every id and text. Hashed
    with sha256, not Python's `hash()`, which is salted per process (the `datasets` cache never matched across
    runs) and covered only the first 50 descriptions (a changed later description reused stale tokens)."""
    texts = hashlib.sha256()
    for part in (
        tokenizer.entity_ids,
        tokenizer.entity_names,
        tokenizer.entity_descriptions,
        tokenizer.relation_ids,
        getattr(tokenizer, "relation_names", []),
        getattr(tokenizer, "relation_descriptions", []),
    ):
        texts.update("\x1f".join(map(str, part)).encode())
        texts.update(b"\x1e")
    return _fingerprint(
        type(tokenizer.tokenizer).__name__,
        tokenizer.tokenizer.name_or_path,
        tokenizer.base_vocab_size,
        tokenizer.num_entities,
        tokenizer.num_relations,
        tokenizer.max_entity_description_length,
        tokenizer.max_relation_description_length,
        tokenizer.max_key_description_length,
        texts.hexdigest(),
    )


def link_prediction_examples(triples: np.ndarray, directions: Sequence[str] = ("tail", "head")) -> datasets.Dataset:
    """One example per (triple, direction): columns `given`, `relation`, `target`, `direction` (0 tail, 1 head).

    Args:
        triples (`np.ndarray` of shape `(n, 3)`): head, relation, tail ids.
    """
    triples = np.asarray(triples, dtype=np.int64).reshape(-1, 3)
    if len(triples) == 0:
        raise ValueError("No triples given: the split is empty.")
    parts = []
    for name in directions:
        if name not in DIRECTION_NAMES:
            raise ValueError(f"direction must be 'head' or 'tail', got {name!r}.")
        given, target = (triples[:, 0], triples[:, 2]) if name == "tail" else (triples[:, 2], triples[:, 0])
        parts.append((given, triples[:, 1], target, np.full(len(triples), DIRECTION_NAMES.index(name), np.int8)))
    cols = [np.concatenate(c) for c in zip(*parts)]
    return datasets.Dataset.from_dict({"given": cols[0], "relation": cols[1], "target": cols[2], "direction": cols[3]})


def tokenize_link_prediction(
    examples: datasets.Dataset, tokenizer: LmkeTokenizer, num_proc: int | None = None
) -> datasets.Dataset:
    """Adds `query_input_ids` and `key_input_ids` (unpadded lists) with a batched `Dataset.map`."""

    def encode(batch):
        names = [DIRECTION_NAMES[d] for d in batch["direction"]]
        return {
            "query_input_ids": tokenizer.encode_queries(batch["given"], batch["relation"], names)["input_ids"],
            "key_input_ids": tokenizer.encode_keys(batch["target"])["input_ids"],
        }

    return examples.map(
        encode,
        batched=True,
        batch_size=2048,
        num_proc=num_proc,
        desc="Tokenising queries and keys",
        new_fingerprint=_fingerprint(examples._fingerprint, _tokenizer_fingerprint(tokenizer), "lp"),
    )


def tokenize_triples(
    examples: datasets.Dataset, tokenizer: LmkeTokenizer, num_proc: int | None = None
) -> datasets.Dataset:
    """Adds `input_ids` (unpadded) to a dataset with `head`, `relation`, `tail` columns."""

    def encode(batch):
        return {"input_ids": tokenizer.encode_triples(batch["head"], batch["relation"], batch["tail"])["input_ids"]}

    return examples.map(
        encode,
        batched=True,
        batch_size=2048,
        num_proc=num_proc,
        desc="Tokenising triples",
        new_fingerprint=_fingerprint(examples._fingerprint, _tokenizer_fingerprint(tokenizer), "tc"),
    )


@dataclass
class ClmkeCollator:
    """Pads queries and keys and attaches `answer_ids`: the known answers (from `tail_answers`/`head_answers`,
    built on the TRAINING split) of each query, padded with -1; the model turns them into the multi-label
    in-batch targets.

    Args:
        pad_token_id (`int`): the word-piece pad id.
        tail_answers, head_answers (`AnswerIndex`, *optional*): `kg.answer_index(["train"], "tail")` and
            `(["train"], "head")`; without them only the diagonal (each query's own key) is positive.
        pad_to_multiple_of (`int`, *optional*): round padded lengths up (helps fused kernels on GPUs).
        self_negatives (`bool`): also give the keys of the queries' own given entities as `extra_key_input_ids`
            (self-negatives, as in SimKGC), encoded with `tokenizer`.
        tokenizer (`LmkeTokenizer`, *optional*): the KG tokenizer that encodes those keys; needed with
            `self_negatives`.
    """

    pad_token_id: int
    tail_answers: AnswerIndex | None = None
    head_answers: AnswerIndex | None = None
    pad_to_multiple_of: int | None = None
    self_negatives: bool = False
    tokenizer: LmkeTokenizer | None = None

    def __post_init__(self) -> None:
        if self.self_negatives and self.tokenizer is None:
            raise ValueError(
                "ClmkeCollator(self_negatives=True) encodes the given entities' keys: pass tokenizer=<the LmkeTokenizer>."
            )

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        q_ids, q_mask = pad_sequences(
            [f["query_input_ids"] for f in features], self.pad_token_id, self.pad_to_multiple_of
        )
        k_ids, k_mask = pad_sequences(
            [f["key_input_ids"] for f in features], self.pad_token_id, self.pad_to_multiple_of
        )
        batch = {
            "query_input_ids": q_ids,
            "query_attention_mask": q_mask,
            "key_input_ids": k_ids,
            "key_attention_mask": k_mask,
        }
        given = np.asarray([f["given"] for f in features], dtype=np.int64)
        relation = np.asarray([f["relation"] for f in features], dtype=np.int64)
        target = np.asarray([f["target"] for f in features], dtype=np.int64)
        direction = np.asarray([f["direction"] for f in features], dtype=np.int64)
        columns = [target[:, None]]
        for value, index in ((TAIL, self.tail_answers), (HEAD, self.head_answers)):
            rows = direction == value
            if index is not None and rows.any():
                sub = index.padded(given[rows], relation[rows], pad_value=-1)
                padded = np.full((len(features), sub.shape[1]), -1, dtype=np.int64)
                padded[rows] = sub
                columns.append(padded)
        batch["answer_ids"] = torch.from_numpy(np.concatenate(columns, axis=1))
        if self.self_negatives:
            own = self.tokenizer.encode_keys(given)["input_ids"]
            batch["extra_key_input_ids"], batch["extra_key_attention_mask"] = pad_sequences(
                own, self.pad_token_id, self.pad_to_multiple_of
            )
        return batch


class TrainingTriples(torch.utils.data.Dataset):
    """LMKE training examples: each positive of `split` followed by one corrupted negative (head or tail replaced,
    never a positive of `known_splits`; see `generate_negatives`), items `{"input_ids", "label"}` tokenised on access.

    Epoch 0's negatives are `generate_negatives(kg, split, seed)`; with `resample=True` epoch `e > 0` draws its own
    from `np.random.default_rng([seed, e])`. Either way they are the same in every process of a multi-process run
    and after a resume. The training loop calls `set_epoch(e)` at the start of each epoch.

    Args:
        kg (`KnowledgeGraph`): the graph.
        tokenizer (`LmkeTokenizer`): encodes the triples.
        seed (`int`): seed of the negatives.
        split (`str`): the split whose positives are used (default `"train"`).
        known_splits (sequence of `str`): splits whose positives a negative must avoid (default the training
            split only: validation and test triples stay unseen).
        resample (`bool`): draw new negatives each epoch, or keep epoch 0's for the whole run (default, as the
            original code, which draws them once).
        corruption (`str`): `"uniform"` replacing entities (the paper) or `"relation"`: drawn from the entities seen
            in that position of that relation in training (see `generate_negatives`).
    """

    def __init__(
        self,
        kg: KnowledgeGraph,
        tokenizer: LmkeTokenizer,
        seed: int = 0,
        split: str = "train",
        known_splits: Sequence[str] = ("train",),
        resample: bool = False,
        corruption: str = "uniform",
    ) -> None:
        _rng(seed)  # the same checks as generate_negatives: a non-negative int (`corruption` is checked there)
        self.kg, self.tokenizer, self.seed, self.split = kg, tokenizer, int(seed), split
        self.known_splits, self.resample, self.corruption = list(known_splits), bool(resample), corruption
        self.epoch = None
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        epoch = int(epoch) if self.resample else 0
        if epoch == self.epoch:
            return
        seed = np.random.default_rng([self.seed, epoch]) if epoch else self.seed
        rows = generate_negatives(
            self.kg, self.split, seed=seed, known_splits=self.known_splits, corruption=self.corruption
        )
        self.triples = np.stack([np.asarray(rows[c], dtype=np.int64) for c in ("head", "relation", "tail")], axis=1)
        self.labels = np.asarray(rows["label"], dtype=np.int64)
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def lengths(self) -> np.ndarray:
        """Word pieces of each of this epoch's triples (for `LengthGroupedSampler`); tokenised again only when the
        negatives were redrawn."""
        cached = getattr(self, "_lengths", None)
        if cached is not None and cached[0] == self.epoch:
            return cached[1]
        out = np.empty(len(self.labels), dtype=np.int64)
        for start in range(0, len(out), 65536):
            rows = self.triples[start : start + 65536]
            out[start : start + len(rows)] = [
                len(x) for x in self.tokenizer.encode_triples(rows[:, 0], rows[:, 1], rows[:, 2])["input_ids"]
            ]
        self._lengths = (self.epoch, out)
        return out

    def __getitems__(
        self, indices: Sequence[int] | np.ndarray
    ) -> list[dict]:  # batched fetch (torch DataLoader): one tokeniser call per batch
        indices = np.asarray(indices, dtype=np.int64)
        triples = self.triples[indices]
        ids = self.tokenizer.encode_triples(triples[:, 0], triples[:, 1], triples[:, 2])["input_ids"]
        return [{"input_ids": x, "label": int(y)} for x, y in zip(ids, self.labels[indices])]

    def __getitem__(self, index: int) -> dict:
        return self.__getitems__([index])[0]


def example_lengths(dataset: _HasLengths | datasets.Dataset) -> np.ndarray:
    """Word pieces per training example, what a batch is padded by: `dataset.lengths()` when it has one (e.g.
    `TrainingTriples`, whose negatives change per epoch), else the lengths of the id columns of a tokenised
    `datasets.Dataset`: `(N,)` for `input_ids`, `(N, 2)` for C-LMKE's `query_input_ids` and `key_input_ids` (padded
    separately: a batch costs its longest query plus its longest key)."""
    if hasattr(dataset, "lengths"):
        return np.asarray(dataset.lengths(), dtype=np.int64)
    import pyarrow.compute as pc

    columns = [c for c in ("input_ids", "query_input_ids", "key_input_ids") if c in dataset.column_names]
    if not columns:
        raise ValueError(
            f"Cannot group by length: the dataset has no input_ids columns (it has {dataset.column_names})."
        )
    table = dataset.with_format("arrow")[:]
    lengths = np.stack([pc.list_value_length(table[c]).to_numpy(zero_copy_only=False) for c in columns], axis=1).astype(
        np.int64
    )
    return lengths[:, 0] if lengths.shape[1] == 1 else lengths


def _length_order_key(lengths: np.ndarray) -> np.ndarray:
    """What examples are sorted by: their length; with several separately padded parts (query and key), the longest
    part first, then the total. (Sorting by the total alone pairs long queries with short keys, and both still pad
    to their own maximum: on WN18RR at batch 128 that removes 11 % of the padded tokens, this 23 %.)"""
    if lengths.ndim == 1:
        return lengths
    total = lengths.sum(1)
    return lengths.max(1) * (int(total.max(initial=0)) + 1) + total


class LengthGroupedSampler(torch.utils.data.Sampler):
    """Batches of examples of similar length (transformers' `group_by_length`), so that a batch pads to little more
    than its own examples: each epoch shuffles the examples (seeded by `seed` and the epoch), sorts each run of
    `batch_size * mega_batch_mult` of them by length and cuts it into batches, then shuffles the order of those
    batches. Deterministic per epoch (`set_epoch`), so a resumed run sees the same batches; the one incomplete batch
    comes last (where `drop_last` drops it)."""

    def __init__(
        self, dataset: _HasLengths | datasets.Dataset, batch_size: int, seed: int = 0, mega_batch_mult: int = 50
    ) -> None:
        if batch_size < 1 or mega_batch_mult < 1:
            raise ValueError(f"batch_size and mega_batch_mult must be >= 1, got {batch_size} and {mega_batch_mult}.")
        self.dataset, self.batch_size, self.seed, self.mega_batch_mult = (
            dataset,
            int(batch_size),
            int(seed),
            int(mega_batch_mult),
        )
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self) -> list[np.ndarray]:
        """This epoch's batches of example indices, in order."""
        key = _length_order_key(example_lengths(self.dataset))  # read now: a dataset's set_epoch may have changed them
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(key))
        size = self.batch_size * self.mega_batch_mult
        full, rest = [], []
        for start in range(0, len(order), size):
            chunk = order[start : start + size]
            chunk = chunk[np.argsort(-key[chunk], kind="stable")]
            for b in range(0, len(chunk), self.batch_size):
                (full if len(chunk[b : b + self.batch_size]) == self.batch_size else rest).append(
                    chunk[b : b + self.batch_size]
                )
        return [full[i] for i in rng.permutation(len(full))] + rest

    def __iter__(self) -> Iterator[int]:
        for batch in self.batches():
            yield from batch.tolist()


@dataclass
class LmkeCollator:
    """Pads triples for [`LmkeForTripleClassification`]; passes `labels` (float) when the features have them."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        ids, mask = pad_sequences([f["input_ids"] for f in features], self.pad_token_id, self.pad_to_multiple_of)
        batch = {"input_ids": ids, "attention_mask": mask}
        if "label" in features[0]:
            batch["labels"] = torch.tensor([float(f["label"]) for f in features])
        return batch


__all__ = [
    "link_prediction_examples",
    "tokenize_link_prediction",
    "tokenize_triples",
    "TrainingTriples",
    "ClmkeCollator",
    "LmkeCollator",
    "LengthGroupedSampler",
    "example_lengths",
]
