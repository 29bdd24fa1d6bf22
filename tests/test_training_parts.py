"""The parts of `lmke_hf.training` one at a time: the command line a card records (`typed_command`), the
process-wide settings of a script's `main` (`configure_process`), the plan a run logs before its first step and the
summary a person reads at the end of it, and the model card's metadata (licence, base model, dataset id, degree ranges)."""

from __future__ import annotations

import logging
import sys
import types
from pathlib import Path

import pytest

from lmke_hf.errors import UsageError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lmke_hf.training.arguments as arguments  # noqa: E402
import lmke_hf.training.run as run  # noqa: E402
from lmke_hf.modelcard import ModelCard  # noqa: E402
from lmke_hf.run_io import MINILM_HUB_ID  # noqa: E402
from lmke_hf.training import configure_process, summary_text, typed_command  # noqa: E402
from lmke_hf.training.loop import Schedule  # noqa: E402

from helpers import _clmke_argv, _load_script, write_tiny_kg  # noqa: E402

# ------------------------------------------------------------------------------------------------ typed_command


def _clear_accelerate_env(monkeypatch):
    import os

    for key in [k for k in os.environ if k.startswith("ACCELERATE_")]:
        monkeypatch.delenv(key)


def test_typed_command_of_a_python_script_redacts_tokens(monkeypatch):
    _clear_accelerate_env(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["examples/train_clmke.py", "--hub_token", "hf_x", "--seed", "1"])
    assert typed_command() == "python examples/train_clmke.py --hub_token *** --seed 1"


def test_typed_command_of_the_console_script(monkeypatch):
    _clear_accelerate_env(monkeypatch)
    monkeypatch.setattr(sys, "argv", ["lmke-hf train-lmke", "--dataset", "umls"])
    assert typed_command() == "lmke-hf train-lmke --dataset umls"


def test_typed_command_under_accelerate_launch_keeps_the_launchers_flags(monkeypatch, tmp_path):
    """The parent's command line (`/proc/<ppid>/cmdline`) holds what was typed, `--num_processes 1` included."""
    proc = tmp_path / "proc" / "4242"
    proc.mkdir(parents=True)
    words = [
        "/usr/bin/python3",
        "/usr/local/bin/accelerate",
        "launch",
        "--num_processes",
        "1",
        "examples/train_clmke.py",
        "--seed",
        "3",
    ]
    (proc / "cmdline").write_bytes("\0".join(words).encode() + b"\0")
    monkeypatch.setattr(arguments, "_PROC", str(tmp_path / "proc"))
    monkeypatch.setattr(arguments.os, "getppid", lambda: 4242)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setattr(sys, "argv", ["examples/train_clmke.py", "--seed", "3"])
    assert typed_command() == "accelerate launch --num_processes 1 examples/train_clmke.py --seed 3"
    (proc / "cmdline").write_bytes(b"/bin/bash\0-c\0something\0")  # a parent that is no launcher: the script's own line
    assert typed_command() == "python examples/train_clmke.py --seed 3"


# ------------------------------------------------------------------------------------------------ configure_process


