"""`LmkeTokenizer`: a word-piece tokenizer plus one token per entity and per relation.

Self-contained (imports transformers, numpy and torch only) so that it travels with pushed checkpoints.

The KG tokens are *registered* by arithmetic, not added to the fast tokenizer's trie: entity ``e`` is token
``entity_token_offset + e`` (see `configuration_lmke` for the layout). Descriptions are word-pieced once per
entity/relation with the fast tokenizer and cached; building a triple, query or key is then a concatenation of
cached id lists, so no text is ever scanned for tens of thousands of added tokens.
"""

from __future__ import annotations

import json
import os
from typing import Iterable, Sequence

import numpy as np
import torch
from transformers import AutoTokenizer, PreTrainedTokenizerBase
from transformers.utils import PushToHubMixin

KG_VOCAB_FILE = "kg_vocab.json"
DIRECTIONS = ("head", "tail")


def entity_text(name: str, description: str) -> str:
    """The text that describes an entity: its description, prefixed by its name unless it already starts with it."""
    name = (name or "").strip()
    description = (description or "").strip()
    if not description:
        return name
    if not name or description.lower().startswith(name.lower()):
        return description
    return f"{name}, {description}"


class LmkeTokenizer(PushToHubMixin):
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
        self.entity_ids = [str(e) for e in entity_ids]
        self.relation_ids = [str(r) for r in relation_ids]
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
    def entity_mask_token_id(self) -> int:
        return self.base_vocab_size

    @property
    def relation_token_offset(self) -> int:
        return self.base_vocab_size + 1

    @property
    def entity_token_offset(self) -> int:
        return self.base_vocab_size + 1 + self.num_relations

    @property
    def total_vocab_size(self) -> int:
        return self.entity_token_offset + self.num_entities

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def __len__(self) -> int:
        return self.total_vocab_size

    def entity_to_index(self, entities: Iterable) -> np.ndarray:
        """Integer ids of entities given as integer ids or original string ids; unknown ones raise."""
        return self._to_index(entities, self._entity_index, self.num_entities, "entity")

    def relation_to_index(self, relations: Iterable) -> np.ndarray:
        return self._to_index(relations, self._relation_index, self.num_relations, "relation")

    @staticmethod
    def _to_index(values, index: dict, size: int, kind: str) -> np.ndarray:
        if isinstance(values, (str, int, np.integer)):
            values = [values]
        if isinstance(values, torch.Tensor):
            values = values.detach().cpu().numpy()
        values = list(values) if not isinstance(values, np.ndarray) else values
        if isinstance(values, np.ndarray) and values.dtype.kind in "iu":
            out = values.astype(np.int64)
        elif all(isinstance(v, (int, np.integer)) for v in values):
            out = np.asarray(values, dtype=np.int64)
        else:
            unknown = [v for v in values if not isinstance(v, (int, np.integer)) and str(v) not in index]
            if unknown:
                raise KeyError(
                    f"Unknown {kind} id(s) {unknown[:5]}{' ...' if len(unknown) > 5 else ''} ({len(unknown)} in all); "
                    f"the tokenizer knows {size} {kind}s. Use ids from its `{kind}_ids`, or add new entities with "
                    "`add_entities`."
                )
            out = np.asarray([v if isinstance(v, (int, np.integer)) else index[str(v)] for v in values], dtype=np.int64)
        if out.size and (out.min() < 0 or out.max() >= size):
            bad = out[(out < 0) | (out >= size)]
            raise IndexError(
                f"{kind} index {int(bad[0])} is out of range [0, {size}) ({bad.size} out of range); integer ids "
                f"must index the tokenizer's `{kind}_ids`."
            )
        return out

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
        return self._entity_pieces

    @property
    def relation_pieces(self) -> list[list[int]]:
        if self._relation_pieces is None:
            texts = [entity_text(n, d) for n, d in zip(self.relation_names, self.relation_descriptions)]
            self._relation_pieces = self._pieces(texts, self.max_relation_description_length)
        return self._relation_pieces

    def name_pieces(self, kind: str = "entity") -> list[list[int]]:
        """Word pieces of the names alone (used to initialise the KG token embeddings)."""
        names = self.entity_names if kind == "entity" else self.relation_names
        return self._pieces(list(names), 32)

    # ------------------------------------------------------------------ building inputs
    def encode_triples(self, heads, relations, tails) -> dict[str, list[list[int]]]:
        """`[CLS] E_h desc(h) R_r desc(r) E_t desc(t) [SEP]` for each triple (lists of token ids, unpadded)."""
        h = self.entity_to_index(heads)
        r = self.relation_to_index(relations)
        t = self.entity_to_index(tails)
        _same_length(h=h, r=r, t=t)
        cls, sep = self.tokenizer.cls_token_id, self.tokenizer.sep_token_id
        le, lr = self.max_entity_description_length, self.max_relation_description_length
        ent, rel = self.entity_pieces, self.relation_pieces
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
        ent, rel = self.entity_pieces, self.relation_pieces
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
        ent = self.entity_pieces
        ids = [[cls, eo + a, *ent[a][:lk], sep] for a in e.tolist()]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

    def pad(self, encoded: dict[str, list[list[int]]], prefix: str = "", pad_to_multiple_of: int | None = None) -> dict[str, torch.Tensor]:
        """Right-pads lists of ids to the longest one; returns `{prefix}input_ids` and `{prefix}attention_mask` tensors."""
        seqs = encoded["input_ids"]
        if len(seqs) == 0:
            raise ValueError("Cannot pad an empty batch: got no sequences.")
        length = max(len(s) for s in seqs)
        if pad_to_multiple_of:
            length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
        ids = torch.full((len(seqs), length), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), length), dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
            mask[i, : len(s)] = 1
        return {f"{prefix}input_ids": ids, f"{prefix}attention_mask": mask}

    # ------------------------------------------------------------------ growing the KG
    def add_entities(self, ids: Sequence[str], names: Sequence[str] | None = None, descriptions: Sequence[str] | None = None) -> np.ndarray:
        """Registers new entities (appended after the existing ones); returns their integer ids."""
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
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs) -> "LmkeTokenizer":
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
        with open(vocab_path, encoding="utf-8") as f:
            vocab = json.load(f)
        # the folder's config.json is an LMKE model config; the word-piece tokenizer needs no remote code
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False, **hub_kwargs)
        vocab.update(kwargs)
        return cls(tokenizer, **vocab)

    @classmethod
    def from_kg(cls, tokenizer: PreTrainedTokenizerBase | str, kg, **kwargs) -> "LmkeTokenizer":
        """Builds the tokenizer of a `KnowledgeGraph` (see `lmke_hf.data.load_kg`) on an encoder's tokenizer."""
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


def _texts(values, ids, name, default=None) -> list[str]:
    if values is None:
        return [default if default is not None else i for i in ids]
    values = ["" if v is None else str(v) for v in values]
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
