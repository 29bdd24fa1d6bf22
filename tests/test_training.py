"""Tests of the training scripts (examples/train_clmke.py, examples/train_lmke.py) and their shared Accelerate
loop (lmke_hf/training/): end-to-end runs on a tiny KG, exact resume, cross-device negatives on two CPU
processes, fail-fast argument checks and the training degrees a run stores. `TrainingTriples` is tested in
tests/test_features.py, the evaluation-level leak guard on a trained run in tests/test_evaluation_loops.py.

Everything is offline: the encoder is the tiny random BERT of the `tiny_bert_dir` fixture and the KG is written
into tmp_path by `tests/helpers.py` (`write_tiny_kg`) (12 entities, 3 relations, 40 training triples).
"""

from __future__ import annotations

import json
import math
import socket
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from lmke_hf.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lmke_hf  # noqa: E402,F401  (registers the Auto classes)
from lmke_hf import ClmkeForLinkPrediction, LmkeForTripleClassification, LmkeTokenizer  # noqa: E402
from lmke_hf.kg import load_kg  # noqa: E402
from lmke_hf.run_io import run_resumes  # noqa: E402

from helpers import (  # noqa: E402
    DEV,
    ENTITIES,
    LINK_PREDICTION_KEYS,
    RELATIONS,
    RESUME_FLAGS,
    TEST,
    TRAIN,
    _assert_same_weights,
    _clmke_argv,
    _common,
    _load_script,
    _steps_differ,
    train_degrees,
    write_tiny_kg,
)

# `clmke_run` (C-LMKE trained 6 steps, also run A of the resume tests) is a fixture of conftest.py.


@pytest.fixture(scope="module")
def lmke_run(lmke_script, kg_dir, tiny_bert_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("lmke") / "run"
    results = lmke_script.main(lmke_script.parse_args(_common(kg_dir, tiny_bert_dir, out, "--max_train_steps", 4)))
    return out, results


# ------------------------------------------------------------------------------------------------ 1. end to end


def test_clmke_end_to_end_results(clmke_run):
    out, results = clmke_run
    for key in LINK_PREDICTION_KEYS:
        assert key in results and math.isfinite(results[key]), key
    num_entities = len(ENTITIES)
    assert 0 < results["test_mrr"] <= 1
    assert 1 <= results["test_mr"] <= num_entities
    assert 0 <= results["test_hits@1"] <= results["test_hits@3"] <= results["test_hits@10"] <= 1
    assert results["completed_steps"] == 6
    assert results["num_processes"] == 1
    saved = json.loads((out / "all_results.json").read_text())
    for key in LINK_PREDICTION_KEYS:
        assert saved[key] == pytest.approx(results[key])
    # 6 test triples x 2 directions
    assert saved["test_num_queries"] == 2 * len(TEST)
    history = json.loads((out / "train_history.json").read_text())
    assert len(history) == 1 and "eval_mrr" in history[0] and history[0]["step"] == 6
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_2", "step_4", "step_6"]
    assert not (out / "best").exists()  # the final folder is the best model; no second copy unless --keep_best


def test_clmke_saved_model_and_tokenizer_load(clmke_run):
    from transformers import AutoConfig, AutoModel

    out, _ = clmke_run
    assert AutoConfig.from_pretrained(out).model_type == lmke_hf.ClmkeConfig.model_type
    model = AutoModel.from_pretrained(out)
    assert type(model) is ClmkeForLinkPrediction
    tokenizer = LmkeTokenizer.from_pretrained(out)
    assert (tokenizer.num_entities, tokenizer.num_relations) == (len(ENTITIES), len(RELATIONS))
    assert tokenizer.max_key_description_length == 8
    assert tokenizer.max_entity_description_length == 8
    model.check_tokenizer(tokenizer)


def test_clmke_final_model_is_the_best_one_kept_with_keep_best(
    clmke_script, kg_dir, tiny_bert_dir, tmp_path, monkeypatch
):
    """Validations at steps 2 and 4 whose MRR falls (0.9, then 0.1): the final model is step 2's, not the last."""
    from lmke_hf.commands import train_clmke

    original, mrrs = train_clmke.rank_link_prediction, [0.9, 0.1]

    def falling(*args, **kwargs):
        evaluator = original(*args, **kwargs)
        if args[3] != "validation":
            return evaluator
        metrics = {**evaluator.compute(), "mrr": mrrs.pop(0)}
        return type("Validation", (), {"compute": lambda self: metrics})()

    monkeypatch.setattr(train_clmke, "rank_link_prediction", falling)
    out = tmp_path / "run"
    flags = ("--max_train_steps", 4, "--eval_steps", 2, "--checkpointing_steps", 2, "--keep_best")
    results = clmke_script.main(clmke_script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, out, *flags)))
    assert mrrs == [] and results["best_step"] == 2
    model = ClmkeForLinkPrediction.from_pretrained(out)
    best = ClmkeForLinkPrediction.from_pretrained(out / "best")  # the best by validation MRR, as the loop saved it
    for (name, a), (_, b) in zip(model.state_dict().items(), best.state_dict().items()):
        assert torch.equal(a, b), name
    step_2 = load_file(str(out / "checkpoints" / "step_2" / "model.safetensors"))
    step_4 = load_file(str(out / "checkpoints" / "step_4" / "model.safetensors"))
    final = model.state_dict()
    assert len(set(step_2) & set(final)) == len(step_2)  # a checkpoint holds the model's own tensor names
    assert all(torch.equal(final[k], v) for k, v in step_2.items() if k in final)
    assert any(not torch.equal(final[k], v) for k, v in step_4.items() if k in final)


