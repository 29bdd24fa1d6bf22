"""`LmkeTokenizer`: a word-piece tokenizer plus one token per entity and per relation.

Self-contained (imports transformers, numpy, torch and `configuration_lmke` only) so that it travels with pushed checkpoints.

The KG tokens are *registered* by arithmetic, not added to the fast tokenizer's trie: entity ``e`` is token
``entity_token_offset + e`` (see `configuration_lmke` for the layout). Descriptions are word-pieced once per
entity/relation with the fast tokenizer and cached; building a triple, query or key is then a concatenation of
cached id lists, so no text is ever scanned for tens of thousands of added tokens.

`LmkeTokenizer` is a transformers tokenizer (`PreTrainedTokenizerBase`): `AutoTokenizer.from_pretrained(run)` returns
it (with `import lmke_hf`, or with `trust_remote_code=True` where lmke_hf is not installed: a saved folder's
`tokenizer_config.json` names it in `auto_map` and the folder carries this file), `tok(heads=..., relations=...,
tails=...)`, `tok(given=..., relations=...)` and `tok(entities=...)` build padded batches, `decode` names the KG
tokens (`[E:<id>]`, `[R:<id>]`, `[ENT_MASK]`), and `save_pretrained` / `push_to_hub` are transformers' own. The
word-piece work stays with the wrapped encoder tokenizer (`tok.tokenizer`), whose files and settings are saved
beside `kg_vocab.json`; `tokenizer_config.json` names its class as `base_tokenizer_class`.
"""

from __future__ import annotations

import difflib
import json
import operator
import os
import unicodedata
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from transformers import AutoTokenizer, BatchEncoding, PreTrainedTokenizerBase, PreTrainedTokenizerFast
from transformers.models.auto.tokenization_auto import get_tokenizer_config, tokenizer_class_from_name
from transformers.utils import cached_file, logging

from .configuration_lmke import KgVocabLayout

if TYPE_CHECKING:
    from collections.abc import Iterable

    from transformers import AddedToken

    # One entity or relation: a str is its original id (or, where a method says so, its name), an int its row index.
    KgElement = str | int | np.integer
    # One or several of them: a lone value, any iterable of values, an integer array / tensor of row indices or a str
    # array of ids (see `LmkeTokenizer.entity_to_index`).
    KgElements = KgElement | Iterable[KgElement] | np.ndarray | torch.Tensor

KG_VOCAB_FILE = "kg_vocab.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
BASE_TOKENIZER_CLASS = (
    "base_tokenizer_class"  # tokenizer_config.json key: the class of the wrapped word-piece tokenizer
)
ENTITY_MASK_TOKEN = "[ENT_MASK]"
RETURN_TENSORS = (None, "pt", "np")
NAME_PIECES = 32  # word pieces of a name (or, for a nameless entity, of its text) that initialise its KG token
PIECES_CHUNK = 10_000  # texts per call of the word-piece tokenizer
DIRECTIONS = ("tail", "head")  # the element predicted; its index is the `direction` value in datasets and evaluators
_PLURAL = {"entity": "entities", "relation": "relations"}
_MAX_EXCERPT = 200  # characters of a value an error message quotes at most

logger = logging.get_logger(__name__)


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


