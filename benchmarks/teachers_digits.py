"""Several teachers and self-distillation on scikit-learn's digits, against the same student alone.

    python benchmarks/teachers_digits.py [--seeds 0 1 2 3 4]

Two unlike teachers are trained once (seed 0): the CNN of recipes/digits_teacher.yaml and the
wide MLP of recipes/digits_teacher_mlp.yaml. For every seed, the MLP 64-32-10 student of
recipes/digits_distilled.yaml is trained (60 epochs, 0.9 x KL at T=4 + 0.1 x CE, teacher logits
precomputed) on hard labels alone, from each teacher, and from their ensemble under each
combination rule; a born-again second generation learns from that seed's hard-label student;
and a deeper MLP 64-64-32-10 is trained alone and with self-distillation exits
(recipes/digits_self_distilled.yaml). One table: test accuracy (360 images: one image is 0.28
points), agreement with the run's teacher, mean ± sd over seeds.
"""
from __future__ import annotations

import argparse
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, flow, fmt_mean_std, mean_std, write_result  # noqa: E402

from distill.recipe import load_recipe  # noqa: E402
from distill.runner import run_recipe  # noqa: E402

HARD = flow([{"name": "cross_entropy", "weight": 1.0}])


def run(recipe: str, *overrides: str):
    return run_recipe(load_recipe(ROOT / "recipes" / recipe, list(overrides)), overwrite=True, progress=False,
                      measure_latency=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "teachers_digits")
    args = parser.parse_args()
    started = time.time()
    threads = f"train.threads={args.threads}"

    teachers = {}
    for key, recipe in (("cnn", "digits_teacher.yaml"), ("mlp", "digits_teacher_mlp.yaml")):
        result = run(recipe, threads, f"output_dir={args.out / f'teacher-{key}'}")
        teachers[key] = result
        print(f"teacher {key}: accuracy {result.metrics['accuracy']:.4f}, {result.metrics['parameters']:,} parameters, "
              f"{result.train_seconds:.0f} s", flush=True)
    cnn, mlp = (str(teachers[key].model_path) for key in ("cnn", "mlp"))

    def ensemble(combine: str) -> str:
        return "teacher=" + flow({"ensemble": [{"checkpoint": cnn}, {"checkpoint": mlp}], "combine": combine,
                                  "precompute": True})

    # name -> (recipe, overrides); {gen1} is the same seed's hard-label student
    variants = {
        "hard labels only": ("digits_distilled.yaml", [f"losses={HARD}", f"teacher.checkpoint={cnn}"]),
        "KD from CNN teacher": ("digits_distilled.yaml", [f"teacher.checkpoint={cnn}"]),
        "KD from MLP teacher": ("digits_distilled.yaml", [f"teacher.checkpoint={mlp}"]),
        "KD from ensemble, mean": ("digits_distilled.yaml", [ensemble("mean")]),
        "KD from ensemble, logit_mean": ("digits_distilled.yaml", [ensemble("logit_mean")]),
        "KD from ensemble, confident": ("digits_distilled.yaml", [ensemble("confident")]),
        "born-again (gen 2 from hard-label gen 1)": ("digits_born_again.yaml", ["teacher.checkpoint={gen1}"]),
        "deeper student 64-64-32, hard labels": ("digits_self_distilled.yaml", ["self_distill=null"]),
        "deeper student 64-64-32 + self-distillation exits": ("digits_self_distilled.yaml", []),
    }
    results: dict[str, dict[str, list]] = {}
    for name, (recipe, overrides) in variants.items():
        results[name] = {"accuracy": [], "agreement": [], "exit_accuracy": []}
        for seed in args.seeds:
            gen1 = args.out / "hard" / f"seed{seed}" / "model.safetensors"
            out = args.out / re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") / f"seed{seed}"
            extra = [item.replace("{gen1}", str(gen1)) for item in overrides]
            if recipe == "digits_born_again.yaml":
                extra.append(f"seed={seed + 100}")  # a fresh initialisation, not the first generation's
            else:
                extra.append(f"seed={seed}")
            if name == "hard labels only":
                out = gen1.parent
            if recipe == "digits_self_distilled.yaml":  # no teacher in the recipe: agreement with the CNN anyway
                extra.append("teacher=" + flow({"checkpoint": cnn}))
            result = run(recipe, threads, f"output_dir={out}", *extra)
            results[name]["accuracy"].append(result.metrics["accuracy"])
            results[name]["agreement"].append(result.metrics.get("agreement"))
            if "exit_accuracy" in result.metrics:
                results[name]["exit_accuracy"].append(result.metrics["exit_accuracy"])
            print(f"  {name} seed {seed}: accuracy {result.metrics['accuracy']:.4f}", flush=True)

    table = ["| student | test accuracy % | Δ vs its own hard-label run (points) | agreement w/ its teacher % |",
             "|---|---|---|---|"]
    for name, r in results.items():
        base_name = "deeper student 64-64-32, hard labels" if name.startswith("deeper") else "hard labels only"
        delta = 100 * (mean_std(r["accuracy"])[0] - mean_std(results[base_name]["accuracy"])[0])
        table.append(f"| {name} | {fmt_mean_std([100 * a for a in r['accuracy']], '{:.2f}')} | "
                     f"{'—' if name == base_name else f'{delta:+.2f}'} | "
                     f"{fmt_mean_std([100 * a for a in r['agreement']], '{:.2f}')} |")
    exits = results["deeper student 64-64-32 + self-distillation exits"]["exit_accuracy"]
    exit_line = ""
    if exits:
        layers = [layer for layer in exits[0] if layer != "final"]
        exit_line = " Exit accuracy (early-exit classifiers, not part of the exported student): " + ", ".join(
            f"`{layer}` {fmt_mean_std([100 * e[layer] for e in exits], '{:.2f}')}%" for layer in layers) + "."
    t = {key: result.metrics for key, result in teachers.items()}
    markdown = "\n".join([
        f"Teachers (seed 0): CNN ({t['cnn']['parameters']:,} parameters) **{100 * t['cnn']['accuracy']:.2f}%**, "
        f"MLP 64-256-256-10 ({t['mlp']['parameters']:,}) **{100 * t['mlp']['accuracy']:.2f}%**. Students: MLP 64-32-10 "
        f"(recipes/digits_distilled.yaml: 60 epochs, AdamW 3e-3, 0.9 x KL T=4 + 0.1 x CE) and MLP 64-64-32-10 "
        f"(recipes/digits_self_distilled.yaml); seeds {', '.join(map(str, args.seeds))}; test split of 360 images.",
        "",
        *table,
        "",
        "Agreement is with the run's own teacher (the ensemble for ensemble rows, the first generation for "
        "born-again, the CNN for the hard-label and self-distillation rows, where it teaches nothing). "
        "Born-again: the second generation (seed + 100) learns from the same seed's hard-label student, "
        "an earlier self of the same architecture." + exit_line,
    ])
    numbers = {"seeds": args.seeds, "threads": args.threads, "teachers": t, "results": results}
    path = write_result("teachers_digits", numbers, markdown, started)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