def test_logging_steps_log_loss_pace_and_time_left_every_n_steps(clmke_script, kg_dir, tiny_bert_dir, tmp_path, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="train_clmke")
    argv = _clmke_argv(kg_dir, tiny_bert_dir, tmp_path / "a", "--max_train_steps", 4, "--logging_steps", 2)
    clmke_script.main(clmke_script.parse_args(argv))
    lines = [r.getMessage() for r in caplog.records if "s/step" in r.getMessage()]
    assert [line.split(" (")[0] for line in lines] == ["step 2/4", "step 4/4"], lines
    assert all("loss " in line and "lr " in line and "min of training left" in line for line in lines)
    assert lines[-1].endswith("0 h 00 min of training left")
    caplog.clear()
    argv = _clmke_argv(kg_dir, tiny_bert_dir, tmp_path / "b", "--max_train_steps", 2, "--logging_steps", 0)
    clmke_script.main(clmke_script.parse_args(argv))
    assert not [r for r in caplog.records if "s/step" in r.getMessage()]


def test_clmke_writes_test_metrics_ranks_and_plot(clmke_run):
    out, results = clmke_run
    folder = out / "test_metrics"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["overall"]["mrr"] == pytest.approx(results["test_mrr"])
    assert set(metrics["per_direction"]) == {"head", "tail"}
    assert "per_relation" in metrics and "per_degree_bucket" in metrics
    with np.load(folder / "ranks.npz") as ranks:
        assert len(ranks["gold"]) == 2 * len(TEST)
    assert (folder / "ranks.csv").read_text().count("\n") == 2 * len(TEST) + 1
    png = folder / "degree_buckets.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_lmke_end_to_end(lmke_run):
    from transformers import AutoModel

    out, results = lmke_run
    saved = json.loads((out / "all_results.json").read_text())
    for key in ("test_accuracy", "test_accuracy_tuned_global", "test_accuracy_tuned_per_relation"):
        assert key in results and 0 <= results[key] <= 1, key
        assert saved[key] == pytest.approx(results[key])
    assert saved["test_num_test"] == 2 * len(TEST)  # positives + one generated negative each
    assert results["completed_steps"] == 4
    thresholds = json.loads((out / "thresholds.json").read_text())  # one per relation of the validation split
    assert set(thresholds) == {str(r) for _, r, _ in DEV} and all(isinstance(v, float) for v in thresholds.values())
    assert "drawn once for the whole run" in (out / "README.md").read_text()  # default: the original code's negatives
    model = AutoModel.from_pretrained(out)
    assert type(model) is LmkeForTripleClassification
    tokenizer = LmkeTokenizer.from_pretrained(out)
    assert (tokenizer.num_entities, tokenizer.num_relations) == (len(ENTITIES), len(RELATIONS))
    model.check_tokenizer(tokenizer)


