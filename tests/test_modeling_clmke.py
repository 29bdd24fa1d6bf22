"""Tests of C-LMKE as a transformers model (`lmke_hf.modeling_clmke`): the query / key embeddings, the paper's
contrastive loss (formula, gradient, ignored entries, known answers, sampled negatives), self-negatives, the two
encoders sharing one embedding table, the matcher and all-entity scoring, and the degree leak guard.

Tiny and offline, as tests/test_modeling.py (which holds what LMKE and C-LMKE share: shapes, losses, gradients,
save / load, errors): conftest's `make_model` / `tok` on the tiny model KG of `helpers.KG`.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn
from transformers import BertConfig

from lmke_hf import ClmkeConfig, ClmkeForLinkPrediction, ClmkeMatcher

from helpers import DEGREES, LENGTHS, NUM_ENTITIES, QUERIES, TINY_ENCODER, clmke_batch, gold_answer_ids


def tiny_clmke(**config_kwargs) -> ClmkeForLinkPrediction:
    """A C-LMKE on a random tiny encoder built from a config in code (no tokenizer needed)."""
    # pad_token_id is passed explicitly (test_models_build_from_a_config_without_pad_token_id covers its absence)
    config = ClmkeConfig(
        encoder=BertConfig(vocab_size=20, **TINY_ENCODER),
        num_entities=4,
        num_relations=2,
        pad_token_id=0,
        **config_kwargs,
    )
    return ClmkeForLinkPrediction(config).eval()


# ---------------------------------------------------------------------------------------------------- outputs
def test_clmke_embeddings_are_outputs_at_mask_and_key_entity(tok, make_model):
    model = make_model("clmke")
    batch = clmke_batch(tok)
    le, lr = LENGTHS["max_entity_description_length"], LENGTHS["max_relation_description_length"]
    mask_pos = [
        1 if d == "head" else 2 + len(tok.entity_pieces[g][:le]) + 1 + len(tok.relation_pieces[r][:lr])
        for g, r, d in zip(QUERIES["given"], QUERIES["relations"], QUERIES["directions"])
    ]
    rows = torch.arange(len(mask_pos))
    assert (batch["query_input_ids"][rows, mask_pos] == tok.entity_mask_token_id).all()
    with torch.no_grad():
        out = model(**batch)
        q_hidden = model.query_encoder(
            inputs_embeds=model.word_embeddings(batch["query_input_ids"]), attention_mask=batch["query_attention_mask"]
        ).last_hidden_state
        k_hidden = model.key_encoder(
            inputs_embeds=model.word_embeddings(batch["key_input_ids"]), attention_mask=batch["key_attention_mask"]
        ).last_hidden_state
    torch.testing.assert_close(out.query_embeddings, q_hidden[rows, mask_pos])
    torch.testing.assert_close(out.key_embeddings, k_hidden[:, 1])
    assert out.query_entity_ids.tolist() == QUERIES["given"]
    assert out.key_entity_ids.tolist() == QUERIES["gold"]
    torch.testing.assert_close(
        out.logits, model.match(out.query_embeddings, out.query_entity_ids, out.key_embeddings, out.key_entity_ids)
    )


@pytest.mark.parametrize(
    "directions", [["head"] * 3, ["tail"] * 3, ["head", "tail", "head"]], ids=["head", "tail", "mixed"]
)
def test_model_encode_queries_returns_given_entities(directions, tok, make_model):
    model = make_model("clmke")
    given, rels = [6, 0, 4], [1, 2, 0]
    batch = tok.pad(tok.encode_queries(given, rels, directions))
    with torch.no_grad():
        emb, ent = model.embed_queries(batch["input_ids"], batch["attention_mask"])
    assert ent.tolist() == given
    assert emb.shape == (3, model.config.encoder.hidden_size)
    mask_cols = (batch["input_ids"] == tok.entity_mask_token_id).int().argmax(1)
    for d, col, length in zip(directions, mask_cols.tolist(), batch["attention_mask"].sum(1).tolist()):
        assert col == (1 if d == "head" else length - 2)


# ---------------------------------------------------------------------------------------------------- C-LMKE loss
def paper_loss(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0, detach_weights: bool = True):
    """The paper's loss written out per query: mean over positives of -log p, plus sum over negatives of
    w * -log(1 - p), w = softmax over the query's negatives of T * p; averaged over queries; other labels ignored."""
    per_query = []
    for row, lab in zip(logits, labels):
        p = torch.sigmoid(row)
        pos, neg = p[lab == 1], p[lab == 0]
        loss = row.new_zeros(())
        if pos.numel():
            loss = loss - torch.log(pos).mean()
        if neg.numel():
            w = torch.softmax(temperature * (neg.detach() if detach_weights else neg), dim=0)
            loss = loss - (w * torch.log(1 - neg)).sum()
        per_query.append(loss)
    return torch.stack(per_query).mean()


