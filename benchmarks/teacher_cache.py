"""Issue 4 benchmark: distilling from the teacher-output cache instead of the live teacher.

    python benchmarks/teacher_cache.py [--datasets mnist cifar10] [--ks 8 4 2]

For each data set: train a teacher (MNIST: Hinton's 784-1200-1200-10; CIFAR-10: ResNet-8),
then, in the same process and side by side, distil one student from (a) the live teacher,
(b) a dense float16 cache, (c) top-k caches (renormalised mode). Reports epoch time of each
student run, the cache's bytes per sample, build time, and final test accuracy. The same seed
for every variant, so the runs differ only in where the teacher's outputs come from.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, require_data, write_result  # noqa: E402

from distill.data import open_cache  # noqa: E402
from distill.recipe import load_recipe  # noqa: E402
from distill.runner import run_recipe  # noqa: E402

SETUPS = {
    "mnist": {
        "folder": "mnist",
        "teacher": {"model": "mlp", "params": {"hidden": [1200, 1200], "dropout": 0.5, "input_dropout": 0.2}},
        "teacher_label": "MLP 784-1200-1200-10",
        "student": {"model": "mlp", "params": {"hidden": [64]}},
        "student_label": "MLP 784-64-10",
        "teacher_optimizer": {"name": "adamw", "lr": 0.001},
        "teacher_augment": {"name": "shift", "max_shift": 2},
    },
    "cifar10": {
        "folder": "cifar10",
        "teacher": {"model": "resnet", "params": {"depth": 8}},
        "teacher_label": "ResNet-8",
        "student": {"model": "cnn", "params": {"channels": [16, 32]}},
        "student_label": "CNN 16-32",
        "teacher_optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0005},
        "teacher_augment": {"name": "crop_flip", "padding": 4, "flip": True},
    },
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"], choices=list(SETUPS))
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 4, 2])
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--student-epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "teacher_cache")
    args = parser.parse_args()
    started = time.time()
    results: dict[str, dict] = {}
    sections = []
    for name in args.datasets:
        setup = SETUPS[name]
        root = require_data(setup["folder"])
        out = args.out / name
        base = {"seed": args.seed, "data": {"name": name, "root": str(root), "batch_size": 128, "eval_batch_size": 1000},
                "schedule": {"name": "cosine", "warmup_steps": 100},
                "train": {"threads": args.threads, "log_every": 100, "eval_every_epoch": False}}
        print(f"{name}: teacher {setup['teacher_label']}", flush=True)
        teacher = run_recipe(load_recipe({
            **base, "name": f"{name}-teacher", "output_dir": str(out / "teacher"), "student": setup["teacher"],
            "data": {**base["data"], "augment": setup["teacher_augment"]}, "optimizer": setup["teacher_optimizer"],
            "train": {**base["train"], "epochs": args.teacher_epochs}}), overwrite=True, progress=False, measure_latency=False)
        print(f"  teacher accuracy {teacher.metrics['accuracy']:.4f} ({teacher.train_seconds:.0f} s)", flush=True)

        variants = {"live teacher": None, "dense cache (float16)": None}
        variants.update({f"top-{k} cache (float16)": k for k in args.ks})
        rows = {}
        for label, k in variants.items():
            teacher_spec = {"checkpoint": str(teacher.model_path)}
            cache_path = None
            if label != "live teacher":
                cache_path = out / ("cache-dense" if k is None else f"cache-k{k}")
                teacher_spec["cache"] = {"path": str(cache_path), "k": k}
                if cache_path.exists():
                    import shutil

                    shutil.rmtree(cache_path)
            recipe = load_recipe({
                **base, "name": f"{name}-student", "output_dir": str(out / label.split(" ")[0]),
                "teacher": teacher_spec, "student": setup["student"],
                "losses": [{"name": "kl", "weight": 0.9, "temperature": 4.0}, {"name": "cross_entropy", "weight": 0.1}],
                "optimizer": {"name": "adamw", "lr": 0.003},
                "train": {**base["train"], "epochs": args.student_epochs}})
            build_start = time.perf_counter()
            result = run_recipe(recipe, overwrite=True, progress=False, measure_latency=False)
            total = time.perf_counter() - build_start
            row = {"accuracy": result.metrics["accuracy"], "epoch_seconds": result.train_seconds / args.student_epochs,
                   "train_seconds": result.train_seconds, "run_seconds": total}
            if cache_path is not None:
                cache = open_cache(cache_path)
                row.update({"bytes_per_sample": cache.bytes_per_sample, "cache_bytes": cache.nbytes})
            rows[label] = row
            print(f"  {label}: accuracy {row['accuracy']:.4f}, epoch {row['epoch_seconds']:.1f} s", flush=True)
        live = rows["live teacher"]["epoch_seconds"]
        dense_acc = rows["dense cache (float16)"]["accuracy"]
        results[name] = {"teacher": teacher.metrics, "teacher_seconds": teacher.train_seconds, "students": rows}
        table = [f"### {name}: teacher {setup['teacher_label']} ({teacher.metrics['parameters']:,} parameters, "
                 f"{args.teacher_epochs} epochs, test accuracy {100 * teacher.metrics['accuracy']:.2f}%) -> "
                 f"student {setup['student_label']}",
                 "",
                 "| teacher outputs from | student epoch (s) | speed-up vs live | bytes / sample | student accuracy % | Δ vs dense (points) |",
                 "|---|---|---|---|---|---|"]
        for label, row in rows.items():
            size = f"{row['bytes_per_sample']:.1f}" if "bytes_per_sample" in row else "-"
            table.append(f"| {label} | {row['epoch_seconds']:.1f} | {live / row['epoch_seconds']:.2f}x | {size} | "
                         f"{100 * row['accuracy']:.2f} | {100 * (row['accuracy'] - dense_acc):+.2f} |")
        sections.append("\n".join(table))
    markdown = "\n\n".join(sections + [
        f"One seed ({args.seed}) for every variant, so the runs see the same data order and initial weights; "
        f"students: {args.student_epochs} epochs, batch 128, 0.9 x KL(T=4) + 0.1 x CE, AdamW 3e-3, no augmentation "
        f"(a cache refuses random augmentation); {args.threads} torch thread(s). Epoch time is the training phase "
        "only; a cache's one teacher pass is part of the run that builds it, not of its epochs. Top-k caches use "
        "the renormalised mode. These data sets have 10 classes, so k=32 cannot be shown (k must be below C to "
        "be sparse); bytes per sample include the float32 log tail mass and .npy headers."])
    path = write_result("teacher_cache", {"ks": args.ks, "student_epochs": args.student_epochs,
                                          "teacher_epochs": args.teacher_epochs, "results": results}, markdown, started)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
