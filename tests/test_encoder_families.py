"""The encoder families the README names besides BERT (RoBERTa, DeBERTa-v2, ELECTRA): LMKE and C-LMKE build on
each, train a step, and save and load through `AutoModel`. Tiny random encoders built offline, with the tiny BERT's
WordPiece tokenizer (the family is the encoder's; the word pieces only need a vocabulary)."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from lmke_hf import ClmkeForLinkPrediction, LmkeForTripleClassification, LmkeTokenizer

from helpers import KG, LENGTHS, clmke_batch, gold_answer_ids, lmke_batch

FAMILIES = ["roberta", "deberta-v2", "electra"]


def _tiny_encoder(family: str, tiny_bert_dir, folder):
    """A random encoder of `family` (hidden 32, 2 layers) saved in `folder` with the tiny BERT's tokenizer files."""
    from transformers import AutoConfig

    vocab = AutoTokenizer.from_pretrained(tiny_bert_dir)
    shapes = dict(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=37,
        pad_token_id=vocab.pad_token_id,
    )
    if family == "roberta":
        shapes.update(
            max_position_embeddings=64 + vocab.pad_token_id + 1, type_vocab_size=1
        )  # positions start after pad
    elif family == "deberta-v2":
        shapes.update(
            max_position_embeddings=64, relative_attention=True, position_biased_input=False, type_vocab_size=0
        )
    else:
        shapes.update(max_position_embeddings=64, embedding_size=32)
    torch.manual_seed(0)
    AutoModel.from_config(AutoConfig.for_model(family, **shapes)).save_pretrained(folder)
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        if (tiny_bert_dir / name).exists():
            shutil.copy(tiny_bert_dir / name, folder / name)
    return folder


@pytest.mark.parametrize("family", FAMILIES)
def test_both_models_build_train_save_and_load_on_the_encoder_family(family, tiny_bert_dir, tmp_path):
    encoder = _tiny_encoder(family, tiny_bert_dir, tmp_path / family)
    tok = LmkeTokenizer(AutoTokenizer.from_pretrained(encoder), **KG, **LENGTHS)
    for model_class, batch in (
        (LmkeForTripleClassification, {**lmke_batch(tok), "labels": torch.tensor([1.0, 0.0, 1.0, 0.0])}),
        (ClmkeForLinkPrediction, {**clmke_batch(tok), "answer_ids": gold_answer_ids()}),
    ):
        torch.manual_seed(0)
        model = model_class.from_encoder_pretrained(str(encoder), tok)
        assert model.config.encoder.model_type == family
        model.train()
        loss = model(**batch).loss
        assert torch.isfinite(loss)
        loss.backward()
        grads = [p.grad for p in model.parameters() if p.requires_grad and p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)
        out = tmp_path / f"{family}-{model_class.__name__}"
        model.eval().save_pretrained(out)
        tok.save_pretrained(out)
        loaded = AutoModel.from_pretrained(out).eval()
        assert type(loaded) is model_class and loaded.config.encoder.model_type == family
        with torch.no_grad():
            torch.testing.assert_close(loaded(**batch).logits, model(**batch).logits)