def paper_loss_grad(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """d loss / d logits with the weights held constant: -(1 - p) / |K+| at positives, w * p at negatives."""
    p = torch.sigmoid(logits)
    grad = torch.zeros_like(logits)
    for i, lab in enumerate(labels):
        pos, neg = lab == 1, lab == 0
        if pos.any():
            grad[i, pos] = -(1 - p[i, pos]) / pos.sum()
        if neg.any():
            grad[i, neg] = torch.softmax(temperature * p[i, neg], dim=0) * p[i, neg]
    return grad / logits.shape[0]


_I = -100.0


LOSS_LABELS = {
    "one-positive-per-row": torch.eye(5, 6),
    "multi-positive": torch.tensor(
        [[1, 0, 1, 0, 0, 0], [0, 1, 0, 0, 1, 1], [0, 0, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0], [0, 0, 0, 0, 1, 0]],
        dtype=torch.float,
    ),
    "ignored": torch.tensor(
        [[1, _I, 0, 0, _I, 0], [0, 1, _I, 0, 0, 0], [_I, _I, 1, 0, 0, _I], [0, 0, 0, 1, _I, 0], [1, _I, 0, 0, 1, 0]]
    ),
    "row-without-negatives": torch.tensor(
        [[1, 0, 0, 0, 0, 0], [_I, 1, _I, _I, _I, _I], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, _I]]
    ),
}


LOSS_FORMULA_CASES = [(name, t) for name in LOSS_LABELS for t in (1.0, 2.5)]


@pytest.fixture(scope="module")
def _loss_models():
    return {t: tiny_clmke(adversarial_temperature=t) for t in (1.0, 2.5)}


def _fixed_logits() -> torch.Tensor:
    return 3 * torch.randn(5, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)


@pytest.mark.parametrize(
    "labels_name,temperature", LOSS_FORMULA_CASES, ids=[f"{n}-T{t}" for n, t in LOSS_FORMULA_CASES]
)
def test_contrastive_loss_equals_paper_formula(labels_name, temperature, _loss_models):
    model = _loss_models[temperature]
    labels = LOSS_LABELS[labels_name].double()
    logits = _fixed_logits().requires_grad_(True)
    loss = model.contrastive_loss(logits, labels)
    expected = paper_loss(logits.detach(), labels, temperature)
    torch.testing.assert_close(loss, expected, rtol=1e-10, atol=1e-12)

    (grad,) = torch.autograd.grad(loss, logits)
    expected_grad = paper_loss_grad(logits.detach(), labels, temperature)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-8, atol=1e-12)
    assert (grad[labels == _I] == 0).all()
    # The weights are constants: differentiating through them gives a different gradient.
    hand = logits.detach().clone().requires_grad_(True)
    (through,) = torch.autograd.grad(paper_loss(hand, labels, temperature, detach_weights=False), hand)
    if (labels == 0).sum(1).max() > 1:
        assert not torch.allclose(through, expected_grad)


def test_contrastive_loss_ignores_minus_100(_loss_models):
    model = _loss_models[1.0]
    labels = LOSS_LABELS["ignored"].double()
    logits = _fixed_logits()
    changed = logits.masked_fill(labels == _I, 50.0)
    torch.testing.assert_close(model.contrastive_loss(changed, labels), model.contrastive_loss(logits, labels))
    dropped = labels.clone()
    dropped[0, 1] = 0.0  # un-ignoring an entry does change the loss
    assert not torch.isclose(model.contrastive_loss(logits, dropped), model.contrastive_loss(logits, labels))


def test_forward_loss_with_explicit_labels_matches_formula(tok, make_model):
    model = make_model("clmke")
    labels = torch.eye(6)
    labels[0, 3] = -100.0
    labels[2, 5] = 1.0
    with torch.no_grad():
        out = model(**clmke_batch(tok), labels=labels)
    torch.testing.assert_close(out.labels, labels)
    torch.testing.assert_close(
        out.loss.double(), paper_loss(out.logits.double(), labels.double()), rtol=1e-5, atol=1e-6
    )


