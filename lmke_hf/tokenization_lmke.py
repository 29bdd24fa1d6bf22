"""`LmkeTokenizer`: a word-piece tokenizer plus one token per entity and per relation.

Self-contained (imports transformers, numpy, torch and `configuration_lmke` only) so that it travels with pushed checkpoints.

The KG tokens are *registered* by arithmetic, not added to the fast tokenizer's trie: entity ``e`` is token
``entity_token_offset + e`` (see `configuration_lmke` for the layout). Descriptions are word-pieced once per
entity/relation with the fast tokenizer and cached; building a triple, query or key is then a concatenation of
cached id lists, so no text is ever scanned for tens of thousands of added tokens.
"""

from __future__ import annotations

import difflib
import json
import os
import unicodedata
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import PushToHubMixin

from .configuration_lmke import KgVocabLayout

KG_VOCAB_FILE = "kg_vocab.json"
NAME_PIECES = 32  # word pieces of a name (or, for a nameless entity, of its text) that initialise its KG token
DIRECTIONS = ("tail", "head")  # the element predicted; its index is the `direction` value in datasets and evaluators
_PLURAL = {"entity": "entities", "relation": "relations"}
_MAX_EXCERPT = 200  # characters of a value an error message quotes at most


def _excerpt(value, quote=repr) -> str:
    """``quote(value)`` (``repr`` or ``ascii``) cut to a short excerpt, so one odd value cannot flood a message."""
    if isinstance(value, np.generic):
        value = value.item()  # False, not np.False_
    if not isinstance(value, str):
        text = repr(value)
        return text if len(text) <= _MAX_EXCERPT else text[:_MAX_EXCERPT] + "..."
    if len(value) <= _MAX_EXCERPT:
        return quote(value)
    return f"{quote(value[:_MAX_EXCERPT])}... ({len(value):,} characters in all)"


def entity_text(name: str, description: str) -> str:
    """The text that describes an entity: its description, prefixed by its name unless it already starts with it."""
    name = (name or "").strip()
    description = (description or "").strip()
    if not description:
        return name
    if not name or description.lower().startswith(name.lower()):
        return description
    return f"{name}, {description}"