def test_lmke_loop_sets_each_epochs_negatives_also_after_a_resume(
    lmke_script, kg_dir, tiny_bert_dir, tmp_path, monkeypatch
):
    """40 positives + 40 negatives in batches of 4: 20 steps per epoch. The loop calls set_epoch(0), (1); a run
    resumed at step 21 starts with set_epoch(1), so it trains on epoch 1's negatives; the card says which."""
    from lmke_hf.features import TrainingTriples

    calls = []
    original = TrainingTriples.set_epoch
    monkeypatch.setattr(
        TrainingTriples, "set_epoch", lambda self, epoch: (calls.append(epoch), original(self, epoch))[1]
    )
    out = tmp_path / "run"
    flags = (
        "--lr_scheduler_type",
        "constant",
        "--checkpointing_steps",
        21,
        "--eval_max_queries",
        4,
        "--resample_negatives",
    )
    lmke_script.main(lmke_script.parse_args(_common(kg_dir, tiny_bert_dir, out, "--max_train_steps", 21, *flags)))
    assert [e for i, e in enumerate(calls) if i == 0 or calls[i - 1] != e] == [0, 1]  # repeated calls are no-ops
    calls.clear()
    lmke_script.main(
        lmke_script.parse_args(
            _common(kg_dir, tiny_bert_dir, out, "--max_train_steps", 22, "--resume_from_checkpoint", "latest", *flags)
        )
    )
    assert calls[0] == 0 and set(calls[1:]) == {1}
    assert "drawn anew each epoch" in (out / "README.md").read_text()


# ------------------------------------------------------------------------------------------------ 2. exact resume


def test_resume_mid_epoch_is_exact_without_dropout(clmke_script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch):
    """Data order (skip_first_batches), optimizer, scheduler and step count survive a mid-epoch resume:
    6 uninterrupted steps == 4 steps + resume ('latest') + 2 steps."""
    from helpers import counting_trained_steps

    run_a, run_b = tmp_path / "A", tmp_path / "B"
    clmke_script.main(
        clmke_script.parse_args(_clmke_argv(kg_dir, no_dropout_encoder, run_a, "--max_train_steps", 6, *RESUME_FLAGS))
    )
    clmke_script.main(
        clmke_script.parse_args(_clmke_argv(kg_dir, no_dropout_encoder, run_b, "--max_train_steps", 4, *RESUME_FLAGS))
    )
    _assert_same_weights(
        run_a / "checkpoints/step_4/model.safetensors", run_b / "checkpoints/step_4/model.safetensors", atol=0.0
    )
    assert not (run_b / "checkpoints/step_6").exists()
    trained = counting_trained_steps(monkeypatch)
    results = clmke_script.main(
        clmke_script.parse_args(
            _clmke_argv(
                kg_dir,
                no_dropout_encoder,
                run_b,
                "--max_train_steps",
                6,
                "--resume_from_checkpoint",
                "latest",
                *RESUME_FLAGS,
            )
        )
    )
    assert results["completed_steps"] == 6 and trained == [4, 5]  # steps 5 and 6 only, from step 4's state
    assert json.loads((run_b / "checkpoints/step_6/trainer_state.json").read_text())["completed_steps"] == 6
    assert _steps_differ(run_a / "checkpoints/step_4/model.safetensors", run_a / "checkpoints/step_6/model.safetensors")
    _assert_same_weights(run_a / "checkpoints/step_6/model.safetensors", run_b / "checkpoints/step_6/model.safetensors")


def test_resume_mid_epoch_is_exact_with_dropout(clmke_script, clmke_run, kg_dir, tiny_bert_dir, tmp_path):
    """Run A (clmke_run: 6 steps, dropout on) == run B (4 steps) + run C (resume from B's step_4, to 6 steps)."""
    run_a, _ = clmke_run
    run_b, run_c = tmp_path / "B", tmp_path / "C"
    clmke_script.main(
        clmke_script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, run_b, "--max_train_steps", 4, *RESUME_FLAGS))
    )
    _assert_same_weights(
        run_a / "checkpoints/step_4/model.safetensors", run_b / "checkpoints/step_4/model.safetensors", atol=0.0
    )
    clmke_script.main(
        clmke_script.parse_args(
            _clmke_argv(
                kg_dir,
                tiny_bert_dir,
                run_c,
                "--max_train_steps",
                6,
                "--resume_from_checkpoint",
                run_b / "checkpoints" / "step_4",
                *RESUME_FLAGS,
            )
        )
    )
    assert sorted(p.name for p in (run_c / "checkpoints").iterdir()) == ["step_6"]
    _assert_same_weights(run_a / "checkpoints/step_6/model.safetensors", run_c / "checkpoints/step_6/model.safetensors")


