"""Build (or export) the entity index of a trained C-LMKE model: every entity's key, streamed in shards.

    lmke-hf index --model outputs/clmke-wn18rr --dtype float16 --faiss hnsw
    accelerate launch --num_processes 2 -m lmke_hf.cli index --model outputs/clmke-wn18rr     # one share per process
    lmke-hf index --model org/clmke-wn18rr --output_dir wn18rr-index --export_numpy keys.npy  # a Hub model

By default the index is written into the model's own folder (`entity_index.safetensors`, or shards and
`entity_index.json` above `--shard_size` entities), where `from_pretrained` finds it; a build that is stopped resumes
from its finished shards when run again. An index already made by these weights is kept (`--rebuild` encodes
again). `--faiss` also writes `entity_index.faiss` for approximate search (cosine-scorer models; matcher models use it
as a shortlist that is re-scored exactly); `--export_numpy` writes the keys as one float32 `.npy` file.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from lmke_hf import ClmkeForLinkPrediction, load_model
from lmke_hf.entity_index import DEFAULT_SHARD_SIZE, FAISS_FILE, MANIFEST_FILE, STORAGE_DTYPES, EntityIndex
from lmke_hf.errors import UsageError
from lmke_hf.loading import checkpoint_source, flag_errors
from lmke_hf.training import POSITIVE_INT, set_cpu_threads

logger = logging.getLogger("build_index")
INDEX_FILES = ("entity_index",)  # what an index folder may already hold


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 1)[1],
    )
    a = parser.add_argument
    a("--model", required=True, help="Saved output folder or Hub repo id of a trained C-LMKE model.")
    a("--revision", default=None, help="Hub revision of --model.")
    a("--token", default=None, help="Hub token for private repos.")
    a(
        "--output_dir",
        default=None,
        help="Where the index goes (default: the model's own folder; required for a Hub model).",
    )
    a(
        "--dtype",
        default="float32",
        choices=sorted(STORAGE_DTYPES),
        help="Storage dtype of the keys (scores are computed in fp32).",
    )
    a("--shard_size", type=POSITIVE_INT, default=DEFAULT_SHARD_SIZE, help="Entities per shard file.")
    a("--batch_size", type=POSITIVE_INT, default=256, help="Keys per forward pass.")
    a(
        "--faiss",
        default=None,
        choices=["flat", "ivf", "hnsw"],
        help='Also build and save a FAISS index (pip install "lmke_hf[faiss]").',
    )
    a("--export_numpy", default=None, help="Also write the keys as a (num_entities, hidden) float32 .npy file.")
    a("--rebuild", action="store_true", help="Encode again even where an index made by these weights exists.")
    a("--no_progress", action="store_true", help="No progress bar.")
    a("--cpu_threads", type=POSITIVE_INT, default=None, help="Torch threads on CPU.")
    return parser.parse_args(argv)


def _check_folder(out: Path, model_folder: Path | None) -> None:
    """The model's own folder, a new or empty one, or one that holds only an entity index; nothing else is written to."""
    if model_folder is not None and out.resolve() == model_folder.resolve():
        return
    if out.exists() and not out.is_dir():
        raise UsageError(f"--output_dir {out} is a file; give a folder.")
    others = [p.name for p in out.iterdir() if not p.name.startswith(INDEX_FILES)] if out.is_dir() else []
    if others:
        raise UsageError(
            f"--output_dir {out} holds other files ({', '.join(sorted(others)[:3])}{', ...' if len(others) > 3 else ''}): "
            "give a new or empty folder, one holding only an entity index, or leave it out to write into the model's folder."
        )


def main(args: argparse.Namespace) -> dict:
    from accelerate import Accelerator

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    accelerator = Accelerator()
    set_cpu_threads(accelerator, args.cpu_threads)
    with flag_errors("--model"):
        source = checkpoint_source(args.model)
    model_folder = Path(source) if Path(source).is_dir() else None
    if args.output_dir is None and model_folder is None:
        raise UsageError(f"--model {args.model} is a Hub model: give --output_dir for its index.")
    out = Path(args.output_dir) if args.output_dir is not None else model_folder
    _check_folder(out, model_folder)
    with flag_errors("--model"):
        model, tokenizer = load_model(args.model, args.revision, args.token, task="link-prediction")
    assert isinstance(model, ClmkeForLinkPrediction)
    model.to(accelerator.device).eval()
    model.attach_tokenizer(tokenizer)
    start = time.perf_counter()
    existing = None if args.rebuild else _index_by_these_weights(out, model)
    if existing is not None:
        index, built = existing, False
        logger.info(
            "%s already holds the index of these weights (%d entities): kept (--rebuild encodes again)",
            out,
            index.num_entities,
        )
    else:
        index = EntityIndex.build(
            model,
            tokenizer,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            dtype=args.dtype,
            save_directory=out,
            accelerator=accelerator,
            progress=not args.no_progress and accelerator.is_main_process,
        )
        built = True
    summary = {
        "model": args.model,
        "output_dir": str(out),
        "num_entities": index.num_entities,
        "hidden_size": index.hidden_size,
        "dtype": str(index.dtype).replace("torch.", ""),
        "built": built,
        "encode_s": time.perf_counter() - start,
        "files": sorted(p.name for p in out.iterdir() if p.name.startswith(INDEX_FILES) and p.suffix != ".py"),
    }
    if accelerator.is_main_process:
        if args.faiss:
            t0 = time.perf_counter()
            searcher = index.build_faiss(args.faiss)
            searcher.save(out / FAISS_FILE)
            summary.update(faiss=args.faiss, faiss_build_s=time.perf_counter() - t0, faiss_file=str(out / FAISS_FILE))
        if args.export_numpy:
            array = np.lib.format.open_memmap(
                args.export_numpy, mode="w+", dtype=np.float32, shape=(index.num_entities, index.hidden_size)
            )
            for first, tile in index.tiles(65_536):
                array[first : first + tile.shape[0]] = tile.float().cpu().numpy()
            array.flush()
            summary["export_numpy"] = args.export_numpy
        print(json.dumps(summary, indent=2))
    accelerator.wait_for_everyone()
    return summary


def _index_by_these_weights(folder: Path, model) -> EntityIndex | None:
    if not (folder / MANIFEST_FILE).is_file() and not (folder / "entity_index.safetensors").is_file():
        return None
    try:
        index = EntityIndex.load(folder)
    except (OSError, ValueError):
        return None
    same = index.num_entities == model.config.num_entities and index.weights_sha256 == model.weights_fingerprint()
    return index if same else None


if __name__ == "__main__":
    import sys

    from lmke_hf.cli import run_program

    sys.exit(run_program(sys.modules[__name__]))
