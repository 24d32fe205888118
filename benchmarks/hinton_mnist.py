"""Benchmark 1: Hinton, Vinyals & Dean 2015, section 3, on MNIST.

    python benchmarks/hinton_mnist.py [--seeds 0 1 2] [--teacher-epochs 25] [--student-epochs 25]

Teacher 784-1200-1200-10 (dropout 0.2 input / 0.5 hidden, inputs jittered by up to 2 pixels),
student 784-800-800-10 (a) on hard labels alone and (b) with soft targets at T=20, each seed
training all three. Reports test errors (out of 10,000) beside the paper's 67 / 146 / 74 and
the fraction of the student-to-teacher error gap that distillation closes (goal >= 80%).
Training is much shorter than the paper's to fit about 60 minutes on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, fmt_mean_std, mean_std, require_data, write_result  # noqa: E402

from distill.recipe import load_recipe  # noqa: E402
from distill.runner import run_recipe  # noqa: E402

PAPER = {"teacher": 67, "student": 146, "distilled": 74}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-epochs", type=int, default=25)
    parser.add_argument("--student-epochs", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs whose resolved recipe is unchanged")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "hinton_mnist")
    args = parser.parse_args()
    root = require_data("mnist")
    started = time.time()
    errors: dict[str, list[float]] = {"teacher": [], "student": [], "distilled": []}
    seconds: dict[str, list[float]] = {"teacher": [], "student": [], "distilled": []}
    for seed in args.seeds:
        base = args.out / f"seed{seed}"
        common = [f"seed={seed}", f"data.root={root}", f"train.threads={args.threads}"]
        plan = [
            ("teacher", "hinton_mnist_teacher.yaml", [f"train.epochs={args.teacher_epochs}"]),
            ("student", "hinton_mnist_student.yaml", [f"train.epochs={args.student_epochs}"]),
            ("distilled", "hinton_mnist_distilled.yaml", [
                f"train.epochs={args.student_epochs}", f"teacher.checkpoint={base / 'teacher' / 'model.safetensors'}",
                "teacher.precompute=true"]),
        ]
        for role, recipe_file, extra in plan:
            recipe = load_recipe(ROOT / "recipes" / recipe_file, common + extra + [f"output_dir={base / role}"])
            previous = base / role / "eval.json"
            if args.reuse and previous.is_file() and (base / role / "recipe.yaml").read_text() == recipe.to_yaml():
                metrics = json.loads(previous.read_text())  # the same resolved recipe already ran to the end
                print(f"seed {seed}: {role}: reusing {base / role}", flush=True)
            else:
                print(f"seed {seed}: {role} ({recipe_file})", flush=True)
                metrics = run_recipe(recipe, overwrite=True, progress=sys.stderr.isatty(), measure_latency=False).metrics
            errors[role].append(round((1 - metrics["accuracy"]) * 10000))
            seconds[role].append(metrics["train_seconds"])
            print(f"  test errors {errors[role][-1]}, {seconds[role][-1]:.0f} s", flush=True)

    t, s, d = (mean_std(errors[k])[0] for k in ("teacher", "student", "distilled"))
    gap_closed = (s - d) / (s - t) if s != t else float("nan")
    per_seed_gap = [(si - di) / (si - ti) if si != ti else float("nan")
                    for ti, si, di in zip(errors["teacher"], errors["student"], errors["distilled"])]
    numbers = {
        "seeds": args.seeds, "teacher_epochs": args.teacher_epochs, "student_epochs": args.student_epochs,
        "threads": args.threads, "total_train_minutes": total_minutes, "test_errors": errors, "train_seconds": seconds,
        "gap_closed": gap_closed, "gap_closed_per_seed": per_seed_gap, "paper": PAPER,
    }
    rows = [
        ("teacher 784-1200-1200-10, dropout + jitter", "teacher"),
        ("student 784-800-800-10, hard labels", "student"),
        ("student 784-800-800-10, soft targets T=20", "distilled"),
    ]
    table = ["| model | test errors (mean ± sd) | per seed | paper | train time per run (s) |", "|---|---|---|---|---|"]
    for label, key in rows:
        table.append(f"| {label} | {fmt_mean_std(errors[key])} | {', '.join(str(int(e)) for e in errors[key])} | "
                     f"{PAPER[key]} | {fmt_mean_std(seconds[key], '{:.0f}')} |")
    verdict = "met" if gap_closed >= 0.8 else "missed"
    total_minutes = sum(sum(values) for values in seconds.values()) / 60
    markdown = "\n".join(table + [
        "",
        f"Distillation closes **{gap_closed:.0%}** of the error gap between the student alone and the teacher "
        f"(per seed: {', '.join(f'{g:.0%}' for g in per_seed_gap)}); goal >= 80%: **{verdict}**. "
        f"Training time of all {3 * len(args.seeds)} runs together: {total_minutes:.0f} min (budget 60).",
        f"Shortened training: teacher {args.teacher_epochs} epochs, students {args.student_epochs} epochs each, "
        f"AdamW lr 1e-3 (no weight decay), cosine schedule with 500 warm-up steps, batch 128; {len(args.seeds)} seeds "
        f"({', '.join(map(str, args.seeds))}), {args.threads} torch threads. The paper trained far longer; its "
        "numbers are shown for reference. Distilled student: 0.9 x KL at T=20 (T² scaled) + 0.1 x hard-label CE, "
        "teacher logits precomputed once (no augmentation for the students).",
    ])
    path = write_result("hinton_mnist", numbers, markdown, started)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
