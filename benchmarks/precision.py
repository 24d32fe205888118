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
eager fp32. Accuracy at equal epochs is not measured here: on a CPU without bf16 units bf16 is the
slow path, and ``auto`` does not take it.
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


def end_to_end(workload: str, precision: str, steps: int, batch: int, threads: int, folder: Path) -> float:
    (student_name, student_params), teacher_spec, shape = WORKLOADS[workload]
    x, y = data(shape, steps * batch)
    student = build_model(student_name, input_shape=shape, num_classes=10, **student_params)
    teacher = None
    if teacher_spec is not None:
        teacher = build_model(teacher_spec[0], input_shape=shape, num_classes=10, **teacher_spec[1]).eval()
    losses = [{"name": "kl", "temperature": 4.0}] if teacher is not None else [{"name": "cross_entropy"}]
    result = distill.distil(teacher, student, (x, y), steps=steps, batch_size=batch, losses=losses,
                            mixed_precision=precision, threads=threads, device="cpu", progress=False,
                            measure_latency=False, output_dir=folder / f"{workload}-{precision}".replace(" ", "_"),
                            overwrite=True, eval=(x[:batch], y[:batch]))
    return float(result.metrics["samples_per_s"])


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
    args = parser.parse_args()
    started = time.time()
    torch.set_num_threads(args.threads)
    has_units, why = cpu_bf16_units()
    auto = resolve_precision("auto", "cpu")
    rows: dict[str, dict[str, list[float]]] = {w: {"no": [], "bf16": []} for w in args.workloads}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(args.repeats):
            for workload in args.workloads:
                for precision in ("no", "bf16"):
                    rows[workload][precision].append(end_to_end(workload, precision, args.steps, args.batch,
                                                                args.threads, Path(folder)))
                    print(f"{workload} {precision}: {rows[workload][precision][-1]:.1f} samples/s", file=sys.stderr)
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
        f"**{describe_precision('auto', 'cpu')}** here.",
        f"End to end through `distill.distil`, {args.steps} optimiser steps of batch {args.batch} per run, "
        f"{args.threads} thread(s), random inputs; variants alternate, {args.repeats} repeats, median of distill's "
        "samples/s (warm-up and the first step's allocation included in every run alike).", "",
        "| workload | fp32 samples/s | bf16 autocast samples/s | bf16 / fp32 |", "|---|---|---|---|"]
    for workload, values in medians.items():
        lines.append(f"| {workload} | {values['no']:.1f} | {values['bf16']:.1f} | {values['bf16'] / values['no']:.2f}x |")
    lines += ["", f"Hand-written PyTorch training step of the CNN (batch {args.batch}, AdamW, fp32, {4 * args.steps} "
              f"timed steps after 2 warm-up steps, median of {args.repeats}):", "",
              "| variant | samples/s | vs eager |", "|---|---|---|"]
    for variant, value in raw_medians.items():
        lines.append(f"| {variant} | {value:.1f} | {value / raw_medians['eager']:.2f}x |")
    ratios = [values["bf16"] / values["no"] for values in medians.values()]
    lines += ["", f"Goal (>= 1.5x end-to-end from bf16 on the CIFAR-10 and transformer workloads): "
              + ("met" if min(ratios) >= 1.5 else f"not on this CPU: bf16 / fp32 from {min(ratios):.2f}x to "
                 f"{max(ratios):.2f}x") + (" — this CPU has no bf16 units, so `auto` keeps fp32, the faster path here; "
                                           "the goal needs an AMX / AVX-512 BF16 CPU." if not has_units else "")]
    numbers = {"cpu_bf16_units": has_units, "why": why, "auto": auto, "end_to_end": rows, "medians": medians,
               "hand_written": raw, "hand_written_medians": raw_medians,
               "settings": {"steps": args.steps, "batch": args.batch, "threads": args.threads, "repeats": args.repeats}}
    write_result("precision", numbers, "\n".join(lines), started)


if __name__ == "__main__":
    main()
