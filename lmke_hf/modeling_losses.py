"""C-LMKE's contrastive losses as plain functions of a `(queries, keys)` score matrix and its labels (1 positive,
0 negative, anything else ignored): the paper's self-adversarial binary cross-entropy and SimKGC's InfoNCE.

`ClmkeForLinkPrediction.contrastive_loss` picks one by `config.loss`, with the temperatures and margin of its
config. Both compute in fp32 whatever the autocast dtype of the scores. Self-contained (no imports from the rest of
the package) so that saved checkpoints load with `trust_remote_code=True` where `lmke_hf` is not installed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def at_least_fp32(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` in fp32 when it is in a lower precision (bf16 / fp16 under autocast); fp32 and fp64 as they are."""
    return tensor.float() if tensor.dtype in (torch.float16, torch.bfloat16) else tensor


def infonce_loss(
    scores: torch.Tensor, labels: torch.Tensor, inverse_temperature: torch.Tensor | float, margin: float = 0.0
) -> torch.Tensor:
    r"""InfoNCE with multiple positives, averaged over the queries that have a positive:
    `L(q) = 1/|K+| sum_{k+} -log(e^{s(q,k+)} / (e^{s(q,k+)} + sum_{k-} e^{s(q,k-)}))`,
    `s = (score - margin * [k positive]) / t` (SimKGC, van den Oord et al. 2018). Each positive competes with the
    negatives only, not with the other positives (known answers are not pushed apart).

    Args:
        scores (`(Bq, Bk)`): cosines or matcher logits.
        labels (`(Bq, Bk)`): 1 positive, 0 negative, any other value ignored.
        inverse_temperature: `1 / t` (a learned tensor or a number).
        margin: subtracted from the positives' scores (SimKGC's additive margin).
    """
    scores = at_least_fp32(scores)  # under bf16 / fp16 autocast too: the loss is never computed in low precision
    positive, negative = labels == 1, labels == 0
    logits = (scores - margin * positive.to(scores.dtype)) * inverse_temperature
    floor = torch.finfo(logits.dtype).min  # no negatives: the positive's term is 0, with finite gradients
    negatives = logits.masked_fill(~negative, floor).logsumexp(1, keepdim=True)
    per_positive = (torch.logaddexp(logits, negatives) - logits).masked_fill(~positive, 0.0)
    n_pos = positive.sum(1)
    per_query = per_positive.sum(1) / n_pos.clamp(min=1)
    has_positive = n_pos > 0
    if not bool(has_positive.any()):
        return logits.sum() * 0.0
    return per_query[has_positive].mean()


def adversarial_bce_loss(logits: torch.Tensor, labels: torch.Tensor, adversarial_temperature: float) -> torch.Tensor:
    r"""The paper's loss, averaged over queries:
    `L(q, K) = -sum_{k+} 1/|K+| log p(q, k+) - sum_{k-} w_{q,k-} log(1 - p(q, k-))`,
    `w_{q,k-} = softmax_{k-}(T * p(q, k-))` treated as constants (T = `adversarial_temperature`).

    Args:
        logits (`(Bq, Bk)`): matcher logits.
        labels (`(Bq, Bk)`): 1 positive, 0 negative, any other value (e.g. -100) ignored.
    """
    logits = at_least_fp32(logits)  # under bf16 / fp16 autocast too
    positive = labels == 1
    negative = labels == 0
    n_pos = positive.sum(1).clamp(min=1)
    pos_loss = (F.softplus(-logits) * positive).sum(1) / n_pos
    with torch.no_grad():
        weights = (adversarial_temperature * torch.sigmoid(logits)).masked_fill(~negative, float("-inf"))
        weights = torch.softmax(weights, dim=1).nan_to_num(0.0)  # a query without negatives gets no negative loss
    neg_loss = (F.softplus(logits) * weights).sum(1)
    return (pos_loss + neg_loss).mean()


__all__ = ["adversarial_bce_loss", "at_least_fp32", "infonce_loss"]