def test_answer_ids_make_in_batch_known_answers_positive(tok, make_model):
    """Key j is positive for query i when key j's entity is among query i's known answers (multi-label)."""
    model = make_model("clmke")
    # query 0 also has answers Q4 (key 2) and Q2 (key 1); query 3 has Q5 (key 5); Q6 (3rd answer of 4) is not a key.
    extra = {0: [4, 2], 3: [5], 4: [6]}
    expected = torch.eye(6)
    expected[0, 2] = expected[0, 1] = expected[3, 5] = 1.0
    with torch.no_grad():
        out = model(**clmke_batch(tok), answer_ids=gold_answer_ids(extra))
    torch.testing.assert_close(out.labels, expected)
    torch.testing.assert_close(
        out.loss.double(), paper_loss(out.logits.double(), expected.double()), rtol=1e-5, atol=1e-6
    )


def test_duplicate_gold_entity_in_batch_is_not_a_negative(tok, make_model):
    model = make_model("clmke")
    batch = {
        **tok.pad(tok.encode_queries([0, 3, 2], [0, 0, 1], "tail"), prefix="query_"),
        **tok.pad(tok.encode_keys([1, 1, 4]), prefix="key_"),  # keys 0 and 1 are the same entity
    }
    with torch.no_grad():
        out = model(**batch, answer_ids=torch.full((3, 1), -1))
    assert out.labels[0, 1] == 1 and out.labels[1, 0] == 1


@pytest.mark.parametrize("max_negatives", [1, 2, 3, 10])
def test_max_negatives_per_query_keeps_exactly_that_many(max_negatives, tok, make_model):
    model = make_model("clmke")
    model.config.max_negatives_per_query = max_negatives
    extra = {0: [4], 3: [5, 2]}
    positives = torch.eye(6, dtype=torch.bool)
    positives[0, 2] = positives[3, 5] = positives[3, 1] = True
    batch = clmke_batch(tok)
    with torch.no_grad():
        out = model(**batch, answer_ids=gold_answer_ids(extra), generator=torch.Generator().manual_seed(0))
        again = model(**batch, answer_ids=gold_answer_ids(extra), generator=torch.Generator().manual_seed(0))
    labels = out.labels
    assert torch.equal(labels == 1, positives)
    available = (~positives).sum(1)
    assert (labels == 0).sum(1).tolist() == available.clamp(max=max_negatives).tolist()
    assert ((labels == 0) | (labels == 1) | (labels == -100)).all()
    assert torch.equal(labels, again.labels)  # the generator makes the choice reproducible
    torch.testing.assert_close(
        out.loss.double(), paper_loss(out.logits.double(), labels.double()), rtol=1e-5, atol=1e-6
    )
    if max_negatives == 1:
        choices = set()
        for seed in range(1, 5):
            with torch.no_grad():
                o = model(**batch, answer_ids=gold_answer_ids(extra), generator=torch.Generator().manual_seed(seed))
            choices.add(tuple(o.labels.flatten().tolist()))
        assert len(choices) > 1  # negatives are sampled, not always the same columns


def test_one_dimensional_answer_ids_error_names_answer_ids(tok, make_model):
    model = make_model("clmke")
    with pytest.raises(ValueError, match="answer_ids"):
        model(**clmke_batch(tok), answer_ids=torch.tensor(QUERIES["gold"]))


# ---------------------------------------------------------------------------------------------------- self-negatives
def test_extra_keys_are_matched_and_labelled_by_entity(tok, make_model):
    """Self-negatives: the keys of the queries' own given entities are appended after the in-batch keys; the
    logits of those columns equal a direct match, and a given entity is positive only where it is a known answer."""
    model = make_model("clmke")
    batch = clmke_batch(tok)
    own = tok.pad(tok.encode_keys(QUERIES["given"]), prefix="extra_key_")
    extra = {2: [QUERIES["given"][2]]}  # query 2's given entity is also one of its known answers: (x, r, x)
    with torch.no_grad():
        out = model(**batch, **own, answer_ids=gold_answer_ids(extra))
        k_own, k_own_ent = model.embed_keys(own["extra_key_input_ids"], own["extra_key_attention_mask"])
        q, q_ent = model.embed_queries(batch["query_input_ids"], batch["query_attention_mask"])
        direct = model.match(q, q_ent, k_own, k_own_ent)
    b = len(QUERIES["given"])
    assert out.logits.shape == (b, 2 * b)
    torch.testing.assert_close(out.logits[:, b:], direct, rtol=1e-5, atol=1e-6)
    given, gold = torch.tensor(QUERIES["given"]), torch.tensor(QUERIES["gold"])
    own_is_gold = (given.view(1, -1) == gold.view(-1, 1)).float()  # another query's given entity is my gold
    expected = torch.cat([torch.eye(b), own_is_gold], 1)
    expected[2, b:][given == given[2]] = 1.0
    expected[2, :b][gold == given[2]] = 1.0  # ... and so is the in-batch key holding that entity
    assert 0 < own_is_gold.sum() < b * b and expected[:, b:].diagonal().sum() == 1  # both cases occur
    torch.testing.assert_close(out.labels, expected)
    torch.testing.assert_close(
        out.loss.double(), paper_loss(out.logits.double(), expected.double()), rtol=1e-5, atol=1e-6
    )


