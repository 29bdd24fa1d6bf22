"""LMKE (Wang et al., "Language Models as Knowledge Embeddings", IJCAI 2022, section 3.2): triple classification.

C-LMKE (section 3.3) lives in `modeling_clmke`; both models are built on `modeling_base`. All three files are
self-contained (relative imports among `configuration_*` / `modeling_*` / `tokenization_*` only) so that saved
checkpoints load with `trust_remote_code=True` where `lmke_hf` is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers.utils import ModelOutput

from .configuration_lmke import LmkeConfig
from .modeling_base import (
    LmkePreTrainedModel,
    _build_encoder,
    _check_input_ids,
    _check_label_values,
    _check_no_unknown_kwargs,
    _first_position,
    _gather,
    check_fits_in_memory,
    in_eval_mode,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .tokenization_lmke import KgElement


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

    def __init__(self, config: LmkeConfig) -> None:
        check_fits_in_memory(config, num_encoders=1)
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
        **kwargs: Any,
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
            low = logits.dtype in (torch.float16, torch.bfloat16)  # under autocast: the loss is computed in fp32
            loss = F.binary_cross_entropy_with_logits(
                logits.float() if low else logits, labels.float() if low else labels
            )
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
    @in_eval_mode
    def predict(
        self,
        head: KgElement | Iterable[KgElement],
        relation: KgElement | Iterable[KgElement],
        tail: KgElement | Iterable[KgElement],
        threshold: float = 0.5,
        batch_size: int = 256,
    ) -> list[dict[str, Any]]:
        """p(true) of triples given by entity / relation ids or names (single values or equal-length lists).

        Returns one dict per triple, in order: `{"head", "relation", "tail", "score", "is_true"}` with
        `score = sigmoid(logit)` and `is_true = score > threshold` (the paper's 0.5 by default; the training
        run's tuned thresholds are in its `thresholds.json`).
        """
        single = lambda v: isinstance(v, (str, int, np.integer)) and not isinstance(v, (bool, np.bool_))  # noqa: E731
        heads, relations, tails = ([v] if single(v) else list(v) for v in (head, relation, tail))
        if not (len(heads) == len(relations) == len(tails)) or not heads:
            raise ValueError(
                f"Give as many heads, relations and tails (got {len(heads)}, {len(relations)}, {len(tails)}), at least one."
            )
        tokenizer = self.load_kg_tokenizer()
        h = [tokenizer.entity_row(v) for v in heads]
        r = [tokenizer.relation_row(v) for v in relations]
        t = [tokenizer.entity_row(v) for v in tails]
        scores = []
        for start in range(0, len(h), batch_size):
            sl = slice(start, start + batch_size)
            batch = tokenizer.pad(tokenizer.encode_triples(h[sl], r[sl], t[sl]))
            logits = self(batch["input_ids"].to(self.device), batch["attention_mask"].to(self.device)).logits
            scores += torch.sigmoid(logits.float()).tolist()
        return [
            {
                "head": tokenizer.entity_ids[a],
                "relation": tokenizer.relation_ids[b],
                "tail": tokenizer.entity_ids[c],
                "score": p,
                "is_true": p > threshold,
            }
            for a, b, c, p in zip(h, r, t, scores)
        ]


__all__ = ["LmkeForTripleClassification", "TripleClassificationOutput"]
