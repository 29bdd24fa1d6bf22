"""C-LMKE's levers beyond the paper (`modeling_clmke.py`, `modeling_losses.py`): InfoNCE with a (learned) temperature and a margin, mean /
[CLS] pooling, the cosine scorer, the key queue (pre-batch negatives) and frozen lower layers; and that the
training script trains and resumes exactly with them. Tiny and offline: conftest's random BERT, the tiny
KG of `helpers.write_tiny_kg` and the tiny model KG of `helpers.KG` (conftest's `kg_tok`)."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModel

import lmke_hf  # noqa: F401
from lmke_hf import ClmkeConfig, ClmkeForLinkPrediction
from lmke_hf.modeling_clmke import KeyQueue

from helpers import QUERIES, RESUME_FLAGS, _assert_same_weights, _clmke_argv, _load_script, clmke_batch, gold_answer_ids


def build(tiny_bert_dir, kg_tok, **config) -> ClmkeForLinkPrediction:
    torch.manual_seed(0)
    return ClmkeForLinkPrediction.from_encoder_pretrained(str(tiny_bert_dir), kg_tok, **config)


def reference_infonce(scores, labels, inv_t, margin):
    """One positive at a time: cross-entropy of [positive, negatives] with the positive as class 0."""
    losses = []
    for i in range(scores.shape[0]):
        pos = (labels[i] == 1).nonzero().view(-1)
        neg = (labels[i] == 0).nonzero().view(-1)
        if len(pos) == 0:
            continue
        terms = []
        for p in pos:
            row = torch.cat([(scores[i, p] - margin).view(1), scores[i, neg]]) * inv_t
            terms.append(F.cross_entropy(row.view(1, -1), torch.zeros(1, dtype=torch.long)))
        losses.append(torch.stack(terms).mean())
    return torch.stack(losses).mean()


LABELS = {
    "diagonal": torch.eye(4),
    "two_positives": torch.tensor([[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]]),
    "ignored_and_no_positive": torch.tensor([[1, -100, 0, 0], [0, 0, 0, 0], [0, 0, 1, -100], [0, 0, 0, 1.0]]),
}


@pytest.mark.parametrize("labels_name", list(LABELS))
@pytest.mark.parametrize("margin", [0.0, 0.02])
def test_infonce_equals_cross_entropy_per_positive(labels_name, margin):
    model = ClmkeForLinkPrediction(
        ClmkeConfig(
            encoder=dict(
                model_type="bert",
                hidden_size=8,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=8,
                vocab_size=20,
            ),
            num_entities=4,
            num_relations=1,
            loss="infonce",
            infonce_temperature=0.1,
            infonce_margin=margin,
            scorer="cosine",
        )
    )
    torch.manual_seed(1)
    scores = torch.rand(4, 4) * 2 - 1
    labels = LABELS[labels_name]
    got = model.infonce_loss(scores, labels)
    assert math.isclose(model.temperature, 0.1, rel_tol=1e-6)
    torch.testing.assert_close(got, reference_infonce(scores, labels, 10.0, margin))


def test_infonce_without_negatives_is_zero_with_finite_gradients():
    model = ClmkeForLinkPrediction(
        ClmkeConfig(
            encoder=dict(
                model_type="bert",
                hidden_size=8,
                num_hidden_layers=1,
                num_attention_heads=2,
                intermediate_size=8,
                vocab_size=20,
            ),
            num_entities=2,
            num_relations=1,
            loss="infonce",
        )
    )
    scores = torch.zeros(2, 2, requires_grad=True)
    loss = model.infonce_loss(scores, torch.ones(2, 2))
    loss.backward()
    assert (
        float(loss.detach()) == 0.0
        and torch.isfinite(scores.grad).all()
        and torch.isfinite(model.log_inv_temperature.grad)
    )


def test_learned_temperature_trains_is_saved_and_fixed_one_does_not(tiny_bert_dir, kg_tok, tmp_path):
    learned = build(
        tiny_bert_dir, kg_tok, loss="infonce", scorer="cosine", pooling="mean", infonce_temperature=0.05
    ).train()
    assert math.isclose(float(learned.log_inv_temperature), math.log(20.0), rel_tol=1e-6)
    out = learned(**clmke_batch(kg_tok), answer_ids=gold_answer_ids())
    out.loss.backward()
    assert learned.log_inv_temperature.grad is not None and float(learned.log_inv_temperature.grad) != 0.0
    assert learned.log_inv_temperature in learned.head_parameters()
    with torch.no_grad():
        learned.log_inv_temperature.fill_(2.5)
    learned.save_pretrained(tmp_path / "m")
    reloaded = AutoModel.from_pretrained(tmp_path / "m")
    assert float(reloaded.log_inv_temperature) == 2.5 and reloaded.config.loss == "infonce"
    fixed = build(tiny_bert_dir, kg_tok, loss="infonce", learn_temperature=False)
    assert not fixed.log_inv_temperature.requires_grad
    paper = build(tiny_bert_dir, kg_tok)
    assert not hasattr(paper, "log_inv_temperature") and paper.temperature is None


def test_config_refuses_unknown_choices_and_bad_numbers():
    for kwargs, word in [
        ({"pooling": "max"}, "pooling"),
        ({"scorer": "dot"}, "scorer"),
        ({"loss": "bce"}, "loss"),
        ({"infonce_temperature": 0.0}, "infonce_temperature"),
        ({"infonce_temperature": float("nan")}, "infonce_temperature"),
        ({"infonce_margin": -0.1}, "infonce_margin"),
        ({"key_queue_size": -1}, "key_queue_size"),
        ({"freeze_layers": 13}, "freeze_layers"),
        ({"adversarial_temperature": float("nan")}, "adversarial_temperature"),
    ]:
        with pytest.raises(ValueError, match=word):
            ClmkeConfig(num_entities=2, num_relations=1, **kwargs)


def test_mean_pooling_is_the_masked_mean_and_ignores_padding(tiny_bert_dir, kg_tok):
    model = build(tiny_bert_dir, kg_tok, pooling="mean").eval()
    batch = clmke_batch(kg_tok)
    keys, _ = model.embed_keys(batch["key_input_ids"], batch["key_attention_mask"])
    hidden = model._run_encoder(
        model.key_encoder, batch["key_input_ids"], batch["key_attention_mask"]
    ).last_hidden_state
    mask = batch["key_attention_mask"].unsqueeze(-1).float()
    torch.testing.assert_close(keys, (hidden * mask).sum(1) / mask.sum(1))
    # each key alone (no padding) gives the same embedding as inside the padded batch
    for i, gold in enumerate(QUERIES["gold"]):
        alone = kg_tok.pad(kg_tok.encode_keys([gold]))
        single, _ = model.embed_keys(alone["input_ids"], alone["attention_mask"])
        torch.testing.assert_close(single[0], keys[i], atol=1e-5, rtol=1e-5)
    cls_model = build(tiny_bert_dir, kg_tok, pooling="cls").eval()
    q, _ = cls_model.embed_queries(batch["query_input_ids"], batch["query_attention_mask"])
    hq = cls_model._run_encoder(
        cls_model.query_encoder, batch["query_input_ids"], batch["query_attention_mask"]
    ).last_hidden_state
    torch.testing.assert_close(q, hq[:, 0])


def test_cosine_scorer_scores_are_cosines_and_has_no_matcher(tiny_bert_dir, kg_tok):
    model = build(tiny_bert_dir, kg_tok, scorer="cosine", pooling="mean").eval()
    assert not any(k.startswith("matcher.") for k in model.state_dict())
    batch = clmke_batch(kg_tok)
    out = model(**batch)
    expected = F.cosine_similarity(out.query_embeddings.unsqueeze(1), out.key_embeddings.unsqueeze(0), dim=-1)
    torch.testing.assert_close(out.logits, expected)
    model.attach_tokenizer(kg_tok)
    model.build_entity_index()
    top = model.predict(head=0, relation=0, top_k=3)
    assert all(-1.0 - 1e-6 <= row["score"] <= 1.0 + 1e-6 for row in top)


def test_key_queue_adds_previous_keys_as_negatives_only(tiny_bert_dir, kg_tok):
    model = build(tiny_bert_dir, kg_tok, key_queue_size=8).train()
    batch, answers = clmke_batch(kg_tok), gold_answer_ids()
    b = batch["query_input_ids"].shape[0]
    first = model(**batch, answer_ids=answers)
    assert first.logits.shape == (b, b) and len(model.key_queue) == 0  # forward changes nothing: the loop pushes
    model.key_queue.push(first.batch_key_embeddings, first.batch_key_entity_ids)
    assert len(model.key_queue) == b
    second = model(**batch, answer_ids=answers)
    model.key_queue.push(second.batch_key_embeddings, second.batch_key_entity_ids)
    assert second.logits.shape == (b, 2 * b)
    queued = second.labels[:, b:]
    # the queued copy of each query's own gold key would be a positive: it is ignored, not pulled towards
    assert torch.equal(queued.diagonal(), torch.full((b,), -100.0))
    assert set(queued.unique().tolist()) <= {0.0, -100.0}
    torch.testing.assert_close(queued == 0, second.labels[:, :b] == 0)
    assert len(model.key_queue) == 8  # capped, newest first
    torch.testing.assert_close(model.key_queue.keys[:b], second.key_embeddings[:b].detach())
    assert not any("queue" in k for k in model.state_dict())
    model.eval()
    assert model(**batch, answer_ids=answers).logits.shape == (b, b)  # evaluation uses no queue
    assert len(model.key_queue) == 8


def test_key_queue_state_round_trip():
    queue = KeyQueue(3)
    queue.push(torch.arange(8.0).view(4, 2), torch.tensor([1, 2, 3, 4]))
    assert queue.entities.tolist() == [1, 2, 3]
    queue.push(torch.ones(1, 2), torch.tensor([9]))
    assert queue.entities.tolist() == [9, 1, 2]
    other = KeyQueue(3)
    other.load_state_dict(queue.state_dict())
    assert torch.equal(other.keys, queue.keys) and torch.equal(other.entities, queue.entities)
    with pytest.raises(ValueError, match="size"):
        KeyQueue(-1)


def test_frozen_layers_get_no_gradient_and_no_graph(tiny_bert_dir, kg_tok):
    model = build(tiny_bert_dir, kg_tok, freeze_layers=1).train()
    seen = {}

    def record(module, args, kwargs):
        seen.setdefault("input_requires_grad", (args[0] if args else kwargs["hidden_states"]).requires_grad)

    handle = model.query_encoder.encoder.layer[1].register_forward_pre_hook(record, with_kwargs=True)
    out = model(**clmke_batch(kg_tok), answer_ids=gold_answer_ids())
    handle.remove()
    out.loss.backward()
    assert seen["input_requires_grad"] is False  # nothing below the first trained layer is recorded
    for encoder in (model.query_encoder, model.key_encoder):
        assert all(p.grad is None for p in encoder.embeddings.parameters())
        assert all(p.grad is None for p in encoder.encoder.layer[0].parameters())
        assert all(p.grad is not None for p in encoder.encoder.layer[1].parameters())
    assert model.word_embeddings.kg.weight.grad is None
    assert model.matcher.dense.weight.grad is not None


LEVER_FLAGS = (
    "--loss",
    "infonce",
    "--scorer",
    "cosine",
    "--pooling",
    "mean",
    "--infonce_margin",
    "0.02",
    "--key_queue_size",
    "8",
    "--self_negatives",
    "--freeze_layers",
    "1",
    "--symmetric_loss",
)


def test_training_script_with_levers_trains_saves_and_resumes_exactly(
    kg_dir, no_dropout_encoder, tmp_path, monkeypatch
):
    from helpers import counting_trained_steps

    script = _load_script("train_clmke")
    flags = RESUME_FLAGS  # a constant schedule: runs of 4 and 6 steps share their first 4 steps
    run_a, run_b = tmp_path / "A", tmp_path / "B"
    results = script.main(
        script.parse_args(_clmke_argv(kg_dir, no_dropout_encoder, run_a, "--max_train_steps", 6, *flags, *LEVER_FLAGS))
    )
    assert 0.0 < results["test_mrr"] <= 1.0
    assert (run_a / "checkpoints/step_6/custom_checkpoint_0.pkl").is_file()  # the key queue
    loaded = AutoModel.from_pretrained(run_a)
    config = loaded.config
    assert (config.loss, config.scorer, config.pooling, config.key_queue_size, config.symmetric_loss) == (
        "infonce",
        "cosine",
        "mean",
        8,
        True,
    )
    script.main(
        script.parse_args(_clmke_argv(kg_dir, no_dropout_encoder, run_b, "--max_train_steps", 4, *flags, *LEVER_FLAGS))
    )
    trained = counting_trained_steps(monkeypatch)
    script.main(
        script.parse_args(
            _clmke_argv(
                kg_dir,
                no_dropout_encoder,
                run_b,
                "--max_train_steps",
                6,
                "--resume_from_checkpoint",
                "latest",
                *flags,
                *LEVER_FLAGS,
            )
        )
    )
    assert trained == [4, 5]
    # the queue is part of the checkpoint: without it, steps 5-6 would see fewer negatives and differ
    _assert_same_weights(run_a / "checkpoints/step_6/model.safetensors", run_b / "checkpoints/step_6/model.safetensors")


def test_warmup_ratio_sets_warmup_steps_and_the_arguments_stay_as_given(kg_dir, tiny_bert_dir, tmp_path):
    script = _load_script("train_clmke")
    out = tmp_path / "w"
    args = script.parse_args(
        _clmke_argv(
            kg_dir,
            tiny_bert_dir,
            out,
            "--max_train_steps",
            10,
            "--warmup_ratio",
            "0.25",
            "--lr_scheduler_type",
            "linear",
            "--checkpointing_steps",
            10,
        )
    )
    given = dict(vars(args))
    script.main(args)
    assert vars(args) == given  # the run derives its schedule; it never rewrites its arguments
    assert (
        json.loads((out / "checkpoints" / "step_10" / "trainer_state.json").read_text())["settings"]["num_warmup_steps"]
        == 3
    )
    assert json.loads((out / "card.json").read_text())["args"]["num_warmup_steps"] == 3  # as the run ran


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--infonce_temperature", "0"),
        ("--infonce_margin", "-1"),
        ("--key_queue_size", "-2"),
        ("--warmup_ratio", "1.5"),
        ("--loss", "hinge"),
    ],
)
def test_lever_flags_are_checked(kg_dir, tiny_bert_dir, tmp_path, flag, value):
    script = _load_script("train_clmke")
    with pytest.raises(SystemExit):
        script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, tmp_path / "x", flag, value))


def test_eval_steps_validates_at_fixed_points_and_records_examples_and_training_time(kg_dir, tiny_bert_dir, tmp_path):
    script = _load_script("train_clmke")
    out = tmp_path / "e"
    # 20 steps an epoch (80 queries, batch 4): validation at steps 3 and 6 (--eval_steps), then at the last step 7
    summary = script.main(
        script.parse_args(
            _clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 7, "--eval_steps", 3, "--no_test_eval")
        )
    )
    steps = [h["step"] for h in summary["history"]]
    assert steps == [3, 6, 7]
    assert [h["examples_seen"] for h in summary["history"]] == [12, 24, 28]
    minutes = [h["train_minutes_excluding_eval"] for h in summary["history"]]
    assert all(m > 0 for m in minutes) and minutes == sorted(minutes)
    assert json.loads((out / "train_history.json").read_text())[0]["step"] == 3
    assert not (out / "model.safetensors").exists() and not (out / "all_results.json").exists()


def test_added_layers_are_initialised_by_the_package_not_by_the_transformers_version(monkeypatch):
    """`LmkePreTrainedModel._init_weights` initialises the classifier, matcher and KG rows itself: with
    transformers' generic init switched off, they still get N(0, initializer_range) weights and zero biases."""
    from transformers import PreTrainedModel

    from lmke_hf import LmkeConfig, LmkeForTripleClassification

    monkeypatch.setattr(PreTrainedModel, "_init_weights", lambda self, module: None)
    encoder = dict(
        model_type="bert",
        hidden_size=1024,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=8,
        vocab_size=50,
    )
    torch.manual_seed(0)
    lmke = LmkeForTripleClassification(
        LmkeConfig(encoder=encoder, num_entities=300, num_relations=2, initializer_range=0.5)
    )
    clmke = ClmkeForLinkPrediction(
        ClmkeConfig(encoder=encoder, num_entities=300, num_relations=2, initializer_range=0.5, matcher_hidden_size=16)
    )
    for weight, bias in (
        (lmke.classifier.weight, lmke.classifier.bias),
        (clmke.matcher.dense.weight, clmke.matcher.dense.bias),
    ):
        assert 0.45 < float(weight.std()) < 0.55 and float(bias.abs().max()) == 0.0
    assert 0.45 < float(clmke.word_embeddings.kg.weight.std()) < 0.55