# ---------------------------------------------------------------------------------------------------- two encoders, one embedding table
def test_clmke_has_one_embedding_table_shared_by_both_encoders(make_model, tiny_bert_dir, source_encoder):
    model = make_model("clmke")
    assert model.query_encoder.embeddings.word_embeddings is None
    assert model.key_encoder.embeddings.word_embeddings is None
    assert model.get_input_embeddings() is model.word_embeddings
    assert model.word_embeddings.num_embeddings == model.config.total_vocab_size
    # every token embedding lives in `model.word_embeddings`; the encoders keep only position / segment tables
    table_params = {id(p) for p in model.word_embeddings.parameters()}
    for encoder in model._encoders():
        assert not table_params & {id(p) for p in encoder.parameters()}
        names = {n.rsplit(".", 1)[-1] for n, m in encoder.named_modules() if isinstance(m, nn.Embedding)}
        assert names == {"position_embeddings", "token_type_embeddings"}
    # the encoders are two copies (separate parameters) that start equal to each other and to the source encoder
    q_state, k_state = model.query_encoder.state_dict(), model.key_encoder.state_dict()
    assert q_state.keys() == k_state.keys()
    source = source_encoder.state_dict()
    for name in q_state:
        assert torch.equal(q_state[name], k_state[name]), name
        assert torch.equal(q_state[name], source[name]), name
    assert not {id(p) for p in model.query_encoder.parameters()} & {id(p) for p in model.key_encoder.parameters()}


def test_clmke_built_from_config_starts_with_equal_encoders():
    model = tiny_clmke()
    for (name, q), k in zip(model.query_encoder.state_dict().items(), model.key_encoder.state_dict().values()):
        assert torch.equal(q, k), name
    assert model.query_encoder.embeddings.word_embeddings is None


# ---------------------------------------------------------------------------------------------------- matcher
@dataclass(frozen=True)
class MatcherCase:
    name: str
    use_degree_features: bool
    num_queries: int
    num_keys: int
    memory_mb: float


_M, _H = 16, 8  # matcher width, hidden size; a tile of (queries, _M, keys) floats takes 4 * _M * q * k bytes


MATCHER_CASES = [
    MatcherCase("1x1-tiles", True, 5, 13, 1e-9),
    MatcherCase("1x1-tiles-nodeg", False, 13, 5, 1e-9),
    MatcherCase("key-tiles-of-3", True, 5, 13, 4 * _M * 3 / 2**20),
    MatcherCase("query-tiles-of-2", False, 5, 13, 4 * _M * 13 * 2 / 2**20),
    MatcherCase("query-tiles-of-2-deg", True, 7, 13, 4 * _M * 13 * 2 / 2**20),
    MatcherCase("one-tile", True, 5, 13, 512),
    MatcherCase("one-tile-nodeg", False, 5, 13, 512),
    MatcherCase("keys-over-2048", True, 3, 2500, 512),
    MatcherCase("single-query", True, 1, 13, 1e-3),
]


def naive_pairwise(matcher: ClmkeMatcher, q, k, q_logdeg, k_logdeg) -> torch.Tensor:
    """`matcher.forward` (the concatenation formula) on every (query, key) pair."""
    bq, n = q.shape[0], k.shape[0]
    qq, kk = q[:, None].expand(bq, n, -1), k[None].expand(bq, n, -1)
    if q_logdeg is None:
        return matcher(qq, kk, None, None)
    return matcher(qq, kk, q_logdeg[:, None].expand(bq, n), k_logdeg[None].expand(bq, n))


