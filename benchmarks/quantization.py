"""Benchmark: students at FP32, W8A8, W4, W3 and W2 by post-training rounding, QAT and QAD.

    python benchmarks/quantization.py [--seeds 0 1 2] [--epochs 15] [--qat-epochs 3] [--threads 1]
                                      [--teacher RUN/model.safetensors] [--qad-teacher cnn|self]
                                      [--dataset fashion_mnist|cifar10] [--subset N] [--out DIR]

Fashion-MNIST (default): the CNN teacher of recipes/fashion_mnist_teacher.yaml is trained once
(seed 0) or reused (``--teacher``); for every seed the float student, an MLP 784-256-256-10
(recipes/fashion_mnist_fp32.yaml), is distilled from it for ``--epochs`` epochs (or reused with
``--fp32``). Then, for each precision, every layer quantized alike (no 8-bit first/last layer):

- **RTN min/max** and **RTN + clip search**: post-training round-to-nearest of the float student
  (recipes/fashion_mnist_rtn.yaml), step sizes from the full weight range or from a per-group
  search of the clipping range with the least squared rounding error; no training.
- **QAT**: the float student trained through the fake quantizers on hard labels alone
  (recipes/fashion_mnist_qad.yaml with no teacher), ``--qat-epochs`` epochs.
- **QAD**: the same budget, 0.9 x KL(T=4) to the teacher + 0.1 x hard-label CE. The teacher is
  the CNN (``--qad-teacher cnn``, default: the float student was distilled from it, so QAD
  continues the same objective) or the student's own float self (``--qad-teacher self``).

Sizes are the true packed sizes (``distill.quant.size_report``: codes, scales, zero points and
every float tensor left) of ``model.packed.safetensors``, whose loaded-back accuracy each run
checks against the fake-quantized one. ``--dataset cifar10`` runs the same protocol with a
ResNet-20 teacher (or ``--teacher``) and a CNN student, 32-64-128 + FC 256 unless
``--student-channels`` / ``--student-hidden`` say otherwise (random crop + flip).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, flow, fmt_mean_std, mean_std, require_data, write_result  # noqa: E402

from distill.artifacts import read_spec  # noqa: E402
from distill.recipe import load_recipe  # noqa: E402
from distill.runner import run_recipe  # noqa: E402

RECIPES = ROOT / "recipes"
PRECISIONS = {  # name -> quantize section (every layer alike)
    "W8A8": {"weight_bits": 8, "granularity": "per_channel", "activation_bits": 8, "activation_mode": "learned"},
    "W4 g32": {"weight_bits": 4, "group_size": 32},
    "W3 g32": {"weight_bits": 3, "group_size": 32},
    "W2 g32": {"weight_bits": 2, "group_size": 32},
}
METHODS = ("RTN min/max", "RTN + clip search", "QAT (no teacher)", "QAD")
KD_LOSSES = [{"name": "kl", "weight": 0.9, "temperature": 4.0}, {"name": "cross_entropy", "weight": 0.1}]
CE_LOSS = [{"name": "cross_entropy", "weight": 1.0}]



def setups(dataset: str, channels: list[int], hidden: int) -> dict[str, dict]:
    """Recipe trees (teacher, fp32, qat) for the dataset; Fashion-MNIST's come from recipes/."""
    if dataset == "fashion_mnist":
        trees = {role: load_recipe(RECIPES / f"fashion_mnist_{role}.yaml").to_dict() for role in ("teacher", "fp32", "qad")}
        trees["qad"].pop("quantize")
        return trees
    data = {"name": "cifar10", "root": None, "batch_size": 128, "eval_batch_size": 1000,
            "augment": {"name": "crop_flip", "padding": 4, "flip": True}}
    common = {"seed": 0, "data": data, "schedule": {"name": "cosine", "warmup_steps": 200},
              "train": {"log_every": 100}}
    teacher = {**common, "name": "cifar10-teacher", "output_dir": "runs/cifar10/teacher",
               "student": {"model": "resnet", "params": {"depth": 20}}, "losses": CE_LOSS,
               "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 0.0005}}
    student = {"model": "cnn", "params": {"channels": channels, "hidden": hidden}}
    fp32 = {**common, "name": "cifar10-fp32", "output_dir": "runs/cifar10/fp32", "student": student,
            "teacher": {"checkpoint": "runs/cifar10/teacher/model.safetensors"}, "losses": KD_LOSSES,
            "optimizer": {"name": "adamw", "lr": 0.002, "weight_decay": 0.0005}}
    qad = {**fp32, "name": "cifar10-qad", "output_dir": "runs/cifar10/qad",
           "optimizer": {"name": "adamw", "lr": 0.0005, "weight_decay": 0.0005}}
    return {"teacher": teacher, "fp32": fp32, "qad": qad}


def run(tree: dict, overrides: list[str]):
    recipe = load_recipe(tree, overrides)
    return run_recipe(recipe, overwrite=True, progress=sys.stderr.isatty(), measure_latency=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--dataset", choices=["fashion_mnist", "cifar10"], default="fashion_mnist")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="default: the teacher recipe's (8; CIFAR-10 30)")
    parser.add_argument("--epochs", type=int, default=15, help="float student epochs")
    parser.add_argument("--qat-epochs", type=int, default=3, help="QAT and QAD epochs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--teacher", type=Path, default=None, help="reuse this trained teacher (model.safetensors)")
    parser.add_argument("--fp32", type=Path, default=None, help="reuse this float student for every seed")
    parser.add_argument("--qad-teacher", choices=["cnn", "self"], default="cnn",
                        help="QAD's teacher: the CNN/ResNet teacher, or the student's own float self")
    parser.add_argument("--step-lr-scale", type=float, default=0.1, help="quantize.step_lr_scale of QAT/QAD")
    parser.add_argument("--subset", type=int, default=None, help="train on this many samples")
    parser.add_argument("--student-channels", type=int, nargs="+", default=[32, 64, 128], help="cifar10: the CNN student's")
    parser.add_argument("--student-hidden", type=int, default=256, help="cifar10: the CNN student's FC width")
    parser.add_argument("--out", type=Path, default=None, help="run folders (default runs/bench/quantization_<dataset>)")
    args = parser.parse_args()
    root = require_data("fashion-mnist" if args.dataset == "fashion_mnist" else "cifar10")
    out = args.out or ROOT / "runs" / "bench" / f"quantization_{args.dataset}"
    started = time.time()
    trees = setups(args.dataset, args.student_channels, args.student_hidden)
    common = [f"data.root={root}", f"train.threads={args.threads}"]
    if args.subset:
        common.append(f"data.train_subset={args.subset}")

    if args.teacher is not None:
        teacher_path = args.teacher
        teacher_metrics = json.loads((args.teacher.parent / "eval.json").read_text())
    else:
        print("teacher", flush=True)
        epochs = [f"train.epochs={args.teacher_epochs}"] if args.teacher_epochs else \
            ([] if args.dataset == "fashion_mnist" else ["train.epochs=30"])
        result = run(trees["teacher"], common + epochs + [f"output_dir={out / 'teacher'}"])
        teacher_path, teacher_metrics = result.model_path, result.metrics
    print(f"  teacher accuracy {teacher_metrics['accuracy']:.4f}", flush=True)
    # the CNN teacher's outputs are computed once for every run that distils from it (no augmentation
    # on Fashion-MNIST; CIFAR-10's random crops need the live teacher)
    cached_teacher = [f"teacher.checkpoint={teacher_path}"]
    if args.dataset == "fashion_mnist":
        cached_teacher += ["teacher.precompute=false", f"teacher.cache={{path: {out / 'teacher-cache'}, dtype: float32}}"]

    accuracy: dict[str, dict[str, list[float]]] = {"FP32": {"-": []}}
    sizes: dict[str, dict[str, int]] = {"FP32": {}}
    for method in METHODS:
        accuracy[method] = {precision: [] for precision in PRECISIONS}
        sizes[method] = {}
    fp32_bytes = None
    for seed in args.seeds:
        seed_dir = out / f"seed{seed}"
        if args.fp32 is not None:
            fp32_path = args.fp32
            fp32_accuracy = json.loads((args.fp32.parent / "eval.json").read_text())["accuracy"]
        else:
            result = run(trees["fp32"], common + cached_teacher + [
                f"seed={seed}", f"train.epochs={args.epochs}", f"output_dir={seed_dir / 'fp32'}"])
            fp32_path, fp32_accuracy = result.model_path, result.metrics["accuracy"]
        accuracy["FP32"]["-"].append(fp32_accuracy)
        print(f"seed {seed}: FP32 {fp32_accuracy:.4f}", flush=True)
        qad_teacher = cached_teacher if args.qad_teacher == "cnn" else [f"teacher.checkpoint={fp32_path}"]
        for precision, section in PRECISIONS.items():
            folder = precision.replace(" ", "_")
            runs = {
                "RTN min/max": (trees["qad"], {"method": "rtn", "weight_init": "minmax", **section},
                                ["teacher=null", f"losses={flow(CE_LOSS)}"]),
                "RTN + clip search": (trees["qad"], {"method": "rtn", "weight_init": "mse", **section},
                                      ["teacher=null", f"losses={flow(CE_LOSS)}"]),
                "QAT (no teacher)": (trees["qad"], {"method": "qat", "step_lr_scale": args.step_lr_scale, **section},
                                     ["teacher=null", f"losses={flow(CE_LOSS)}"]),
                "QAD": (trees["qad"], {"method": "qat", "step_lr_scale": args.step_lr_scale, **section},
                        qad_teacher + [f"losses={flow(KD_LOSSES)}"]),
            }
            for method, (tree, quantize, extra) in runs.items():
                overrides = common + extra + [
                    f"seed={seed}", f"train.epochs={args.qat_epochs}", f"student={flow({'checkpoint': str(fp32_path)})}",
                    f"quantize={flow(quantize)}", f"output_dir={seed_dir / folder / method.split(' ')[0].lower()}"]
                result = run(tree, overrides)
                metrics = result.metrics
                accuracy[method][precision].append(metrics["accuracy"])
                sizes[method][precision] = metrics["quantized_bytes"]
                fp32_bytes = metrics["fp32_bytes"]
                print(f"  {precision:7s} {method:18s} accuracy {metrics['accuracy']:.4f} "
                      f"({metrics['quantized_bytes']:,} bytes, {result.train_seconds:.0f} s)", flush=True)
    sizes["FP32"]["-"] = fp32_bytes

    def points(values: list[float]) -> list[float]:
        return [100 * v for v in values]

    fp32_mean = 100 * mean_std(accuracy["FP32"]["-"])[0]
    table = ["| method | precision | test accuracy % | Δ vs FP32 (points) | size (bytes) | compression |",
             "|---|---|---|---|---|---|",
             f"| FP32 | - | {fmt_mean_std(points(accuracy['FP32']['-']), '{:.2f}')} | - | {fp32_bytes:,} | 1.0x |"]
    for precision in PRECISIONS:
        for method in METHODS:
            values = points(accuracy[method][precision])
            size = sizes[method][precision]
            table.append(f"| {method} | {precision} | {fmt_mean_std(values, '{:.2f}')} | "
                         f"{mean_std(values)[0] - fp32_mean:+.2f} | {size:,} | {fp32_bytes / size:.1f}x |")

    def mean_points(method: str, precision: str) -> float:
        return 100 * mean_std(accuracy[method][precision])[0]

    w4, w2 = mean_points("QAD", "W4 g32"), mean_points("QAD", "W2 g32")
    rtn_plain, rtn_clip = mean_points("RTN min/max", "W2 g32"), mean_points("RTN + clip search", "W2 g32")
    goals = [
        ("W4 QAD within 0.5 points of FP32", fp32_mean - w4 <= 0.5, f"{w4:.2f}% vs {fp32_mean:.2f}% ({w4 - fp32_mean:+.2f})"),
        ("W2 QAD within 3 points of FP32", fp32_mean - w2 <= 3.0, f"{w2:.2f}% vs {fp32_mean:.2f}% ({w2 - fp32_mean:+.2f})"),
        ("W2 QAD >= 10 points above W2 RTN (min/max)", w2 - rtn_plain >= 10.0, f"{w2:.2f}% vs {rtn_plain:.2f}% ({w2 - rtn_plain:+.2f})"),
        ("W2 QAD >= 10 points above W2 RTN (clip search)", w2 - rtn_clip >= 10.0, f"{w2:.2f}% vs {rtn_clip:.2f}% ({w2 - rtn_clip:+.2f})"),
    ]
    goal_lines = ["| goal | result | numbers (means over seeds) |", "|---|---|---|"]
    goal_lines += [f"| {name} | {'met' if ok else '**missed**'} | {detail} |" for name, ok, detail in goals]
    student = "MLP 784-256-256-10" if args.dataset == "fashion_mnist" else \
        f"CNN {'-'.join(map(str, args.student_channels))} + FC {args.student_hidden}"
    teacher_spec = read_spec(teacher_path)
    teacher = f"{teacher_spec['model']} {json.dumps(teacher_spec.get('params', {}))}"
    if args.teacher is not None and (args.teacher.parent / "recipe.yaml").is_file():  # how the reused teacher was made
        made = load_recipe(args.teacher.parent / "recipe.yaml")
        teacher += (f", reused from {args.teacher} ({made.train.epochs} epochs on "
                    f"{made.data.train_subset or 'all'} training images)")
    markdown = "\n".join([
        f"{args.dataset}: teacher {teacher} (test accuracy {100 * teacher_metrics['accuracy']:.2f}%); float student "
        f"{student} distilled from it for {args.epochs} epochs"
        + (f" (reused: {args.fp32})" if args.fp32 else "") + f"; QAT/QAD {args.qat_epochs} epochs from the float "
        f"student (AdamW lr 5e-4, cosine, quantizer steps at lr x {args.step_lr_scale:g} without weight decay); "
        f"QAD teacher: {'the CNN teacher' if args.qad_teacher == 'cnn' else 'the float student itself'}; "
        f"seeds {', '.join(map(str, args.seeds))}" + (f"; **{args.subset} training samples only**" if args.subset else "") + ".",
        "",
        *table,
        "",
        *goal_lines,
        "",
        "Every layer at the named precision (W8A8: per-channel 8-bit weights and 8-bit per-tensor inputs with learned "
        "ranges, calibrated on one training batch; the others weight-only, symmetric, groups of 32 inputs). Sizes are "
        "the packed files' true sizes: codes + fp32 scales + float biases. 3-bit codes are stored one per byte "
        "(ONNX Runtime's MatMulNBits has no 3-bit kernel), so W3 is larger than W4. The packed model's accuracy "
        "equals the fake-quantized one in every run (checked by the run itself).",
    ])
    numbers = {"dataset": args.dataset, "seeds": args.seeds, "epochs": args.epochs, "qat_epochs": args.qat_epochs,
               "threads": args.threads, "subset": args.subset, "qad_teacher": args.qad_teacher,
               "step_lr_scale": args.step_lr_scale, "teacher": teacher_metrics, "precisions": PRECISIONS,
               "accuracy": accuracy, "bytes": sizes, "fp32_bytes": fp32_bytes,
               "goals": {name: {"met": ok, "detail": detail} for name, ok, detail in goals}}
    path = write_result(f"quantization_{args.dataset}", numbers, markdown, started)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
