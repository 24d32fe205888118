"""Issue 3 benchmark: intermediate-layer and cross-architecture distillation on CIFAR-10.

    python benchmarks/features_cifar10.py [--seeds 0 1 2] [--subset 10000] [--teacher-epochs 15] [--student-epochs 8]
        [--teachers resnet vit] [--reuse resnet=RUN/model.safetensors] [--feature-weights hint=1 ...] [--name NAME]

Two teachers trained on the same CIFAR-10 training subset: a ResNet-8 and a small ViT; each
distilled into one small CNN (16-32-64 channels): the student alone (hard labels), soft targets
alone (0.9 x KL(T=4) + 0.1 x CE), and soft targets plus each feature loss (pairs: auto, the
student's stages spread over the teacher's). Test accuracy on the full 10,000-image test split,
mean ± sd over seeds, every run with the same budget. The budget is cut to fit 2 CPU cores
(a training subset, few epochs, no augmentation); numbers are far below full-budget CIFAR-10.
``--reuse`` takes an already trained teacher (e.g. one trained on all 50,000 images with
augmentation), so the students can learn from a teacher stronger than their own data allows.
Feature weights default to the papers' (``PAPER_WEIGHTS``).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, fmt_mean_std, mean_std, require_data, write_result  # noqa: E402

from distill.recipe import load_recipe  # noqa: E402
from distill.runner import run_recipe  # noqa: E402

TEACHERS = {
    "resnet": ("ResNet-8", {"model": "resnet", "params": {"depth": 8}}),
    "vit": ("ViT (patch 4, dim 96, depth 4)", {"model": "vit", "params": {"patch_size": 4, "dim": 96, "depth": 4, "heads": 4}}),
}
STUDENT = {"model": "cnn", "params": {"channels": [16, 32, 64]}}
KD = [{"name": "kl", "weight": 0.9, "temperature": 4.0}, {"name": "cross_entropy", "weight": 0.1}]
FEATURES = {  # label: feature terms added to soft targets, at --feature-weights (default: the papers')
    "+ hint (FitNets)": "hint",
    "+ attention transfer": "attention_transfer",
    "+ similarity-preserving": "similarity_preserving",
    "+ RKD distance": "rkd_distance",
}
# The papers' weights, in this project's loss conventions: FitNets 1 (MSE); attention transfer
# beta/2 with beta = 1000 / (attention-map positions), ~2 for the 16x16 and 8x8 maps here (our
# loss is the per-sample norm, batch-averaged); similarity-preserving gamma = 3000 (Tung & Mori,
# same ||G_s - G_t||^2 / B^2); RKD distance 25 (Park et al.).
PAPER_WEIGHTS = {"hint": 1.0, "attention_transfer": 2.0, "similarity_preserving": 3000.0, "rkd_distance": 25.0}
VIT_FEATURES = ["+ hint (FitNets)", "+ similarity-preserving"]  # attention transfer needs maps on both sides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--subset", type=int, default=10000)
    parser.add_argument("--teacher-epochs", type=int, default=15)
    parser.add_argument("--student-epochs", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "features_cifar10")
    parser.add_argument("--teachers", nargs="+", choices=list(TEACHERS), default=list(TEACHERS))
    parser.add_argument("--reuse", nargs="+", default=[], metavar="KEY=MODEL_FILE",
                        help="use an already trained teacher, e.g. resnet=runs/.../model.safetensors")
    parser.add_argument("--feature-weights", nargs="+", default=[], metavar="LOSS=WEIGHT",
                        help=f"override the papers' weights {PAPER_WEIGHTS}")
    parser.add_argument("--name", default="features_cifar10", help="result name (benchmarks/results/NAME.json)")
    args = parser.parse_args()
    weights = {**PAPER_WEIGHTS, **{k: float(v) for k, v in (item.split("=", 1) for item in args.feature_weights)}}
    reuse = {k: Path(v) for k, v in (item.split("=", 1) for item in args.reuse)}
    selected = {key: TEACHERS[key] for key in args.teachers}
    root = require_data("cifar10")
    started = time.time()
    base = {"data": {"name": "cifar10", "root": str(root), "batch_size": 128, "eval_batch_size": 1000,
                     "train_subset": args.subset},
            "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0005},
            "schedule": {"name": "cosine", "warmup_steps": 50},
            "train": {"threads": args.threads, "log_every": 50, "eval_every_epoch": False}}
    teachers, teacher_notes = {}, {}
    for key, (label, spec) in selected.items():
        print(f"teacher {label}", flush=True)
        if key in reuse:  # trained elsewhere: its run folder says how
            made = load_recipe(reuse[key].parent / "recipe.yaml")
            teachers[key] = SimpleNamespace(model_path=reuse[key], metrics=json.loads((reuse[key].parent / "eval.json").read_text()))
            teacher_notes[key] = (f"reused from {reuse[key]} ({made.train.epochs} epochs on {made.data.train_subset or 'all 50,000'} "
                                  f"training images, augmentation {made.data.augment.name if made.data.augment else 'none'})")
            print(f"  reused: accuracy {teachers[key].metrics['accuracy']:.4f}", flush=True)
            continue
        teacher_notes[key] = f"{args.teacher_epochs} epochs on the students' {args.subset:,} images"
        result = run_recipe(load_recipe({**base, "name": f"teacher-{key}", "seed": 0, "output_dir": str(args.out / f"teacher-{key}"),
                                         "student": spec, "train": {**base["train"], "epochs": args.teacher_epochs}}),
                            overwrite=True, progress=False, measure_latency=False)
        teachers[key] = result
        print(f"  accuracy {result.metrics['accuracy']:.4f} ({result.train_seconds:.0f} s)", flush=True)

    plan = [("student alone (hard labels)", None, [{"name": "cross_entropy"}], [])]
    for key in selected:
        plan.append((f"{key} -> CNN: soft targets", key, KD, []))
        for label, loss in FEATURES.items():
            if key == "vit" and label not in VIT_FEATURES:
                continue
            plan.append((f"{key} -> CNN: soft targets {label}", key, KD, [{"loss": loss, "weight": weights[loss]}]))
    results: dict[str, dict[str, list[float]]] = {}
    for label, teacher_key, losses, features in plan:
        results[label] = {"accuracy": [], "agreement": [], "train_seconds": []}
        for seed in args.seeds:
            tree = {**base, "name": "student", "seed": seed, "output_dir": str(args.out / "runs" / f"{len(results)}-seed{seed}"),
                    "student": STUDENT, "losses": losses, "features": features,
                    "train": {**base["train"], "epochs": args.student_epochs}}
            if teacher_key is not None:
                tree["teacher"] = {"checkpoint": str(teachers[teacher_key].model_path)}
            result = run_recipe(load_recipe(tree), overwrite=True, progress=False, measure_latency=False)
            results[label]["accuracy"].append(result.metrics["accuracy"])
            results[label]["agreement"].append(result.metrics.get("agreement", float("nan")))
            results[label]["train_seconds"].append(result.train_seconds)
            print(f"  {label} seed {seed}: accuracy {result.metrics['accuracy']:.4f} ({result.train_seconds:.0f} s)", flush=True)

    alone = mean_std(results["student alone (hard labels)"]["accuracy"])[0]
    soft = {key: mean_std(results[f"{key} -> CNN: soft targets"]["accuracy"])[0] for key in selected}
    rows = ["| student (CNN 16-32-64) trained with | test accuracy % | Δ vs alone | Δ vs soft targets alone | train s/run |",
            "|---|---|---|---|---|"]
    for label, r in results.items():
        acc = mean_std(r["accuracy"])[0]
        key = label.split(" ")[0]
        vs_soft = f"{100 * (acc - soft[key]):+.2f}" if key in soft else "-"
        rows.append(f"| {label} | {fmt_mean_std([100 * a for a in r['accuracy']], '{:.2f}')} | {100 * (acc - alone):+.2f} | "
                    f"{vs_soft} | {fmt_mean_std(r['train_seconds'], '{:.0f}')} |")
    gains = [label for label, r in results.items() if "+" in label
             and mean_std(r["accuracy"])[0] > soft[label.split(" ")[0]] + mean_std(r["accuracy"])[1]]
    markdown = "\n".join([
        "Teachers (seed 0): " + "; ".join(f"{TEACHERS[k][0]} {teachers[k].metrics['parameters']:,} parameters, "
                                          f"test accuracy {100 * teachers[k].metrics['accuracy']:.2f}%, {teacher_notes[k]}"
                                          for k in selected) + ".",
        "",
        *rows,
        "",
        f"Budget: {args.subset:,} training images (a fixed subset), students "
        f"{args.student_epochs} epochs, batch 128, AdamW 2e-3, no augmentation, {args.threads} thread(s), seeds "
        f"{', '.join(map(str, args.seeds))}. Feature pairs: auto (each CNN stage paired with a teacher stage); "
        f"feature weights {json.dumps(weights)}. "
        "Feature terms whose mean beats soft targets alone by more than one standard deviation: "
        + (", ".join(gains) if gains else "none") + ".",
    ])
    path = write_result(args.name, {"seeds": args.seeds, "subset": args.subset, "teacher_epochs": args.teacher_epochs,
                                    "student_epochs": args.student_epochs, "results": results, "feature_weights": weights,
                                    "teachers": {k: v.metrics for k, v in teachers.items()}}, markdown, started)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