def test_a_run_stopped_mid_schedule_resumes_its_learning_rate_schedule(
    clmke_script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch
):
    """Linear warmup (2 steps) and decay over 8 steps, stopped by a signal after step 4: the resume continues the
    scheduler's state (a fresh scheduler would warm up again from 0), so the lrs and weights match an uninterrupted
    run's."""
    import signal

    from lmke_hf.errors import TrainingStopped
    from lmke_hf.training import loop

    from helpers import counting_trained_steps

    flags = ("--max_train_steps", 8, "--lr_scheduler_type", "linear", "--num_warmup_steps", 2)
    flags += ("--checkpointing_steps", 3, "--logging_steps", 1)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    lrs = {}
    original = loop.TrainingLoop.log_progress

    def log_progress(self, epoch):  # each step's lr, and a SIGTERM after step 4 of the stopped run
        lrs.setdefault(self.args.output_dir, []).append(self.scheduler.get_last_lr()[0])
        if self.args.output_dir == str(stopped) and self.state.completed_steps == 4:
            signal.raise_signal(signal.SIGTERM)
        return original(self, epoch)

    monkeypatch.setattr(loop.TrainingLoop, "log_progress", log_progress)
    clmke_script.main(clmke_script.parse_args(_clmke_argv(kg_dir, no_dropout_encoder, whole, *flags)))
    with pytest.raises(TrainingStopped) as error:
        clmke_script.main(clmke_script.parse_args(_clmke_argv(kg_dir, no_dropout_encoder, stopped, *flags)))
    assert error.value.step == 4
    trained = counting_trained_steps(monkeypatch)
    argv = _clmke_argv(kg_dir, no_dropout_encoder, stopped, *flags, "--resume_from_checkpoint", "latest")
    clmke_script.main(clmke_script.parse_args(argv))
    assert trained == [4, 5, 6, 7]
    assert lrs[str(stopped)] == lrs[str(whole)]
    # warmup to 1e-5 in 2 steps, then linear decay (a fresh scheduler at the resume would give 5e-6, 1e-5, ... again)
    assert lrs[str(whole)] == pytest.approx([5e-6, 1e-5, 25e-6 / 3, 20e-6 / 3, 5e-6, 10e-6 / 3, 5e-6 / 3, 0.0])
    _assert_same_weights(
        whole / "checkpoints/step_8/model.safetensors", stopped / "checkpoints/step_8/model.safetensors"
    )


def test_resume_in_a_later_epoch_is_exact(clmke_script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch):
    """A resume in epoch 1 (step 24 of 20-step epochs) continues epoch 1's shuffle order, not epoch 0's:
    26 uninterrupted steps == 24 steps + resume + 2 steps."""
    from helpers import counting_trained_steps

    run_a, run_b = tmp_path / "A", tmp_path / "B"
    clmke_script.main(
        clmke_script.parse_args(_clmke_argv(kg_dir, no_dropout_encoder, run_a, "--max_train_steps", 26, *RESUME_FLAGS))
    )
    clmke_script.main(
        clmke_script.parse_args(_clmke_argv(kg_dir, no_dropout_encoder, run_b, "--max_train_steps", 24, *RESUME_FLAGS))
    )
    _assert_same_weights(
        run_a / "checkpoints/step_24/model.safetensors", run_b / "checkpoints/step_24/model.safetensors", atol=0.0
    )
    trained = counting_trained_steps(monkeypatch)
    clmke_script.main(
        clmke_script.parse_args(
            _clmke_argv(
                kg_dir,
                no_dropout_encoder,
                run_b,
                "--max_train_steps",
                26,
                "--resume_from_checkpoint",
                "latest",
                *RESUME_FLAGS,
            )
        )
    )
    assert trained == [24, 25]
    _assert_same_weights(
        run_a / "checkpoints/step_26/model.safetensors", run_b / "checkpoints/step_26/model.safetensors"
    )


# ------------------------------------------------------------------------------------------------ 3. two processes


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(worker, args, nprocs: int, timeout: float) -> None:
    import torch.multiprocessing as mp

    context = mp.spawn(worker, args=args, nprocs=nprocs, join=False)
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                if process.is_alive():
                    process.terminate()
            pytest.fail(f"the {nprocs} distributed workers did not finish within {timeout} s")


