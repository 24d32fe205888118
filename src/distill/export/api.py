"""``Exporter``: one student -> a verified variant folder per (target, precision).

What a target builds, in which precisions and with which runtime comes from its registered
:class:`~distill.export.targets.Target` (:mod:`distill.export.targets`); this module runs the part
every target shares. Each variant folder holds the artifact, ``card.json`` and ``card.md``. Every
artifact is loaded back in its own runtime and run on the held-out split; its logits are compared with the eager
reference (:mod:`distill.export.parity`), its accuracy and latency measured. A variant outside
its tolerance is *refused*: its folder and card stay (status ``refused``) and the caller exits
non-zero.
"""
from __future__ import annotations

import datetime as dt
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.export import onnx_cpu
from distill.export.card import write_card
from distill.export.parity import parity
from distill.export.runtime import EagerRunner, as_numpy, latency, rows, run_batched
from distill.export.source import ExportError, Student, file_sha256, packed_modules
from distill.export.targets import TARGETS, Built, get_target  # noqa: F401 (TARGETS: re-exported)

MARKER = ".distill-export"


def default_precisions(target: str, student: Student) -> list[str]:
    """All of a target's precisions that apply: those writing n-bit codes only for a student holding them."""
    bits = {module.bits for module in packed_modules(student.model).values()}
    return get_target(target).default_precisions(bits)


def check_request(target: str, precisions: list[str]) -> None:
    """Refuse an unknown target (naming the closest), a precision it lacks, or a runtime it needs that is
    not installed (naming how to install it): before any student is loaded."""
    spec = get_target(target)
    spec.check_precisions(precisions)
    spec.check_runtime()


@dataclass
class ExportOptions:
    threads: int = 1
    max_abs_diff: float | None = None  # --tolerance
    min_agreement: float | None = None
    samples: int | None = None  # held-out samples for parity and accuracy (None: the whole split)
    calibration_samples: int = 512
    latency_repeats: int = 50
    command: str = ""


def class_names(student: Student) -> list[str] | None:
    """The class names the model file records (spec ``classes``), else ``"0" .. "K-1"``; None for an
    embedding model."""
    recorded = student.spec.get("classes")
    if isinstance(recorded, list) and len(recorded) == student.num_classes:
        return [str(name) for name in recorded]
    return None if student.num_classes is None else [str(k) for k in range(student.num_classes)]


