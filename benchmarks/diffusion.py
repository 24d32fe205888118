"""Benchmark: diffusion step distillation on 8x8 digits (and MNIST), teacher vs students by steps.

    python benchmarks/diffusion.py [--data digits|mnist] [--seeds 0 1 2] [--threads 1] [--subset N]
                                   [--teacher-steps 3000] [--round-steps 300] [--cd-steps 1500]
                                   [--reg-steps 1500] [--pairs 4096] [--arch time_mlp|tiny_unet]
                                   [--size default|small] [--teacher-lr 1e-3]
                                   [--num-eval N] [--name NAME]

Per seed: a v-parameterised teacher (cosine schedule, TimeMLP for digits, TinyUNet for MNIST)
is trained from scratch; then three students, each started from the teacher's weights:

- **progressive** (Salimans & Ho 2022): 8 rounds 256 -> 128 -> ... -> 1 DDIM steps,
  ``--round-steps`` updates each, truncated-SNR weighting; the 4-, 2- and 1-step students are
  evaluated at their own step counts;
- **consistency** (Song et al. 2023): CD with a Heun teacher solver on an 18-point Karras grid,
  EMA mu = 0.95, L2, ``--cd-steps`` updates; sampled with 1, 2, 4 steps (Alg. 1);
- **regression** (Luhman & Luhman 2021): the teacher's 64-step DDIM ODE pairs from ``--pairs`` noises
  (at the times of a 4-step grid), ``--reg-steps`` updates; sampled with DDIM at 1, 2, 4 steps.

The teacher is sampled with DDIM at 1, 2, 4, 8, 16, 64 and 256 steps. Metrics on ``--num-eval``
samples from fixed noise: Frechet distance in the features of a CNN classifier trained on the
same training images (seed 0, shared by all seeds), against one half of the real images, with
the data-vs-data floor (the other half); distance to the teacher (RMS per sample against the
256-step teacher's sample from the same noise); wall time per sample (median of 3 timed batches
of 256 after one warm-up, --threads torch threads); training time per method (the regression baseline
includes generating its ODE pairs).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import fmt_mean_std, mean_std, require_data, write_result  # noqa: E402

from distill.diffusion.consistency import consistency_distillation  # noqa: E402
from distill.diffusion.feature_net import accuracy, data_floor, features, train_feature_net  # noqa: E402
from distill.diffusion.metrics import distance_to_teacher, frechet_distance, time_per_sample  # noqa: E402
from distill.diffusion.pipeline import generate, load_images, teacher_denoiser  # noqa: E402
from distill.diffusion.progressive import progressive_distillation  # noqa: E402
from distill.diffusion.regression import regression_distillation  # noqa: E402
from distill.diffusion.teacher import train_teacher  # noqa: E402

TEACHER_STEPS = (1, 2, 4, 8, 16, 64, 256)
STUDENT_STEPS = (1, 2, 4)
METHODS = ("progressive", "consistency", "regression")


def evaluate(model, steps, noise, eval_feats, feature_net, reference, timing_noise, samples=None):
    if samples is None:
        samples = generate(model, noise, steps, generator=torch.Generator().manual_seed(123))
    return {"fd": frechet_distance(features(feature_net, samples), eval_feats),
            "to_teacher": distance_to_teacher(samples, reference) if reference is not None else 0.0,
            "ms_per_sample": 1e3 * time_per_sample(lambda: generate(model, timing_noise, steps), len(timing_noise),
                                                   repeats=3, warmup=1)}


def run_seed(seed, args, images, feature_net, eval_feats, shape):
    log = lambda msg: print(f"[seed {seed}] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    torch.manual_seed(seed)
    teacher, history = train_teacher(teacher_denoiser(args.data, shape, args.size, args.arch), images,
                                     num_steps=args.teacher_steps, batch_size=128, lr=args.teacher_lr, seed=seed,
                                     progress=False)
    train_seconds = {"teacher": history["seconds"]}
    log(f"teacher trained in {history['seconds']:.0f} s")
    noise = torch.randn(args.num_eval, *shape, generator=torch.Generator().manual_seed(1000 + seed))
    timing_noise = torch.randn(256, *shape, generator=torch.Generator().manual_seed(2000 + seed))
    reference = generate(teacher, noise, 256)
    rows = {("teacher", n): evaluate(teacher, n, noise, eval_feats, feature_net, None if n == 256 else reference,
                                     timing_noise, reference if n == 256 else None) for n in TEACHER_STEPS}
    log("teacher evaluated")
    students, history = progressive_distillation(teacher, images, start_steps=256, end_steps=1,
                                                 num_steps_per_round=args.round_steps, lr=args.student_lr, seed=seed,
                                                 progress=False)
    train_seconds["progressive"] = sum(h["seconds"] for h in history)
    for n in STUDENT_STEPS:
        rows[("progressive", n)] = evaluate(students[n], n, noise, eval_feats, feature_net, reference, timing_noise)
    log(f"progressive: {train_seconds['progressive']:.0f} s")
    cm, history = consistency_distillation(teacher, images, num_steps=args.cd_steps, lr=args.student_lr, seed=seed,
                                           progress=False)
    train_seconds["consistency"] = history["seconds"]
    for n in STUDENT_STEPS:
        rows[("consistency", n)] = evaluate(cm, n, noise, eval_feats, feature_net, reference, timing_noise)
    log(f"consistency: {train_seconds['consistency']:.0f} s")
    pair_noise = torch.randn(args.pairs, *shape, generator=torch.Generator().manual_seed(3000 + seed))
    reg, history = regression_distillation(teacher, pair_noise, teacher_steps=64, max_student_steps=4,
                                           num_steps=args.reg_steps, lr=args.student_lr, seed=seed, progress=False)
    train_seconds["regression"] = history["seconds"]
    for n in STUDENT_STEPS:
        rows[("regression", n)] = evaluate(reg, n, noise, eval_feats, feature_net, reference, timing_noise)
    log(f"regression: {train_seconds['regression']:.0f} s")
    return {"rows": {f"{m}@{n}": v for (m, n), v in rows.items()}, "train_seconds": train_seconds}


def markdown(args, per_seed, floor, classifier_accuracy, budget_note):
    seeds = list(per_seed)
    def cell(key, metric, fmt):
        return fmt_mean_std([per_seed[s]["rows"][key][metric] for s in seeds], fmt)
    lines = [f"Data: {args.data}{budget_note}; seeds {', '.join(map(str, seeds))}; {args.num_eval} samples per "
             f"row from fixed noise. Fréchet distance (FD) in the features of a CNN classifier trained on the same "
             f"training images (test accuracy {100 * classifier_accuracy:.1f}%); **data-vs-data floor "
             f"{floor:.3f}** (two disjoint real halves of {args.num_eval}). 'to teacher': RMS per sample to the "
             f"256-step teacher's sample from the same noise. Time: ms per sample, median of 3 batches of 256, "
             f"{args.threads} torch thread{'s' if args.threads != 1 else ''}.", "",
             f"Budget per seed: teacher {args.arch or ('tiny_unet' if args.data == 'mnist' else 'time_mlp')} "
             f"({getattr(args, 'size', 'default')}) {args.teacher_steps} steps at lr {getattr(args, 'teacher_lr', 1e-3)}; progressive {args.round_steps} steps x 8 rounds; consistency "
             f"{args.cd_steps} steps; regression {args.reg_steps} steps on {args.pairs} ODE pairs; batch 128, "
             f"student lr {args.student_lr}.", "",
             "| model | steps (network calls) | FD | to teacher | ms / sample |", "|---|---|---|---|---|"]
    for method in ("teacher",) + METHODS:
        for n in (TEACHER_STEPS if method == "teacher" else STUDENT_STEPS):
            key = f"{method}@{n}"
            to_teacher = "-" if key == "teacher@256" else cell(key, "to_teacher", "{:.3f}")
            lines.append(f"| {method} | {n} | {cell(key, 'fd', '{:.2f}')} | {to_teacher} | {cell(key, 'ms_per_sample', '{:.3f}')} |")
    lines += ["", "Training time (s): " + ", ".join(
        f"{m} {fmt_mean_std([per_seed[s]['train_seconds'][m] for s in seeds], '{:.0f}')}" for m in ("teacher",) + METHODS)]
    fd = lambda key: mean_std([per_seed[s]["rows"][key]["fd"] for s in seeds])[0]  # noqa: E731
    ms = lambda key: mean_std([per_seed[s]["rows"][key]["ms_per_sample"] for s in seeds])[0]  # noqa: E731
    best = min(METHODS, key=lambda m: fd(f"{m}@1"))
    goals = {"best_1_step_student": best, "fd_1_step": fd(f"{best}@1"), "fd_teacher_64": fd("teacher@64"),
             "fd_teacher_1": fd("teacher@1"), "speedup_vs_teacher_256": ms("teacher@256") / ms(f"{best}@1")}
    goals["teacher_valid"] = goals["fd_teacher_64"] < goals["fd_teacher_1"]
    goals["fd_goal_met"] = goals["teacher_valid"] and goals["fd_1_step"] <= 2 * goals["fd_teacher_64"]
    goals["speed_goal_met"] = goals["speedup_vs_teacher_256"] >= 100
    verdict = ("met" if goals["fd_goal_met"] else "missed") if goals["teacher_valid"] else \
        "NOT ASSESSED: the teacher's FD grows with its steps, so the teacher failed and the comparison means nothing"
    lines += ["", f"Goals (best 1-step student: {best}): FD {goals['fd_1_step']:.2f} vs 2 x teacher@64 = "
              f"{2 * goals['fd_teacher_64']:.2f} ({verdict}); teacher's own 1-step "
              f"DDIM FD {goals['fd_teacher_1']:.2f}; wall time per sample {goals['speedup_vs_teacher_256']:.0f}x lower "
              f"than the 256-step teacher ({'met' if goals['speed_goal_met'] else 'missed'}, goal 100x)."]
    lines += ["", "Notes: multistep consistency sampling (Alg. 1) re-noises with fresh noise, so its distance to the "
              "teacher's sample from the same initial noise is large by design; the regression student is trained "
              "only on the teacher's own trajectory states, so at 2-4 DDIM steps it meets states it never saw. "
              "Times were measured on a 2-core machine shared with other jobs: compare them within a run."]
    return "\n".join(lines), goals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--subset", type=int, default=None, help="train on a class-balanced subset of N images")
    parser.add_argument("--teacher-steps", type=int, default=3000)
    parser.add_argument("--round-steps", type=int, default=300)
    parser.add_argument("--cd-steps", type=int, default=1500)
    parser.add_argument("--reg-steps", type=int, default=1500)
    parser.add_argument("--student-lr", type=float, default=3e-4)
    parser.add_argument("--pairs", type=int, default=4096, help="regression: teacher ODE pairs")
    parser.add_argument("--teacher-lr", type=float, default=1e-3)
    parser.add_argument("--size", choices=["default", "small"], default="default",
                        help="network size (small: TinyUNet 8-16 channels / TimeMLP 32 wide)")
    parser.add_argument("--arch", choices=["time_mlp", "tiny_unet"], default=None,
                        help="teacher network (default: time_mlp for digits, tiny_unet for MNIST)")
    parser.add_argument("--num-eval", type=int, default=None, help="samples per row (default: digits 898, mnist 1000)")
    parser.add_argument("--name", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    root = require_data("mnist") if args.data == "mnist" else None
    images, labels = load_images(args.data, "train", root)
    budget_note = ""
    if args.subset:
        from distill.data.datasets import build_dataset

        subset = build_dataset(args.data, "train", root=root).subset(args.subset, seed=0)
        images, labels = subset.inputs, subset.targets
        budget_note = f" (class-balanced training subset of {args.subset} images)"
    test_images, test_labels = load_images(args.data, "test", root)
    real = torch.cat([images, test_images]) if args.data == "digits" else test_images
    args.num_eval = args.num_eval or (len(real) // 2 if args.data == "digits" else 1000)
    feature_net = train_feature_net(images, labels, num_steps=400 if args.data == "digits" else 600)
    classifier_accuracy = accuracy(feature_net, test_images, test_labels)
    floor, eval_feats, _ = data_floor(feature_net, real[torch.randperm(len(real), generator=torch.Generator().manual_seed(7))[:2 * args.num_eval]])
    print(f"feature classifier {100 * classifier_accuracy:.1f}%, data floor FD {floor:.3f}", file=sys.stderr)
    shape = tuple(images.shape[1:])
    per_seed = {seed: run_seed(seed, args, images, feature_net, eval_feats, shape) for seed in args.seeds}
    text, goals = markdown(args, per_seed, floor, classifier_accuracy, budget_note)
    print(text)
    numbers = {"data": args.data, "settings": {k: v for k, v in vars(args).items() if k != "name"}, "floor_fd": floor,
               "classifier_accuracy": classifier_accuracy, "per_seed": per_seed, "goals": goals}
    write_result(args.name or f"diffusion_{args.data}", numbers, text, started)


if __name__ == "__main__":
    main()