@pytest.fixture(scope="module")
def cross_device(kg_dir, tiny_bert_dir, tmp_path_factory):
    """Single-process reference on a global batch of 8 queries/keys, and the same batch split over 2 gloo
    processes with gather_keys=True."""
    from _training_dist import run_worker

    from lmke_hf.features import ClmkeCollator, link_prediction_examples, tokenize_link_prediction

    work = tmp_path_factory.mktemp("dist")
    kg = load_kg(str(kg_dir))
    tokenizer = LmkeTokenizer.from_kg(
        str(tiny_bert_dir),
        kg,
        max_entity_description_length=8,
        max_relation_description_length=4,
        max_key_description_length=8,
    )
    torch.manual_seed(0)
    model = ClmkeForLinkPrediction.from_encoder_pretrained(str(tiny_bert_dir), tokenizer)
    model.set_entity_degrees(kg.degrees(["train"]))
    model.save_pretrained(work / "model")

    examples = tokenize_link_prediction(link_prediction_examples(kg.triples("train")), tokenizer)
    rows = [0, 1, 2, 12, 40, 41, 13, 52]  # tail and head queries on both halves; shared answers -> multi-label rows
    collator = ClmkeCollator(
        tokenizer.pad_token_id, kg.answer_index(["train"], "tail"), kg.answer_index(["train"], "head")
    )
    batch = collator([examples[i] for i in rows])
    torch.save(batch, work / "batch.pt")

    reference = ClmkeForLinkPrediction.from_pretrained(work / "model").eval()
    out = reference(**batch)
    out.loss.backward()
    ref = {
        "logits": out.logits.detach(),
        "labels": out.labels.detach(),
        "loss": out.loss.detach(),
        "key_entity_ids": out.key_entity_ids,
        "grads": {n: p.grad.detach().clone() for n, p in reference.named_parameters() if p.grad is not None},
    }
    _spawn(
        run_worker, (2, _free_port(), str(work / "model"), str(work / "batch.pt"), str(work)), nprocs=2, timeout=600
    )  # a hang guard: generous, the 2 workers take ~20 s on a quiet machine
    ranks = [torch.load(work / f"rank{r}.pt") for r in range(2)]
    return ref, ranks


def test_cross_device_logits_are_rows_of_the_full_batch(cross_device):
    ref, ranks = cross_device
    assert ref["logits"].shape == (8, 8)
    assert ref["labels"].sum() > 8, "the batch should have multi-label rows"
    for r, result in enumerate(ranks):
        assert result["logits"].shape == (4, 8)  # local queries x all 8 keys
        assert torch.equal(result["key_entity_ids"], ref["key_entity_ids"])
        torch.testing.assert_close(result["labels"], ref["labels"][4 * r : 4 * r + 4])
        torch.testing.assert_close(result["logits"], ref["logits"][4 * r : 4 * r + 4], atol=1e-5, rtol=1e-5)


def test_cross_device_mean_loss_equals_full_batch_loss(cross_device):
    ref, ranks = cross_device
    mean = (ranks[0]["loss"] + ranks[1]["loss"]) / 2
    torch.testing.assert_close(mean, ref["loss"], atol=1e-6, rtol=1e-5)


def _grad_mismatches(ref, ranks, predicate) -> dict[str, float]:
    # both ranks saved the same averaged gradients
    averaged = ranks[0]["grads"]
    names = [n for n in ref["grads"] if predicate(n)]
    assert names
    out = {}
    for name in names:
        diff = (averaged[name] - ref["grads"][name]).abs().max().item()
        if diff > 1e-5 + 1e-4 * ref["grads"][name].abs().max().item():
            out[name] = diff
    return out


def test_cross_device_gradients_of_query_side_and_matcher(cross_device):
    """DDP-averaged gradients (each rank: mean loss over its own queries) = gradient of the global mean loss,
    for parameters reached through the queries and the logits only."""
    ref, ranks = cross_device
    bad = _grad_mismatches(ref, ranks, lambda n: n.startswith(("matcher.", "query_encoder.")))
    assert not bad, bad
    assert "matcher.dense.weight" in ref["grads"]


def test_cross_device_gradients_of_key_side_and_kg_embeddings(cross_device):
    ref, ranks = cross_device
    bad = _grad_mismatches(ref, ranks, lambda n: n.startswith("key_encoder.") or n == "word_embeddings.kg.weight")
    assert not bad, bad


# ------------------------------------------------------------------------------------------------ 4. bad input


@pytest.fixture(params=["train_clmke", "train_lmke"])
def script(request):
    return _load_script(request.param)


def _argv(script, kg_dir, encoder, output_dir, *extra):
    if script.__name__.endswith("train_clmke"):
        return _clmke_argv(kg_dir, encoder, output_dir, *extra)
    return _common(kg_dir, encoder, output_dir, *extra)