@pytest.mark.parametrize("case", MATCHER_CASES, ids=lambda c: c.name)
def test_matcher_pairwise_equals_concatenation_formula(case):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(3)
    matcher = ClmkeMatcher(_H, _M, case.use_degree_features)
    q = torch.randn(case.num_queries, _H, generator=gen)
    k = torch.randn(case.num_keys, _H, generator=gen)
    q_deg = k_deg = None
    if case.use_degree_features:
        q_deg = torch.log1p(torch.randint(0, 50, (case.num_queries,), generator=gen).float())
        k_deg = torch.log1p(torch.randint(0, 50, (case.num_keys,), generator=gen).float())
    with torch.no_grad():
        got = matcher.pairwise(q, k, q_deg, k_deg, memory_mb=case.memory_mb)
        expected = naive_pairwise(matcher, q, k, q_deg, k_deg)
    assert got.shape == (case.num_queries, case.num_keys)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_matcher_pairwise_with_no_keys_returns_empty_scores():
    matcher = ClmkeMatcher(_H, _M, False)
    assert matcher.pairwise(torch.randn(3, _H), torch.randn(0, _H)).shape == (3, 0)


def _encode_everything(model, tok):
    """Queries of `QUERIES` (6) and keys of all 7 entities: a non-square score matrix."""
    q = tok.pad(tok.encode_queries(QUERIES["given"], QUERIES["relations"], QUERIES["directions"]))
    k = tok.pad(tok.encode_keys(list(range(NUM_ENTITIES))))
    with torch.no_grad():
        q_emb, q_ent = model.embed_queries(q["input_ids"], q["attention_mask"])
        k_emb, k_ent = model.embed_keys(k["input_ids"], k["attention_mask"])
    return q_emb, q_ent, k_emb, k_ent


@pytest.mark.parametrize("memory_mb", [1e-9, 4 * 32 * 3 / 2**20, 512])
@pytest.mark.parametrize("name", ["clmke", "clmke_nodeg"])
def test_score_all_equals_concatenation_formula(name, memory_mb, tok, make_model):
    model = make_model(name)
    model.config.scoring_memory_mb = memory_mb
    q_emb, q_ent, k_emb, k_ent = _encode_everything(model, tok)
    assert k_ent.tolist() == list(range(NUM_ENTITIES))
    scores = model.score_all(q_emb, q_ent, k_emb)
    use_deg = model.config.use_degree_features
    degrees = torch.tensor(DEGREES) if use_deg else None
    with torch.no_grad():
        expected = naive_pairwise(
            model.matcher,
            q_emb,
            k_emb,
            torch.log1p(degrees[q_ent]) if use_deg else None,
            torch.log1p(degrees[k_ent]) if use_deg else None,
        )
    assert scores.shape == (len(QUERIES["given"]), NUM_ENTITIES)
    torch.testing.assert_close(scores, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model.score_all(q_emb, q_ent, k_emb, dtype=torch.bfloat16), scores, rtol=0.1, atol=0.1)


# ---------------------------------------------------------------------------------------------------- leak guard
@pytest.mark.parametrize("changed_entity", [2, 5])
def test_degree_of_an_entity_changes_only_its_column_and_its_queries(changed_entity, tok, make_model):
    model = make_model("clmke")
    q_emb, q_ent, k_emb, _ = _encode_everything(model, tok)
    before = model.score_all(q_emb, q_ent, k_emb)
    degrees = torch.tensor(DEGREES)
    degrees[changed_entity] += 40.0
    model.set_entity_degrees(degrees)
    after = model.score_all(q_emb, q_ent, k_emb)
    affected = torch.zeros_like(before, dtype=torch.bool)
    affected[:, changed_entity] = True
    affected[q_ent == changed_entity] = True
    assert (q_ent == changed_entity).any()  # the entity is also the given entity of one query
    assert torch.equal(before[~affected], after[~affected])
    assert (before[:, changed_entity] != after[:, changed_entity]).all()
    assert (before[q_ent == changed_entity] != after[q_ent == changed_entity]).all()


def test_candidate_score_is_the_same_alone_or_among_all(tok, make_model):
    model = make_model("clmke")
    q_emb, q_ent, k_emb, _ = _encode_everything(model, tok)
    all_scores = model.score_all(q_emb, q_ent, k_emb)
    for j in range(NUM_ENTITIES):
        alone = model.score_all(q_emb, q_ent, k_emb[j : j + 1], torch.tensor([j]))
        torch.testing.assert_close(alone[:, 0], all_scores[:, j], rtol=1e-6, atol=1e-6)
    perm = torch.randperm(NUM_ENTITIES, generator=torch.Generator().manual_seed(1))
    permuted = model.score_all(q_emb, q_ent, k_emb[perm], perm)
    torch.testing.assert_close(permuted, all_scores[:, perm], rtol=1e-6, atol=1e-6)
