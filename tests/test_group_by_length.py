"""--group_by_length (issue 22 item 3): batches of similar length, every example once per epoch, the same batches
after a resume. Tiny and offline."""

from __future__ import annotations

import numpy as np
import pytest

from lmke_hf.errors import UsageError
from lmke_hf.features import LengthGroupedSampler

from helpers import RESUME_FLAGS, _assert_same_weights, _clmke_argv, _common, _load_script


class _Lengths:
    def __init__(self, lengths):
        self._lengths = np.asarray(lengths)

    def __len__(self):
        return len(self._lengths)

    def lengths(self):
        return self._lengths


def _padding(batches, lengths) -> int:
    return int(sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches))


def test_every_example_once_per_epoch_in_batches_that_pad_less_than_random_ones():
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 60, size=1003)
    sampler = LengthGroupedSampler(_Lengths(lengths), batch_size=16, seed=3, mega_batch_mult=8)
    batches = sampler.batches()
    order = np.concatenate(batches)
    assert sorted(order.tolist()) == list(range(1003)) and list(sampler) == order.tolist()
    assert all(len(b) == 16 for b in batches[:-1]) and len(batches[-1]) == 1003 % 16  # the short batch last
    random_batches = [rng.permutation(1003)[i : i + 16] for i in range(0, 1003, 16)]
    assert _padding(batches, lengths) < 0.25 * _padding(random_batches, lengths)


def test_query_and_key_lengths_are_grouped_by_their_longer_part():
    rng = np.random.default_rng(2)
    lengths = np.stack([rng.integers(10, 45, size=2048), rng.integers(5, 36, size=2048)], axis=1)

    def cost(batches):
        return sum(len(b) * (lengths[b, 0].max() + lengths[b, 1].max()) for b in batches)

    by_parts = LengthGroupedSampler(_Lengths(lengths), 64, seed=1).batches()
    by_total = LengthGroupedSampler(_Lengths(lengths.sum(1)), 64, seed=1).batches()
    shuffled = [rng.permutation(2048)[i : i + 64] for i in range(0, 2048, 64)]
    assert cost(by_parts) < cost(by_total) < cost(shuffled)


def test_the_batches_depend_on_seed_and_epoch_only():
    lengths = np.random.default_rng(1).integers(5, 60, size=200)
    a, b = LengthGroupedSampler(_Lengths(lengths), 8, seed=5), LengthGroupedSampler(_Lengths(lengths), 8, seed=5)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    b.set_epoch(1)
    assert list(a) == list(b)
    assert list(LengthGroupedSampler(_Lengths(lengths), 8, seed=6)) != list(
        LengthGroupedSampler(_Lengths(lengths), 8, seed=5)
    )
    with pytest.raises(ValueError, match="batch_size"):
        LengthGroupedSampler(_Lengths(lengths), 0)


@pytest.mark.parametrize("script_name", ["train_clmke", "train_lmke"])
def test_a_length_grouped_run_resumes_exactly(script_name, kg_dir, no_dropout_encoder, tmp_path, monkeypatch):
    from helpers import counting_trained_steps

    script = _load_script(script_name)
    argv = _clmke_argv if script_name == "train_clmke" else _common

    def train(out, *extra):
        return script.main(
            script.parse_args(argv(kg_dir, no_dropout_encoder, out, "--group_by_length", *RESUME_FLAGS, *extra))
        )

    train(tmp_path / "whole", "--max_train_steps", 6)
    train(tmp_path / "resumed", "--max_train_steps", 4)
    with pytest.raises(UsageError, match="--group_by_length: checkpoint True, now False"):
        script.main(
            script.parse_args(
                argv(
                    kg_dir,
                    no_dropout_encoder,
                    tmp_path / "resumed",
                    *RESUME_FLAGS,
                    "--max_train_steps",
                    6,
                    "--resume_from_checkpoint",
                    "latest",
                )
            )
        )
    trained = counting_trained_steps(monkeypatch)
    train(tmp_path / "resumed", "--max_train_steps", 6, "--resume_from_checkpoint", "latest")
    assert trained == [4, 5]
    _assert_same_weights(
        tmp_path / "whole" / "checkpoints" / "step_6" / "model.safetensors",
        tmp_path / "resumed" / "checkpoints" / "step_6" / "model.safetensors",
    )


def test_tokenised_link_prediction_examples_report_query_and_key_lengths(kg_dir, tiny_bert_dir):
    from lmke_hf import LmkeTokenizer
    from lmke_hf.features import example_lengths, link_prediction_examples, tokenize_link_prediction
    from lmke_hf.kg import load_kg

    kg = load_kg(kg_dir)
    tokenizer = LmkeTokenizer.from_kg(
        str(tiny_bert_dir), kg, max_entity_description_length=8, max_key_description_length=8
    )
    data = tokenize_link_prediction(link_prediction_examples(kg.triples("train")), tokenizer)
    expected = [[len(q), len(k)] for q, k in zip(data["query_input_ids"], data["key_input_ids"])]
    assert example_lengths(data).tolist() == expected