@pytest.mark.parametrize(
    "flag, value",
    [
        ("--lr_scheduler_type", "foo"),
        ("--checkpointing_steps", "foo"),
        ("--checkpointing_steps", "0"),
        ("--checkpointing_steps", "-2"),
    ],
)
def test_bad_flag_values_stop_argparse(script, kg_dir, tiny_bert_dir, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        script.parse_args(_argv(script, kg_dir, tiny_bert_dir, tmp_path / "out", flag, value))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and repr(value) in err


# every numeric flag is range-checked at parse time (before the data or the encoder is loaded): e.g. a negative
# --max_grad_norm used to train by gradient ascent, --eval_max_queries 0 failed only after a whole epoch
OUT_OF_RANGE = [
    ("--max_train_steps", "0"),
    ("--per_device_train_batch_size", "0"),
    ("--gradient_accumulation_steps", "0"),
    ("--cpu_threads", "0"),
    ("--checkpoints_total_limit", "0"),
    ("--max_grad_norm", "-1"),
    ("--max_grad_norm", "nan"),
    ("--eval_max_queries", "0"),
    ("--eval_max_queries", "-1"),
    ("--learning_rate", "0"),
    ("--learning_rate", "-0.00001"),
    ("--head_learning_rate", "inf"),
    ("--weight_decay", "-0.1"),
    ("--num_train_epochs", "0"),
    ("--num_warmup_steps", "-3"),
    ("--per_device_eval_batch_size", "0"),
    ("--max_entity_description_length", "-1"),
    ("--max_relation_description_length", "-2"),
    ("--seed", "-1"),
    ("--encoder_layers", "0"),
    ("--eval_steps", "0"),
    ("--num_proc", "0"),
    ("--warmup_ratio", "2"),
    ("--learning_rate", "fast"),
]
CLMKE_OUT_OF_RANGE = [
    ("--adversarial_temperature", "nan"),
    ("--adversarial_temperature", "-1"),
    ("--max_negatives_per_query", "0"),
    ("--max_key_description_length", "-1"),
    ("--matcher_hidden_size", "0"),
    ("--infonce_temperature", "0"),
    ("--infonce_margin", "nan"),
    ("--key_queue_size", "-1"),
    ("--freeze_layers", "-1"),
]


@pytest.mark.parametrize("flag, value", OUT_OF_RANGE)
def test_out_of_range_numbers_stop_argparse(script, kg_dir, tiny_bert_dir, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        script.parse_args(_argv(script, kg_dir, tiny_bert_dir, tmp_path / "out", flag, value))
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and value in err


@pytest.mark.parametrize("flag, value", CLMKE_OUT_OF_RANGE)
def test_out_of_range_clmke_numbers_stop_argparse(clmke_script, kg_dir, tiny_bert_dir, tmp_path, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        clmke_script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, tmp_path / "out", flag, value))
    assert info.value.code == 2
    assert f"argument {flag}" in capsys.readouterr().err


def test_non_bert_encoder_folder_stops(script, kg_dir, tmp_path):
    gpt2 = tmp_path / "gpt2_tiny"
    gpt2.mkdir()
    (gpt2 / "config.json").write_text(
        json.dumps({"model_type": "gpt2", "n_embd": 8, "n_layer": 1, "n_head": 2, "vocab_size": 50})
    )
    with pytest.raises(UsageError) as info:
        script.parse_args(_argv(script, kg_dir, gpt2, tmp_path / "out"))
    message = str(info.value)
    assert "gpt2" in message and str(gpt2) in message and "BERT" in message


def test_encoder_folder_without_config_stops(script, kg_dir, tmp_path):
    empty = tmp_path / "not_a_model"
    empty.mkdir()
    with pytest.raises(UsageError) as info:
        script.parse_args(_argv(script, kg_dir, empty, tmp_path / "out"))
    assert str(empty) in str(info.value) and "config.json" in str(info.value)


def test_missing_resume_folder_stops(script, kg_dir, tiny_bert_dir, tmp_path):
    missing = tmp_path / "checkpoints" / "step_99"
    with pytest.raises(UsageError) as info:
        script.parse_args(_argv(script, kg_dir, tiny_bert_dir, tmp_path / "out", "--resume_from_checkpoint", missing))
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


def test_resume_folder_without_model_state_stops(script, kg_dir, tiny_bert_dir, tmp_path):
    broken = tmp_path / "step_2"
    broken.mkdir()
    (broken / "trainer_state.json").write_text('{"completed_steps": 2}')
    with pytest.raises(UsageError) as info:
        script.parse_args(_argv(script, kg_dir, tiny_bert_dir, tmp_path / "out", "--resume_from_checkpoint", broken))
    assert str(broken) in str(info.value) and "no model state" in str(info.value)


def _forbid_training(monkeypatch, script):
    def train(*args, **kwargs):
        raise AssertionError("training started although the input is unusable")

    monkeypatch.setattr(script, "train", train)


def test_dataset_without_dev_split_stops_before_training(script, tiny_bert_dir, tmp_path, monkeypatch):
    kg = write_tiny_kg(tmp_path, name="nodev", drop=("dev.tsv",))
    _forbid_training(monkeypatch, script)
    out = tmp_path / "out"
    args = script.parse_args(_argv(script, kg, tiny_bert_dir, out))
    with pytest.raises((SystemExit, FileNotFoundError, ValueError)) as info:
        script.main(args)
    message = str(info.value.code if isinstance(info.value, SystemExit) else info.value)
    assert "dev.tsv" in message or "validation" in message
    assert not (out / "best").exists() and not (out / "checkpoints").exists()


def test_clmke_batch_larger_than_training_set_stops(clmke_script, kg_dir, tiny_bert_dir, tmp_path, monkeypatch):
    _forbid_training(monkeypatch, clmke_script)
    args = clmke_script.parse_args(
        _clmke_argv(kg_dir, tiny_bert_dir, tmp_path / "out", "--per_device_train_batch_size", 1000)
    )
    with pytest.raises(UsageError) as info:
        clmke_script.main(args)
    assert "1000" in str(info.value) and str(2 * len(TRAIN)) in str(info.value)


# ------------------------------------------------------------------------------------------------ 5. stored degrees (the leak guard itself: tests/test_evaluation_loops.py)


def test_stored_degrees_are_training_degrees(clmke_run, kg_dir):
    out, _ = clmke_run
    kg = load_kg(str(kg_dir))
    model = ClmkeForLinkPrediction.from_pretrained(out)
    expected = kg.degrees(["train"])
    np.testing.assert_array_equal(expected, train_degrees())
    np.testing.assert_array_equal(model.entity_degrees.numpy(), expected.astype(np.float32))
    assert not np.array_equal(
        model.entity_degrees.numpy(), kg.degrees(["train", "validation", "test"]).astype(np.float32)
    )
    # the checkpoints carry the same buffer
    state = load_file(str(out / "checkpoints" / "step_6" / "model.safetensors"))
    np.testing.assert_array_equal(state["entity_degrees"].numpy(), expected.astype(np.float32))


def test_checkpoints_total_limit_keeps_the_newest(clmke_script, kg_dir, tiny_bert_dir, tmp_path):
    out = tmp_path / "run"
    clmke_script.main(
        clmke_script.parse_args(
            _clmke_argv(
                kg_dir,
                tiny_bert_dir,
                out,
                "--max_train_steps",
                6,
                "--checkpointing_steps",
                2,
                "--checkpoints_total_limit",
                2,
            )
        )
    )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_4", "step_6"]


def test_clmke_trains_with_self_negatives(clmke_script, kg_dir, tiny_bert_dir, tmp_path):
    out = tmp_path / "run"
    results = clmke_script.main(
        clmke_script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 2, "--self_negatives"))
    )
    assert math.isfinite(results["test_mrr"]) and results["completed_steps"] == 2
    assert json.loads((out / "training_args.json").read_text())["args"]["self_negatives"] is True