def test_own_entity_bias_moves_only_the_own_entity_column_and_learns_from_self_negatives(tiny_bert_dir, kg_tok):
    model = build(tiny_bert_dir, kg_tok, own_entity_bias=True, scorer="cosine", pooling="mean", loss="infonce").eval()
    batch = clmke_batch(kg_tok)
    q, q_ent = model.embed_queries(batch["query_input_ids"], batch["query_attention_mask"])
    k, k_ent = model.embed_keys(*kg_tok.pad(kg_tok.encode_keys(list(range(7)))).values())
    before = model.score_all(q, q_ent, k, k_ent)
    with torch.no_grad():
        model.own_entity_offset.fill_(-0.5)
    after = model.score_all(q, q_ent, k, k_ent)
    own = q_ent.view(-1, 1) == k_ent.view(1, -1)
    torch.testing.assert_close(after[own], before[own] - 0.5)
    torch.testing.assert_close(after[~own], before[~own])
    # with the own entity's key as a self-negative, the loss pushes the offset down
    model.train()
    with torch.no_grad():
        model.own_entity_offset.zero_()
    own_keys = kg_tok.pad(kg_tok.encode_keys(QUERIES["given"]))
    out = model(
        **batch,
        answer_ids=gold_answer_ids(),
        extra_key_input_ids=own_keys["input_ids"],
        extra_key_attention_mask=own_keys["attention_mask"],
    )
    out.loss.backward()
    assert float(model.own_entity_offset.grad) > 0  # gradient descent lowers the offset