def pad_sequences(sequences, pad_id: int, pad_to_multiple_of: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads lists of token ids to the longest one (rounded up to a multiple of `pad_to_multiple_of`), without a
    Python loop over the sequences: `(input_ids, attention_mask)`, both `(len(sequences), length)` long tensors."""
    if len(sequences) == 0:
        raise ValueError("Cannot pad an empty batch: got no sequences.")
    lengths = torch.tensor([len(s) for s in sequences])
    length = int(lengths.max())
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    if int(lengths.sum()):
        ids[mask] = torch.as_tensor(np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]))
    return ids, mask.long()


class LmkeTokenizer(KgVocabLayout, PushToHubMixin):
    r"""Builds LMKE / C-LMKE inputs from entity and relation ids.

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the encoder's (fast) tokenizer; supplies `[CLS]`, `[SEP]`, `[PAD]`
            and the word pieces of descriptions.
        entity_ids (`Sequence[str]`): original ids of the entities; position = integer entity id.
        relation_ids (`Sequence[str]`): original ids of the relations.
        entity_names, entity_descriptions, relation_names, relation_descriptions (`Sequence[str]`, *optional*):
            texts; missing or empty ones are allowed (the entity still gets its token, the paper's point).
        max_entity_description_length (`int`, defaults to 241): word pieces of an entity description in a triple
            or query.
        max_relation_description_length (`int`, defaults to 16): word pieces of a relation text.
        max_key_description_length (`int`, defaults to 508): word pieces of the entity description in a key.

    Layouts (one token per KG element, `E_x`/`R_x`, then its description):
        triple `[CLS] E_h desc(h) R_r desc(r) E_t desc(t) [SEP]`;
        tail query `[CLS] E_h desc(h) R_r desc(r) [ENT_MASK] [SEP]`; head query `[CLS] [ENT_MASK] R_r desc(r) E_t desc(t) [SEP]`;
        key `[CLS] E_e desc(e) [SEP]`.
    """

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        entity_ids: Sequence[str],
        relation_ids: Sequence[str],
        entity_names: Sequence[str] | None = None,
        entity_descriptions: Sequence[str] | None = None,
        relation_names: Sequence[str] | None = None,
        relation_descriptions: Sequence[str] | None = None,
        max_entity_description_length: int = 241,
        max_relation_description_length: int = 16,
        max_key_description_length: int = 508,
    ):
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError(
                f"The word-piece tokenizer {type(tokenizer).__name__} lacks a CLS, SEP or PAD token; LMKE needs a "
                "BERT-family tokenizer (BERT, RoBERTa, DeBERTa-v2, MiniLM)."
            )
        self.tokenizer = tokenizer
        self.entity_ids = _ids(entity_ids, "entity_ids")
        self.relation_ids = _ids(relation_ids, "relation_ids")
        self.entity_names = _texts(entity_names, self.entity_ids, "entity_names")
        self.entity_descriptions = _texts(entity_descriptions, self.entity_ids, "entity_descriptions", default="")
        self.relation_names = _texts(relation_names, self.relation_ids, "relation_names")
        self.relation_descriptions = _texts(relation_descriptions, self.relation_ids, "relation_descriptions", default="")
        for name, value in (
            ("max_entity_description_length", max_entity_description_length),
            ("max_relation_description_length", max_relation_description_length),
            ("max_key_description_length", max_key_description_length),
        ):
            if value < 0:
                raise ValueError(f"`{name}` must be >= 0, got {value}.")
        self.max_entity_description_length = int(max_entity_description_length)
        self.max_relation_description_length = int(max_relation_description_length)
        self.max_key_description_length = int(max_key_description_length)
        self._check_lengths()
        self._entity_index = {e: i for i, e in enumerate(self.entity_ids)}
        self._relation_index = {r: i for i, r in enumerate(self.relation_ids)}
        if len(self._entity_index) != len(self.entity_ids):
            raise ValueError("`entity_ids` contains duplicates; each entity needs exactly one id.")
        if len(self._relation_index) != len(self.relation_ids):
            raise ValueError("`relation_ids` contains duplicates; each relation needs exactly one id.")
        self._entity_pieces: list[list[int]] | None = None
        self._entity_piece_rows: dict[int, list[int]] = {}  # rows tokenised before all of them were needed
        self._relation_pieces: list[list[int]] | None = None

    # ------------------------------------------------------------------ vocabulary
    @property
    def base_vocab_size(self) -> int:
        return len(self.tokenizer)

    @property
    def num_entities(self) -> int:
        return len(self.entity_ids)

    @property
    def num_relations(self) -> int:
        return len(self.relation_ids)


    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def __len__(self) -> int:
        return self.total_vocab_size

    def entity_to_index(self, entities) -> np.ndarray:
        """(n,) int64 row indices (integer entity ids) of entities given as row indices or original ids.

        The type of each value decides what it is, never its spelling, so numeric-string ids (WN18RR's
        ``"00260881"``, or ``"2"``) stay unambiguous:

        * ``int`` and numpy integers (scalars, lists, integer arrays and tensors) are row indices into
          `entity_ids`; ``2`` is the third entity, whatever its id;
        * ``str`` (and numpy strings) are original ids, matched exactly: ``"2"`` is the entity whose id is
          ``"2"``, wherever it sits. An id that is not found raises; it is never read as a number;
        * anything else (``bool``, ``float`` even when integral, ``None``, bytes) raises `TypeError`.

        A lone ``str`` or ``int`` is one entity; a list may mix indices and ids.

        Example::

            >>> tok.entity_ids[:3]                                           # doctest: +SKIP
            ['10', '2', '0']
            >>> tok.entity_to_index(["2", 2, "0"])                           # doctest: +SKIP
            array([1, 2, 2])

        Raises:
            KeyError: unknown ids (the message suggests close matches, names and Unicode-normalisation clashes).
            IndexError: indices outside ``[0, num_entities)``.
            TypeError: values that are neither int nor str.
        """
        return self._to_index(entities, "entity")

    def relation_to_index(self, relations) -> np.ndarray:
        """(n,) int64 row indices of relations; ints are indices and str are ids, as in `entity_to_index`."""
        return self._to_index(relations, "relation")

    def _to_index(self, values, kind: str) -> np.ndarray:
        ids, index = (
            (self.entity_ids, self._entity_index) if kind == "entity" else (self.relation_ids, self._relation_index)
        )
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        if isinstance(values, np.ndarray):
            values = values.reshape(-1)
            if values.dtype.kind in "iu":
                return self._check_range(values.astype(np.int64), kind, values)
            if values.dtype.kind not in "UO":
                raise TypeError(
                    f"{kind} values must be int row indices or str ids, got an array of dtype {values.dtype}; "
                    "bools and floats are neither. Cast indices with .astype(int) / .long(), or pass ids as str."
                )
            values = values.tolist()
        elif isinstance(values, (str, bytes, int, float, np.generic)) or not hasattr(values, "__iter__"):
            values = [values]  # one value (None included), not a sequence of characters or bytes
        else:
            values = list(values)
        out = np.zeros(len(values), dtype=np.int64)
        unknown, big = [], []
        for k, v in enumerate(values):
            if isinstance(v, str):
                position = index.get(v)
                if position is None:
                    unknown.append(v)
                else:
                    out[k] = position
            elif isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
                v = int(v)
                if -(2**63) <= v < 2**63:
                    out[k] = v
                else:
                    big.append(v)
            else:
                raise TypeError(
                    f"{kind} values must be int row indices or str ids, got {type(v).__name__} {_excerpt(v)} "
                    f"(item {k}); bools, floats and None are neither. Cast indices with int(), or pass ids as str."
                )
        if unknown:
            raise KeyError(self._unknown_message(unknown, kind))
        if big:
            raise IndexError(f"{kind} index {big[0]} is out of range [0, {len(ids)}) ({len(big)} such values).")
        return self._check_range(out, kind)

    def _check_range(self, out: np.ndarray, kind: str, original=None) -> np.ndarray:
        ids = self.entity_ids if kind == "entity" else self.relation_ids
        size = len(ids)
        if original is not None and original.dtype.kind == "u":
            original = original[original > np.iinfo(np.int64).max]
            if original.size:  # would wrap to negative in int64
                raise IndexError(f"{kind} index {int(original[0])} is out of range [0, {size}).")
        if out.size and (out.min() < 0 or out.max() >= size):
            bad = out[(out < 0) | (out >= size)]
            first = int(bad[0])
            spelt = [i for i in ids if i.isascii() and i.isdigit() and int(i) == first][:3] if first >= 0 else []
            hint = (
                f" The {kind} id {' / '.join(map(repr, spelt))} reads as that number: ids are looked up only when "
                "passed as str."
                if spelt
                else ""
            )
            raise IndexError(
                f"{kind} index {first} is out of range [0, {size}) ({bad.size} out of range); ints are row indices "
                f"into the tokenizer's `{kind}_ids`, str are original ids.{hint}"
            )
        return out

    def _unknown_message(self, unknown: list[str], kind: str) -> str:
        """The KeyError text for ids not in the vocabulary: counts, then hints for the first few (error path only)."""
        ids, names = (
            (self.entity_ids, self.entity_names) if kind == "entity" else (self.relation_ids, self.relation_names)
        )
        shown = "[" + ", ".join(_excerpt(v) for v in unknown[:5]) + (", ..." if len(unknown) > 5 else "") + "]"
        nfc = {unicodedata.normalize("NFC", i): i for i in ids}
        by_name: dict[str, list[str]] = {}
        wanted = {v.lower() for v in unknown[:3]}
        for i, name in zip(ids, names):
            if name.lower() in wanted:
                by_name.setdefault(name.lower(), []).append(i)
        hints = []
        for v in unknown[:3]:
            normalised = nfc.get(unicodedata.normalize("NFC", v))
            if normalised is not None:
                hints.append(
                    f"{_excerpt(v, ascii)} equals the id {_excerpt(normalised, ascii)} only after Unicode NFC "
                    "normalisation; normalise ids with unicodedata.normalize('NFC', id)"
                )
            elif v.lower() in by_name:
                matches = by_name[v.lower()]
                hints.append(
                    f"{_excerpt(v)} is the name of {kind} id {', '.join(map(repr, matches[:3]))}"
                    f"{' ...' if len(matches) > 3 else ''}; pass the id"
                )
            else:
                close = difflib.get_close_matches(v, ids, n=3, cutoff=0.6)
                if close:
                    hints.append(f"{_excerpt(v)}: did you mean {' or '.join(_excerpt(c) for c in close)}?")
        return (
            f"Unknown {kind} id(s) {shown} ({len(unknown)} in all); the tokenizer knows {len(ids)} {_PLURAL[kind]}. "
            + "".join(h + ("" if h.endswith("?") else ".") + " " for h in hints)
            + f"Use ids from its `{kind}_ids` (str) or row indices (int)"
            + (", or add new entities with `add_entities`." if kind == "entity" else ".")
        )

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        """Word pieces for ordinary ids, `[E:<id>]`, `[R:<id>]` and `[ENT_MASK]` for the KG tokens."""
        out = []
        for i in ids:
            i = int(i)
            if i < self.base_vocab_size:
                out.append(self.tokenizer.convert_ids_to_tokens(i))
            elif i == self.entity_mask_token_id:
                out.append("[ENT_MASK]")
            elif i < self.entity_token_offset:
                out.append(f"[R:{self.relation_ids[i - self.relation_token_offset]}]")
            elif i < self.total_vocab_size:
                out.append(f"[E:{self.entity_ids[i - self.entity_token_offset]}]")
            else:
                raise IndexError(f"Token id {i} is outside the vocabulary of {self.total_vocab_size} tokens.")
        return out

    # ------------------------------------------------------------------ word pieces of the texts
    def _check_lengths(self) -> None:
        limit = getattr(self.tokenizer, "model_max_length", None)
        if limit is None or limit > 100_000:  # "no limit" sentinel of transformers
            return
        longest = max(
            5 + 2 * self.max_entity_description_length + self.max_relation_description_length,
            3 + self.max_key_description_length,
        )
        if longest > limit:
            raise ValueError(
                f"Description lengths allow sequences of {longest} tokens but the encoder takes at most {limit}. "
                "Lower max_entity_description_length (a triple holds two entity descriptions), "
                "max_relation_description_length or max_key_description_length."
            )

    def _pieces(self, texts: list[str], max_length: int) -> list[list[int]]:
        if not texts:
            return []
        encoded = self.tokenizer(
            texts, add_special_tokens=False, truncation=True, max_length=max(max_length, 1), return_attention_mask=False
        )["input_ids"]
        return [ids[:max_length] for ids in encoded]

    @property
    def entity_pieces(self) -> list[list[int]]:
        """Word pieces of each entity's text (name + description), cut to the longest length any layout uses."""
        if self._entity_pieces is None:
            texts = [entity_text(n, d) for n, d in zip(self.entity_names, self.entity_descriptions)]
            self._entity_pieces = self._pieces(
                texts, max(self.max_entity_description_length, self.max_key_description_length)
            )
            self._entity_piece_rows = {}
        return self._entity_pieces

    def _entity_rows_pieces(self, rows: list[int]) -> Sequence[list[int]] | dict[int, list[int]]:
        """Pieces of the entity rows `rows`, tokenised on first use row by row (kept until every row is known, then
        joined into `entity_pieces`), so that a query or a shard of a million-entity graph does not tokenise every
        entity first."""
        if self._entity_pieces is not None:
            return self._entity_pieces
        known = self._entity_piece_rows
        missing = sorted({i for i in rows if i not in known})
        if missing:
            texts = [entity_text(self.entity_names[i], self.entity_descriptions[i]) for i in missing]
            known.update(zip(missing, self._pieces(texts, max(self.max_entity_description_length, self.max_key_description_length))))
        if len(known) == self.num_entities:
            self._entity_pieces = [known[i] for i in range(self.num_entities)]
            self._entity_piece_rows = {}
            return self._entity_pieces
        return known

    @property
    def relation_pieces(self) -> list[list[int]]:
        if self._relation_pieces is None:
            texts = [entity_text(n, d) for n, d in zip(self.relation_names, self.relation_descriptions)]
            self._relation_pieces = self._pieces(texts, self.max_relation_description_length)
        return self._relation_pieces

    def name_pieces(self, kind: str = "entity", rows: Sequence[int] | None = None) -> list[list[int]]:
        """Word pieces of the names alone, at most `NAME_PIECES` each (used to initialise the KG token embeddings):
        of every entity / relation, or only of the row indices `rows` (e.g. entities just added)."""
        names = self.entity_names if kind == "entity" else self.relation_names
        return self._pieces([names[i] for i in rows] if rows is not None else list(names), NAME_PIECES)

    # ------------------------------------------------------------------ building inputs
    def encode_triples(self, heads, relations, tails) -> dict[str, list[list[int]]]:
        """`[CLS] E_h desc(h) R_r desc(r) E_t desc(t) [SEP]` for each triple (lists of token ids, unpadded)."""
        h = self.entity_to_index(heads)
        r = self.relation_to_index(relations)
        t = self.entity_to_index(tails)
        _same_length(h=h, r=r, t=t)
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        le, lr = self.max_entity_description_length, self.max_relation_description_length
        ent, rel = self._entity_rows_pieces(h.tolist() + t.tolist()), self.relation_pieces
        eo, ro = self.entity_token_offset, self.relation_token_offset
        ids = [
            [cls, eo + a, *ent[a][:le], ro + b, *rel[b][:lr], eo + c, *ent[c][:le], sep]
            for a, b, c in zip(h.tolist(), r.tolist(), t.tolist())
        ]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

    def encode_queries(self, given, relations, direction) -> dict[str, list[list[int]]]:
        """Queries with the missing entity masked.

        Args:
            given: the known entity of each query (the head for tail prediction, the tail for head prediction).
            relations: the relation of each query.
            direction (`str` or sequence of `str`): `"tail"` (predict the tail of (h, r, ?)) or `"head"`
                (predict the head of (?, r, t)); one value for all queries or one per query.
        """
        g = self.entity_to_index(given)
        r = self.relation_to_index(relations)
        _same_length(given=g, relations=r)
        directions = [direction] * len(g) if isinstance(direction, str) else list(direction)
        if len(directions) != len(g):
            raise ValueError(f"Got {len(directions)} directions for {len(g)} queries.")
        bad = sorted({d for d in directions if d not in DIRECTIONS})
        if bad:
            raise ValueError(f"direction must be 'head' or 'tail', got {bad}.")
        cls, sep, mask = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.entity_mask_token_id
        le, lr = self.max_entity_description_length, self.max_relation_description_length
        ent, rel = self._entity_rows_pieces(g.tolist()), self.relation_pieces
        eo, ro = self.entity_token_offset, self.relation_token_offset
        ids = []
        for a, b, d in zip(g.tolist(), r.tolist(), directions):
            if d == "tail":
                ids.append([cls, eo + a, *ent[a][:le], ro + b, *rel[b][:lr], mask, sep])
            else:
                ids.append([cls, mask, ro + b, *rel[b][:lr], eo + a, *ent[a][:le], sep])
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

    def encode_keys(self, entities) -> dict[str, list[list[int]]]:
        """`[CLS] E_e desc(e) [SEP]` for each entity."""
        e = self.entity_to_index(entities)
        cls, sep, eo, lk = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id, self.entity_token_offset, self.max_key_description_length
        ent = self._entity_rows_pieces(e.tolist())
        ids = [[cls, eo + a, *ent[a][:lk], sep] for a in e.tolist()]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

    def pad(self, encoded: dict[str, list[list[int]]], prefix: str = "", pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
        """Right-pads lists of ids to the longest one; returns `{prefix}input_ids` and `{prefix}attention_mask` tensors."""
        ids, mask = pad_sequences(encoded["input_ids"], self.pad_token_id, pad_to_multiple_of)
        return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": mask}

    # ------------------------------------------------------------------ growing the KG
    def add_entities(
        self,
        ids: str | Sequence[str],
        names: str | Sequence[str] | None = None,
        descriptions: str | Sequence[str] | None = None,
    ) -> np.ndarray:
        """Registers new entities (appended after the existing ones); returns their (n,) integer ids.

        Args:
            ids: one new id (a lone ``str`` is one entity, not its characters) or a sequence of them. Ids are
                ``str``: an int would read as a row index elsewhere (see `entity_to_index`), so it is refused.
            names, descriptions: one text per id (a lone ``str`` for a lone id); default: the id and ``""``.
        """
        ids = _as_list(ids)
        wrong = [(k, i) for k, i in enumerate(ids) if not isinstance(i, str)]
        if wrong:
            k, value = wrong[0]
            example = f", e.g. {str(value)!r}" if isinstance(value, (int, np.integer)) else ""
            raise TypeError(
                f"`ids` must hold str entity ids, got {type(value).__name__} {_excerpt(value)} (item {k}); ints are "
                f"row indices in this tokenizer, so pass new ids as str{example}."
            )
        ids = [str(i) for i in ids]
        clash = [i for i in ids if i in self._entity_index]
        if clash or len(set(ids)) != len(ids):
            raise ValueError(f"Entity ids already registered or repeated: {clash[:5] or ids[:5]}; new entities need new ids.")
        names = _texts(names, ids, "names")
        descriptions = _texts(descriptions, ids, "descriptions", default="")
        start = self.num_entities
        self.entity_ids.extend(ids)
        self.entity_names.extend(names)
        self.entity_descriptions.extend(descriptions)
        self._entity_index.update({e: start + k for k, e in enumerate(ids)})
        if self._entity_pieces is not None:
            texts = [entity_text(n, d) for n, d in zip(names, descriptions)]
            self._entity_pieces.extend(
                self._pieces(texts, max(self.max_entity_description_length, self.max_key_description_length))
            )
        return np.arange(start, self.num_entities, dtype=np.int64)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs) -> tuple[str, ...]:
        """Saves the word-piece tokenizer files and `kg_vocab.json` (ids, names, descriptions, lengths)."""
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory` ({save_directory}) is a file; give a directory.")
        os.makedirs(save_directory, exist_ok=True)
        if push_to_hub:
            commit_message = kwargs.pop("commit_message", None)
            repo_id = kwargs.pop("repo_id", str(save_directory).rstrip("/").split(os.path.sep)[-1])
            repo_id = self._create_repo(repo_id, **kwargs)
            files_timestamps = self._get_files_timestamps(save_directory)
        files = list(self.tokenizer.save_pretrained(save_directory))
        path = os.path.join(save_directory, KG_VOCAB_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(
                {
                    "entity_ids": self.entity_ids,
                    "entity_names": self.entity_names,
                    "entity_descriptions": self.entity_descriptions,
                    "relation_ids": self.relation_ids,
                    "relation_names": self.relation_names,
                    "relation_descriptions": self.relation_descriptions,
                    "max_entity_description_length": self.max_entity_description_length,
                    "max_relation_description_length": self.max_relation_description_length,
                    "max_key_description_length": self.max_key_description_length,
                },
                f,
                ensure_ascii=False,
            )
        files.append(path)
        if push_to_hub:
            self._upload_modified_files(
                save_directory, repo_id, files_timestamps, commit_message=commit_message, token=kwargs.get("token")
            )
        return tuple(files)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> LmkeTokenizer:
        """Loads a tokenizer saved by `save_pretrained` from a folder or a Hub repo id (`revision`, `token`...)."""
        from huggingface_hub import hf_hub_download

        hub_kwargs = {k: kwargs.pop(k) for k in ("revision", "token", "cache_dir", "local_files_only") if k in kwargs}
        path = str(pretrained_model_name_or_path)
        if os.path.isdir(path):
            vocab_path = os.path.join(path, KG_VOCAB_FILE)
            if not os.path.isfile(vocab_path):
                raise OSError(
                    f"{path} has no {KG_VOCAB_FILE}: it is not a saved LmkeTokenizer. Build one with "
                    "`LmkeTokenizer.from_kg(encoder_tokenizer, kg)` and `save_pretrained` it."
                )
        else:
            vocab_path = hf_hub_download(path, KG_VOCAB_FILE, **hub_kwargs)
        try:
            with open(vocab_path, encoding="utf-8-sig") as f:
                vocab = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{vocab_path} is damaged (not valid JSON: {err}); save the tokenizer again.") from None
        if not isinstance(vocab, dict) or not {"entity_ids", "relation_ids"} <= set(vocab):
            raise ValueError(f"{vocab_path} is damaged: it lacks entity_ids / relation_ids; save the tokenizer again.")
        # the folder's config.json is an LMKE model config; the word-piece tokenizer needs no remote code
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, **hub_kwargs)
        vocab.update(kwargs)
        return cls(tokenizer, **vocab)

    @classmethod
    def from_kg(cls, tokenizer: PreTrainedTokenizerBase | str, kg, **kwargs) -> LmkeTokenizer:
        """Builds the tokenizer of a `KnowledgeGraph` (see `lmke_hf.kg.load_kg`) on an encoder's tokenizer."""
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer = AutoTokenizer.from_pretrained(tokenizer)
        return cls(
            tokenizer,
            entity_ids=kg.entities["id"],
            relation_ids=kg.relations["id"],
            entity_names=kg.entities["name"],
            entity_descriptions=kg.entities["description"],
            relation_names=kg.relations["name"],
            relation_descriptions=kg.relations["description"],
            **kwargs,
        )

    def __repr__(self) -> str:
        return (
            f"LmkeTokenizer(base={type(self.tokenizer).__name__}, base_vocab_size={self.base_vocab_size}, "
            f"num_entities={self.num_entities}, num_relations={self.num_relations}, "
            f"lengths=(entity {self.max_entity_description_length}, relation {self.max_relation_description_length}, "
            f"key {self.max_key_description_length}))"
        )


def _as_list(values) -> list:
    """A lone ``str`` is one value, not a sequence of characters."""
    return [values] if isinstance(values, str) else list(values)


def _ids(values, name: str) -> list[str]:
    """Entity or relation ids as strings; a missing (None / NaN) or empty id is refused, naming its row."""
    out = []
    for row, value in enumerate(_as_list(values)):
        if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
            raise ValueError(f"`{name}` row {row} is {value!r}: every entity and relation needs a non-empty id (a damaged kg_vocab.json or KG file?).")
        out.append(str(value))
    return out


def _texts(values, ids, name, default=None) -> list[str]:
    if values is None:
        return [default if default is not None else i for i in ids]
    values = ["" if v is None else str(v) for v in _as_list(values)]
    if len(values) != len(ids):
        raise ValueError(f"`{name}` has {len(values)} entries for {len(ids)} ids; give one text per id.")
    return values


def _same_length(**arrays) -> None:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"Inputs must have the same length, got {lengths}.")
    if not any(lengths.values()):
        raise ValueError(f"Empty input: got {lengths}; give at least one item.")


__all__ = ["LmkeTokenizer", "entity_text", "KG_VOCAB_FILE"]