def test_resume_keeps_validation_history_and_training_time(clmke_script, kg_dir, tiny_bert_dir, tmp_path):
    """20 steps per epoch: the run is cut at step 21 (after epoch 0's validation) and resumed to step 22; the
    history holds both epochs and the training time counts both segments."""
    out = tmp_path / "run"
    flags = ("--lr_scheduler_type", "constant", "--checkpointing_steps", 21)
    clmke_script.main(clmke_script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 21, *flags)))
    state = json.loads((out / "checkpoints" / "step_21" / "trainer_state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [0] and state["train_runtime_s"] > 0
    results = clmke_script.main(
        clmke_script.parse_args(
            _clmke_argv(
                kg_dir, tiny_bert_dir, out, "--max_train_steps", 22, "--resume_from_checkpoint", "latest", *flags
            )
        )
    )
    assert results["train_runtime_s"] > state["train_runtime_s"]
    history = json.loads((out / "train_history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1] and [h["step"] for h in history] == [20, 22]


def test_checkpoint_on_an_epochs_last_step_holds_its_validation(clmke_script, kg_dir, tiny_bert_dir, tmp_path):
    """Checkpoints every 20 steps = every epoch end: step_20 is written after epoch 0's validation, so a run
    resumed from it keeps that validation (and its best model) instead of skipping it."""
    out = tmp_path / "run"
    flags = ("--lr_scheduler_type", "constant", "--checkpointing_steps", 20)
    clmke_script.main(clmke_script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 20, *flags)))
    state = json.loads((out / "checkpoints" / "step_20" / "trainer_state.json").read_text())
    assert [h["epoch"] for h in state["history"]] == [0] and state["best"]["epoch"] == 0
    clmke_script.main(
        clmke_script.parse_args(
            _clmke_argv(
                kg_dir, tiny_bert_dir, out, "--max_train_steps", 22, "--resume_from_checkpoint", "latest", *flags
            )
        )
    )
    history = json.loads((out / "train_history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1] and [h["step"] for h in history] == [20, 22]


def test_a_resumed_runs_card_names_its_first_command(clmke_script, kg_dir, tiny_bert_dir, tmp_path, monkeypatch):
    out = tmp_path / "run"
    first = _clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 2, "--checkpointing_steps", 2)
    monkeypatch.setattr(sys, "argv", ["examples/train_clmke.py", *first])
    clmke_script.main(clmke_script.parse_args(first))
    started = json.loads((out / "training_args.json").read_text())
    resume = _clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 3, "--resume_from_checkpoint", "latest")
    refused = [*resume, "--learning_rate", "1e-3"]  # other settings than the checkpoint's: trains nothing
    monkeypatch.setattr(sys, "argv", ["examples/train_clmke.py", *refused])
    with pytest.raises(UsageError, match="--learning_rate"):
        clmke_script.main(clmke_script.parse_args(refused))
    after_refusal = json.loads((out / "training_args.json").read_text())
    assert {k: v for k, v in after_refusal.items() if k != "resumes"} == started  # the run's own record is kept
    monkeypatch.setattr(sys, "argv", ["examples/train_clmke.py", *resume])
    clmke_script.main(clmke_script.parse_args(resume))
    info = json.loads((out / "training_args.json").read_text())
    assert info["command"] == started["command"] and "--resume_from_checkpoint" not in info["command"]
    assert info["started_at"] == started["started_at"] and info["args"]["max_train_steps"] == 3
    attempt, taken = info["resumes"]  # the refused attempt stays on record, marked, and is not counted
    assert attempt["pending"]["args"]["learning_rate"] == 1e-3 and "--learning_rate 1e-3" in attempt["command"]
    assert "pending" not in taken and taken["resumed_at_step"] == 2 and "--learning_rate" not in taken["command"]
    assert run_resumes(out) == [taken["command"]]
    card = (out / "README.md").read_text()
    assert f"- Command: `{started['command']}`" in card
    assert (
        "- Trained in 2 segments: stopped and resumed 1 time with `--resume_from_checkpoint`, each resume exact" in card
    )
    assert "  - resume 1: `--max_train_steps` 2 -> 3, `--checkpointing_steps 2` dropped\n" in card


def test_resume_from_a_checkpoint_without_timing_reports_unknown_time(clmke_script, kg_dir, tiny_bert_dir, tmp_path):
    out = tmp_path / "run"
    clmke_script.main(
        clmke_script.parse_args(
            _clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 2, "--checkpointing_steps", 2)
        )
    )
    path = out / "checkpoints" / "step_2" / "trainer_state.json"
    state = json.loads(path.read_text())
    path.write_text(
        json.dumps({"completed_steps": state["completed_steps"], "best": state["best"]})
    )  # an older checkpoint
    results = clmke_script.main(
        clmke_script.parse_args(
            _clmke_argv(kg_dir, tiny_bert_dir, out, "--max_train_steps", 3, "--resume_from_checkpoint", "latest")
        )
    )
    assert results["train_runtime_s"] is None and results["completed_steps"] == 3
    assert "Training time" not in (out / "README.md").read_text()


@pytest.mark.parametrize(
    "env, threads, expected",
    [
        (
            {"ACCELERATE_MIXED_PRECISION": "no", "OMP_NUM_THREADS": "1"},
            None,
            "all",
        ),  # accelerate launch's pin is undone
        ({"OMP_NUM_THREADS": "1"}, None, "kept"),  # the user's own setting stays
        ({}, None, "all"),
        ({"ACCELERATE_MIXED_PRECISION": "no"}, 1, 1),  # --cpu_threads wins
    ],
)
def test_set_cpu_threads(env, threads, expected, monkeypatch):
    import os
    import types

    from lmke_hf.training import set_cpu_threads

    for key in [k for k in os.environ if k.startswith("ACCELERATE_")] + ["OMP_NUM_THREADS", "LOCAL_WORLD_SIZE"]:
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    original = torch.get_num_threads()
    # start from a count that is neither "all" nor 1, so that keeping it, taking every core and --cpu_threads 1 differ
    torch.set_num_threads(len(os.sched_getaffinity(0)) + 1)
    before = torch.get_num_threads()
    accelerator = types.SimpleNamespace(device=torch.device("cpu"), num_processes=1)
    try:
        got = set_cpu_threads(accelerator, threads)
        want = {"all": len(os.sched_getaffinity(0)), "kept": before}.get(expected, expected)
        assert got == want and torch.get_num_threads() == want
    finally:
        torch.set_num_threads(original)