@pytest.mark.parametrize("loss", ["infonce", "adversarial_bce"])
def test_symmetric_loss_adds_each_in_batch_key_against_the_batch_queries(tiny_bert_dir, kg_tok, loss):
    """`symmetric_loss`: the queries' loss plus the loss of each in-batch key against the queries, with labels
    built here from the answers (not the model's); the self-negative keys take part in the queries' direction only."""
    config = dict(loss=loss, scorer="cosine", pooling="mean", infonce_margin=0.02)
    plain = build(tiny_bert_dir, kg_tok, **config).eval()
    symmetric = build(tiny_bert_dir, kg_tok, symmetric_loss=True, **config).eval()
    own = kg_tok.pad(kg_tok.encode_keys(QUERIES["given"]))
    extra = {0: [QUERIES["gold"][1]]}  # query 0 also has query 1's gold as an answer
    inputs = dict(
        **clmke_batch(kg_tok),
        answer_ids=gold_answer_ids(extra),
        extra_key_input_ids=own["input_ids"],
        extra_key_attention_mask=own["attention_mask"],
    )
    a, s = plain(**inputs), symmetric(**inputs)
    b = len(QUERIES["gold"])
    assert a.logits.shape == (b, 2 * b)
    torch.testing.assert_close(s.logits, a.logits)
    answers = [{gold, *extra.get(i, [])} for i, gold in enumerate(QUERIES["gold"])]
    transposed = torch.tensor([[float(QUERIES["gold"][j] in answers[i]) for i in range(b)] for j in range(b)])
    assert transposed[1].tolist() == [1, 1, 0, 0, 0, 0]  # key 1 answers queries 0 and 1
    scores = a.logits[:, :b].t()
    if loss == "infonce":
        inv_t = 1.0 / symmetric.temperature
        expected_keys = reference_infonce(scores, transposed, inv_t, 0.02)
        torch.testing.assert_close(a.loss, reference_infonce(a.logits, a.labels, inv_t, 0.02))
    else:
        expected_keys = plain.adversarial_bce_loss(scores, transposed)
    torch.testing.assert_close(s.loss, a.loss + expected_keys)
    assert float(expected_keys) > 0
