"""Issue 17 benchmark: does distillation help on CIFAR-10 once the teacher is strong?

    python benchmarks/cifar10_kd.py [--teacher RUN/model.safetensors] [--teacher-epochs 25]
        [--student-epochs 15] [--seeds 0 1 2] [--jobs 2] [--rows alone kd dkd dist rkd] [--reuse]

The teacher is a ResNet-20 trained by distill on all 50,000 training images with random crops
and flips (SGD + Nesterov 0.1, cosine, weight decay 5e-4, batch 128), unless ``--teacher`` names
one already trained. Its logits on the (un-augmented) training images are stored once in a
dense teacher-output cache (``teacher.cache``) that every logit-distillation run reads.

Every student is the same CNN (16-32-64 channels), trained on all 50,000 images without
augmentation (a cache stores one output per image) for the same epochs with AdamW 2e-3, cosine:
- ``alone``: hard labels (cross-entropy) only;
- ``kd``: 0.9 x KL(T=4) + 0.1 x CE (Hinton et al. 2015);
- ``kd_t1``: the same at T=1 (a small student may follow a sharper target better);
- ``dkd``: CE + DKD (alpha 1, beta 8, T=4; Zhao et al. 2022, mdistiller's CIFAR weights), its weight
  ramped up over the first 1/12 of the steps (the paper's 20 of 240 epochs);
- ``dist``: CE + 2 x DIST (beta = gamma = 1 inside, T=4; Huang et al. 2022);
- ``rkd``: the best feature term of ``features_cifar10_strong_teacher``, KD + RKD distance (25),
  with the teacher run live (feature taps need its activations).
Runs go ``--jobs`` at a time, one torch thread each. Test accuracy on the 10,000 test images,
mean ± sd over seeds; a method "beats" the student alone when its mean exceeds the student's
mean by more than the larger of the two standard deviations.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, fmt_mean_std, mean_std, require_data, write_result  # noqa: E402

from distill.recipe import load_recipe  # noqa: E402

STUDENT = {"model": "cnn", "params": {"channels": [16, 32, 64]}}
TEACHER = {"model": "resnet", "params": {"depth": 20}}
CE = {"name": "cross_entropy"}
ROWS = {  # key: (label, losses, feature terms, live teacher)
    "alone": ("student alone (hard labels)", [CE], [], False),
    "kd": ("KD: 0.9 KL(T=4) + 0.1 CE", [{"name": "kl", "weight": 0.9, "temperature": 4.0},
                                         {"name": "cross_entropy", "weight": 0.1}], [], False),
    "kd_t1": ("KD at T=1: 0.9 KL(T=1) + 0.1 CE", [{"name": "kl", "weight": 0.9, "temperature": 1.0},
                                               {"name": "cross_entropy", "weight": 0.1}], [], False),
    "dkd": ("DKD: CE + DKD(alpha 1, beta 8, T=4), warm-up 1/12", [CE, {"name": "dkd", "temperature": 4.0, "alpha": 1.0, "beta": 8.0}],
            [], False),
    "dist": ("DIST: CE + 2 DIST(T=4)", [CE, {"name": "dist", "weight": 2.0, "temperature": 4.0}], [], False),
    "rkd": ("KD + RKD distance (25), live teacher", [{"name": "kl", "weight": 0.9, "temperature": 4.0},
                                                      {"name": "cross_entropy", "weight": 0.1}],
            [{"loss": "rkd_distance", "weight": 25.0}], True),
}


def base_tree(root: Path, threads: int, subset: int | None = None) -> dict:
    return {"data": {"name": "cifar10", "root": str(root), "batch_size": 128, "eval_batch_size": 1000,
                     "train_subset": subset},
            "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0005},
            "schedule": {"name": "cosine", "warmup_steps": 100},
            "train": {"threads": threads, "log_every": 100, "eval_every_epoch": False}}


def teacher_tree(root: Path, out: Path, epochs: int, threads: int, subset: int | None) -> dict:
    tree = base_tree(root, threads, subset)
    tree["data"]["augment"] = {"name": "crop_flip", "padding": 4, "flip": True}
    return {**tree, "name": "teacher-resnet20", "seed": 0, "output_dir": str(out / "teacher"), "student": TEACHER,
            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005},
            "schedule": {"name": "cosine", "warmup_steps": 200},
            "train": {**tree["train"], "epochs": epochs, "eval_every_epoch": True}}


def run(tree: dict, folder: Path, reuse: bool) -> dict:
    """Train one recipe in a fresh `distill run` process (so runs can go side by side); its eval.json."""
    folder.mkdir(parents=True, exist_ok=True)
    recipe_file = folder.parent / f"{folder.name}.yaml"
    recipe_file.write_text(yaml.safe_dump(tree, sort_keys=False))
    done = folder / "eval.json"
    if reuse and done.is_file() and load_recipe(folder / "recipe.yaml").to_yaml() == load_recipe(recipe_file).to_yaml():
        print(f"  reusing {folder}", flush=True)
        return json.loads(done.read_text())
    log = folder.parent / f"{folder.name}.log"
    with log.open("w") as handle:
        code = subprocess.call([sys.executable, "-m", "distill", "run", str(recipe_file), "--overwrite", "--no-progress"],
                               stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=os.environ.copy())
    if code != 0:
        raise SystemExit(f"run {folder} failed (exit {code}); see {log}")
    return json.loads(done.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--teacher", type=Path, help="an already trained teacher's model.safetensors (its run folder "
                        "holds recipe.yaml and eval.json)")
    parser.add_argument("--teacher-epochs", type=int, default=25)
    parser.add_argument("--teacher-threads", type=int, default=2)
    parser.add_argument("--student-epochs", type=int, default=15)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS))
    parser.add_argument("--jobs", type=int, default=2, help="student runs side by side (one thread each)")
    parser.add_argument("--reuse", action="store_true", help="reuse finished runs whose resolved recipe is unchanged")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bench" / "cifar10_kd")
    parser.add_argument("--subset", type=int, help="train on this many images only (a smoke test; not the benchmark)")
    parser.add_argument("--name", default="cifar10_kd")
    args = parser.parse_args()
    root = require_data("cifar10")
    started = time.time()

    if args.teacher is None:
        print(f"teacher ResNet-20, {args.teacher_epochs} epochs on all 50,000 images, crop + flip", flush=True)
        teacher_metrics = run(teacher_tree(root, args.out, args.teacher_epochs, args.teacher_threads, args.subset),
                              args.out / "teacher", args.reuse)
        teacher_file = args.out / "teacher" / "model.safetensors"
    else:
        teacher_file = args.teacher
        teacher_metrics = json.loads((teacher_file.parent / "eval.json").read_text())
    made = load_recipe(teacher_file.parent / "recipe.yaml")
    teacher_epochs = made.train.epochs
    curve = [json.loads(line)["accuracy"] for line in (teacher_file.parent / "metrics.jsonl").read_text().splitlines()
             if '"split": "test"' in line]
    print(f"teacher: accuracy {teacher_metrics['accuracy']:.4f}", flush=True)

    def cache_for(seed: int) -> dict:  # a subset is drawn by the run's seed: one cache per seed then
        name = "teacher_cache" if args.subset is None else f"teacher_cache-seed{seed}"
        return {"path": str(args.out / name), "dtype": "float32"}

    def tree_for(key: str, seed: int) -> dict:
        label, losses, features, live = ROWS[key]
        if key == "dkd":  # the paper's warm-up: 20 of 240 epochs
            steps = (50000 if args.subset is None else args.subset) // 128 * args.student_epochs
            losses = [losses[0], {**losses[1], "warmup_steps": max(1, round(steps / 12))}]
        tree = {**base_tree(root, 1, args.subset), "name": f"student-{key}", "seed": seed, "student": STUDENT, "losses": losses,
                "features": features, "output_dir": str(args.out / "runs" / f"{key}-seed{seed}")}
        tree["train"]["epochs"] = args.student_epochs
        if key != "alone":
            tree["teacher"] = {"checkpoint": str(teacher_file)} if live else {"checkpoint": str(teacher_file), "cache": cache_for(seed)}
        return tree

    plan = [(key, seed) for key in args.rows for seed in args.seeds]
    cached = [key for key in args.rows if key != "alone" and not ROWS[key][3]]
    cache_seconds = None
    if cached:  # build the cache(s) once, before runs that read them go side by side
        (args.out / "runs").mkdir(parents=True, exist_ok=True)
        tic = time.perf_counter()
        for seed in args.seeds if args.subset is not None else args.seeds[:1]:
            first = tree_for(cached[0], seed)
            recipe_file = args.out / "runs" / f"cache-seed{seed}.yaml"
            recipe_file.write_text(yaml.safe_dump({**first, "train": {**first["train"], "threads": 2}}, sort_keys=False))
            subprocess.check_call([sys.executable, "-m", "distill", "cache", str(recipe_file), "--no-progress"], cwd=ROOT)
        cache_seconds = time.perf_counter() - tic

    def one(item: tuple[str, int]) -> tuple[str, int, dict]:
        key, seed = item
        metrics = run(tree_for(key, seed), args.out / "runs" / f"{key}-seed{seed}", args.reuse)
        print(f"  {ROWS[key][0]} seed {seed}: accuracy {metrics['accuracy']:.4f} "
              f"({metrics.get('train_seconds', float('nan')):.0f} s)", flush=True)
        return key, seed, metrics

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        finished = list(pool.map(one, plan))
    results = {key: {"accuracy": [], "agreement": [], "train_seconds": []} for key in args.rows}
    for key, _, metrics in sorted(finished, key=lambda item: (item[0], item[1])):
        results[key]["accuracy"].append(metrics["accuracy"])
        results[key]["agreement"].append(metrics.get("agreement", float("nan")))
        results[key]["train_seconds"].append(metrics.get("train_seconds", float("nan")))

    alone = mean_std(results["alone"]["accuracy"]) if "alone" in results else None
    rows = ["| student (CNN 16-32-64) trained with | test accuracy % | per seed | Δ vs alone (points) | beats alone | "
            "train s/run |", "|---|---|---|---|---|---|"]
    verdicts = {}
    for key, r in results.items():
        mean, sd = mean_std(r["accuracy"])
        if alone is None or key == "alone":
            delta, verdict = "-", "-"
        else:
            delta = f"{100 * (mean - alone[0]):+.2f}"
            verdicts[key] = bool(mean - alone[0] > max(sd, alone[1]))
            verdict = "yes" if verdicts[key] else "no"
        rows.append(f"| {ROWS[key][0]} | {fmt_mean_std([100 * a for a in r['accuracy']], '{:.2f}')} | "
                    f"{', '.join(f'{100 * a:.2f}' for a in r['accuracy'])} | {delta} | {verdict} | "
                    f"{fmt_mean_std(r['train_seconds'], '{:.0f}')} |")
    markdown = "\n".join([
        f"Teacher: ResNet-20 ({teacher_metrics['parameters']:,} parameters), {teacher_epochs} epochs on all 50,000 "
        f"training images with random crop (pad 4) + flip, SGD Nesterov lr 0.1, cosine, weight decay 5e-4, "
        f"batch 128: test accuracy **{100 * teacher_metrics['accuracy']:.2f}%** (goal >= 85%: "
        f"{'met' if teacher_metrics['accuracy'] >= 0.85 else 'missed'}); test accuracy after each epoch: "
        + ", ".join(f"{100 * a:.1f}" for a in curve) + ".",
        "",
        *rows,
        "",
        f"Students: CNN 16-32-64, {args.student_epochs} epochs on "
        + ("all 50,000 training images" if args.subset is None else f"a subset of {args.subset:,} training images")
        + " without augmentation, "
        f"batch 128, AdamW 2e-3 (weight decay 5e-4), cosine with 100 warm-up steps, 1 torch thread each, "
        f"runs side by side: {args.jobs}; seeds {', '.join(map(str, args.seeds))}. "
        + (f"Logit rows read the teacher's dense fp32 logits from a teacher-output cache built once "
           + ("" if args.subset is None else "per seed (each seed draws its own subset) ")
           + f"({cache_seconds:.0f} s in all, the teacher's pass over the training images); "
           if cache_seconds is not None else "")
        + "the RKD row runs the teacher live for its features. 'Beats alone': mean above the student alone's by "
        "more than the larger standard deviation.",
    ])
    path = write_result(args.name, {"seeds": args.seeds, "student_epochs": args.student_epochs, "results": results,
                                    "teacher": teacher_metrics, "teacher_curve": curve, "teacher_epochs": teacher_epochs,
                                    "cache_seconds": cache_seconds, "beats_alone": verdicts}, markdown, started)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