def normalisation(inputs: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) such that input = (pixel / 255 - mean) / std, read off the held-out data's
    range (its darkest pixel is 0, its brightest 255: true of every built-in dataset's test split)."""
    low = inputs.amin(dim=(0, 2, 3)).double()
    high = inputs.amax(dim=(0, 2, 3)).double()
    std = 1.0 / (high - low)
    mean = -low * std
    return [round(float(m), 6) for m in mean], [round(float(s), 6) for s in std]


class Exporter:
    """Exports one student; eager logits, fp32 ONNX size and eager latency are computed once and shared."""

    def __init__(self, student: Student, out_dir: Path, options: ExportOptions):
        self.student, self.out_dir, self.options = student, Path(out_dir), options
        torch.set_num_threads(options.threads)
        test = student.dataset("test")
        count = len(test) if options.samples is None else min(options.samples, len(test))
        self.inputs = rows(test.inputs, 0, count)
        self.targets = None if test.targets is None else test.targets[:count]
        self.classes = list(test.classes) if test.classes is not None else class_names(student)
        eager = EagerRunner(student.model, options.threads)
        self.eager_logits = run_batched(eager, self.inputs)
        self.eager_accuracy = self._accuracy(self.eager_logits)
        self.sample = rows(as_numpy(self.inputs), 0, 1)
        self.eager_latency = latency(eager, self.sample, repeats=options.latency_repeats)
        self._fp32_proto = None
        if student.tokens is None:
            mean, std = normalisation(test.inputs)
            self.meta = {"name": f"{student.spec['model']} student ({student.data_name})",
                         "input_shape": list(student.input_shape), "classes": self.classes, "mean": mean, "std": std}
        else:
            from distill.export.text import text_meta

            self.meta = text_meta(student, self.classes)

    def _accuracy(self, logits) -> float | None:
        if self.targets is None or self.student.num_classes is None:
            return None
        return float((logits.argmax(-1) == self.targets.numpy()).mean())

    @property
    def fp32_proto(self):
        if self._fp32_proto is None:
            self._fp32_proto = onnx_cpu.to_onnx(self.student.model, self.student.input_shape, self.student.tokens,
                                                onnx_cpu.output_name_of(self.student))
        return self._fp32_proto

    # -- artifacts -------------------------------------------------------------------------------------
    def build(self, target: str, precision: str, folder: Path) -> Built:
        """Write the artifact into ``folder``; returns (artifact path, runner, runtime facts): the target's build."""
        return get_target(target).build(self, precision, folder)

    def export(self, target: str, precision: str) -> dict[str, Any]:
        """Build, verify and describe one variant; returns its card (``status`` verified or refused)."""
        spec = get_target(target)
        spec.check_precisions([precision])
        spec.check_runtime()
        folder = self.out_dir / f"{target}-{precision}"
        if folder.exists():
            if any(folder.iterdir()) and not any((folder / name).is_file() for name in (MARKER, "card.json")):
                raise ExportError(f"{folder} exists and is not an export folder (no card.json); choose another --out")
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / MARKER).touch()  # this folder is ours to replace, even when an export stops half-way
        path, runner, runtime = spec.build(self, precision, folder)
        logits = run_batched(runner, self.inputs)
        tolerance = spec.tolerance(precision).with_overrides(self.options.max_abs_diff, self.options.min_agreement)
        source_tokens = self.student.tokens
        embedding = source_tokens is not None and self.student.num_classes is None
        check = parity(logits, self.eager_logits, tolerance, kind="embedding" if embedding else "logits")
        check["reference"] = ("eager PyTorch, packed student (its integer codes dequantized)" if self.student.quantized
                              else "eager PyTorch, float student")
        timing = latency(runner, self.sample, repeats=self.options.latency_repeats)
        artifact_bytes = path.stat().st_size
        source = self.student
        batch_dim: Any = "batch"
        if "programs" in runtime:  # static shapes: one program per batch size
            batch_dim = " | ".join(f"{batch} ({name})" for batch, name in runtime["programs"].items())
        if source_tokens is None:
            inputs = [{"name": onnx_cpu.INPUT_NAME, "dtype": "float32", "shape": [batch_dim, *source.input_shape]}]
            preprocessing = {"description": "pixel / 255, then (x - mean) / std per channel", "mean": self.meta["mean"],
                             "std": self.meta["std"], "classes": self.classes}
        else:
            from distill.export.text import card_inputs, text_preprocessing

            inputs = card_inputs(source_tokens)
            preprocessing = text_preprocessing(source, self.classes)
        output_name = onnx_cpu.output_name_of(source)
        width = source.num_classes if source.num_classes is not None else int(self.eager_logits.shape[-1])
        checkpoint = source.checkpoint
        card = {
            "name": f"{source.name}-{target}-{precision}",
            "target": target, "precision": precision, "status": "verified" if check["passed"] else "refused",
            "artifact": {"file": path.name, "bytes": artifact_bytes, "sha256": file_sha256(path)},
            "runtime": {**runtime, "target_runtime": spec.target_runtime},
            "inputs": inputs,
            "outputs": [{"name": output_name, "dtype": "float32", "shape": [batch_dim, width]}],
            "preprocessing": preprocessing,
            "size": {"artifact_bytes": artifact_bytes, "fp32_onnx_bytes": len(self.fp32_proto.SerializeToString()),
                     "checkpoint_bytes": checkpoint.stat().st_size if checkpoint is not None else None},
            "parity": check,
            "accuracy": {"dataset": source.data_name, "split": "test", "samples": len(logits),
                         "accuracy": self._accuracy(logits), "eager_accuracy": self.eager_accuracy},
            "latency": timing, "eager_latency": self.eager_latency,
            "source": {"checkpoint": str(checkpoint.resolve()) if checkpoint is not None else None,
                       "sha256": file_sha256(checkpoint) if checkpoint is not None else None,
                       "model": source.spec["model"], "spec": source.spec, "run_dir": str(source.run_dir or ""),
                       "teacher_checkpoint": source.teacher_checkpoint, "quantized": source.quantized,
                       "data_root": source.data_root,
                       **({"tokenizer": str(source.tokenizer_path.resolve()) if source.tokenizer_path else None}
                          if source_tokens is not None else {})},
            "command": self.options.command, "date": dt.datetime.now().isoformat(timespec="seconds"),
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
            "notes": spec.card_notes(runtime),
        }
        write_card(folder, card)
        return card
