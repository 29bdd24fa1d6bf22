"""Time and peak memory of lmke_hf.kg on the real benchmark graphs (default: wn18rr and fb13).

Each dataset runs in a fresh Python process so that its peak RSS (``resource.getrusage``) is its own. Prints one
line per step and a JSON summary; exits with status 1 if a dataset's peak RSS exceeds ``--max-rss-gib``.

Example::

    python benchmarks/bench_data.py --data-dir /work/shared/data --datasets wn18rr fb13
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import warnings
from pathlib import Path

DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=str(DEFAULT_DATA_DIR), help="Folder holding one sub-folder per graph.")
    parser.add_argument("--datasets", nargs="+", default=["wn18rr", "fb13"], help="Short names of the graphs to load.")
    parser.add_argument(
        "--max-rss-gib", type=float, default=4.0, help="Fail (exit 1) if a graph's peak RSS exceeds this many GiB."
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: run one graph in this process
    return parser.parse_args(argv)


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is KiB on Linux


def _run_one(name: str, data_dir: str) -> dict:
    timings = {}
    start = time.perf_counter()
    import lmke_hf.kg as data  # noqa: PLC0415  (the import is part of what is measured)

    timings["import_s"] = time.perf_counter() - start
    rss_after_import = _peak_rss_gib()

    def step(label, fn):
        begin = time.perf_counter()
        result = fn()
        timings[label] = round(time.perf_counter() - begin, 3)
        return result

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        kg = step("load_kg_s", lambda: data.load_kg(name, data_dir=data_dir))
    statistics = step("statistics_s", kg.statistics)
    step("degrees_train_s", lambda: kg.degrees(["train"]))
    step("answer_index_tail_all_s", lambda: kg.answer_index(["train", "validation", "test"], "tail"))
    step("answer_index_head_all_s", lambda: kg.answer_index(["train", "validation", "test"], "head"))
    step("negatives_train_s", lambda: data.generate_negatives(kg, "train", seed=0))
    step("classification_negatives_s", lambda: data.add_classification_negatives(kg, seed=0))
    timings["import_s"] = round(timings["import_s"], 3)
    return {
        "dataset": name,
        "entities": statistics["entities"],
        "train": statistics["train"],
        **timings,
        "peak_rss_after_import_gib": round(rss_after_import, 3),
        "peak_rss_gib": round(_peak_rss_gib(), 3),
    }


def main(args: argparse.Namespace) -> list[dict]:
    if args.child:
        result = _run_one(args.child, args.data_dir)
        print(json.dumps(result))
        return [result]
    results = []
    for name in args.datasets:
        completed = subprocess.run(
            [sys.executable, __file__, "--child", name, "--data-dir", args.data_dir],
            capture_output=True,
            text=True,
            check=False,
        )
        if completed.returncode != 0:
            raise RuntimeError(f"benchmark of {name} failed:\n{completed.stderr}")
        result = json.loads(completed.stdout.strip().splitlines()[-1])
        results.append(result)
        for key, value in result.items():
            print(f"{name:>10}  {key:<30} {value}")
    print(json.dumps(results, indent=2))
    over = [r["dataset"] for r in results if r["peak_rss_gib"] > args.max_rss_gib]
    if over:
        print(f"peak RSS above {args.max_rss_gib} GiB: {over}", file=sys.stderr)
        sys.exit(1)
    return results


if __name__ == "__main__":
    main(parse_args())
