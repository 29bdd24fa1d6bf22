"""C-LMKE (Wang et al., "Language Models as Knowledge Embeddings", IJCAI 2022, section 3.3): contrastive link
prediction. The matcher, the queue of earlier keys, cross-process key gathering and `ClmkeForLinkPrediction`.

Self-contained (relative imports of `configuration_lmke`, `modeling_base` and `tokenization_lmke` only) so that
saved checkpoints load with `trust_remote_code=True` where `lmke_hf` is not installed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput
from transformers.utils import logging as hf_logging

from .configuration_lmke import ClmkeConfig
from .entity_index import ENTITY_INDEX_FILE, EntityIndex, EntityIndexError
from .modeling_base import (
    LmkePreTrainedModel,
    _build_encoder,
    _check_input_ids,
    _check_label_values,
    _check_no_unknown_kwargs,
    _encoder_layers,
    _first_position,
    _gather,
    check_fits_in_memory,
    in_eval_mode,
)
from .modeling_losses import adversarial_bce_loss, infonce_loss
from .tokenization_lmke import entity_text

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from .entity_index import FaissSearcher
    from .tokenization_lmke import KgElement, KgElements, LmkeTokenizer

logger = hf_logging.get_logger(__name__)


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
        batch_key_embeddings (`torch.FloatTensor` of shape `(num_batch_keys, hidden_size)`), batch_key_entity_ids:
            the in-batch keys alone (gathered from all processes with `gather_keys=True`), without the extra and
            queued ones: what a training loop pushes into `model.key_queue` after the step (`forward` itself changes
            nothing).
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    labels: torch.FloatTensor | None = None
    query_embeddings: torch.FloatTensor | None = None
    key_embeddings: torch.FloatTensor | None = None
    query_entity_ids: torch.LongTensor | None = None
    key_entity_ids: torch.LongTensor | None = None
    batch_key_embeddings: torch.FloatTensor | None = None
    batch_key_entity_ids: torch.LongTensor | None = None


class KeyQueue:
    """First-in first-out store of the last `size` detached training keys and their entity ids: the pre-batch
    negatives of SimKGC, or a MoCo-style queue (here without a momentum encoder). Not model weights: it has
    `state_dict` / `load_state_dict` for `accelerator.register_for_checkpointing`, so a resumed run continues
    with the same queue, and it is never saved with the model."""

    def __init__(self, size: int) -> None:
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"`size` must be an int >= 0, got {size!r}.")
        self.size = size
        self.keys = torch.empty(0, 0)
        self.entities = torch.empty(0, dtype=torch.long)

    def __len__(self) -> int:
        return self.entities.shape[0]

    def get(self, device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
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


class ClmkeMatcher(nn.Module):
    r"""`p(q, k) = sigmoid(MLP[q; k; q - k; q * k; d])`, `d = [log(d_q + 1); log(d_k + 1)]` (paper eq. 2).

    `forward` is the formula on explicit pairs; `score_all` evaluates the same function for a block of queries
    against every key without building the `(queries, keys, 4 * hidden)` input: the first layer splits into a
    per-query part, a per-key part and the `q * k` part, and the last two fold into one matrix product per
    query block.
    """

    def __init__(self, hidden_size: int, matcher_hidden_size: int, use_degree_features: bool) -> None:
        super().__init__()
        self.hidden_size = hidden_size
        self.use_degree_features = use_degree_features
        self.dense = nn.Linear(4 * hidden_size + (2 if use_degree_features else 0), matcher_hidden_size)
        self.out = nn.Linear(matcher_hidden_size, 1)

    def forward(
        self, q: torch.Tensor, k: torch.Tensor, q_logdeg: torch.Tensor | None, k_logdeg: torch.Tensor | None
    ) -> torch.Tensor:
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

    def pairwise(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        q_logdeg: torch.Tensor | None = None,
        k_logdeg: torch.Tensor | None = None,
        memory_mb: float = 1,
    ) -> torch.Tensor:
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
                [
                    w_prod * qb.unsqueeze(1) + w_key,
                    *(e.expand(b, m, 1) for e in extra),
                    query_term[start : start + query_block].unsqueeze(-1),
                ],
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

    def __init__(self, config: ClmkeConfig) -> None:
        check_fits_in_memory(config, num_encoders=2)
        super().__init__(config)
        self.word_embeddings = self._new_embeddings(config)
        self.query_encoder = _build_encoder(config.encoder)
        self.key_encoder = _build_encoder(config.encoder)
        if config.scorer == "matcher":
            self.matcher = ClmkeMatcher(
                config.encoder.hidden_size, config.matcher_hidden_size, config.use_degree_features
            )
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
    def set_entity_degrees(self, degrees: torch.Tensor | np.ndarray | Sequence[float]) -> None:
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
    def embed_queries(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Query token ids (`LmkeTokenizer.encode_queries`) to `(embeddings (B, hidden), given_entity_ids (B,))`:
        the outputs at the `[ENT_MASK]` slot (pooled by `config.pooling`). Tensors in, tensors out, with gradients;
        `encode_queries` is the user-level form (entities and relations by name, batching, options)."""
        _check_input_ids(input_ids, self.config, "query_input_ids")
        is_mask = input_ids == self.config.entity_mask_token_id
        if not bool((is_mask.sum(1) == 1).all()):
            raise ValueError(
                "Each query must hold exactly one [ENT_MASK] token; build queries with `LmkeTokenizer.encode_queries`."
            )
        is_entity = input_ids >= self.config.entity_token_offset
        if not bool((is_entity.sum(1) == 1).all()):
            raise ValueError(
                "Each query must hold exactly one (given) entity token; build queries with `LmkeTokenizer.encode_queries`."
            )
        given = input_ids[is_entity] - self.config.entity_token_offset
        hidden = self._run_encoder(self.query_encoder, input_ids, attention_mask, token_type_ids).last_hidden_state
        return self._pool(hidden, attention_mask, _first_position(is_mask)), given

    def embed_keys(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Key token ids (`LmkeTokenizer.encode_keys`) to `(embeddings (B, hidden), entity_ids (B,))`: the outputs at
        the key's entity token (position 1, pooled by `config.pooling`); `encode_entities` is the user-level form."""
        _check_input_ids(input_ids, self.config, "key_input_ids")
        entity = input_ids[:, 1] - self.config.entity_token_offset
        if bool((entity < 0).any()):
            raise ValueError("Keys must start `[CLS] E_e`; build keys with `LmkeTokenizer.encode_keys`.")
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

    def match(
        self,
        query_embeddings: torch.Tensor,
        query_entity_ids: torch.Tensor,
        key_embeddings: torch.Tensor,
        key_entity_ids: torch.Tensor,
        unit_keys: bool = False,
    ) -> torch.Tensor:
        """Scores of every query against every key, `(Bq, Bk)`: matcher logits (paper; degrees come from each
        side's OWN entity) or cosines (`config.scorer="cosine"`); with `config.own_entity_bias`, plus a learned
        offset where the candidate is the query's own given entity. `unit_keys`: the keys have unit length already
        (an `EntityIndex`'s `unit_tiles`), so the cosine scorer does not normalise them again.

        The model's one scoring function: training calls it on in-batch keys (with gradients), ranking through
        `score_all` (no gradients, default entity ids, optional compute dtype)."""
        if self.config.scorer == "cosine":
            keys = key_embeddings if unit_keys else F.normalize(key_embeddings, dim=-1)
            scores = F.normalize(query_embeddings, dim=-1) @ keys.T
        else:
            q_deg = self.log_degrees(query_entity_ids) if self.config.use_degree_features else None
            k_deg = self.log_degrees(key_entity_ids) if self.config.use_degree_features else None
            scores = self.matcher.pairwise(
                query_embeddings, key_embeddings, q_deg, k_deg, memory_mb=self.config.scoring_memory_mb
            )
        if self.config.own_entity_bias:
            own = query_entity_ids.view(-1, 1) == key_entity_ids.view(1, -1)
            scores = scores + own.to(scores.dtype) * self.own_entity_offset
        return scores

    # ------------------------------------------------------------ loss
    def contrastive_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of `config.loss` (`adversarial_bce_loss`, the paper's, or `infonce_loss`) on `(Bq, Bk)` scores
        and labels (1 positive, 0 negative, anything else ignored)."""
        if self.config.loss == "infonce":
            return self.infonce_loss(logits, labels)
        return self.adversarial_bce_loss(logits, labels)

    @property
    def temperature(self) -> float | None:
        """The InfoNCE temperature in use (learned or fixed); `None` with the paper's loss."""
        if not hasattr(self, "log_inv_temperature"):
            return None
        return float(1.0 / self._inverse_temperature().detach())

    def _inverse_temperature(self) -> torch.Tensor:
        return self.log_inv_temperature.exp().clamp(max=100.0)  # t >= 0.01, as SimKGC

    def infonce_loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`modeling_losses.infonce_loss` with this model's (learned or fixed) temperature and `config.infonce_margin`."""
        return infonce_loss(scores, labels, self._inverse_temperature(), self.config.infonce_margin)

    def adversarial_bce_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """`modeling_losses.adversarial_bce_loss` (the paper's) with `config.adversarial_temperature`."""
        return adversarial_bce_loss(logits, labels, self.config.adversarial_temperature)

    def _labels(
        self, query_entity_ids, key_entity_ids, answer_ids, diagonal_offset: int, generator=None
    ) -> torch.Tensor:
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
        **kwargs: Any,
    ) -> LinkPredictionOutput | tuple:
        r"""
        Args:
            query_input_ids (`torch.LongTensor` of shape `(batch_size, query_length)`): from `LmkeTokenizer.encode_queries`.
            key_input_ids (`torch.LongTensor` of shape `(batch_size, key_length)`): key i is the gold target of
                query i (from `LmkeTokenizer.encode_keys`).
            answer_ids (`torch.LongTensor` of shape `(batch_size, max_answers)`, *optional*): known (training)
                answers of each query, padded with -1; keys whose entity is among them are positives
                (multi-label). The loss is computed when this or `labels` is given.
            labels (`torch.Tensor` of shape `(batch_size, num_keys)`, *optional*): explicit targets (1 / 0 / -100).
            gather_keys (`bool`): with `torch.distributed` initialised, match each query against the keys of
                all processes (cross-device negatives; gradients flow through the local keys).
            extra_key_input_ids (`torch.LongTensor` of shape `(num_extra, key_length)`, *optional*): more keys
                every query is matched against (after the in-batch keys), e.g. the keys of the queries' own given
                entities (`ClmkeCollator(..., self_negatives=True, tokenizer=tokenizer)`): without them a bi-encoder learns to rank the
                query's own entity first, since its text is in the query. Labelled like the others (positive
                only when the entity is a known answer).
        """
        _check_no_unknown_kwargs(kwargs, type(self).__name__)
        return_dict = True if return_dict is None else return_dict
        q, q_ent = self.embed_queries(query_input_ids, query_attention_mask)
        k, k_ent = self.embed_keys(key_input_ids, key_attention_mask)
        if q.shape[0] != k.shape[0]:
            raise ValueError(f"Got {q.shape[0]} queries and {k.shape[0]} keys; key i must be the target of query i.")
        offset = 0
        if gather_keys and torch.distributed.is_available() and torch.distributed.is_initialized():
            k, k_ent, offset = _gather_with_grad(k, k_ent)
        batch_keys, batch_entities = k, k_ent
        if extra_key_input_ids is not None:  # appended after the (gathered) in-batch keys: the gold offsets hold
            extra, extra_ent = self.embed_keys(extra_key_input_ids, extra_key_attention_mask)
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
        if labels is not None:
            if labels.shape != logits.shape:
                raise ValueError(f"`labels` has shape {tuple(labels.shape)}, expected {tuple(logits.shape)}.")
            _check_label_values(labels, (0, 1, -100), "labels")
            loss = self.contrastive_loss(logits, labels.to(logits.dtype))
            if self.config.symmetric_loss:  # each local in-batch key against the queries (SimKGC's tail -> hr)
                local = slice(offset, offset + q.shape[0])
                loss = loss + self.contrastive_loss(logits[:, local].t(), labels[:, local].t().to(logits.dtype))
        output = LinkPredictionOutput(
            loss=loss,
            logits=logits,
            labels=labels,
            query_embeddings=q,
            key_embeddings=k,
            query_entity_ids=q_ent,
            key_entity_ids=k_ent,
            batch_key_embeddings=batch_keys,
            batch_key_entity_ids=batch_entities,
        )
        return output if return_dict else output.to_tuple()

    # ------------------------------------------------------------ embeddings (sentence-transformers' options)
    @torch.no_grad()
    @in_eval_mode
    def encode_entities(
        self,
        entities: KgElements | None = None,
        batch_size: int = 256,
        tokenizer: LmkeTokenizer | None = None,
        progress: bool = False,
        *,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = False,
        convert_to_tensor: bool = True,
        device: torch.device | str | None = None,
        show_progress_bar: bool | None = None,
        keep_pieces: bool = True,
    ) -> torch.Tensor | np.ndarray:
        """Key embeddings `(N, hidden)` of `entities` (row indices or ids, see `LmkeTokenizer.entity_to_index`;
        default all), in eval mode, batched by length; the options are sentence-transformers' `encode`'s.

        Which embeddings may be searched with a plain vector index: with `config.scorer == "cosine"` the score of a
        query against a key is the cosine of their embeddings (plus, with `own_entity_bias`, a learned offset for
        the query's own entity), so `normalize_embeddings=True` keys and queries (`encode_queries`) can go into any
        dot-product index (FAISS, a vector database; `entity_index.build_faiss()` does it and re-scores exactly).
        With the paper's matcher (`"matcher"`) the score is an MLP over `[q; k; q-k; q*k; degrees]`, not a dot
        product: rank with `score_all` / `predict` / `entity_index.search` instead.

        Args:
            batch_size (`int`): keys per forward pass.
            tokenizer (`LmkeTokenizer`, *optional*): the KG tokenizer; default the model's (`load_kg_tokenizer`).
            progress / show_progress_bar (`bool`): show a progress bar.
            normalize_embeddings (`bool`): unit length (L2) rows.
            convert_to_numpy (`bool`): a float32 NumPy array instead of a tensor (wins over `convert_to_tensor`).
            convert_to_tensor (`bool`): a tensor on the model's device (the default).
            device (`str` / `torch.device`, *optional*): move the model there first (as sentence-transformers does).
            keep_pieces (`bool`): keep the entities' word pieces in the tokenizer for later calls; `False` for a
                streamed pass over a very large graph (`EntityIndex.build` does).
        """
        if device is not None:
            self.to(device)
        tokenizer = self.load_kg_tokenizer() if tokenizer is None else tokenizer
        index = (
            torch.arange(tokenizer.num_entities)
            if entities is None
            else torch.as_tensor(tokenizer.entity_to_index(entities))
        )
        encoded = tokenizer.encode_keys(index.numpy(), cache=keep_pieces)["input_ids"] if len(index) else []
        out = self._embed_in_batches(
            encoded, tokenizer, self.embed_keys, batch_size, progress or show_progress_bar, "Encoding entities"
        )
        return _as_requested(out, normalize_embeddings, convert_to_numpy, convert_to_tensor)

    @torch.no_grad()
    @in_eval_mode
    def encode_queries(
        self,
        entities: KgElement | Iterable[KgElement],
        relations: KgElement | Iterable[KgElement],
        direction: str = "tail",
        batch_size: int = 256,
        *,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = False,
        convert_to_tensor: bool = True,
        device: torch.device | str | None = None,
        show_progress_bar: bool = False,
    ) -> torch.Tensor | np.ndarray:
        """Query embeddings `(N, hidden)` of `(entity, relation, ?)` (`direction="tail"`) or `(?, relation, entity)`
        (`"head"`): entities and relations by id, name or row index (one relation may serve all entities); the
        options are `encode_entities`'. With the cosine scorer, a normalised query's dot product with a normalised
        key (`encode_entities`, `encode_text`) is the model's score, less the own-entity offset."""
        if device is not None:
            self.to(device)
        tokenizer = self.load_kg_tokenizer()
        given = [tokenizer.entity_row(e) for e in _as_list(entities)]
        rels = [tokenizer.relation_row(r) for r in _as_list(relations)]
        if len(rels) == 1 and len(given) > 1:
            rels = rels * len(given)
        if len(rels) != len(given):
            raise ValueError(
                f"encode_queries got {len(given)} entities and {len(rels)} relations; give one relation per entity, or one for all."
            )
        encoded = tokenizer.encode_queries(given, rels, direction)["input_ids"] if given else []
        out = self._embed_in_batches(
            encoded, tokenizer, self.embed_queries, batch_size, show_progress_bar, "Encoding queries"
        )
        return _as_requested(out, normalize_embeddings, convert_to_numpy, convert_to_tensor)

    @torch.no_grad()
    @in_eval_mode
    def encode_text(
        self,
        names: str | Sequence[str],
        descriptions: str | Sequence[str] | None = None,
        batch_size: int = 256,
        *,
        normalize_embeddings: bool = False,
        convert_to_numpy: bool = False,
        convert_to_tensor: bool = True,
        device: torch.device | str | None = None,
        show_progress_bar: bool = False,
    ) -> torch.Tensor | np.ndarray:
        """Key embeddings `(N, hidden)` of entities that are not in the KG, from their names and descriptions alone,
        without adding them: the key `[CLS] E desc [SEP]` whose entity slot `E` is the mean of the name's word
        embeddings, as `add_entities` initialises a new entity's token (so `encode_text(n, d)` equals the key that
        `add_entities([id], [n], [d])` would encode). Options as `encode_entities`."""
        if device is not None:
            self.to(device)
        tokenizer = self.load_kg_tokenizer()
        names = _as_list(names)
        descriptions = [""] * len(names) if descriptions is None else _as_list(descriptions)
        if len(descriptions) != len(names):
            raise ValueError(
                f"encode_text got {len(names)} names and {len(descriptions)} descriptions; give one description per name (or none)."
            )
        bad = [i for i, t in enumerate(names + descriptions) if not isinstance(t, str)]
        if bad:
            value = (names + descriptions)[bad[0]]
            raise TypeError(f"encode_text takes str names and descriptions, got {type(value).__name__} {value!r}.")
        # the same pieces and cuts as `LmkeTokenizer.encode_keys` and `init_kg_embeddings` for a registered entity
        texts = tokenizer.word_pieces(
            [entity_text(n, d) for n, d in zip(names, descriptions)],
            max(tokenizer.max_entity_description_length, tokenizer.max_key_description_length),
        )
        cut = tokenizer.max_name_length
        slots = [n or t[:cut] for n, t in zip(tokenizer.word_pieces(names, cut), texts)]
        cls, sep, placeholder = (
            tokenizer.tokenizer.cls_token_id,
            tokenizer.tokenizer.sep_token_id,
            self.config.entity_token_offset,
        )
        encoded = [[cls, placeholder, *t[: tokenizer.max_key_description_length], sep] for t in texts]
        words = self.word_embeddings.words.weight
        unk = [tokenizer.tokenizer.unk_token_id or 0]

        def embed(input_ids, attention_mask, rows):
            inputs = self._embed(input_ids)
            pieces = [slots[i] or unk for i in rows]
            flat = torch.tensor([p for piece in pieces for p in piece], device=inputs.device)
            offsets = torch.tensor([0] + [len(p) for p in pieces[:-1]], device=inputs.device).cumsum(0)
            inputs[:, 1] = F.embedding_bag(flat, words, offsets, mode="mean").to(inputs.dtype)
            hidden = self._run_encoder(
                self.key_encoder, input_ids, attention_mask, inputs_embeds=inputs
            ).last_hidden_state
            return self._pool(
                hidden, attention_mask, torch.ones(len(rows), dtype=torch.long, device=inputs.device)
            ), None

        out = self._embed_in_batches(
            encoded, tokenizer, embed, batch_size, show_progress_bar, "Encoding texts", pass_rows=True
        )
        return _as_requested(out, normalize_embeddings, convert_to_numpy, convert_to_tensor)

    def _embed_in_batches(
        self, encoded, tokenizer, embed, batch_size: int, progress, description: str, pass_rows: bool = False
    ) -> torch.Tensor:
        """Rows of `embed(input_ids, attention_mask)` for lists of token ids, batched by length, in input order."""
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        device = self.device
        out = torch.empty(len(encoded), self.config.encoder.hidden_size, device=device)
        starts = range(0, len(order), batch_size)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=description)
        for start in starts:
            rows = order[start : start + batch_size]
            batch = tokenizer.pad({"input_ids": [encoded[i] for i in rows]})
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            emb, _ = embed(ids, mask, rows) if pass_rows else embed(ids, mask)
            out[torch.as_tensor(rows, device=device)] = emb.to(out.dtype)
        return out

    @property
    def entity_index(self) -> EntityIndex:
        """The attached `EntityIndex` (made by `build_entity_index` or `load_or_build_entity_index`, or assigned);
        reading it neither reads files nor encodes.

        Where none is attached (or it holds another number of entities) it still loads or encodes one, with a
        FutureWarning: call `load_or_build_entity_index()` for that; a later version raises instead. `predict` and
        `add_entities` get the index themselves."""
        index = getattr(self, "_entity_index", None)
        if index is None or index.num_entities != self.config.num_entities:
            warnings.warn(
                "`model.entity_index` loaded or encoded the entity keys because none were attached; call "
                "`model.load_or_build_entity_index()` (or `model.build_entity_index()`) first: reading the attribute "
                "will stop reading files and encoding.",
                FutureWarning,
                stacklevel=2,
            )
            index = self.load_or_build_entity_index()
        return index

    @entity_index.setter
    def entity_index(self, index: EntityIndex | torch.Tensor) -> None:
        """Uses `index` (an `EntityIndex`, or the keys `(num_entities, hidden)` as a tensor), encoded by this model's
        current weights (e.g. across processes by `lmke_hf.evaluation.encode_entities`), as the entity index;
        `save_pretrained` writes it with the fingerprint of those weights."""
        if isinstance(index, torch.Tensor):
            if index.dim() != 2 or index.shape[0] != self.config.num_entities:
                raise ValueError(
                    f"entity_index must be a (num_entities={self.config.num_entities}, hidden) tensor, got {tuple(index.shape)}."
                )
            index = EntityIndex(index, self.entity_degrees.detach().cpu())
        elif not isinstance(index, EntityIndex):
            raise ValueError(
                f"entity_index must be an EntityIndex or a (num_entities, hidden) tensor, got {type(index).__name__}."
            )
        if index.num_entities != self.config.num_entities:
            raise ValueError(f"entity_index holds {index.num_entities} entities, the model {self.config.num_entities}.")
        index.weights_sha256 = self.weights_fingerprint()
        self._entity_index = index

    def load_entity_index(self) -> EntityIndex | None:
        """The entity index saved with the checkpoint (in its folder, or its Hub repo at the revision it was loaded
        from), memory-mapped; None when it has none, it is for another number of entities, or it was encoded by
        other weights than these (a warning says so). Never encodes and attaches nothing
        (`load_or_build_entity_index` does both)."""
        return self._load_entity_index()

    def load_or_build_entity_index(self, **options: Any) -> EntityIndex:
        """The entity index of all entities, attached and returned: the attached one when it holds every entity,
        else the one saved with the checkpoint (`load_entity_index`, memory-mapped), else every key encoded
        (`build_entity_index(**options)`)."""
        index = getattr(self, "_entity_index", None)
        if index is not None and index.num_entities == self.config.num_entities:
            return index
        index = self._load_entity_index()
        if index is None:
            return self.build_entity_index(**options)
        self._entity_index = index
        return index

    def _load_entity_index(self) -> EntityIndex | None:
        source = self.name_or_path
        if not source:
            return None
        try:
            index = EntityIndex.from_pretrained(source, **getattr(self, "_hub_kwargs", {}))
        except EntityIndexError as err:  # a damaged or foreign file: say so, then encode instead
            logger.warning(f"{err}: ignoring it; the entity keys are encoded again.")
            return None
        if index is None:
            return None
        width = self.config.encoder.hidden_size
        if index.hidden_size != width:
            logger.warning(
                f"The entity index of {source} holds keys of width {index.hidden_size}, not {width}: ignoring it; the "
                "entity keys are encoded again."
            )
            return None
        if index.num_entities != self.config.num_entities:
            return None
        if index.weights_sha256 is not None and index.weights_sha256 != self.weights_fingerprint():
            logger.warning(
                f"The entity index of {source} was encoded by other weights than the model's ({ENTITY_INDEX_FILE} and "
                "model.safetensors come from different saves): ignoring it; the entity keys are encoded again."
            )
            return None
        tokenizer = getattr(self, "_kg_tokenizer", None)
        index.ids = list(tokenizer.entity_ids) if tokenizer is not None else None
        return index

    def build_entity_index(self, **options: Any) -> EntityIndex:
        """(Re-)encodes every entity key (`EntityIndex.build` options: `batch_size`, `shard_size`, `dtype`,
        `save_directory`, `accelerator`, `progress`); saved by `save_pretrained`."""
        self._entity_index = EntityIndex.build(self, **options)
        return self._entity_index

    def _save_extras(self, save_directory) -> None:
        super()._save_extras(save_directory)
        index = getattr(self, "_entity_index", None)
        if index is not None and index.num_entities == self.config.num_entities:
            saved = EntityIndex(
                [tile for _, tile in index.tiles()], self.entity_degrees.detach().cpu(), None, index.weights_sha256
            )
            saved.save(save_directory)  # weights_sha256 None: an index of unknown origin (an old save)

    @torch.no_grad()
    @in_eval_mode
    def predict(
        self,
        head: KgElement | None = None,
        relation: KgElement | None = None,
        tail: KgElement | None = None,
        top_k: int = 10,
        filter_known: Any = None,
        filter_splits: Sequence[str] = ("train", "validation", "test"),
        searcher: FaissSearcher | None = None,
    ) -> list[dict[str, Any]]:
        """Ranks all entities for `(head, relation, ?)` or `(?, relation, tail)`; entities and relations by id or name.

        Returns the `top_k` candidates as dicts `{"entity_id", "name", "score"}` (score = p(q, k), or the cosine
        with `config.scorer="cosine"`), best first.

        Args:
            filter_known (`KnowledgeGraph`, *optional*): this model's KG (`lmke_hf.load_kg(...)`); the query's known
                answers in its `filter_splits` are left out of the ranking (the filtered setting). The model stores
                no triples, so filtering needs the graph. (Typed `Any`: this file travels with saved models and
                cannot import `lmke_hf.kg`; an object without `answer_index` raises `TypeError`.)
            searcher (`FaissSearcher`, *optional*): approximate search (`model.load_or_build_entity_index().build_faiss()`) instead
                of the exact, tiled one; its shortlist is re-scored exactly, so the scores are the model's own.
        """
        if isinstance(filter_known, (bool, np.bool_)):
            raise TypeError(
                "`filter_known` takes the KnowledgeGraph whose known triples are left out (e.g. "
                "`lmke_hf.load_kg('wn18rr')`), not a bool: the model stores no triples."
            )
        if filter_known is not None and not hasattr(filter_known, "answer_index"):
            raise TypeError(
                f"`filter_known` must be a KnowledgeGraph (lmke_hf.load_kg), got {type(filter_known).__name__}."
            )
        if (head is None) == (tail is None):
            raise ValueError("Give exactly one of `head` (predict the tail) or `tail` (predict the head).")
        if relation is None:
            raise ValueError("`relation` is required.")
        if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, (int, np.integer)):
            raise TypeError(
                f"`top_k` must be a whole number of candidates (an int >= 1), got {top_k!r} ({type(top_k).__name__})."
            )
        if top_k < 1:
            raise ValueError(f"`top_k` must be >= 1, got {top_k}.")
        top_k = int(top_k)
        tokenizer = self.load_kg_tokenizer()
        given = tokenizer.entity_row(head if head is not None else tail)
        rel = tokenizer.relation_row(relation)
        batch = tokenizer.pad(tokenizer.encode_queries([given], [rel], "tail" if head is not None else "head"))
        q, q_ent = self.embed_queries(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device))
        index = self.load_or_build_entity_index()
        count, rows = index.nonfinite_rows()
        if count:
            shown = ", ".join(tokenizer.entity_ids[i] for i in rows)
            raise ValueError(
                f"The entity index holds {count} keys with NaN or inf values (entities {shown}{', ...' if count > len(rows) else ''}): "
                "their scores would be meaningless. Encode them again with `model.build_entity_index()`; if that gives "
                "NaN too, the weights themselves are broken (a diverged run)."
            )
        if not bool(torch.isfinite(q).all()):
            raise ValueError(
                "The query's embedding holds NaN or inf values: the weights are broken (a diverged run); nothing can be ranked."
            )
        known = None
        if filter_known is not None:
            kg_ids = list(filter_known.entities["id"]) if hasattr(filter_known, "entities") else None
            if filter_known.num_entities != self.config.num_entities or (
                kg_ids is not None and kg_ids != list(tokenizer.entity_ids)
            ):
                raise ValueError(
                    f"`filter_known` is a graph of {filter_known.num_entities} entities, this model has {self.config.num_entities} "
                    "(or they are in another order): pass the KG the model was trained on."
                )
            answers = filter_known.answer_index(list(filter_splits), "tail" if head is not None else "head")
            known = [np.asarray(answers.answers(given, rel), dtype=np.int64)]
        if searcher is None:
            values, order = index.search(self, q, q_ent, top_k, exclude=known)
        else:
            values, order = searcher.search(self, index, q, q_ent, top_k, exclude=known)
        values, order = values[0], order[0]
        kept = order >= 0
        values, order = values[kept], order[kept]
        if self.config.scorer == "matcher":
            values = torch.sigmoid(values)
        return [
            {"entity_id": tokenizer.entity_ids[i], "name": tokenizer.entity_names[i], "score": float(v)}
            for v, i in zip(values.tolist(), order.tolist())
        ]

    @torch.no_grad()
    def add_entities(
        self,
        ids: str | Sequence[str],
        names: str | Sequence[str] | None = None,
        descriptions: str | Sequence[str] | None = None,
    ) -> torch.Tensor:
        """Adds unseen entities without retraining (the inductive case): registers their tokens (initialised from
        their names' word pieces), degree 0, and encodes their keys into the entity index. Returns their ids.

        Each new entity's name and text are word-pieced once per call (`init_kg_embeddings` keeps the pieces of the
        texts it needs; the keys are encoded from them); the other entities' texts are not tokenised."""
        tokenizer = self.load_kg_tokenizer()
        index = self.load_or_build_entity_index()
        new = tokenizer.add_entities(ids, names, descriptions)
        self.resize_entity_embeddings(tokenizer.num_entities)
        self.init_kg_embeddings(tokenizer, entities=torch.as_tensor(new))
        grown = index.append(self.encode_entities(new).cpu(), ids=[tokenizer.entity_ids[i] for i in new])
        grown.weights_sha256 = self.weights_fingerprint()  # the old keys are unchanged by the new rows
        self._entity_index = grown
        return torch.as_tensor(new)

    # ------------------------------------------------------------ ranking against all entities
    @torch.no_grad()
    def score_all(
        self,
        query_embeddings: torch.Tensor,
        query_entity_ids: torch.Tensor,
        entity_embeddings: torch.Tensor,
        entity_ids: torch.Tensor | None = None,
        dtype: torch.dtype | None = None,
        unit_keys: bool = False,
    ) -> torch.Tensor:
        """Logits `(Bq, N)` of every query against every entity key (encode the keys once: `encode_entities` or `entity_index`).

        Args:
            query_embeddings `(Bq, hidden)`, query_entity_ids `(Bq,)`: from `embed_queries` / `encode_queries`.
            entity_embeddings `(N, hidden)`: keys of the candidate entities.
            entity_ids `(N,)`, *optional*: their entity ids (default: 0..N-1). Each candidate's degree feature is
                its own training degree.
            dtype (*optional*): compute dtype of the matcher (e.g. `torch.bfloat16` on CPUs with fast bf16).
            unit_keys (`bool`): the keys have unit length already (`EntityIndex.unit_tiles`); only the cosine scorer
                reads it (it then skips normalising them).
        """
        if entity_ids is None:
            entity_ids = torch.arange(entity_embeddings.shape[0], device=entity_embeddings.device)
        if dtype is None:
            return self.match(query_embeddings, query_entity_ids, entity_embeddings, entity_ids, unit_keys)
        with torch.autocast(device_type=entity_embeddings.device.type, dtype=dtype):
            return self.match(query_embeddings, query_entity_ids, entity_embeddings, entity_ids, unit_keys).float()


def _as_list(values) -> list:
    return [values] if isinstance(values, (str, int, np.integer)) else list(values)


def _as_requested(out: torch.Tensor, normalize: bool, convert_to_numpy: bool, convert_to_tensor: bool):
    """sentence-transformers' output options: unit rows, and a float32 NumPy array or a tensor."""
    if normalize:
        out = F.normalize(out, dim=-1)
    if convert_to_numpy or not convert_to_tensor:
        return out.cpu().numpy()
    return out


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


__all__ = ["ClmkeForLinkPrediction", "ClmkeMatcher", "KeyQueue", "LinkPredictionOutput"]