def test_silence_progress_bars_turns_off_every_librarys_bars():
    """In a fresh process without the test suite's HF_*_DISABLE_PROGRESS_BARS (which would make this trivially
    true): transformers', datasets' and huggingface_hub's bars are on before and off after."""
    import os
    import subprocess

    code = (
        "import datasets, huggingface_hub.utils, transformers\n"
        "from lmke_hf.training import silence_progress_bars\n"
        "state = lambda: (transformers.utils.logging.is_progress_bar_enabled(), not datasets.are_progress_bars_disabled(),"
        " not huggingface_hub.utils.are_progress_bars_disabled())\n"
        "before = state(); silence_progress_bars(); print(before, state())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.endswith("DISABLE_PROGRESS_BARS") and k != "TQDM_DISABLE"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(True, True, True) (False, False, False)"


def test_no_progress_flag_silences_the_bars(monkeypatch):
    calls = []
    monkeypatch.setattr(run, "silence_progress_bars", lambda: calls.append("silenced"))
    monkeypatch.setattr(run, "keep_freed_memory", lambda: True)
    for flag in (False, True):
        configure_process(types.SimpleNamespace(no_progress=flag, cpu_threads=None, no_malloc_tuning=True))
    assert calls == ["silenced"]


def test_checkpoint_saves_log_one_line_not_accelerates_six(monkeypatch):
    import logging

    monkeypatch.setattr(run, "keep_freed_memory", lambda: True)
    configure_process(types.SimpleNamespace(no_progress=False, cpu_threads=None, no_malloc_tuning=True))
    assert all(
        logging.getLogger(n).getEffectiveLevel() == logging.WARNING
        for n in ("accelerate.checkpointing", "accelerate.accelerator")
    )


@pytest.mark.parametrize("flag, tuned", [(False, True), (True, False)])
def test_malloc_tuning_is_on_by_default_on_cpu_and_a_flag_turns_it_off(flag, tuned, monkeypatch):
    calls = []
    monkeypatch.setattr(run, "keep_freed_memory", lambda: calls.append(1) or True)
    monkeypatch.setattr(run, "set_cpu_threads", lambda state, threads: 1)
    configure_process(types.SimpleNamespace(no_progress=False, cpu_threads=None, no_malloc_tuning=flag))
    assert bool(calls) is tuned


# ------------------------------------------------------------------------------------------------ end of a run


def test_summary_names_protocol_metrics_and_where_the_model_is():
    summary = {
        "completed_steps": 1500,
        "train_runtime_s": 4002.0,
        "best_eval_mrr": 0.39712,
        "best_epoch": 1,
        "history": [],
    }
    results = {"test_mrr": 0.41734, "test_hits@1": 0.3019, "test_num_queries": 6268, "train_runtime_s": 4002.0}
    text = summary_text("C-LMKE", "wn18rr", results, summary, "mrr", "outputs/run", "filtered, realistic ranks")
    assert (
        text.splitlines()[0]
        == "C-LMKE on wn18rr: 1500 steps in 66.7 min of training (best validation mrr 0.3971 at epoch 1)."
    )
    assert "Test (filtered, realistic ranks): mrr 0.4173 | hits@1 0.3019 | num_queries 6268" in text
    assert "train_runtime_s" not in text and 'AutoModel.from_pretrained("outputs/run")' in text


def test_a_run_prints_its_summary_once_and_keeps_no_best_copy(tiny_bert_dir, tmp_path, capsys, caplog):
    script = _load_script("train_clmke")
    kg = write_tiny_kg(tmp_path / "kg")
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        argv = _clmke_argv(kg, tiny_bert_dir, out, "--max_train_steps", 2, "--eval_steps", 1)
        script.main(script.parse_args([*argv, "--checkpointing_steps", "epoch"]))
    printed = capsys.readouterr().out
    assert printed.count("C-LMKE on tinykg: 2 steps") == 1 and printed.count("Test (filtered ranks") == 1
    assert "realistic rank" in printed and str(out) in printed
    assert not (out / "best").exists() and (out / "model.safetensors").is_file()
    # the plan before the first step; step 1's validation nearly repeats the last step's, which happens anyway
    assert "Training plan: 2 optimizer steps of 4 examples (0.1 epochs of 20 steps)" in caplog.text
    assert "and every 1 steps; a checkpoint at each epoch end." in caplog.text
    assert "--eval_steps 1 validates at step 1, 1 step(s) from the validation at step 2" in caplog.text


def test_the_plan_finds_step_validations_that_repeat_epoch_ends():
    # WN18RR at batch 128: 1,356 steps per epoch (the last partial batch dropped); --eval_steps 1357 lands 1 to 5
    # steps after each epoch end, 5 times in 8,141 steps
    schedule = Schedule(steps_per_epoch=1356, max_train_steps=8141, num_train_epochs=7, num_warmup_steps=245)
    assert schedule.validation_ends() == [1356, 2712, 4068, 5424, 6780, 8136, 8141]
    assert schedule.near_duplicate_validations(1357) == [
        (1357, 1356),
        (2714, 2712),
        (4071, 4068),
        (5428, 5424),
        (6785, 6780),
    ]
    assert schedule.nearest_step_divisor(1357) == 678
    assert schedule.near_duplicate_validations(678) == [] and schedule.near_duplicate_validations(None) == []
    assert schedule.near_duplicate_validations(1000) == []  # 1000, 2000, ...: none within 13 steps of an epoch end
    # a prime number of steps per epoch has no divisor to offer
    assert Schedule(101, 300, 3, 0).nearest_step_divisor(50) is None
    assert (
        "validation at each epoch end and the last step, and every 1357 steps; a checkpoint every 200 steps."
        in schedule.describe(128, 1357, 200)
    )
    assert schedule.describe(128, None, "epoch").endswith(
        "validation at each epoch end and the last step; a checkpoint at each epoch end."
    )


# ------------------------------------------------------------------------------------------------ model card


def _card(**kwargs) -> ModelCard:
    fields = dict(
        task="link-prediction",
        dataset="wn18rr",
        results={"test_mrr": 0.4},
        args={"encoder": MINILM_HUB_ID},
        command="x",
    )
    return ModelCard(**{**fields, **kwargs})


def test_card_metadata_names_licence_base_model_and_dataset_id():
    meta = _card(dataset_id="org/wn18rr-kg").metadata()
    assert meta["license"] == "apache-2.0" and meta["base_model"] == MINILM_HUB_ID
    assert meta["datasets"] == ["org/wn18rr-kg"]
    assert meta["model-index"][0]["results"][0]["dataset"]["type"] == "org/wn18rr-kg"


def test_card_of_a_local_encoder_has_no_base_model_and_an_unknown_licence(tmp_path):
    card = _card(args={"encoder": str(tmp_path)})
    assert "base_model" not in card.render().split("---")[1] and card.metadata()["license"] == "unknown"
    assert card.metadata()["datasets"] == ["wn18rr"]


def test_card_labels_degree_buckets_as_ranges():
    text = _card(degree_buckets={"0": {"count": 3, "mrr": 0.1}, "3": {"count": 5, "mrr": 0.2}}).render()
    assert "| 4-7 | 5 | 0.200 |" in text and "| 0 | 3 | 0.100 |" in text


# ------------------------------------------------------------------------------------------------ seeded negatives


def test_negative_subsampling_gets_a_seeded_generator(tiny_bert_dir, tmp_path, monkeypatch):
    """--max_negatives_per_query draws which negatives each query keeps from a generator seeded by --seed (not
    from the global RNG), handed to every training forward."""
    import torch

    script = _load_script("train_clmke")
    seen = {}

    def fake_train(*args, forward_kwargs=None, **kwargs):
        seen.update(forward_kwargs or {})
        raise SystemExit("stopped before training")

    monkeypatch.setattr(script, "train", fake_train)
    kg = write_tiny_kg(tmp_path / "kg")
    for extra, expected in ((("--max_negatives_per_query", "2"), True), ((), False)):
        seen.clear()
        with pytest.raises(SystemExit, match="stopped before training"):
            script.main(script.parse_args(_clmke_argv(kg, tiny_bert_dir, tmp_path / f"run{len(extra)}", *extra)))
        assert ("generator" in seen) is expected
    # a fresh parse: the generator of the first run
    seen.clear()
    with pytest.raises(SystemExit):
        script.main(
            script.parse_args(_clmke_argv(kg, tiny_bert_dir, tmp_path / "run9", "--max_negatives_per_query", "2"))
        )
    assert isinstance(seen["generator"], torch.Generator) and seen["generator"].initial_seed() == 7  # --seed 7


def test_generator_state_round_trips():
    import torch

    from lmke_hf.training import GeneratorState

    g = torch.Generator().manual_seed(3)
    saved = GeneratorState(g).state_dict()
    first = torch.rand(4, generator=g)
    GeneratorState(g).load_state_dict(saved)
    assert torch.equal(torch.rand(4, generator=g), first)


def test_resuming_a_finished_run_starts_from_its_best_model(tiny_bert_dir, tmp_path):
    """A finished run keeps no best/; resumed to train longer, its final model (the best so far) is the best to beat
    and is what the folder holds if no later validation beats it."""
    import json

    from safetensors.torch import load_file

    script = _load_script("train_clmke")
    kg = write_tiny_kg(tmp_path / "kg")
    out = tmp_path / "run"
    flags = ("--lr_scheduler_type", "constant", "--checkpointing_steps", "2")
    first = script.main(script.parse_args(_clmke_argv(kg, tiny_bert_dir, out, "--max_train_steps", 2, *flags)))
    assert not (out / "best").exists()
    weights = load_file(str(out / "model.safetensors"))
    (out / "all_results.json").write_text(json.dumps({**first, "best_eval_mrr": 2.0}))  # unbeatable: it must stay
    again = script.main(
        script.parse_args(
            _clmke_argv(kg, tiny_bert_dir, out, "--max_train_steps", 4, "--resume_from_checkpoint", "latest", *flags)
        )
    )
    assert again["best_eval_mrr"] == 2.0 and again["completed_steps"] == 4
    resumed = load_file(str(out / "model.safetensors"))
    assert all((weights[k] == resumed[k]).all() for k in weights)
    assert not (out / "best").exists()


# ------------------------------------------------------------------------------------------------ typed negatives


def test_relation_corruption_draws_from_the_relations_training_pool(tmp_path):
    """With corruption="relation" a corrupted tail of relation r is a tail r has in training (and a head, a head),
    never a known triple; uniform draws leave the pool often on this graph."""
    import numpy as np

    from lmke_hf.kg import generate_negatives, load_kg

    kg = load_kg(str(write_tiny_kg(tmp_path / "kg")))
    train = kg.triples("train")
    pools = {(r, p): set(train[train[:, 1] == r][:, 2 * p]) for r in range(kg.num_relations) for p in (0, 1)}

    def out_of_pool(corruption, seed):
        rows = (
            generate_negatives(kg, "train", seed=seed, corruption=corruption)
            .to_pandas()[["head", "relation", "tail"]]
            .to_numpy()
        )
        positives, negatives = rows[0::2], rows[1::2]
        known = {tuple(t) for t in train}
        assert not any(tuple(t) in known for t in negatives)
        changed_tail = negatives[:, 2] != positives[:, 2]
        return np.mean([(n[2] if c else n[0]) not in pools[(n[1], int(c))] for n, c in zip(negatives, changed_tail)])

    assert out_of_pool("relation", 0) == 0.0 and out_of_pool("relation", 1) == 0.0
    assert out_of_pool("uniform", 0) > 0.2
    with pytest.raises(ValueError, match="corruption"):
        generate_negatives(kg, "train", seed=0, corruption="typed")


# the run settings a C-LMKE checkpoint stored in 2026-12 (the fp32 WN18RR run's step_5600, before --symmetric_loss)
_STORED_2026_12 = set(
    """adversarial_temperature dataset description encoder_layers fixed_temperature freeze_layers
    gradient_accumulation_steps group_by_length head_learning_rate infonce_margin infonce_temperature init_from
    key_queue_size learning_rate loss lr_scheduler_type matcher_hidden_size max_entity_description_length
    max_grad_norm max_key_description_length max_negatives_per_query max_relation_description_length
    no_degree_features num_warmup_steps own_entity_bias per_device_train_batch_size pooling scorer seed
    self_negatives warmup_ratio weight_decay""".split()
)


def test_every_run_defining_flag_added_since_has_the_default_older_checkpoints_ran_with(
    kg_dir, tiny_bert_dir, tmp_path
):
    """A flag that defines a run and is missing from older checkpoints' settings needs its old value in
    `ADDED_FLAG_DEFAULTS`, or resuming those checkpoints is refused ("checkpoint None, now False")."""
    from lmke_hf.training.checkpoints import ADDED_FLAG_DEFAULTS, run_settings

    script = _load_script("train_clmke")
    current = run_settings(script.parse_args(_clmke_argv(kg_dir, tiny_bert_dir, tmp_path / "run")))
    assert not set(current) - set(_STORED_2026_12) - set(ADDED_FLAG_DEFAULTS)
    assert ADDED_FLAG_DEFAULTS["symmetric_loss"] is False


def test_a_checkpoint_from_before_negative_sampling_resumes_with_the_default():
    from lmke_hf.training import check_resume_settings

    check_resume_settings({"seed": 1}, {"seed": 1, "negative_sampling": "uniform"}, "ckpt")
    with pytest.raises(UsageError, match="negative_sampling"):
        check_resume_settings({"seed": 1}, {"seed": 1, "negative_sampling": "relation"}, "ckpt")
