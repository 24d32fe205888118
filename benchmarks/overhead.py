"""Benchmark 3: overhead of `distill run` and of the Python API against a minimal hand-written loop.

    python benchmarks/overhead.py [--steps 400] [--repeats 3] [--threads 1] [--precision no|bf16]

All three train the Hinton MNIST student (784-800-800-10) from a live 784-1200-1200-10 teacher
with 0.9 x KL(T=20) + 0.1 x CE, AdamW, cosine schedule, batch 128, for the same number of
steps on the same data, alternating in one process (recipe, API, hand, recipe, API, hand, ...).
The API side is ``distill.distil(teacher, student, (inputs, targets), ...)`` on plain modules and
tensors. Samples per second are medians over the repeats; goal: distill / hand >= 0.9 for both.
The distill side is timed over its whole training phase (loop, logging, progress
bookkeeping, the final checkpoint); data loading and the final evaluation are excluded on
both sides.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import ROOT, hinton_teacher_file, require_data, write_result  # noqa: E402

from distill.data import build_dataset  # noqa: E402
from distill.models import build_model  # noqa: E402
from distill.recipe import load_recipe  # noqa: E402
from distill.runner import run_recipe  # noqa: E402
from distill.training.optim import build_optimizer, build_scheduler  # noqa: E402

TEMPERATURE = 20.0


def hand_written(recipe, teacher_path: Path, steps: int, precision: str = "no") -> float:
    """The same computation as `distill run`, written out by hand; returns samples/s."""
    torch.manual_seed(recipe.seed)
    data = build_dataset("mnist", "train", root=recipe.data.root)
    inputs, targets = data.inputs, data.targets
    spec = {"input_shape": tuple(data.input_shape), "num_classes": data.num_classes}
    student = build_model("mlp", **spec, hidden=[800, 800])
    teacher = build_model("mlp", **spec, hidden=[1200, 1200], dropout=0.5, input_dropout=0.2)
    from distill.artifacts import load_weights

    load_weights(teacher, teacher_path).eval().requires_grad_(False)
    optimizer = build_optimizer(recipe.optimizer, student.parameters())
    scheduler = build_scheduler(recipe.schedule, optimizer, steps)
    batch = recipe.data.batch_size
    per_epoch = len(inputs) // batch
    student.train()
    start = time.perf_counter()
    step = 0
    epoch = 0
    while step < steps:
        order = torch.randperm(len(inputs), generator=torch.Generator().manual_seed(epoch))
        for i in range(per_epoch):
            if step >= steps:
                break
            ids = order[i * batch:(i + 1) * batch]
            x, y = inputs[ids], targets[ids]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):  # as Accelerate does
                student_logits = student(x)
                with torch.inference_mode():
                    teacher_logits = teacher(x)
            student_logits, teacher_logits = student_logits.float(), teacher_logits.float().clone()  # losses in fp32
            kl = F.kl_div(F.log_softmax(student_logits / TEMPERATURE, -1), F.log_softmax(teacher_logits / TEMPERATURE, -1),
                          log_target=True, reduction="batchmean") * TEMPERATURE ** 2
            loss = 0.9 * kl + 0.1 * F.cross_entropy(student_logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
        epoch += 1
    elapsed = time.perf_counter() - start
    return steps * batch / elapsed


def python_api(recipe, teacher_path: Path, steps: int, work: Path, precision: str = "no") -> float:
    """The same computation through ``distill.distil`` on plain objects; returns samples/s."""
    import distill
    from distill.artifacts import load_weights

    torch.manual_seed(recipe.seed)
    data = build_dataset("mnist", "train", root=recipe.data.root)
    spec = {"input_shape": tuple(data.input_shape), "num_classes": data.num_classes}
    student = build_model("mlp", **spec, hidden=[800, 800])
    teacher = build_model("mlp", **spec, hidden=[1200, 1200], dropout=0.5, input_dropout=0.2)
    load_weights(teacher, teacher_path)
    result = distill.distil(
        teacher, student, (data.inputs, data.targets), losses=[term.model_dump(exclude_none=True) for term in recipe.losses],
        optimizer=recipe.optimizer.model_dump(), schedule=recipe.schedule.model_dump(), steps=steps,
        batch_size=recipe.data.batch_size, threads=recipe.train.threads, seed=recipe.seed, output_dir=work / "api",
        overwrite=True, progress=False, measure_latency=False, mixed_precision=precision)
    return result.state.samples / result.train_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--precision", default="no", choices=["no", "bf16"],
                        help="all three loops in fp32 (no) or bf16 autocast (bf16; result overhead_bf16)")
    args = parser.parse_args()
    root = require_data("mnist")
    started = time.time()
    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="distill-overhead-"))
    teacher_path = hinton_teacher_file(work / "teacher.safetensors")
    recipe = load_recipe(ROOT / "recipes" / "hinton_mnist_distilled.yaml", [
        f"data.root={root}", f"teacher.checkpoint={teacher_path}", f"train.steps={args.steps}",
        f"train.threads={args.threads}", "train.eval_every_epoch=false", f"output_dir={work / 'run'}",
        f"train.mixed_precision={args.precision}"])
    distill_sps, api_sps, hand_sps = [], [], []
    for repeat in range(args.repeats):
        result = run_recipe(recipe, overwrite=True, progress=False, measure_latency=False)
        distill_sps.append(result.state.samples / result.train_seconds)
        api_sps.append(python_api(recipe, teacher_path, args.steps, work, args.precision))
        hand_sps.append(hand_written(recipe, teacher_path, args.steps, args.precision))
        print(f"repeat {repeat}: distill run {distill_sps[-1]:.0f} samples/s, distill.distil {api_sps[-1]:.0f}, "
              f"hand-written {hand_sps[-1]:.0f}", flush=True)
    ratios = [d / h for d, h in zip(distill_sps, hand_sps)]
    api_ratios = [a / h for a, h in zip(api_sps, hand_sps)]
    ratio = statistics.median(distill_sps) / statistics.median(hand_sps)
    api_ratio = statistics.median(api_sps) / statistics.median(hand_sps)
    verdict = "met" if min(ratio, api_ratio) >= 0.9 else "missed"
    markdown = "\n".join([
        "| loop | samples/s (median) | per repeat |",
        "|---|---|---|",
        f"| `distill run` | {statistics.median(distill_sps):.0f} | {', '.join(f'{v:.0f}' for v in distill_sps)} |",
        f"| `distill.distil` (Python API) | {statistics.median(api_sps):.0f} | {', '.join(f'{v:.0f}' for v in api_sps)} |",
        f"| hand-written PyTorch | {statistics.median(hand_sps):.0f} | {', '.join(f'{v:.0f}' for v in hand_sps)} |",
        "",
        f"Ratio distill run / hand-written: **{ratio:.3f}** (per repeat: {', '.join(f'{r:.3f}' for r in ratios)}); "
        f"distill.distil / hand-written: **{api_ratio:.3f}** (per repeat: {', '.join(f'{r:.3f}' for r in api_ratios)}); "
        f"goal >= 0.9 for both: **{verdict}**. Workload: Hinton MNIST student 784-800-800-10 with a live "
        f"784-1200-1200-10 teacher, 0.9 x KL(T=20) + 0.1 x CE, AdamW, batch 128, {args.steps} steps per run, "
        f"{args.repeats} alternating repeats, {args.threads} torch thread(s), "
        + ("fp32 on all three." if args.precision == "no" else "bf16 autocast on all three (losses in fp32)."),
    ])
    numbers = {"precision": args.precision, "steps": args.steps, "repeats": args.repeats, "threads": args.threads, "distill_samples_per_s": distill_sps,
               "api_samples_per_s": api_sps, "hand_samples_per_s": hand_sps, "ratio_of_medians": ratio, "ratios": ratios,
               "api_ratio_of_medians": api_ratio, "api_ratios": api_ratios}
    path = write_result("overhead" if args.precision == "no" else f"overhead_{args.precision}", numbers, markdown, started)
    print(markdown)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
