"""Benchmark 2: Fashion-MNIST, CNN teacher -> MLP student 10x smaller, every soft-target loss.

    python benchmarks/fashion_mnist_losses.py [--seeds 0 1 2] [--teacher-epochs 8] [--student-epochs 15]

One CNN teacher (recipes/fashion_mnist_teacher.yaml, seed 0) is trained once; then the MLP
784-16-10 student is trained on hard labels alone and with each soft-target loss of the family
(0.9 x soft term + 0.1 x hard-label CE; teacher logits computed once, kept in a dense teacher-output cache), for every seed. One
table: test accuracy, agreement with the teacher and KL to the teacher, mean ± sd over seeds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, flow, fmt_mean_std, mean_std, require_data, write_result  # noqa: E402

from distill.recipe import load_recipe  # noqa: E402
from distill.runner import run_recipe  # noqa: E402

# soft term of each variant: (loss name, temperature, extra params); T=4 for the divergences,
# DIST at its paper's tau=1, MSE on raw logits (temperature does not apply).
VARIANTS = {
    "kl": ("kl", 4.0, {}),
    "reverse_kl": ("reverse_kl", 4.0, {}),
    "jsd (beta=0.5)": ("jsd", 4.0, {"beta": 0.5}),
    "skew_kl (alpha=0.1)": ("skew_kl", 4.0, {"alpha": 0.1}),
    "skew_reverse_kl (alpha=0.1)": ("skew_reverse_kl", 4.0, {"alpha": 0.1}),
    "tvd": ("tvd", 4.0, {}),
    "dkd (alpha=1, beta=8)": ("dkd", 4.0, {"alpha": 1.0, "beta": 8.0}),
    "dist": ("dist", 1.0, {}),
    "mse (logits)": ("mse", 1.0, {}),
}



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--student-epochs", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--teacher", type=Path, default=None, help="reuse this trained teacher (model.safetensors of an earlier run)")
    parser.add_argument("--temperature", type=float, default=None, help="one temperature for every divergence (default: 4; DIST 1)")
    parser.add_argument("--subset", type=int, default=None, help="train on this many samples (smoke runs only)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "fashion_mnist")
    args = parser.parse_args()
    root = require_data("fashion-mnist")
    started = time.time()
    common = [f"data.root={root}", f"train.threads={args.threads}"]
    if args.subset:
        common.append(f"data.train_subset={args.subset}")

    if args.teacher is not None:  # an earlier run's teacher: its eval.json holds its metrics
        import json

        teacher_path = args.teacher
        teacher_metrics = json.loads((args.teacher.parent / "eval.json").read_text())
        teacher_seconds = teacher_metrics["train_seconds"]
    else:
        print("teacher", flush=True)
        teacher = run_recipe(load_recipe(ROOT / "recipes" / "fashion_mnist_teacher.yaml", common + [
            f"train.epochs={args.teacher_epochs}", f"output_dir={args.out / 'teacher'}"]),
            overwrite=True, progress=sys.stderr.isatty(), measure_latency=False)
        teacher_path, teacher_metrics, teacher_seconds = teacher.model_path, teacher.metrics, teacher.train_seconds
    print(f"  teacher accuracy {teacher_metrics['accuracy']:.4f}, {teacher_seconds:.0f} s", flush=True)

    results: dict[str, dict[str, list[float]]] = {}
    student_params = None
    for name in ["hard labels only"] + list(VARIANTS):
        results[name] = {"accuracy": [], "agreement": [], "kl_to_teacher": [], "train_seconds": []}
        for seed in args.seeds:
            overrides = common + [f"seed={seed}", f"train.epochs={args.student_epochs}",
                                  f"output_dir={args.out / name.split(' ')[0] / f'seed{seed}'}",
                                  f"teacher.checkpoint={teacher_path}", "teacher.precompute=false",
                                  # the teacher runs once for all students: a dense float32 cache
                                  f"teacher.cache={{path: {args.out / 'teacher-cache'}, dtype: float32}}"]
            if name == "hard labels only":
                overrides.append(f"losses={flow([{'name': 'cross_entropy', 'weight': 1.0}])}")
            else:
                loss, temperature, params = VARIANTS[name]
                if args.temperature is not None and loss not in ("mse",):
                    temperature = args.temperature
                overrides.append("losses=" + flow([{"name": loss, "weight": 0.9, "temperature": temperature, **params},
                                                   {"name": "cross_entropy", "weight": 0.1}]))
            recipe = load_recipe(ROOT / "recipes" / "fashion_mnist_distilled.yaml", overrides)
            result = run_recipe(recipe, overwrite=True, progress=False, measure_latency=False)
            # the hard-label run has the teacher in its recipe only for agreement/KL: its loss ignores it
            for key in ("accuracy", "agreement", "kl_to_teacher"):
                results[name][key].append(result.metrics[key])
            results[name]["train_seconds"].append(result.train_seconds)
            student_params = result.metrics["parameters"]
            print(f"  {name} seed {seed}: accuracy {result.metrics['accuracy']:.4f}, "
                  f"agreement {result.metrics['agreement']:.4f}, {result.train_seconds:.0f} s", flush=True)

    base = mean_std(results["hard labels only"]["accuracy"])[0]
    table = ["| student objective | test accuracy % | Δ vs hard labels (points) | agreement w/ teacher % | KL to teacher | train s/run |",
             "|---|---|---|---|---|---|"]
    for name, r in results.items():
        acc = [100 * a for a in r["accuracy"]]
        table.append(
            f"| {name} | {fmt_mean_std(acc, '{:.2f}')} | {100 * (mean_std(r['accuracy'])[0] - base):+.2f} | "
            f"{fmt_mean_std([100 * a for a in r['agreement']], '{:.2f}')} | {fmt_mean_std(r['kl_to_teacher'], '{:.3f}')} | "
            f"{fmt_mean_std(r['train_seconds'], '{:.0f}')} |")
    ratio = teacher_metrics["parameters"] / student_params
    markdown = "\n".join([
        f"Teacher: CNN 32-64-128 + FC 256, {teacher_metrics['parameters']:,} parameters, "
        f"{args.teacher_epochs} epochs (seed 0): test accuracy **{100 * teacher_metrics['accuracy']:.2f}%**. "
        f"Student: MLP 784-16-10, {student_params:,} parameters ({ratio:.1f}x fewer), {args.student_epochs} epochs, "
        f"AdamW lr 3e-3, cosine, batch 128; seeds {', '.join(map(str, args.seeds))}.",
        "",
        *table,
        "",
        "Each soft-target variant is 0.9 x the named loss + 0.1 x hard-label CE, teacher logits computed once "
        "(a dense float32 teacher-output cache) "
        "(no augmentation); " + (f"temperature {args.temperature:g} for every loss but MSE (T² scaled)"
                                 if args.temperature is not None else
                                 "temperatures: 4 for the divergences and DKD (T² scaled), 1 for DIST (its paper's tau)")
        + ", none for MSE on logits. No per-loss tuning was done: one protocol for all."
        + (f" Teacher reused from {args.teacher}." if args.teacher is not None else ""),
    ])
    numbers = {"seeds": args.seeds, "teacher_epochs": args.teacher_epochs, "student_epochs": args.student_epochs,
               "threads": args.threads, "teacher": teacher_metrics, "student_parameters": student_params, "results": results}
    name = "fashion_mnist_losses" + (f"_T{args.temperature:g}" if args.temperature is not None else "")
    path = write_result(name, numbers, markdown, started)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
