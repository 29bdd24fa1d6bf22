#!/usr/bin/env python
"""Learning efficiency of C-LMKE recipes on WN18RR: validation MRR against training examples and CPU minutes.

Each named recipe (a set of `examples/train_clmke.py` flags) trains for the same budget of training examples
(`--budget_examples`); validation MRR (filtered, both directions, realistic ranks, against all 40,943 entities)
is measured on the same first `--eval_triples` validation triples at `--eval_points` evenly spaced points of
the budget. Training minutes exclude the validations. The paper-faithful recipe (the script's defaults) is
the reference row and runs in the same invocation unless `--no_reference`.

Results of separate invocations merge into one JSON file (a recipe run again replaces its entry), so recipes
can run in different sessions; the table and the PNG (MRR against training minutes and against examples
seen) are drawn from everything in that file. `--plot_only` redraws without training.

    python benchmarks/bench_quality.py --recipes simkgc-6l-freeze4 simkgc-2l --budget_examples 25600
    python benchmarks/bench_quality.py --list
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SHARED = (
    "--max_entity_description_length 32 --max_key_description_length 32 --max_relation_description_length 16 "
    "--per_device_train_batch_size 128 --learning_rate 5e-5 --head_learning_rate 1e-3"
)
SIMKGC = (
    "--loss infonce --scorer cosine --pooling mean --infonce_temperature 0.05 --infonce_margin 0.02 --self_negatives"
)
RECIPES = {
    # the reference: the paper's model and loss (the script's defaults) at this machine's sizes
    "paper-2l": f"{SHARED} --encoder_layers 2",
    "paper-2l-sn": f"{SHARED} --encoder_layers 2 --self_negatives",
    "infonce-matcher-2l": f"{SHARED} --encoder_layers 2 --loss infonce --infonce_temperature 1.0 --self_negatives",
    "simkgc-2l": f"{SHARED} --encoder_layers 2 {SIMKGC}",
    "simkgc-6l": f"{SHARED} {SIMKGC}",
    "simkgc-6l-freeze4": f"{SHARED} {SIMKGC} --freeze_layers 4",
    "simkgc-6l-freeze4-queue": f"{SHARED} {SIMKGC} --freeze_layers 4 --key_queue_size 1024",
    "simkgc-6l-freeze4-lr1e-4": f"{SHARED} {SIMKGC} --freeze_layers 4".replace(
        "--learning_rate 5e-5", "--learning_rate 1e-4"
    ),
    "simkgc-6l-freeze4-lr2e-4": f"{SHARED} {SIMKGC} --freeze_layers 4".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ),
    "simkgc-2l-lr2e-4": f"{SHARED} --encoder_layers 2 {SIMKGC}".replace("--learning_rate 5e-5", "--learning_rate 2e-4"),
    "simkgc-2l-entity-lr2e-4": f"{SHARED} --encoder_layers 2 {SIMKGC}".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ).replace("--pooling mean", "--pooling entity"),
    "simkgc-6l-freeze4-ownbias": f"{SHARED} {SIMKGC} --freeze_layers 4 --own_entity_bias",
    "simkgc-6l-freeze4-ownbias-lr2e-4": f"{SHARED} {SIMKGC} --freeze_layers 4 --own_entity_bias".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ),
    "simkgc-2l-ownbias-lr2e-4": f"{SHARED} --encoder_layers 2 {SIMKGC} --own_entity_bias".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ),
    "simkgc-6l-freeze4-b256": f"{SHARED} {SIMKGC} --freeze_layers 4".replace(
        "--per_device_train_batch_size 128", "--per_device_train_batch_size 256"
    ),
    # full depth in bf16 (issue 22): all 6 layers trained, the own-entity offset and the 4x encoder rate; then one lever each
    "full-6l-bf16": f"{SHARED} {SIMKGC} --own_entity_bias --mixed_precision bf16".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ),
    "full-6l-bf16-freeze2": f"{SHARED} {SIMKGC} --own_entity_bias --mixed_precision bf16 --freeze_layers 2".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ),
    "full-6l-bf16-queue": f"{SHARED} {SIMKGC} --own_entity_bias --mixed_precision bf16 --key_queue_size 1024".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ),
    "full-6l-bf16-b256": f"{SHARED} {SIMKGC} --own_entity_bias --mixed_precision bf16".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ).replace("--per_device_train_batch_size 128", "--per_device_train_batch_size 256"),
    "full-6l-bf16-grouped": f"{SHARED} {SIMKGC} --own_entity_bias --mixed_precision bf16 --group_by_length".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ),
    "full-6l-bf16-symmetric": f"{SHARED} {SIMKGC} --own_entity_bias --mixed_precision bf16 --symmetric_loss".replace(
        "--learning_rate 5e-5", "--learning_rate 2e-4"
    ),
}
REFERENCE = "paper-2l"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipes", nargs="*", default=[], help=f"Named recipes to train: {', '.join(RECIPES)}.")
    p.add_argument(
        "--recipe",
        action="append",
        default=[],
        metavar="NAME=FLAGS",
        help="An extra recipe: a name and its train_clmke.py flags.",
    )
    p.add_argument(
        "--no_reference",
        action="store_true",
        help=f"Do not also run the reference recipe {REFERENCE!r} (when the results file lacks it at this budget).",
    )
    p.add_argument("--budget_examples", type=int, default=25600, help="Training examples (queries) seen per recipe.")
    p.add_argument(
        "--eval_points", type=int, default=3, help="Validations, evenly spaced over the budget (the last at its end)."
    )
    p.add_argument(
        "--eval_triples",
        type=int,
        default=1000,
        help="First N validation triples (x 2 directions) of every validation.",
    )
    p.add_argument("--data_dir", default=str(REPO.parent / "shared" / "data"), help="Where wn18rr is found.")
    p.add_argument("--dataset", default="wn18rr")
    p.add_argument(
        "--output_root", default=str(REPO / "outputs" / "bench_quality"), help="Training folders (one per recipe)."
    )
    p.add_argument(
        "--results",
        default=str(REPO / "benchmarks" / "results" / "bench_quality_wn18rr.json"),
        help="JSON file the results merge into.",
    )
    p.add_argument(
        "--plot", default=str(REPO / "benchmarks" / "results" / "bench_quality_wn18rr.png"), help="PNG of the curves."
    )
    p.add_argument(
        "--plot_only", action="store_true", help="Print the table and draw the PNG from --results; train nothing."
    )
    p.add_argument("--list", action="store_true", help="Print the named recipes and their flags.")
    p.add_argument("--nice", type=int, default=10, help="Niceness of the training processes.")
    args = p.parse_args(argv)
    for name in ("budget_examples", "eval_points", "eval_triples"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}.")
    unknown = [r for r in args.recipes if r not in RECIPES]
    if unknown:
        import difflib

        hints = {r: difflib.get_close_matches(r, RECIPES, n=1) for r in unknown}
        p.error(
            "unknown recipe(s) "
            + ", ".join(f"{r!r}" + (f" (did you mean {h[0]!r}?)" if h else "") for r, h in hints.items())
            + f"; choose from {list(RECIPES)}."
        )
    for item in args.recipe:
        if "=" not in item:
            p.error(f"--recipe {item!r} must be NAME=FLAGS.")
    return args


def _flag(flags: list[str], name: str, default: str) -> str:
    return flags[flags.index(name) + 1] if name in flags else default


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {"recipes": {}}


def _save(path: Path, results: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(results, indent=2))
    os.replace(tmp, path)


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def run_recipe(name: str, flags: str, args) -> dict:
    """Trains one recipe in its own process and returns its entry for the results file."""
    flag_list = flags.split()
    batch = int(_flag(flag_list, "--per_device_train_batch_size", "16"))
    steps = max(1, math.ceil(args.budget_examples / batch))
    eval_steps = max(1, math.ceil(steps / args.eval_points))
    out = Path(args.output_root) / name
    if out.exists():
        import shutil

        shutil.rmtree(out)
    command = [
        sys.executable,
        str(REPO / "examples" / "train_clmke.py"),
        "--dataset",
        args.dataset,
        "--data_dir",
        args.data_dir,
        "--output_dir",
        str(out),
        *flag_list,
        "--max_train_steps",
        str(steps),
        "--eval_steps",
        str(eval_steps),
        "--eval_max_queries",
        str(args.eval_triples),
        "--per_device_eval_batch_size",
        "256",
        "--no_test_eval",
        "--no_progress",
    ]
    log = out.parent / f"{name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"[{time.strftime('%H:%M:%S')}] {name}: {steps} steps of {batch}, validation every {eval_steps} steps; log {log}",
        flush=True,
    )
    load_before, began = _load_average(), time.time()
    with open(log, "w") as handle:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        }  # this clone's lmke_hf
        done = subprocess.run(
            ["nice", "-n", str(args.nice), *command], stdout=handle, stderr=subprocess.STDOUT, cwd=REPO, env=env
        )
    if done.returncode:
        raise SystemExit(f"recipe {name} failed (exit {done.returncode}); see {log}")
    history = json.loads((out / "train_history.json").read_text())
    points = [
        {
            "step": h["step"],
            "examples_seen": h["examples_seen"],
            "train_minutes": h["train_minutes_excluding_eval"],
            "mrr": h["eval_mrr"],
            "mr": h["eval_mr"],
            "hits@1": h["eval_hits@1"],
            "hits@3": h["eval_hits@3"],
            "hits@10": h["eval_hits@10"],
        }
        for h in history
    ]
    return {
        "flags": flags,
        "budget_examples": args.budget_examples,
        "eval_triples": args.eval_triples,
        "points": points,
        "wall_minutes": (time.time() - began) / 60,
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO
        ).stdout.strip(),
        "command": " ".join(command[1:]),
    }


def table(results: dict) -> str:
    rows = []
    for name, entry in sorted(results["recipes"].items(), key=lambda kv: (kv[0] != REFERENCE, kv[0])):
        cells = " | ".join(
            f"{p['mrr']:.3f} @ {p['examples_seen'] // 1000}k ex / {p['train_minutes']:.1f} min" for p in entry["points"]
        )
        last = entry["points"][-1]
        ref = " (reference)" if name == REFERENCE else ""
        rows.append(
            f"| {name}{ref} | {cells} | {last['hits@1']:.3f} | {last['hits@10']:.3f} | {last['mr']:.0f} | `{entry['flags']}` |"
        )
    head = "| recipe | validation MRR at each point (examples seen / training minutes) | H@1 | H@10 | MR | flags |\n|---|---|---|---|---|---|"
    return "\n".join([head, *rows])


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, entry in sorted(results["recipes"].items()):
        pts = entry["points"]
        style = dict(
            marker="o", linewidth=2.5 if name == REFERENCE else 1.5, linestyle="--" if name == REFERENCE else "-"
        )
        axes[0].plot([0] + [p["train_minutes"] for p in pts], [None] + [p["mrr"] for p in pts], label=name, **style)
        axes[1].plot([p["examples_seen"] for p in pts], [p["mrr"] for p in pts], label=name, **style)
    axes[0].set_xlabel("training minutes (validation excluded), 2-core CPU")
    axes[1].set_xlabel("training examples seen")
    for ax in axes:
        ax.set_ylabel("validation MRR (1,000 triples x 2 directions)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle("C-LMKE on WN18RR: learning efficiency of recipes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(args) -> dict:
    if args.list:
        for name, flags in RECIPES.items():
            print(f"{name}{' (reference)' if name == REFERENCE else ''}: {flags}")
        return {}
    results_path = Path(args.results)
    results = _load(results_path)
    todo = {r: RECIPES[r] for r in args.recipes}
    todo.update(dict(item.split("=", 1) for item in args.recipe))
    reference = results["recipes"].get(REFERENCE)
    if (
        todo
        and not args.no_reference
        and REFERENCE not in todo
        and (reference is None or reference["budget_examples"] != args.budget_examples)
    ):
        todo = {REFERENCE: RECIPES[REFERENCE], **todo}
    if not args.plot_only:
        for name, flags in todo.items():
            results["recipes"][name] = run_recipe(name, flags, args)
            _save(results_path, results)  # after each recipe: a stopped invocation keeps what finished
            print(table(results), flush=True)
    if results["recipes"]:
        print(table(results))
        plot(results, Path(args.plot))
        print(f"results: {results_path}\nplot: {args.plot}")
    return results


if __name__ == "__main__":
    main(parse_args())
