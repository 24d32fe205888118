"""Benchmark: `distill fit` at three latency budgets, against a student sized by hand.

    python benchmarks/fit.py [--datasets fashion_mnist cifar10] [--budgets-ms 0.03 0.05 0.08]
                             [--epochs 6] [--teacher-epochs 4] [--threads 1]

Per data set: a teacher is trained once (Fashion-MNIST: the CNN of recipes/fashion_mnist_teacher.yaml;
CIFAR-10: a 16-32-64 CNN with crop/flip augmentation) and its outputs precomputed; then, for each
latency budget (ms per sample at batch 1 on the CPU target = ONNX Runtime, 1 thread):

- ``distill fit`` over the student family (MLP widths x depths for Fashion-MNIST, CNN channels x
  depths for CIFAR-10; fp32 and int8-dynamic), successive halving on a validation split, the
  winner distilled with the full budget, exported and verified;
- **hand-sized**: the obvious manual choice, the recipe's one-hidden-layer student (MLP) or two-stage
  CNN with its width halved until its measured latency meets the budget, distilled with the same
  full budget (kl T=4 + CE) and exported fp32.

Each chosen and hand-sized ONNX file is timed again **in a fresh process** (median of 200 runs) to
check the budget holds outside the process that chose it. Reported: test accuracy, latency, size,
and the wall time of each `distill fit`.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, require_data, write_result  # noqa: E402

from distill.fitting import fit, measure  # noqa: E402
from distill.models import build_model  # noqa: E402
from distill.recipe import load_recipe  # noqa: E402
from distill.runner import run_recipe  # noqa: E402

SETUPS = {
    "fashion_mnist": {
        "folder": "fashion-mnist", "shape": (1, 28, 28),
        "teacher": {"model": "cnn", "params": {"channels": [32, 64, 128], "hidden": 256, "dropout": 0.2}},
        "teacher_augment": None, "teacher_lr": 0.002,
        "student": {"model": "mlp", "params": {"hidden": [256]}},
        "hand": lambda width: {"model": "mlp", "params": {"hidden": [width]}}, "hand_width": 256,
    },
    "cifar10": {
        "folder": "cifar10", "shape": (3, 32, 32),
        "teacher": {"model": "cnn", "params": {"channels": [32, 64, 128], "hidden": 256, "dropout": 0.2}},
        "teacher_augment": {"name": "crop_flip", "padding": 4, "flip": True}, "teacher_lr": 0.002,
        "student": {"model": "cnn", "params": {"channels": [16, 32]}},
        "hand": lambda width: {"model": "cnn", "params": {"channels": [width, 2 * width]}}, "hand_width": 64,
    },
}

TIME_AGAIN = """
import json, sys
import numpy as np
from distill.export.runtime import OrtRunner, latency
path, shape = sys.argv[1], json.loads(sys.argv[2])
runner = OrtRunner(path, 1)
sample = np.random.default_rng(0).standard_normal((1, *shape)).astype(np.float32)
print(json.dumps(latency(runner, sample, batch_sizes=(1,), repeats=200, warmup=20, min_seconds=0.5)["b1_ms"]))
"""


def time_in_fresh_process(onnx_path: Path, shape) -> float:
    done = subprocess.run([sys.executable, "-c", TIME_AGAIN, str(onnx_path), json.dumps(list(shape))],
                          capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def base_recipe(name: str, setup: dict, data_root: Path, out: Path, epochs: int, teacher: Path | None) -> dict:
    tree = {
        "name": name, "seed": 0, "output_dir": str(out),
        "data": {"name": name.split("-")[0], "root": str(data_root), "batch_size": 128, "eval_batch_size": 1000},
        "student": setup["student"],
        "losses": [{"name": "kl", "weight": 0.9, "temperature": 4}, {"name": "cross_entropy", "weight": 0.1}],
        "optimizer": {"name": "adamw", "lr": 0.003, "weight_decay": 0.0001},
        "schedule": {"name": "cosine", "warmup_steps": 100},
        "train": {"epochs": epochs, "log_every": 100, "threads": 1},
    }
    if teacher is not None:
        tree["teacher"] = {"checkpoint": str(teacher), "precompute": True}
    return tree


def train_teacher(name: str, setup: dict, data_root: Path, out: Path, epochs: int) -> Path:
    model_path = out / "model.safetensors"
    if model_path.is_file():
        return model_path
    tree = {
        "name": f"{name}-teacher", "seed": 0, "output_dir": str(out),
        "data": {"name": name, "root": str(data_root), "batch_size": 128, "eval_batch_size": 1000,
                 **({"augment": setup["teacher_augment"]} if setup["teacher_augment"] else {})},
        "student": setup["teacher"], "losses": [{"name": "cross_entropy"}],
        "optimizer": {"name": "adamw", "lr": setup["teacher_lr"], "weight_decay": 0.0005},
        "schedule": {"name": "cosine", "warmup_steps": 100},
        "train": {"epochs": epochs, "log_every": 100, "threads": 2},
    }
    run_recipe(load_recipe(tree), overwrite=True, progress=False)
    return model_path


def hand_sized(setup: dict, budget_ms: float, margin: float) -> tuple[dict, float, int]:
    """The recipe's shape with its width halved until it meets the budget less the same timing margin
    ``distill fit`` keeps (measured, untrained)."""
    width = setup["hand_width"]
    while True:
        spec = setup["hand"](width)
        model = build_model(spec["model"], input_shape=setup["shape"], num_classes=10, **spec["params"])
        latency_ms, size = measure(model, setup["shape"], "cpu", "fp32", batch=1, threads=1)
        if latency_ms <= budget_ms * (1 - margin) or width <= 4:
            return spec, latency_ms, size
        width //= 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["fashion_mnist"], choices=list(SETUPS))
    parser.add_argument("--budgets-ms", type=float, nargs="+", default=[0.03, 0.05, 0.08])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--max-candidates", type=int, default=4)
    parser.add_argument("--latency-margin", type=float, default=0.1,
                        help="share of each budget held back for timing noise, by fit and by the hand-sizing alike")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "fit")
    args = parser.parse_args()
    for name in args.datasets:
        started = time.time()
        setup = SETUPS[name]
        data_root = require_data(setup["folder"])
        teacher = train_teacher(name, setup, data_root, args.out / name / "teacher", args.teacher_epochs)
        rows = []
        for budget in args.budgets_ms:
            tag = f"{budget:g}ms"
            tree = base_recipe(name, setup, data_root, args.out / name / f"run-{tag}", args.epochs, teacher)
            begin = time.time()
            found = fit(tree, target="cpu", max_latency_ms=budget, batch=1, threads=1, rungs=2, eta=2,
                        max_candidates=args.max_candidates, latency_margin=args.latency_margin, output_dir=args.out / name / f"fit-{tag}",
                        overwrite=True, progress=False, say=lambda m: print(f"[{name} {tag}] {m}", file=sys.stderr))
            fit_seconds = time.time() - begin
            chosen_onnx = Path(found.export_dir) / f"cpu-{found.winner.precision}" / "model.onnx"
            if not chosen_onnx.is_file():
                chosen_onnx = next((Path(found.export_dir) / f"cpu-{found.winner.precision}").glob("*.onnx"))
            hand_spec, hand_latency, hand_bytes = hand_sized(setup, budget, args.latency_margin)
            hand_tree = {**tree, "student": hand_spec, "output_dir": str(args.out / name / f"hand-{tag}")}
            hand_run = run_recipe(load_recipe(hand_tree), overwrite=True, progress=False)
            from distill.export import ExportOptions, Exporter, load_student

            hand_card = Exporter(load_student(hand_run.run_dir), hand_run.run_dir / "export",
                                 ExportOptions(threads=1)).export("cpu", "fp32")
            hand_onnx = next((hand_run.run_dir / "export" / "cpu-fp32").glob("*.onnx"))
            row = {
                "budget_ms": budget, "fit_seconds": fit_seconds,
                "chosen": {"name": found.winner.name, "parameters": found.winner.parameters,
                           "accuracy": found.winner.accuracy, "latency_ms_fit": found.record["winner"]["latency_ms"],
                           "latency_ms_fresh": time_in_fresh_process(chosen_onnx, setup["shape"]),
                           "bytes": found.record["winner"]["bytes"]},
                "hand": {"name": json.dumps(hand_spec["params"]), "parameters": sum(p.numel() for p in hand_run.model.parameters()),
                         "accuracy": float(hand_run.metrics["accuracy"]), "latency_ms_fit": hand_latency,
                         "latency_ms_fresh": time_in_fresh_process(hand_onnx, setup["shape"]),
                         "bytes": int(hand_card["artifact"]["bytes"])},
                "teacher": found.record["teacher"],
            }
            rows.append(row)
            print(json.dumps(row), file=sys.stderr)
        teacher_row = rows[0]["teacher"] or {}
        lines = [f"### {name}", "",
                 f"Teacher: {SETUPS[name]['teacher']['params']} CNN, test accuracy "
                 f"{(teacher_row.get('accuracy') or 0):.2%}, {teacher_row.get('latency_ms') or 0:.4f} ms at batch 1 "
                 f"(ONNX Runtime, 1 thread), {teacher_row.get('bytes') or 0:,} bytes.", "",
                 "| budget (ms, b=1) | student | parameters | test accuracy | ms in fit | ms, fresh process | meets budget | bytes | fit wall time (s) |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for row in rows:
            for kind in ("chosen", "hand"):
                entry = row[kind]
                label = f"fit: {entry['name']}" if kind == "chosen" else f"hand-sized: {entry['name']}"
                meets = "yes" if entry["latency_ms_fresh"] <= row["budget_ms"] else "NO"
                wall = f"{row['fit_seconds']:.0f}" if kind == "chosen" else "-"
                lines.append(f"| {row['budget_ms']:g} | {label} | {entry['parameters']:,} | {entry['accuracy']:.2%} | "
                             f"{entry['latency_ms_fit']:.4f} | {entry['latency_ms_fresh']:.4f} | {meets} | "
                             f"{entry['bytes']:,} | {wall} |")
        met = sum(r["chosen"]["latency_ms_fresh"] <= r["budget_ms"] for r in rows)
        beat = sum(r["chosen"]["accuracy"] > r["hand"]["accuracy"] for r in rows)
        lines += ["", f"Goals: the chosen student meets its budget in a fresh process at {met} of {len(rows)} budgets; "
                  f"it beats the hand-sized student at {beat} of {len(rows)} (one seed each)."]
        markdown = (f"`distill fit` at {len(args.budgets_ms)} latency budgets (ms per sample at batch 1, CPU target = "
                    f"ONNX Runtime, 1 thread), {args.epochs} epochs for the winner and the hand-sized student (kl T=4 x "
                    f"0.9 + CE x 0.1, teacher outputs precomputed), 2 successive-halving rungs, at most "
                    f"{args.max_candidates} candidates trained. Both keep {args.latency_margin:g} of the budget back for "
                    "timing noise. Latencies on this shared machine are noisy: the fresh-process column is the check; "
                    f"total wall time of the fits {sum(r['fit_seconds'] for r in rows) / 60:.1f} min.\n\n"
                    + "\n".join(lines))
        write_result(f"fit_{name}", {name: rows}, markdown, started)


if __name__ == "__main__":
    main()
