"""bf16 as a first-class precision (issue 22 item 1, issue 18 item 5): the flag, what a run records, the resume
check, and the warning on CPUs that emulate bf16. Tiny and offline."""

from __future__ import annotations

import json
import logging
from types import SimpleNamespace

import pytest
import torch

from lmke_hf.errors import UsageError
from lmke_hf.training import run as run_module

from helpers import RESUME_FLAGS, _assert_same_weights, _clmke_argv, _load_script


@pytest.fixture(scope="module")
def script():
    return _load_script("train_clmke")


def _train(script, kg, encoder, out, *extra):
    return script.main(script.parse_args(_clmke_argv(kg, encoder, out, *extra)))


def test_a_bf16_run_records_its_precision_and_resumes_exactly_but_not_in_fp32(
    script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch
):
    from helpers import counting_trained_steps

    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    _train(
        script, kg_dir, no_dropout_encoder, whole, "--max_train_steps", 4, "--mixed_precision", "bf16", *RESUME_FLAGS
    )
    results = json.loads((whole / "all_results.json").read_text())
    assert results["mixed_precision"] == "bf16"
    assert "- Precision: bf16 mixed precision" in (whole / "README.md").read_text()
    assert (
        json.loads((whole / "checkpoints" / "step_4" / "trainer_state.json").read_text())["settings"]["mixed_precision"]
        == "bf16"
    )

    _train(
        script, kg_dir, no_dropout_encoder, resumed, "--max_train_steps", 2, "--mixed_precision", "bf16", *RESUME_FLAGS
    )
    with pytest.raises(UsageError) as info:
        _train(
            script,
            kg_dir,
            no_dropout_encoder,
            resumed,
            "--max_train_steps",
            4,
            "--resume_from_checkpoint",
            "latest",
            *RESUME_FLAGS,
        )
    assert "--mixed_precision: checkpoint 'bf16', now 'no'" in str(info.value)
    trained = counting_trained_steps(monkeypatch)
    _train(
        script,
        kg_dir,
        no_dropout_encoder,
        resumed,
        "--max_train_steps",
        4,
        "--resume_from_checkpoint",
        "latest",
        "--mixed_precision",
        "bf16",
        *RESUME_FLAGS,
    )
    assert trained == [2, 3]  # the refused resume trained nothing; this one steps 3 and 4
    _assert_same_weights(
        whole / "checkpoints" / "step_4" / "model.safetensors",
        resumed / "checkpoints" / "step_4" / "model.safetensors",
        atol=0,
    )


def test_an_fp32_run_says_fp32_and_a_checkpoint_without_a_stored_precision_resumes(
    script, kg_dir, no_dropout_encoder, tmp_path
):
    out = tmp_path / "run"
    _train(script, kg_dir, no_dropout_encoder, out, "--max_train_steps", 2, *RESUME_FLAGS)
    assert json.loads((out / "all_results.json").read_text())["mixed_precision"] == "no"
    assert "- Precision: fp32" in (out / "README.md").read_text()
    state_file = out / "checkpoints" / "step_2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    del state["settings"]["mixed_precision"]  # as written before the precision was stored
    state_file.write_text(json.dumps(state))
    results = _train(
        script,
        kg_dir,
        no_dropout_encoder,
        out,
        "--max_train_steps",
        4,
        "--resume_from_checkpoint",
        "latest",
        *RESUME_FLAGS,
    )
    assert results["completed_steps"] == 4


