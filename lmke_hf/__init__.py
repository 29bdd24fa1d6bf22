"""lmke_hf: LMKE and C-LMKE (Language Models as Knowledge Embeddings, IJCAI 2022) on Hugging Face transformers.

Importing the package registers both configurations and models with `AutoConfig` / `AutoModel`, their KG tokenizer
(`LmkeTokenizer`) with `AutoTokenizer`, and the pipeline tasks "knowledge-graph-completion" and
"triple-classification" with `transformers.pipeline`.
"""

from transformers import AutoConfig, AutoModel, AutoTokenizer

from .configuration_lmke import ClmkeConfig, LmkeConfig
from .loading import check_same_kg, load_model
from .modeling_base import LmkePreTrainedModel
from .modeling_clmke import ClmkeForLinkPrediction, ClmkeMatcher, LinkPredictionOutput
from .modeling_lmke import LmkeForTripleClassification, TripleClassificationOutput
from .pipelines import KnowledgeGraphCompletionPipeline, TripleClassificationPipeline, register_pipelines
from .tokenization_lmke import LmkeTokenizer

__version__ = "0.1.0"

# Training pulls in accelerate and datasets' writers: imported when first asked for, not with the models.
_TRAINING = {
    "ClmkeTrainingArguments": "lmke_hf.training.arguments",
    "LmkeTrainingArguments": "lmke_hf.training.arguments",
    "train_clmke": "lmke_hf.commands.train_clmke",
    "train_lmke": "lmke_hf.commands.train_lmke",
}


def __getattr__(name: str):
    if name in _TRAINING:
        import importlib

        return getattr(importlib.import_module(_TRAINING[name]), name)
    raise AttributeError(f"module 'lmke_hf' has no attribute {name!r}")


AutoConfig.register(LmkeConfig.model_type, LmkeConfig, exist_ok=True)
AutoConfig.register(ClmkeConfig.model_type, ClmkeConfig, exist_ok=True)
AutoModel.register(LmkeConfig, LmkeForTripleClassification, exist_ok=True)
AutoModel.register(ClmkeConfig, ClmkeForLinkPrediction, exist_ok=True)
AutoTokenizer.register(LmkeConfig, LmkeTokenizer, exist_ok=True)
AutoTokenizer.register(ClmkeConfig, LmkeTokenizer, exist_ok=True)
# Saved checkpoints carry `auto_map` and the modeling code, so they load with trust_remote_code=True without lmke_hf.
LmkeConfig.register_for_auto_class()
ClmkeConfig.register_for_auto_class()
LmkeForTripleClassification.register_for_auto_class("AutoModel")
ClmkeForLinkPrediction.register_for_auto_class("AutoModel")
LmkeTokenizer.register_for_auto_class("AutoTokenizer")  # also set on the class, for tokenizers of remote code
register_pipelines()  # pipeline("knowledge-graph-completion" | "triple-classification", model=...)

__all__ = [
    "ClmkeTrainingArguments",
    "LmkeTrainingArguments",
    "train_clmke",
    "train_lmke",
    "LmkeConfig",
    "ClmkeConfig",
    "LmkePreTrainedModel",
    "LmkeForTripleClassification",
    "ClmkeForLinkPrediction",
    "ClmkeMatcher",
    "TripleClassificationOutput",
    "LinkPredictionOutput",
    "LmkeTokenizer",
    "KnowledgeGraphCompletionPipeline",
    "TripleClassificationPipeline",
    "load_model",
    "check_same_kg",
]
