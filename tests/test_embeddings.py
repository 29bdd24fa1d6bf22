"""Entity embeddings with sentence-transformers' options (issue 19 item 3), and the claim the docstring makes: with
the cosine scorer, normalised embeddings score by dot product."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lmke_hf import ClmkeForLinkPrediction


def test_encode_entities_options(make_model, tok):
    model = make_model("clmke")
    model.attach_tokenizer(tok)
    plain = model.encode_entities()
    assert isinstance(plain, torch.Tensor) and plain.shape == (tok.num_entities, model.config.encoder.hidden_size)
    unit = model.encode_entities(normalize_embeddings=True, batch_size=2, show_progress_bar=False)
    torch.testing.assert_close(unit.norm(dim=-1), torch.ones(tok.num_entities))
    torch.testing.assert_close(unit, torch.nn.functional.normalize(plain, dim=-1))
    arr = model.encode_entities([tok.entity_ids[3], tok.entity_ids[1]], convert_to_numpy=True, device="cpu")
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float32
    np.testing.assert_allclose(arr, plain[[3, 1]].numpy(), rtol=1e-5, atol=1e-6)
    model.train()
    model.encode_entities()
    assert model.training  # the mode is restored


def test_with_the_cosine_scorer_normalised_embeddings_score_by_dot_product(tiny_bert_dir, tok):
    model = ClmkeForLinkPrediction.from_encoder_pretrained(
        str(tiny_bert_dir), tok, scorer="cosine", pooling="mean"
    ).eval()
    model.attach_tokenizer(tok)
    keys = model.encode_entities(normalize_embeddings=True)
    batch = tok.pad(tok.encode_queries([0, 2], [0, 1], "tail"))
    with torch.no_grad():
        q, q_ent = model.embed_queries(batch["input_ids"], batch["attention_mask"])
        scores = model.score_all(q, q_ent, model.encode_entities())
    torch.testing.assert_close(torch.nn.functional.normalize(q, dim=-1) @ keys.T, scores, rtol=1e-4, atol=1e-5)


def test_predict_and_the_loops_give_the_model_back_in_its_mode_even_when_they_raise(make_model, tok):
    from lmke_hf.evaluation import score_triples

    model = make_model("clmke")
    model.attach_tokenizer(tok)
    model.train()
    with pytest.raises(KeyError):
        model.predict(head="no such entity", relation=0)
    assert model.training
    model.predict(head=0, relation=0, top_k=2)
    assert model.training
    lmke = make_model("lmke")
    lmke.attach_tokenizer(tok)
    lmke.train()
    with pytest.raises((ValueError, IndexError)):
        score_triples(lmke, tok, np.array([[0, 0, 99]]))  # an entity row that does not exist
    assert lmke.training


def test_add_entities_tokenises_only_the_new_names_and_initialises_them_as_before(make_model, tok, monkeypatch):
    model = make_model("clmke")
    model.attach_tokenizer(tok)
    model.build_entity_index()  # the existing keys, encoded once
    before = tok.num_entities
    seen = []
    real = type(tok).word_pieces

    def counting(self, texts, max_length):
        seen.append(list(texts))
        return real(self, texts, max_length)

    monkeypatch.setattr(type(tok), "word_pieces", counting)
    new = model.add_entities(["n1", "n2"], ["red apple", ""], ["a fruit", "an unnamed thing described here"])
    assert new.tolist() == [before, before + 1]
    assert (
        max(map(len, seen)) == 2
    )  # never the whole vocabulary of names, once per new entity (was: every name, per entity)
    texts = [text for call in seen for text in call]
    # each new name and each new text once per call (was: a nameless entity's text twice, for its token and its key)
    assert sorted(texts) == sorted(["red apple", "", "red apple, a fruit", "an unnamed thing described here"])
    monkeypatch.setattr(type(tok), "word_pieces", real)
    words = model.word_embeddings.words.weight
    row = model.word_embeddings.kg.weight[model.config.entity_token_offset - model.config.base_vocab_size + before]
    expected = words[torch.tensor(tok.word_pieces(["red apple"], tok.max_name_length)[0])].mean(0)
    torch.testing.assert_close(row, expected)


# ------------------------------------------------------------------------------------ issue 19 item 3: by names
def test_encode_queries_by_names_equals_the_token_level_embeddings(make_model, tok):
    model = make_model("clmke")
    model.attach_tokenizer(tok)
    batch = tok.pad(tok.encode_queries([0, 3, 5], [1, 1, 1], "head"))
    expected, _ = model.embed_queries(batch["input_ids"], batch["attention_mask"])
    by_name = model.encode_queries(["paris", "Q3", 5], "P1", direction="head", batch_size=2)  # a name, an id, a row
    torch.testing.assert_close(by_name, expected)
    array = model.encode_queries("Q0", ["P0"], convert_to_numpy=True, normalize_embeddings=True)
    assert array.shape == (1, expected.shape[1]) and abs(float((array**2).sum()) - 1) < 1e-5
    with pytest.raises(ValueError, match="3 entities and 2 relations"):
        model.encode_queries(["Q0", "Q1", "Q2"], ["P0", "P1"])
    with pytest.raises(KeyError, match="Unknown entity 'pariss'.*Did you mean 'paris'"):
        model.encode_queries(["pariss"], "P0")


def test_encode_text_equals_the_key_add_entities_would_encode(make_model, tok):
    import copy

    model = make_model("clmke")
    model.attach_tokenizer(tok)
    names, descriptions = ["lyon", ""], ["lyon is a city in france", "a town with no name"]
    texts = model.encode_text(names, descriptions, batch_size=1)
    grown = copy.deepcopy(model)
    grown.attach_tokenizer(copy.deepcopy(tok))
    new = grown.add_entities(["N1", "N2"], names, descriptions)
    torch.testing.assert_close(texts, grown.encode_entities(new))
    assert model.kg_tokenizer.num_entities == tok.num_entities == 7  # nothing was added
    with pytest.raises(ValueError, match="2 names and 1 descriptions"):
        model.encode_text(names, descriptions[:1])
    with pytest.raises(TypeError, match="str names and descriptions, got int 3"):
        model.encode_text([3])
