"""``distill bench``: teacher (eager), student (eager) and every exported variant, timed side by side.

All in one process with one thread count (torch and onnxruntime intra-op threads set
explicitly): median of repeated runs after warm-up, batch 1 and batch 64, on the same held-out
sample. Variants are read from an export folder (each ``<target>-<precision>/card.json``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distill.artifacts import load_model
from distill.export.card import read_card
from distill.export.runtime import EagerRunner, ExecuTorchRunner, OrtRunner, latency, run_batched
from distill.export.source import ExportError, load_student


def variant_folders(export_dir: Path) -> list[Path]:
    folders = sorted(p.parent for p in Path(export_dir).glob("*/card.json"))
    if not folders:
        raise ExportError(f"{export_dir} holds no exported variant (no */card.json); run `distill export` first")
    return folders


def runner_for(folder: Path, card: dict[str, Any], threads: int):
    if card["target"] == "mobile":
        return ExecuTorchRunner({int(b): folder / name for b, name in card["runtime"]["programs"].items()}, threads)
    return OrtRunner(folder / card["artifact"]["file"], threads)


def bench(export_dir: Path, *, teacher: Path | None = None, threads: int = 1, repeats: int = 50,
          accuracy_samples: int | None = None) -> dict[str, Any]:
    """Rows ``{name, runtime, precision, bytes, accuracy, b1_ms, b64_per_sample_ms, status}``, teacher first."""
    torch.set_num_threads(threads)
    folders = variant_folders(export_dir)
    cards = {folder: read_card(folder) for folder in folders}
    first = next(iter(cards.values()))
    source = first["source"]
    student = load_student(source["checkpoint"], data=first["accuracy"]["dataset"], root=source.get("data_root") or None)
    test = student.dataset("test")
    count = len(test) if accuracy_samples is None else min(accuracy_samples, len(test))
    inputs, targets = test.inputs[:count], test.targets[:count].numpy()
    sample = inputs[:1].numpy()
    rows: list[dict[str, Any]] = []

    def measure(name: str, runtime: str, precision: str, runner, size: int, status: str = "-") -> None:
        accuracy = float((run_batched(runner, inputs).argmax(-1) == targets).mean())
        rows.append({"name": name, "runtime": runtime, "precision": precision, "bytes": size, "accuracy": accuracy,
                     **latency(runner, sample, repeats=repeats), "status": status})

    teacher_path = Path(teacher) if teacher is not None else (Path(source["teacher_checkpoint"])
                                                               if source.get("teacher_checkpoint") else None)
    if teacher_path is not None:
        if not teacher_path.is_file():
            raise ExportError(f"teacher checkpoint {teacher_path} does not exist; pass --teacher")
        teacher_model, spec = load_model(teacher_path)
        measure(f"teacher ({spec['model']})", "pytorch-eager", "fp32", EagerRunner(teacher_model, threads),
                teacher_path.stat().st_size)
    measure(f"student ({student.spec['model']})", "pytorch-eager", "packed" if student.quantized else "fp32",
            EagerRunner(student.model, threads), student.checkpoint.stat().st_size)
    for folder, card in cards.items():
        if card["source"]["sha256"] != source["sha256"]:
            raise ExportError(f"{folder} was exported from another checkpoint ({card['source']['checkpoint']}) than "
                              f"{folders[0]}; bench one student's export folder at a time")
        measure(folder.name, card["runtime"]["name"], card["precision"], runner_for(folder, card, threads),
                card["artifact"]["bytes"], card["status"])
    base = rows[0]
    for row in rows:
        row["speedup_b1"] = base["b1_ms"] / row["b1_ms"]
        row["speedup_b64"] = base["b64_ms"] / row["b64_ms"]
    return {"threads": threads, "samples": count, "dataset": student.data_name, "baseline": base["name"],
            "rows": rows}
