"""Deprecated alias, kept for one release: the evaluation loops moved to `lmke_hf.evaluation.loops`.

Import `encode_entities`, `rank_link_prediction` and `score_triples` from `lmke_hf.evaluation` instead; this
module re-exports the same objects and will be removed in the next release.
"""

import warnings

from .evaluation.loops import encode_entities, rank_link_prediction, score_triples

warnings.warn(
    "`lmke_hf.inference` moved to `lmke_hf.evaluation` (`from lmke_hf.evaluation import rank_link_prediction`); "
    "the old module goes away in the next release.",
    DeprecationWarning,
    stacklevel=2,
)

__all__ = ["encode_entities", "rank_link_prediction", "score_triples"]