@pytest.mark.parametrize("loss", ["adversarial_bce", "infonce", "lmke"])
def test_the_loss_is_fp32_under_bf16_autocast(tiny_bert_dir, tok, loss):
    from lmke_hf import ClmkeForLinkPrediction, LmkeForTripleClassification

    from helpers import clmke_batch, gold_answer_ids, lmke_batch

    if loss == "lmke":
        model = LmkeForTripleClassification.from_encoder_pretrained(str(tiny_bert_dir), tok)
        batch = lmke_batch(tok)
        batch["labels"] = torch.arange(batch["input_ids"].shape[0]) % 2
    else:
        model = ClmkeForLinkPrediction.from_encoder_pretrained(str(tiny_bert_dir), tok, loss=loss)
        batch = {**clmke_batch(tok), "answer_ids": gold_answer_ids()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(**batch)
    assert out.loss.dtype == torch.float32 and torch.isfinite(out.loss)


@pytest.mark.parametrize("units, warned", [(False, True), (True, False), (None, False)])
def test_bf16_on_a_cpu_without_bf16_units_warns_in_one_line(monkeypatch, caplog, units, warned):
    monkeypatch.setattr(run_module, "cpu_has_bf16_units", lambda: units)
    accelerator = SimpleNamespace(mixed_precision="bf16", device=torch.device("cpu"))
    with caplog.at_level(logging.WARNING):
        run_module.warn_if_slow_precision(accelerator)
    lines = [r.getMessage() for r in caplog.records]
    assert (len(lines) == 1 and "without bf16 units" in lines[0] and "\n" not in lines[0]) if warned else not lines


def _on(monkeypatch, device: str) -> None:
    import accelerate

    monkeypatch.setattr(accelerate, "PartialState", lambda: SimpleNamespace(device=torch.device(device)))


@pytest.mark.parametrize("units, chosen", [(True, "bf16"), (False, "no"), (None, "no")])
def test_auto_precision_takes_bf16_only_where_the_cpu_computes_it(monkeypatch, caplog, units, chosen):
    _on(monkeypatch, "cpu")
    monkeypatch.setattr(run_module, "cpu_has_bf16_units", lambda: units)
    with caplog.at_level(logging.INFO, logger=run_module.__name__):
        assert run_module.resolve_precision("auto") == chosen
    (line,) = [r.getMessage() for r in caplog.records if "--mixed_precision auto" in r.getMessage()]
    assert line.startswith("--mixed_precision auto: " + ("bf16" if chosen == "bf16" else "fp32 (no)") + " on this CPU")
    assert ("not in /proc/cpuinfo" in line, "unknown" in line) == (units is False, units is None)


@pytest.mark.parametrize("native, chosen", [(True, "bf16"), (False, "no")])
def test_auto_precision_on_a_gpu_takes_bf16_only_where_it_is_not_emulated(monkeypatch, native, chosen):
    """torch.cuda.is_bf16_supported() says True on pre-Ampere GPUs too (emulation) unless asked not to count it."""
    _on(monkeypatch, "cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation or native)
    assert run_module.auto_precision() == chosen


def test_an_auto_run_records_the_precision_it_chose_and_resumes_only_with_it(
    script, kg_dir, no_dropout_encoder, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    monkeypatch.setattr(run_module, "cpu_has_bf16_units", lambda: False)  # an AVX2-only CPU: fp32
    _train(script, kg_dir, no_dropout_encoder, out, "--max_train_steps", 2, "--mixed_precision", "auto", *RESUME_FLAGS)
    assert json.loads((out / "all_results.json").read_text())["mixed_precision"] == "no"
    assert "- Precision: fp32" in (out / "README.md").read_text()
    started = json.loads((out / "training_args.json").read_text())
    assert (started["mixed_precision"], started["args"]["mixed_precision"]) == ("no", "auto")

    monkeypatch.setattr(run_module, "cpu_has_bf16_units", lambda: True)  # the checkpoint moved to a bf16 CPU
    resume = ("--max_train_steps", 4, "--resume_from_checkpoint", "latest", "--mixed_precision", "auto", *RESUME_FLAGS)
    with pytest.raises(UsageError) as info:
        _train(script, kg_dir, no_dropout_encoder, out, *resume)
    assert "--mixed_precision: checkpoint 'no', now 'bf16'" in str(info.value)
    assert "pass --mixed_precision no" in str(info.value)
    monkeypatch.setattr(run_module, "cpu_has_bf16_units", lambda: False)
    assert _train(script, kg_dir, no_dropout_encoder, out, *resume)["completed_steps"] == 4
