"""Benchmark: training throughput in fp32 vs bf16 autocast (vs channels_last, vs torch.compile) on this
CPU, and what ``train.mixed_precision: auto`` picks here.

    python benchmarks/precision.py [--steps 8] [--repeats 3] [--batch 64] [--threads 2]

End to end through ``distill.distil`` (the loop users run: data loader, Accelerate autocast, losses in
fp32, AdamW), on random CIFAR-10-shaped inputs (3 x 32 x 32, 10 classes) or MNIST-shaped for the MLP:

- students alone (cross-entropy): the CNN, ResNet-20, ViT (dim 128, depth 4) and the MLP (1200-1200);
- KD (forward KL, T = 4): ResNet-20 teacher (its forward pass under the same autocast) -> CNN student.

Each workload runs ``--steps`` optimiser steps per variant; variants alternate, ``--repeats`` times, and
the median of distill's own ``samples_per_s`` is kept (so load from other processes falls on all alike).
Hand-written PyTorch steps on the CNN measure ``channels_last`` and ``torch.compile`` (inductor) beside
eager fp32; end to end, ``channels_last`` is tried on the convolutional workloads (the models' weights
NHWC through ``train.channels_last``). Accuracy at equal epochs: the CNN and the ViT trained on real CIFAR-10
(``--accuracy-subset`` images, ``--accuracy-epochs`` epochs, ``--accuracy-seeds``) in fp32 and bf16.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from common import write_result  # noqa: E402

import distill  # noqa: E402
from distill.models import build_model  # noqa: E402
from distill.training.precision import cpu_bf16_units, describe_precision, resolve_precision  # noqa: E402

CIFAR, MNIST = (3, 32, 32), (1, 28, 28)
WORKLOADS = {  # name: (student, teacher or None, input shape)
    "cnn": (("cnn", {}), None, CIFAR),
    "resnet20": (("resnet", {"depth": 20}), None, CIFAR),
    "vit": (("vit", {"dim": 128, "depth": 4, "heads": 4}), None, CIFAR),
    "mlp": (("mlp", {"hidden": [1200, 1200]}), None, MNIST),
    "kd resnet20 -> cnn": (("cnn", {}), ("resnet", {"depth": 20}), CIFAR),
}


def data(shape, count: int):
    generator = torch.Generator().manual_seed(0)
    return torch.randn(count, *shape, generator=generator), torch.randint(0, 10, (count,), generator=generator)


CONV = ("cnn", "resnet20", "kd resnet20 -> cnn")  # workloads with convolutions: channels_last is tried on them


def variant_parts(variant: str) -> tuple[str, bool]:
    """``"bf16+cl"`` -> (``"bf16"``, channels_last True); ``"no"`` -> (``"no"``, False)."""
    precision, _, layout = variant.partition("+")
    return precision, layout == "cl"


def end_to_end(workload: str, variant: str, steps: int, batch: int, threads: int, folder: Path) -> float:
    (student_name, student_params), teacher_spec, shape = WORKLOADS[workload]
    precision, channels_last = variant_parts(variant)
    x, y = data(shape, steps * batch)
    student = build_model(student_name, input_shape=shape, num_classes=10, **student_params)
    teacher = None
    if teacher_spec is not None:
        teacher = build_model(teacher_spec[0], input_shape=shape, num_classes=10, **teacher_spec[1]).eval()
    losses = [{"name": "kl", "temperature": 4.0}] if teacher is not None else [{"name": "cross_entropy"}]
    result = distill.distil(teacher, student, (x, y), steps=steps, batch_size=batch, losses=losses,
                            mixed_precision=precision, channels_last=channels_last, threads=threads, device="cpu",
                            progress=False, measure_latency=False, output_dir=folder / f"{workload}-{variant}".replace(" ", "_").replace(">", ""),
                            overwrite=True, eval=(x[:batch], y[:batch]))
    return float(result.metrics["samples_per_s"])


ACCURACY_MODELS = {"cnn": ("cnn", {}), "vit": ("vit", {"dim": 128, "depth": 4, "heads": 4})}


def cifar10(subset: int, seed: int = 0):
    """A seeded ``subset`` of CIFAR-10's 50k training images and the whole 10k test split (distill's loader)."""
    from common import require_data
    from distill.data.datasets import build_dataset

    root = require_data("cifar10")
    train, test = build_dataset("cifar10", "train", root=root), build_dataset("cifar10", "test", root=root)
    order = torch.randperm(len(train.targets), generator=torch.Generator().manual_seed(seed))[:subset]
    return (train.inputs[order], train.targets[order]), (test.inputs, test.targets)


def accuracy_run(model: str, variant: str, seed: int, epochs: int, train, test, threads: int, folder: Path) -> dict:
    """Test accuracy and training samples/s of ``model`` trained ``epochs`` epochs on CIFAR-10 with ``variant``."""
    name, params = ACCURACY_MODELS[model]
    precision, channels_last = variant_parts(variant)
    torch.manual_seed(seed)
    student = build_model(name, input_shape=CIFAR, num_classes=10, **params)
    result = distill.distil(None, student, train, eval=test, epochs=epochs, batch_size=128, lr=2e-3, weight_decay=0.05,
                            schedule={"name": "cosine", "warmup_steps": 50}, losses=[{"name": "cross_entropy"}],
                            mixed_precision=precision, channels_last=channels_last, threads=threads, device="cpu",
                            progress=False, seed=seed,
                            measure_latency=False, output_dir=folder / f"acc-{model}-{variant}-{seed}", overwrite=True)
    return {"accuracy": float(result.metrics["accuracy"]), "samples_per_s": float(result.metrics["samples_per_s"]),
            "train_seconds": float(result.train_seconds)}


def hand_written(variant: str, steps: int, batch: int) -> float:
    """Samples/s of a plain PyTorch training step of the CNN: eager fp32, channels_last, torch.compile."""
    torch.manual_seed(0)
    model = build_model("cnn", input_shape=CIFAR, num_classes=10)
    x, y = data(CIFAR, batch)
    if variant == "channels_last":
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    run = torch.compile(step) if variant == "compiled" else step
    run()  # warm-up (and compilation)
    run()
    start = time.perf_counter()
    for _ in range(steps):
        run()
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workloads", nargs="+", default=list(WORKLOADS))
    parser.add_argument("--skip-compile", action="store_true")
    parser.add_argument("--accuracy-epochs", type=int, default=3, help="epochs of the accuracy runs (0: skip them)")
    parser.add_argument("--accuracy-subset", type=int, default=10000, help="CIFAR-10 training images of the accuracy runs")
    parser.add_argument("--accuracy-seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--accuracy-models", nargs="+", default=list(ACCURACY_MODELS))
    args = parser.parse_args()
    started = time.time()
    torch.set_num_threads(args.threads)
    has_units, why = cpu_bf16_units()
    auto = resolve_precision("auto", "cpu")
    variants_of = lambda w: ["no", "bf16"] + (["no+cl", "bf16+cl"] if w in CONV else [])  # noqa: E731
    rows: dict[str, dict[str, list[float]]] = {w: {v: [] for v in variants_of(w)} for w in args.workloads}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for workload in args.workloads:
                for variant in variants_of(workload):
                    rows[workload][variant].append(end_to_end(workload, variant, args.steps, args.batch,
                                                              args.threads, Path(folder)))
                    print(f"{workload} {variant}: {rows[workload][variant][-1]:.1f} samples/s", file=sys.stderr)
        accuracy: dict[str, dict[str, list[dict]]] = {}
        if args.accuracy_epochs:
            train, test = cifar10(args.accuracy_subset)
            for seed in args.accuracy_seeds:
                for model in args.accuracy_models:
                    for variant in ["no", "bf16"] + (["bf16+cl"] if model == "cnn" else []):
                        record = accuracy_run(model, variant, seed, args.accuracy_epochs, train, test, args.threads,
                                              Path(folder))
                        accuracy.setdefault(model, {}).setdefault(variant, []).append(record)
                        print(f"accuracy {model} {variant} seed {seed}: {record}", file=sys.stderr)
    variants = ["eager", "channels_last"] + ([] if args.skip_compile else ["compiled"])
    raw: dict[str, list[float]] = {v: [] for v in variants}
    for _ in range(args.repeats):
        for variant in variants:
            raw[variant].append(hand_written(variant, 4 * args.steps, args.batch))
            print(f"cnn hand-written {variant}: {raw[variant][-1]:.1f} samples/s", file=sys.stderr)

    medians = {w: {p: statistics.median(v) for p, v in r.items()} for w, r in rows.items()}
    raw_medians = {v: statistics.median(s) for v, s in raw.items()}
    lines = [
        f"CPU bf16 units: {'yes' if has_units else 'no'} ({why}); `train.mixed_precision: auto` picks "
        f"**{describe_precision('auto', 'cpu')}** here, and `train.channels_last: auto` NHWC weights for the "
        "convolutional students.",
        f"End to end through `distill.distil`, {args.steps} optimiser steps of batch {args.batch} per run, "
        f"{args.threads} thread(s), random inputs; variants alternate, {args.repeats} repeats, median of distill's "
        "samples/s (warm-up and the first step's allocation included in every run alike).", "",
        "| workload | fp32 samples/s | bf16 autocast samples/s | bf16 / fp32 | fp32 channels_last | bf16 channels_last "
        "| bf16 channels_last / fp32 |", "|---|---|---|---|---|---|---|"]
    for workload, values in medians.items():
        cl = (f"{values['no+cl']:.1f} | {values['bf16+cl']:.1f} | {values['bf16+cl'] / values['no']:.2f}x"
              if "bf16+cl" in values else "- | - | -")
        lines.append(f"| {workload} | {values['no']:.1f} | {values['bf16']:.1f} | {values['bf16'] / values['no']:.2f}x "
                     f"| {cl} |")
    lines += ["", f"Hand-written PyTorch training step of the CNN (batch {args.batch}, AdamW, fp32, {4 * args.steps} "
              f"timed steps after 2 warm-up steps, median of {args.repeats}):", "",
              "| variant | samples/s | vs eager |", "|---|---|---|"]
    for variant, value in raw_medians.items():
        lines.append(f"| {variant} | {value:.1f} | {value / raw_medians['eager']:.2f}x |")
    from common import fmt_mean_std, mean_std

    if accuracy:
        names = {"no": "fp32", "bf16": "bf16 autocast", "bf16+cl": "bf16 autocast, channels_last"}
        lines += ["", f"Accuracy at equal epochs: CIFAR-10, {args.accuracy_subset:,} training images (seeded subset), "
                  f"the 10,000 test images, {args.accuracy_epochs} epochs, batch 128, AdamW lr 2e-3, wd 0.05, cosine; "
                  f"seeds {args.accuracy_seeds}; samples/s over whole epochs (distill's own count), {args.threads} "
                  "thread(s):", "", "| model | precision | test accuracy % | per seed | train samples/s | vs fp32 |",
                  "|---|---|---|---|---|---|"]
        for model, by_variant in accuracy.items():
            base = statistics.median(r["samples_per_s"] for r in by_variant["no"])
            for variant, records in by_variant.items():
                rate = statistics.median(r["samples_per_s"] for r in records)
                values = [100 * r["accuracy"] for r in records]
                per_seed = ", ".join(f"{v:.2f}" for v in values)
                lines.append(f"| {model} | {names[variant]} | {fmt_mean_std(values, '{:.2f}')} | {per_seed} | {rate:.0f} "
                             f"| {rate / base:.2f}x |")
    goal_workloads = [w for w in medians if w != "mlp"]  # the CIFAR-10 (conv) and transformer workloads
    best = {w: max(v for k, v in medians[w].items() if k.startswith("bf16")) / medians[w]["no"] for w in goal_workloads}
    speed_met = bool(best) and min(best.values()) >= 1.5
    verdict = [f"Goal (>= 1.5x end-to-end training throughput from bf16 on the CIFAR-10 and transformer workloads, "
               f"accuracy within noise): throughput {'met' if speed_met else 'missed'} (best bf16 variant / fp32: "
               + ", ".join(f"{w} {r:.2f}x" for w, r in best.items()) + ")"]
    if accuracy:
        within = []
        for model, by_variant in accuracy.items():
            base = [100 * r["accuracy"] for r in by_variant["no"]]
            for variant, records in by_variant.items():
                if variant == "no":
                    continue
                values = [100 * r["accuracy"] for r in records]
                spread = max(mean_std(base)[1], mean_std(values)[1], 0.25)
                gap = statistics.mean(values) - statistics.mean(base)
                within.append(abs(gap) <= 2 * spread)
                verdict.append(f"{model} {variant}: {gap:+.2f} points vs fp32 (noise: 2 x {spread:.2f})")
        verdict.append(f"accuracy within noise: {'yes' if all(within) else 'no'}")
    if not has_units:
        verdict.append("this CPU has no bf16 units, so `auto` keeps fp32, the faster path here; the goal needs an "
                       "AMX / AVX-512 BF16 CPU")
    lines += ["", "; ".join(verdict) + "."]
    numbers = {"cpu_bf16_units": has_units, "why": why, "auto": auto, "end_to_end": rows, "medians": medians,
               "accuracy": accuracy,
               "hand_written": raw, "hand_written_medians": raw_medians,
               "settings": {"steps": args.steps, "batch": args.batch, "threads": args.threads, "repeats": args.repeats}}
    write_result("precision", numbers, "\n".join(lines), started)


if __name__ == "__main__":
    main()