def pad_sequences(
    sequences: Sequence[Sequence[int] | np.ndarray | torch.Tensor],
    pad_id: int,
    pad_to_multiple_of: int | None = None,
    *,
    length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pads lists of token ids to the longest one (or to `length`, at least as long), rounded up to a multiple of
    `pad_to_multiple_of`, without a Python loop over the sequences: `(input_ids, attention_mask)`, both
    `(len(sequences), length)` long tensors."""
    if len(sequences) == 0:
        raise ValueError("Cannot pad an empty batch: got no sequences.")
    lengths = torch.tensor([len(s) for s in sequences])
    longest = int(lengths.max())
    if length is not None and longest > length:
        raise ValueError(
            f"A sequence has {longest} tokens, more than the padding length {length}; LMKE inputs are never "
            "truncated: give a larger max_length, or lower the description lengths of the tokenizer."
        )
    length = longest if length is None else int(length)
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    mask = torch.arange(length).unsqueeze(0) < lengths.unsqueeze(1)
    ids = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    if int(lengths.sum()):
        ids[mask] = torch.as_tensor(np.concatenate([np.asarray(s, dtype=np.int64) for s in sequences]))
    return ids, mask.long()


class LmkeTokenizer(KgVocabLayout, PreTrainedTokenizerBase):
    r"""Builds LMKE / C-LMKE inputs from entity and relation ids; a transformers tokenizer (`AutoTokenizer`,
    `__call__`, `decode`, `save_pretrained`, `push_to_hub`).

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the encoder's (fast) tokenizer; supplies `[CLS]`, `[SEP]`, `[PAD]`
            and the word pieces of descriptions. Its special tokens and `model_max_length` are this tokenizer's
            too (`pad_token_id`, `cls_token_id`, ... are the word-piece ids).
        entity_ids (`Sequence[str]`): original ids of the entities; position = integer entity id.
        relation_ids (`Sequence[str]`): original ids of the relations.
        entity_names, entity_descriptions, relation_names, relation_descriptions (`Sequence[str]`, *optional*):
            texts; missing or empty ones are allowed (the entity still gets its token, the paper's point).
        max_entity_description_length (`int`, defaults to 241): word pieces of an entity description in a triple
            or query.
        max_relation_description_length (`int`, defaults to 16): word pieces of a relation text.
        max_key_description_length (`int`, defaults to 508): word pieces of the entity description in a key.
        **kwargs: settings of `PreTrainedTokenizerBase` (`model_max_length`, special tokens, ...); they default to
            the word-piece tokenizer's.

    Layouts (one token per KG element, `E_x`/`R_x`, then its description):
        triple `[CLS] E_h desc(h) R_r desc(r) E_t desc(t) [SEP]`;
        tail query `[CLS] E_h desc(h) R_r desc(r) [ENT_MASK] [SEP]`; head query `[CLS] [ENT_MASK] R_r desc(r) E_t desc(t) [SEP]`;
        key `[CLS] E_e desc(e) [SEP]`.

    Vocabulary (`configuration_lmke`): the word pieces, then `[ENT_MASK]`, the relations and the entities;
    `len(tok) == tok.vocab_size == tok.total_vocab_size`, `tok.base_vocab_size` counts the word pieces.

    Example:
    ```python
    >>> from transformers import AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained("outputs/clmke-umls")  # doctest: +SKIP
    >>> batch = tok(given=["Q42"], relations=["P31"], direction="tail", return_tensors="pt")  # doctest: +SKIP
    >>> tok.decode(batch["input_ids"][0])  # doctest: +SKIP
    '[CLS] [E:Q42] douglas adams, english writer [R:P31] instance of [ENT_MASK] [SEP]'
    ```
    """

    vocab_files_names = {"kg_vocab_file": KG_VOCAB_FILE}
    model_input_names = ["input_ids", "attention_mask"]  # the KG models take no token_type_ids
    padding_side = "right"
    # Set on the class, not only by `register_for_auto_class()` in lmke_hf/__init__.py: a tokenizer whose class came
    # from a checkpoint's remote code (a model loaded with trust_remote_code=True) must save its auto_map too.
    _auto_class = "AutoTokenizer"
    max_name_length = NAME_PIECES  # word pieces of a name that initialise its KG token (`name_pieces`)

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
        **kwargs: Any,
    ) -> None:
        if type(tokenizer).__name__ == "LmkeTokenizer":
            raise TypeError(
                "`tokenizer` is an LmkeTokenizer already; pass the encoder's word-piece tokenizer (its `.tokenizer`, "
                "or AutoTokenizer.from_pretrained(encoder))."
            )
        if not isinstance(tokenizer, PreTrainedTokenizerBase):
            raise TypeError(
                f"`tokenizer` must be the encoder's transformers tokenizer, got {type(tokenizer).__name__} "
                f"{_excerpt(tokenizer)}; load it with AutoTokenizer.from_pretrained(encoder) (LmkeTokenizer.from_kg "
                "also takes a name)."
            )
        if tokenizer.cls_token_id is None or tokenizer.sep_token_id is None or tokenizer.pad_token_id is None:
            raise ValueError(
                f"The word-piece tokenizer {type(tokenizer).__name__} lacks a CLS, SEP or PAD token; LMKE needs a "
                "BERT-family tokenizer (BERT, RoBERTa, DeBERTa-v2, MiniLM)."
            )
        self.tokenizer = tokenizer
        settings = {"name_or_path": tokenizer.name_or_path, "model_max_length": tokenizer.model_max_length}
        named = {k: str(v) for k, v in tokenizer.special_tokens_map.items() if isinstance(v, str)}
        extra = [t for t in tokenizer.all_special_tokens if t not in named.values()]
        settings.update(named)
        if extra:  # transformers 5 reads this (deprecated) name as extra_special_tokens; 4.x as it is
            settings["additional_special_tokens"] = extra
        super().__init__(**{**settings, **kwargs})
        self.entity_ids = _ids(entity_ids, "entity_ids")
        self.relation_ids = _ids(relation_ids, "relation_ids")
        self.entity_names = _texts(entity_names, self.entity_ids, "entity_names")
        self.entity_descriptions = _texts(entity_descriptions, self.entity_ids, "entity_descriptions", default="")
        self.relation_names = _texts(relation_names, self.relation_ids, "relation_names")
        self.relation_descriptions = _texts(
            relation_descriptions, self.relation_ids, "relation_descriptions", default=""
        )
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

    def __len__(self) -> int:
        return self.total_vocab_size

    @property
    def vocab_size(self) -> int:
        """The whole vocabulary, word pieces and KG tokens (`total_vocab_size`, `len(tok)`): the size of the model's
        embedding table. The word pieces alone: `base_vocab_size`."""
        return self.total_vocab_size

    def get_vocab(self) -> dict[str, int]:
        """`{token: id}` of the word pieces, `[ENT_MASK]`, `[R:<id>]` and `[E:<id>]` (one entry per KG element)."""
        vocab = dict(self.tokenizer.get_vocab())
        vocab[ENTITY_MASK_TOKEN] = self.entity_mask_token_id
        vocab.update((f"[R:{r}]", self.relation_token_offset + k) for k, r in enumerate(self.relation_ids))
        vocab.update((f"[E:{e}]", self.entity_token_offset + k) for k, e in enumerate(self.entity_ids))
        return vocab

    @property
    def added_tokens_decoder(self) -> dict[int, AddedToken]:
        """The word-piece tokenizer's added tokens (KG tokens are not added tokens: see `get_vocab`)."""
        return self.tokenizer.added_tokens_decoder

    def _add_tokens(self, new_tokens, special_tokens: bool = False) -> int:
        raise NotImplementedError(
            f"LmkeTokenizer adds no tokens ({len(new_tokens)} given): register entities with `add_entities`; add "
            "word pieces to the encoder's tokenizer before building the LmkeTokenizer on it."
        )

    def entity_to_index(self, entities: KgElements) -> np.ndarray:
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

    def relation_to_index(self, relations: KgElements) -> np.ndarray:
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

    def entity_row(self, value: KgElement) -> int:
        """The row index (integer entity id) of one entity given by its id (``str``), its name (``str``: exact, else
        ignoring case; it must name one entity) or its row index (``int``), as `ClmkeForLinkPrediction.predict` takes
        it. Ids win over names.

        Raises:
            KeyError: an unknown id or name (with close matches: did you mean ...?), or a name of several entities
                (the candidates are listed).
            TypeError: a value that is neither ``str`` nor ``int``. IndexError: a row index out of range.
        """
        return self._row(value, "entity")

    def relation_row(self, value: KgElement) -> int:
        """The row index of one relation given by id, name or row index; see `entity_row`."""
        return self._row(value, "relation")

    def _row(self, value, kind: str) -> int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(self._to_index([value], kind)[0])
        if not isinstance(value, str):
            raise TypeError(
                f"An {kind} is given by its id or name (str) or its row index (int), got {value!r} ({type(value).__name__})."
            )
        ids, names, lookup = (
            (self.entity_ids, self.entity_names, self._entity_index)
            if kind == "entity"
            else (self.relation_ids, self.relation_names, self._relation_index)
        )
        if value in lookup:
            return lookup[value]
        matches = [i for i, n in enumerate(names) if n == value] or [
            i for i, n in enumerate(names) if n.lower() == value.lower()
        ]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            close = difflib.get_close_matches(value, list(dict.fromkeys([*names, *ids])), n=3, cutoff=0.75)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            advice = (
                " Add unseen entities with `add_entities`."
                if kind == "entity"
                else " Relations are fixed at training time."
            )
            raise KeyError(
                f"Unknown {kind} {value!r}: neither an id nor a name of this model's {len(ids)} {_PLURAL[kind]}.{hint}{advice}"
            )
        shown = ", ".join(f"{ids[i]} ({names[i]})" for i in matches[:10])
        raise KeyError(f"{kind} name {value!r} is ambiguous: {len(matches)} candidates: {shown}. Pass the id instead.")

    # ------------------------------------------------------------------ tokens <-> ids
    def _kg_token(self, i: int) -> str:
        """The name of KG token id `i` (`base_vocab_size <= i < total_vocab_size`)."""
        if i == self.entity_mask_token_id:
            return ENTITY_MASK_TOKEN
        if i < self.entity_token_offset:
            return f"[R:{self.relation_ids[i - self.relation_token_offset]}]"
        return f"[E:{self.entity_ids[i - self.entity_token_offset]}]"

    def _token_ids(self, ids) -> list[int]:
        """`ids` (a sequence, array or tensor) as ints, each checked to lie in the vocabulary."""
        if isinstance(ids, (torch.Tensor, np.ndarray)):
            ids = ids.tolist()
        out = []
        for i in ids:
            try:
                if isinstance(i, (bool, np.bool_)):
                    raise TypeError
                i = operator.index(i)  # int, numpy integer, 0-d integer tensor
            except TypeError:
                raise TypeError(f"Token ids must be ints, got {type(i).__name__} {_excerpt(i)}.") from None
            if not 0 <= i < self.total_vocab_size:
                raise IndexError(
                    f"Token id {i} is outside the vocabulary of {self.total_vocab_size} tokens ({self.base_vocab_size} "
                    f"word pieces, {self.num_relations} relations, {self.num_entities} entities); decode ids of "
                    "this tokenizer's own inputs."
                )
            out.append(i)
        return out

    def convert_ids_to_tokens(
        self, ids: int | np.integer | Sequence[int] | np.ndarray | torch.Tensor, skip_special_tokens: bool = False
    ) -> str | list[str]:
        """Word pieces for ordinary ids, `[E:<id>]`, `[R:<id>]` and `[ENT_MASK]` for the KG tokens: one token for one
        id, a list for a sequence. `skip_special_tokens` leaves out the word-piece specials (`[CLS]`, `[SEP]`,
        `[PAD]`, ...), never the KG tokens."""
        single = isinstance(ids, (int, np.integer)) or (isinstance(ids, (torch.Tensor, np.ndarray)) and ids.ndim == 0)
        values = self._token_ids([ids.item() if hasattr(ids, "item") else ids] if single else ids)
        skip = set(self.tokenizer.all_special_ids) if skip_special_tokens and not single else set()
        base = self.base_vocab_size
        out = [
            self.tokenizer.convert_ids_to_tokens(i) if i < base else self._kg_token(i) for i in values if i not in skip
        ]
        return out[0] if single else out

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Ids of word pieces (as the word-piece tokenizer gives them) and of `[ENT_MASK]`, `[E:<id>]` and `[R:<id>]`
        (unknown KG ids raise `KeyError`, as `entity_to_index` does)."""
        if isinstance(tokens, str):
            return self._token_to_id(tokens)
        return [self._token_to_id(t) for t in tokens]

    def _token_to_id(self, token: str) -> int:
        if token == ENTITY_MASK_TOKEN:
            return self.entity_mask_token_id
        if token.endswith("]") and token.startswith(("[E:", "[R:")):
            if token[1] == "E":
                return self.entity_token_offset + int(self.entity_to_index(token[3:-1])[0])
            return self.relation_token_offset + int(self.relation_to_index(token[3:-1])[0])
        return self.tokenizer.convert_tokens_to_ids(token)

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Word pieces joined as the word-piece tokenizer joins them; KG tokens kept as they are."""
        return self._join(tokens, self.tokenizer.convert_tokens_to_string, _is_kg_token)

    def _decode(self, token_ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces=None, **kwargs) -> str:
        """One sequence (`decode` handles batches): word pieces decoded by the word-piece tokenizer (with its options),
        KG tokens named, e.g. ``"[CLS] [E:Q42] douglas adams [R:P31] instance of [ENT_MASK] [SEP]"``."""
        ids = self._token_ids([token_ids] if isinstance(token_ids, (int, np.integer)) else token_ids)
        base = self.base_vocab_size

        def words(run: list[int]) -> str:
            return self.tokenizer.decode(
                run,
                skip_special_tokens=skip_special_tokens,
                clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                **kwargs,
            )

        return self._join(ids, words, lambda i: i >= base, self._kg_token)

    @staticmethod
    def _join(items, join_words, is_kg, name=str) -> str:
        """Runs of word pieces joined by `join_words`, KG items by `name`, all separated by single spaces."""
        parts, run = [], []
        for item in items:
            if is_kg(item):
                if run:
                    parts.append(join_words(run))
                    run = []
                parts.append(name(item))
            else:
                run.append(item)
        if run:
            parts.append(join_words(run))
        return " ".join(p for p in parts if p)

    def tokenize(
        self, text: str, pair: str | None = None, add_special_tokens: bool = False, **kwargs: Any
    ) -> list[str]:
        """The word pieces of `text` (the word-piece tokenizer's `tokenize`)."""
        return self.tokenizer.tokenize(text, pair=pair, add_special_tokens=add_special_tokens, **kwargs)

    def encode(
        self,
        text: str | list[str] | list[int],
        text_pair: str | list[str] | list[int] | None = None,
        add_special_tokens: bool = True,
        **kwargs: Any,
    ) -> list[int]:
        """The word-piece ids of `text` (the word-piece tokenizer's `encode`); KG inputs are built by `__call__`."""
        return self.tokenizer.encode(text, text_pair, add_special_tokens=add_special_tokens, **kwargs)

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

    def word_pieces(self, texts: Sequence[str], max_length: int) -> list[list[int]]:
        """The word-piece ids of each text (no special tokens), at most `max_length` each: how every entity and relation
        text is cut (`entity_pieces`, `name_pieces`), and what builds the key of a text that is not in the KG
        (`ClmkeForLinkPrediction.encode_text`). Texts are tokenised `PIECES_CHUNK` at a time."""
        texts = list(texts)
        if not texts:
            return []
        pieces = []
        for start in range(0, len(texts), PIECES_CHUNK):  # a chunk at a time: a fast tokenizer's encodings are large
            encoded = self.tokenizer(
                texts[start : start + PIECES_CHUNK],
                add_special_tokens=False,
                truncation=True,
                max_length=max(max_length, 1),
                return_attention_mask=False,
                return_token_type_ids=False,
            )["input_ids"]
            pieces.extend(ids[:max_length] for ids in encoded)
        return pieces

    @property
    def entity_pieces(self) -> list[list[int]]:
        """Word pieces of each entity's text (name + description), cut to the longest length any layout uses.

        Tokenises every entity on its first read and keeps the result (a cache, like `functools.cached_property`: no
        model, file or network is touched). Code that needs a few rows of a large graph reads `entity_pieces_of(rows)`
        instead, which tokenises those rows alone; the tokenizer's own encoders do so."""
        if self._entity_pieces is None:
            texts = [entity_text(n, d) for n, d in zip(self.entity_names, self.entity_descriptions)]
            self._entity_pieces = self.word_pieces(
                texts, max(self.max_entity_description_length, self.max_key_description_length)
            )
            self._entity_piece_rows = {}
        return self._entity_pieces

    def entity_pieces_of(self, rows: Sequence[int], cache: bool = True) -> list[list[int]]:
        """Word pieces of the texts (name + description) of the entity rows `rows`, in their order: `entity_pieces`
        for those rows alone, tokenised on first use (`cache=False`: not kept)."""
        rows = [int(i) for i in rows]
        pieces = self._entity_rows_pieces(rows, cache=cache)
        return [pieces[i] for i in rows]

    def _entity_rows_pieces(self, rows: list[int], cache: bool = True) -> Sequence[list[int]] | dict[int, list[int]]:
        """Pieces of the entity rows `rows`, tokenised on first use row by row (kept until every row is known, then
        joined into `entity_pieces`), so that a query or a shard of a million-entity graph does not tokenise every
        entity first. `cache=False` keeps nothing new (streaming over a graph too large to keep every row's pieces)."""
        if self._entity_pieces is not None:
            return self._entity_pieces
        known = self._entity_piece_rows if cache else dict(self._entity_piece_rows)
        missing = sorted({i for i in rows if i not in known})
        if missing:
            texts = [entity_text(self.entity_names[i], self.entity_descriptions[i]) for i in missing]
            known.update(
                zip(
                    missing,
                    self.word_pieces(texts, max(self.max_entity_description_length, self.max_key_description_length)),
                )
            )
        if not cache:
            return known
        if len(known) == self.num_entities:
            self._entity_pieces = [known[i] for i in range(self.num_entities)]
            self._entity_piece_rows = {}
            return self._entity_pieces
        return known

    @property
    def relation_pieces(self) -> list[list[int]]:
        """Word pieces of each relation's text (name + description), cut to `max_relation_description_length`;
        tokenised on first read and kept (relations are few)."""
        if self._relation_pieces is None:
            texts = [entity_text(n, d) for n, d in zip(self.relation_names, self.relation_descriptions)]
            self._relation_pieces = self.word_pieces(texts, self.max_relation_description_length)
        return self._relation_pieces

    def name_pieces(self, kind: str = "entity", rows: Sequence[int] | None = None) -> list[list[int]]:
        """Word pieces of the names alone, at most `max_name_length` each (used to initialise the KG token embeddings):
        of every entity / relation, or only of the row indices `rows` (e.g. entities just added)."""
        names = self.entity_names if kind == "entity" else self.relation_names
        return self.word_pieces([names[i] for i in rows] if rows is not None else list(names), self.max_name_length)

    # ------------------------------------------------------------------ building inputs
    def encode_triples(self, heads: KgElements, relations: KgElements, tails: KgElements) -> dict[str, list[list[int]]]:
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

    def encode_queries(
        self, given: KgElements, relations: KgElements, direction: str | Sequence[str]
    ) -> dict[str, list[list[int]]]:
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

    def encode_keys(self, entities: KgElements, cache: bool = True) -> dict[str, list[list[int]]]:
        """`[CLS] E_e desc(e) [SEP]` for each entity. `cache=False`: the word pieces of entities not tokenised
        before are not kept (a streamed pass over a very large graph, e.g. `EntityIndex.build`)."""
        e = self.entity_to_index(entities)
        cls, sep, eo, lk = (
            self.tokenizer.cls_token_id,
            self.tokenizer.sep_token_id,
            self.entity_token_offset,
            self.max_key_description_length,
        )
        ent = self._entity_rows_pieces(e.tolist(), cache=cache)
        ids = [[cls, eo + a, *ent[a][:lk], sep] for a in e.tolist()]
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

    def __call__(
        self,
        text: str | list[str] | list[list[str]] | None = None,
        text_pair: str | list[str] | list[list[str]] | None = None,
        *,
        heads: KgElements | None = None,
        relations: KgElements | None = None,
        tails: KgElements | None = None,
        given: KgElements | None = None,
        direction: str | Sequence[str] | None = None,
        entities: KgElements | None = None,
        padding: bool | str | None = None,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool | None = None,
        prefix: str = "",
        **kwargs: Any,
    ) -> BatchEncoding:
        r"""A batch of model inputs: LMKE triples, C-LMKE queries or keys, or word pieces of text.

        Pass one layout, by keyword (entities and relations as str ids or int row indices, one value or a sequence;
        the result is always a batch):

        * `heads`, `relations`, `tails`: triples `[CLS] E_h desc(h) R_r desc(r) E_t desc(t) [SEP]` (`encode_triples`),
          for `LmkeForTripleClassification`;
        * `given`, `relations` and `direction` (`"tail"`, the default: `(given, r, ?)`; `"head"`: `(?, r, given)`;
          or one per query): queries with `[ENT_MASK]` in the missing slot (`encode_queries`), for C-LMKE;
        * `entities`: keys `[CLS] E_e desc(e) [SEP]` (`encode_keys`), for C-LMKE;
        * `text` (and `text_pair`): handed to the word-piece tokenizer with every other argument; its ids are ids
          of this vocabulary too.

        Args:
            padding (`bool` or `str`, *optional*): for KG inputs, True / `"longest"` (the default), `"max_length"`
                or False / `"do_not_pad"`, as in `pad`; text follows the word-piece tokenizer (default: no padding).
            max_length (`int`, *optional*): the length of `padding="max_length"`. KG inputs are never truncated
                (their descriptions are cut to the tokenizer's description lengths); a longer one raises.
            pad_to_multiple_of (`int`, *optional*): round the padded length up to a multiple of this.
            return_tensors (`str`, *optional*): `"pt"`, `"np"` or None (lists of ints, the default).
            return_attention_mask (`bool`, *optional*): False leaves out the attention mask.
            prefix (`str`, defaults to `""`): put before every key, e.g. `"query_"` / `"key_"` to feed
                `ClmkeForLinkPrediction.forward`.

        Returns:
            `BatchEncoding` with `input_ids` and `attention_mask`, `(batch_size, length)`.

        Example:
        ```python
        >>> batch = tok(heads=["Q1"], relations=["P0"], tails=["Q2"], return_tensors="pt")  # doctest: +SKIP
        >>> queries = tok(given=["Q1", "Q2"], relations=["P0", "P1"], direction=["tail", "head"], prefix="query_")  # doctest: +SKIP
        >>> keys = tok(entities=range(tok.num_entities), return_tensors="np")  # doctest: +SKIP
        ```
        """
        kg = {"heads": heads, "relations": relations, "tails": tails, "given": given, "entities": entities}
        passed = {name for name, value in kg.items() if value is not None}
        if text is not None or text_pair is not None:
            if passed or direction is not None:
                raise ValueError(
                    f"Pass either `text` (word pieces) or KG inputs, not both: got text and "
                    f"{sorted(passed | ({'direction'} if direction is not None else set()))}."
                )
            out = self.tokenizer(
                text,
                text_pair,
                padding=False if padding is None else padding,
                max_length=max_length,
                pad_to_multiple_of=pad_to_multiple_of,
                return_tensors=return_tensors,
                return_attention_mask=return_attention_mask,
                **kwargs,
            )
            return BatchEncoding({prefix + k: v for k, v in out.items()}) if prefix else out
        kwargs.pop("verbose", None)
        if kwargs:
            raise TypeError(
                f"Unexpected arguments {sorted(kwargs)} for KG inputs; they apply to text only. KG inputs take "
                "padding, max_length, pad_to_multiple_of, return_tensors, return_attention_mask and prefix."
            )
        layouts = {"triples": {"heads", "relations", "tails"}, "queries": {"given", "relations"}, "keys": {"entities"}}
        layout = next((name for name, names in layouts.items() if passed == names), None)
        if layout is None:
            raise ValueError(
                f"Got {sorted(passed) or 'no inputs'}: pass one layout, heads + relations + tails (LMKE triples), "
                "given + relations, with direction (C-LMKE queries), entities (C-LMKE keys), or text (word pieces)."
            )
        if direction is not None and layout != "queries":
            raise ValueError(f"`direction` applies to queries (given=..., relations=...), not to {layout}.")
        if layout == "triples":
            encoded = self.encode_triples(heads, relations, tails)
        elif layout == "queries":
            encoded = self.encode_queries(given, relations, "tail" if direction is None else direction)
        else:
            encoded = self.encode_keys(entities)
        return BatchEncoding(
            self.pad(
                encoded,
                prefix,
                pad_to_multiple_of,
                padding=True if padding is None else padding,
                max_length=max_length,
                return_attention_mask=return_attention_mask,
                return_tensors=return_tensors,
            )
        )

    def pad(
        self,
        encoded_inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        prefix: str = "",
        pad_to_multiple_of: int | None = None,
        *,
        padding: bool | str = True,
        max_length: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = "pt",
        verbose: bool = True,
    ) -> dict:
        """Right-pads a batch of token-id lists with `pad_token_id`, without a Python loop over the sequences.

        Args:
            encoded_inputs: a batch, `{"input_ids": [[...], ...], ...}` (what `encode_*` return), or a list of
                `{"input_ids": [...], ...}` (as a `DataLoader` collates them). A given `attention_mask` is padded with
                0s, a missing one made of 1s; `token_type_ids` and `special_tokens_mask` are padded too; other keys
                are passed through.
            prefix (`str`, defaults to `""`): put before every key of the output (`"query_"`, `"key_"`).
            pad_to_multiple_of (`int`, *optional*): round the padded length up to a multiple of this.
            padding (`bool` or `str`, defaults to True): True / `"longest"` (the longest sequence), `"max_length"`
                (`max_length`, default `model_max_length`) or False / `"do_not_pad"`.
            max_length (`int`, *optional*): the length of `padding="max_length"`; nothing is truncated, a longer
                sequence raises.
            padding_side (`str`, *optional*): only `"right"`: the models read a key's entity token at position 1.
            return_attention_mask (`bool`, *optional*): False leaves out the mask.
            return_tensors (`str`, defaults to `"pt"`): `"pt"`, `"np"` or None (lists of ints).
            verbose (`bool`): accepted for `PreTrainedTokenizerBase.pad` callers; unused.

        Returns:
            a plain `dict` (not a `BatchEncoding`, so that `torch.load(weights_only=True)` reads a saved batch) with
            `{prefix}input_ids` and `{prefix}attention_mask`, `(batch_size, length)`.
        """
        if isinstance(encoded_inputs, (list, tuple)) and not encoded_inputs:
            raise ValueError("Cannot pad an empty batch: got no sequences.")
        if isinstance(encoded_inputs, (list, tuple)) and isinstance(encoded_inputs[0], Mapping):
            encoded_inputs = {key: [row[key] for row in encoded_inputs] for key in encoded_inputs[0].keys()}
        if not isinstance(encoded_inputs, Mapping) or "input_ids" not in encoded_inputs:
            got = (
                sorted(encoded_inputs.keys()) if isinstance(encoded_inputs, Mapping) else type(encoded_inputs).__name__
            )
            raise ValueError(
                f"`pad` needs a batch holding 'input_ids' (what encode_triples / encode_queries / encode_keys return), got {got}."
            )
        columns = dict(encoded_inputs)
        ids = _rows(columns.pop("input_ids"))
        if ids and not isinstance(ids[0], (list, tuple, np.ndarray, torch.Tensor)):
            raise ValueError(
                f"`pad` takes a batch: 'input_ids' must hold one list of ids per sequence, got {type(ids[0]).__name__} "
                f"{_excerpt(ids[0])} as its first row; wrap one sequence as [ids]."
            )
        side = padding_side or self.padding_side
        if side != "right":
            raise ValueError(
                f"padding_side={side!r}: LMKE inputs are right-padded (the models read a key's entity token at position "
                "1 and positions count from the start); use 'right'."
            )
        strategy, tensors = _padding_strategy(padding), _tensor_type(return_tensors)
        lengths = [len(row) for row in ids]
        fills = {"attention_mask": 0, "token_type_ids": self.pad_token_type_id, "special_tokens_mask": 1}
        for key in fills.keys() & columns.keys():
            columns[key] = _rows(columns[key])
            if [len(row) for row in columns[key]] != lengths:
                raise ValueError(f"The rows of '{key}' must be as long as those of 'input_ids' ({lengths[:5]}...).")
        if strategy == "do_not_pad":
            out = {
                "input_ids": ids,
                "attention_mask": columns.pop("attention_mask", None) or [[1] * n for n in lengths],
            }
            if tensors is not None and len(set(lengths)) > 1:
                raise ValueError(
                    f"return_tensors={tensors!r} needs sequences of one length, got lengths {min(lengths)} to "
                    f"{max(lengths)}; pass padding=True."
                )
            out = (
                {key: torch.as_tensor(np.asarray(value, dtype=np.int64)) for key, value in out.items()}
                if tensors
                else out
            )
        else:
            length = None
            if strategy == "max_length":
                length = self.model_max_length if max_length is None else max_length
                if length is None or length > 100_000:  # transformers' "no limit" sentinel
                    raise ValueError(
                        "padding='max_length' needs `max_length` (this tokenizer sets no model_max_length)."
                    )
            out = dict(
                zip(
                    ("input_ids", "attention_mask"),
                    pad_sequences(ids, self.pad_token_id, pad_to_multiple_of, length=length),
                )
            )
            for key in sorted(fills.keys() & columns.keys()):
                out[key] = pad_sequences(columns.pop(key), fills[key], pad_to_multiple_of, length=length)[0]
        if return_attention_mask is False:
            out.pop("attention_mask")
        if tensors is None:
            out = {key: value.tolist() if isinstance(value, torch.Tensor) else value for key, value in out.items()}
        elif tensors == "np":
            out = {key: value.numpy() for key, value in out.items()}
        out.update(columns)  # other keys (labels, ...) as given; BatchEncoding converts them to `tensors`
        return BatchEncoding({prefix + key: value for key, value in out.items()}, tensor_type=tensors).data

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
            raise ValueError(
                f"Entity ids already registered or repeated: {clash[:5] or ids[:5]}; new entities need new ids."
            )
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
                self.word_pieces(texts, max(self.max_entity_description_length, self.max_key_description_length))
            )
        return np.arange(start, self.num_entities, dtype=np.int64)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> tuple[str, ...]:
        """`PreTrainedTokenizerBase.save_pretrained` (and `push_to_hub=True`, `repo_id`, `token`, ...): the word-piece
        tokenizer's files, `kg_vocab.json` (ids, names, descriptions, lengths), `tokenizer_config.json` naming
        `LmkeTokenizer` (with `auto_map`) and its word-piece class (`base_tokenizer_class`), and this file with
        `configuration_lmke.py` so that `AutoTokenizer.from_pretrained(folder, trust_remote_code=True)` loads it
        where lmke_hf is not installed."""
        if os.path.isfile(save_directory):
            raise ValueError(f"`save_directory` ({save_directory}) is a file; give a directory.")
        return super().save_pretrained(save_directory, *args, **kwargs)

    def _save_pretrained(self, save_directory, file_names, legacy_format=None, filename_prefix=None) -> tuple[str, ...]:
        """Called by `save_pretrained` after it wrote `tokenizer_config.json` (`file_names[0]`): the word-piece
        tokenizer saves its files, then its config (special tokens, lower casing, ...) becomes ours, with our
        `tokenizer_class` and `auto_map` and its class as `base_tokenizer_class`."""
        config_file = file_names[0]
        with open(config_file, encoding="utf-8") as f:
            ours = json.load(f)
        words = self.tokenizer.save_pretrained(
            save_directory, legacy_format=legacy_format, filename_prefix=filename_prefix
        )
        with open(config_file, encoding="utf-8") as f:
            config = json.load(f)
        config[BASE_TOKENIZER_CLASS] = config.get("tokenizer_class")
        config["tokenizer_class"] = ours["tokenizer_class"]
        config.pop("auto_map", None)
        if "auto_map" in ours:
            config["auto_map"] = ours["auto_map"]
        with open(config_file, "w", encoding="utf-8") as f:
            f.write(json.dumps(config, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
        files = [*file_names, *words, *self.save_vocabulary(save_directory, filename_prefix)]
        return tuple(dict.fromkeys(str(f) for f in files))

    def save_vocabulary(self, save_directory: str, filename_prefix: str | None = None) -> tuple[str, ...]:
        """Writes `kg_vocab.json`: entity and relation ids, names, descriptions and the description lengths."""
        path = os.path.join(save_directory, (filename_prefix + "-" if filename_prefix else "") + KG_VOCAB_FILE)
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
        return (path,)

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike,
        *init_inputs: Any,
        cache_dir: str | os.PathLike | None = None,
        force_download: bool = False,
        local_files_only: bool = False,
        token: str | bool | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> LmkeTokenizer:
        """Loads a tokenizer saved by `save_pretrained` from a folder or a Hub repo id (`revision`, `token`,
        `cache_dir`, `local_files_only`, `force_download`, `subfolder`); what `AutoTokenizer.from_pretrained` calls.
        Other keyword arguments override `kg_vocab.json`'s lengths or the tokenizer settings.

        Folders saved before the KG tokenizer was a transformers tokenizer (their `tokenizer_config.json` is the
        word-piece tokenizer's, without `auto_map`) load too. `trust_remote_code` is accepted for `AutoTokenizer`;
        the word-piece tokenizer never runs remote code.
        """
        if init_inputs:
            raise TypeError(
                f"LmkeTokenizer.from_pretrained takes keyword arguments only, got {len(init_inputs)} positional ones."
            )
        for internal in ("_from_auto", "_from_pipeline", "_commit_hash"):  # passed by AutoTokenizer / pipeline
            kwargs.pop(internal, None)
        hub = {
            "cache_dir": cache_dir,
            "token": token,
            "revision": revision,
            "subfolder": kwargs.pop("subfolder", None),
            "proxies": kwargs.pop("proxies", None),
            "force_download": force_download or None,
            "local_files_only": local_files_only or None,
        }
        hub = {k: v for k, v in hub.items() if v is not None}
        path = str(pretrained_model_name_or_path)
        if os.path.isdir(path):
            vocab_path = os.path.join(path, hub.get("subfolder", ""), KG_VOCAB_FILE)
            if not os.path.isfile(vocab_path):
                raise OSError(
                    f"{path} has no {KG_VOCAB_FILE}: it is not a saved LmkeTokenizer. Build one with "
                    "`LmkeTokenizer.from_kg(encoder_tokenizer, kg)` and `save_pretrained` it."
                )
        else:
            vocab_path = cached_file(path, KG_VOCAB_FILE, **hub)
        try:
            with open(vocab_path, encoding="utf-8-sig") as f:
                vocab = json.load(f)
        except (ValueError, UnicodeDecodeError) as err:
            raise ValueError(f"{vocab_path} is damaged (not valid JSON: {err}); save the tokenizer again.") from None
        if not isinstance(vocab, dict) or not {"entity_ids", "relation_ids"} <= set(vocab):
            raise ValueError(f"{vocab_path} is damaged: it lacks entity_ids / relation_ids; save the tokenizer again.")
        tokenizer = cls._load_word_pieces(path, hub)
        vocab.update(kwargs)
        return cls(tokenizer, **vocab)

    @classmethod
    def _load_word_pieces(cls, path: str, hub: dict) -> PreTrainedTokenizerBase:
        """The wrapped word-piece tokenizer of a saved folder or Hub repo, by the class its `tokenizer_config.json`
        names: `base_tokenizer_class`, or `tokenizer_class` in folders saved before (never through AutoTokenizer,
        which would pick this class again)."""
        config = get_tokenizer_config(path, **hub)
        name = config.get(BASE_TOKENIZER_CLASS) or config.get("tokenizer_class")
        if not name or name.removesuffix("Fast") == cls.__name__:
            logger.warning(
                f"{path}'s {TOKENIZER_CONFIG_FILE} names no word-piece tokenizer class ({BASE_TOKENIZER_CLASS}); "
                "loading its tokenizer.json as a PreTrainedTokenizerFast. Save the LmkeTokenizer again to record it."
            )
            word_class = PreTrainedTokenizerFast
        else:
            word_class = tokenizer_class_from_name(name.removesuffix("Fast")) or tokenizer_class_from_name(name)
            if word_class is None and not name.endswith("Fast"):
                word_class = tokenizer_class_from_name(name + "Fast")
        if word_class is None:
            raise ValueError(
                f"{path}'s word-piece tokenizer class {name!r} is unknown to this transformers version; upgrade transformers."
            )
        tokenizer = word_class.from_pretrained(path, **hub)
        for key in (
            BASE_TOKENIZER_CLASS,
            "auto_map",
        ):  # ours: saving the word-piece tokenizer alone must not write them
            tokenizer.init_kwargs.pop(key, None)
        return tokenizer

    @classmethod
    def from_kg(cls, tokenizer: PreTrainedTokenizerBase | str, kg: Any, **kwargs: Any) -> LmkeTokenizer:
        """Builds the tokenizer of a `KnowledgeGraph` (see `lmke_hf.kg.load_kg`) on an encoder's tokenizer.

        `kg` is typed `Any`: this file travels with saved models and cannot import `lmke_hf.kg`; any object with
        `entities` and `relations` tables (columns `id`, `name`, `description`) will do."""
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


def _rows(value) -> list:
    """A batch column (list of rows, 2-D array or tensor) as a list of rows."""
    return value.tolist() if isinstance(value, (np.ndarray, torch.Tensor)) else list(value)


def _padding_strategy(padding) -> str:
    """`padding` (bool, str or transformers' `PaddingStrategy`) as "longest", "max_length" or "do_not_pad"."""
    value = getattr(padding, "value", padding)
    if value is True or value == "longest":
        return "longest"
    if value is False or value == "do_not_pad":
        return "do_not_pad"
    if value == "max_length":
        return "max_length"
    raise ValueError(
        f"`padding` must be True / 'longest', 'max_length' or False / 'do_not_pad', got {_excerpt(padding)}."
    )


def _tensor_type(return_tensors) -> str | None:
    """`return_tensors` (str or transformers' `TensorType`) as "pt", "np" or None."""
    value = getattr(return_tensors, "value", return_tensors)
    if value not in RETURN_TENSORS:
        raise ValueError(f"`return_tensors` must be 'pt', 'np' or None (lists), got {_excerpt(return_tensors)}.")
    return value


def _is_kg_token(token: str) -> bool:
    return token == ENTITY_MASK_TOKEN or (token.endswith("]") and token.startswith(("[E:", "[R:")))


def _as_list(values) -> list:
    """A lone ``str`` is one value, not a sequence of characters."""
    return [values] if isinstance(values, str) else list(values)


def _ids(values, name: str) -> list[str]:
    """Entity or relation ids as strings; a missing (None / NaN) or empty id is refused, naming its row."""
    out = []
    for row, value in enumerate(_as_list(values)):
        if value is None or (isinstance(value, float) and value != value) or str(value).strip() == "":
            raise ValueError(
                f"`{name}` row {row} is {value!r}: every entity and relation needs a non-empty id (a damaged kg_vocab.json or KG file?)."
            )
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
