"""``export_student``: one student -> a verified variant folder per (target, precision).

Each variant folder holds the artifact, ``card.json`` and ``card.md``. Every artifact is loaded
back in its own runtime and run on the held-out split; its logits are compared with the eager
reference (:mod:`distill.export.parity`), its accuracy and latency measured. A variant outside
its tolerance is *refused*: its folder and card stay (status ``refused``) and the caller exits
non-zero.
"""
from __future__ import annotations

import datetime as dt
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from distill.export import onnx_cpu
from distill.export.card import write_card
from distill.export.parity import DEFAULT_TOLERANCES, parity
from distill.export.runtime import EagerRunner, ExecuTorchRunner, OrtRunner, latency, run_batched
from distill.export.source import ExportError, Student, file_sha256, packed_modules

TARGETS: dict[str, tuple[str, ...]] = {
    "cpu": ("fp32", "int8-dynamic", "int8-static", "int4", "int2"),
    "gpu": ("fp16",),
    "mobile": ("fp32", "8da4w"),
    "web": ("fp32", "int4"),  # the precisions the browser test runs in Chromium
}
MARKER = ".distill-export"
RUNTIMES = {"cpu": "onnxruntime (CPU)", "gpu": "onnxruntime (CPU provider here; CUDA/TensorRT on a GPU)",
            "mobile": "executorch (XNNPACK)", "web": "onnxruntime-web (wasm); checked here with onnxruntime"}


def default_precisions(target: str, student: Student) -> list[str]:
    """All of a target's precisions that apply: int4/int2 only for a student holding those codes."""
    bits = {module.bits for module in packed_modules(student.model).values()}
    return [p for p in TARGETS[target] if not p.startswith("int") or p.startswith("int8") or int(p[3:]) in bits]


def check_request(target: str, precisions: list[str]) -> None:
    if target not in TARGETS:
        raise ExportError(f"--target {target!r} is not a target; valid: {', '.join(TARGETS)}")
    for precision in precisions:
        if precision not in TARGETS[target]:
            raise ExportError(f"--precision {precision!r} is not available for --target {target}; valid: "
                              f"{', '.join(TARGETS[target])}")


@dataclass
class ExportOptions:
    threads: int = 1
    max_abs_diff: float | None = None  # --tolerance
    min_agreement: float | None = None
    samples: int | None = None  # held-out samples for parity and accuracy (None: the whole split)
    calibration_samples: int = 512
    latency_repeats: int = 50
    command: str = ""


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
        self.inputs, self.targets = test.inputs[:count], test.targets[:count]
        self.classes = list(test.classes)
        eager = EagerRunner(student.model, options.threads)
        self.eager_logits = run_batched(eager, self.inputs)
        self.eager_accuracy = float((self.eager_logits.argmax(-1) == self.targets.numpy()).mean())
        self.sample = self.inputs[:1].numpy()
        self.eager_latency = latency(eager, self.sample, repeats=options.latency_repeats)
        self._fp32_proto = None
        mean, std = normalisation(test.inputs)
        self.meta = {"name": f"{student.spec['model']} student ({student.data_name})",
                     "input_shape": list(student.input_shape), "classes": self.classes, "mean": mean, "std": std}

    @property
    def fp32_proto(self):
        if self._fp32_proto is None:
            self._fp32_proto = onnx_cpu.to_onnx(self.student.model, self.student.input_shape)
        return self._fp32_proto

    # -- artifacts -------------------------------------------------------------------------------------
    def build(self, target: str, precision: str, folder: Path) -> tuple[Path, Any, dict]:
        """Write the artifact into ``folder``; returns (artifact path, runner, runtime facts)."""
        threads, student = self.options.threads, self.student
        runtime: dict[str, Any] = {}
        if target == "mobile":
            from distill.export.mobile import to_executorch

            packed = {path: module.packed_layer() for path, module in packed_modules(student.model).items()}
            runtime.update(to_executorch(student.float_model(), student.input_shape, precision, folder, packed))
            import importlib.metadata as metadata

            runtime.update(name="executorch", version=metadata.version("executorch"))
            programs = {int(batch): folder / name for batch, name in runtime["programs"].items()}
            return programs[min(programs)], ExecuTorchRunner(programs, threads), runtime
        path = folder / "model.onnx"
        if precision in ("fp32", "int8-dynamic", "int8-static"):
            if precision == "fp32":
                onnx_cpu.save(self.fp32_proto, path)
            else:
                with tempfile.TemporaryDirectory() as tmp:
                    fp32_path = onnx_cpu.save(self.fp32_proto, Path(tmp) / "fp32.onnx")
                    if precision == "int8-dynamic":
                        onnx_cpu.quantize_int8_dynamic(fp32_path, path)
                    else:
                        calibration = student.calibration_inputs(self.options.calibration_samples)
                        onnx_cpu.quantize_int8_static(fp32_path, path, calibration)
                        runtime["calibration"] = f"{len(calibration)} {student.data_name} training samples, min/max"
        elif precision in ("int4", "int2"):
            proto, layers = onnx_cpu.to_matmulnbits(student.model, student.input_shape, int(precision[3:]),
                                                    str(student.checkpoint))
            onnx_cpu.save(proto, path)
            runtime["matmulnbits_layers"] = layers
        elif precision == "fp16":
            from distill.export.gpu import to_fp16

            onnx_cpu.save(to_fp16(self.fp32_proto), path)
        else:  # pragma: no cover - check_request refuses it first
            raise ExportError(f"unknown precision {precision!r}")
        import onnxruntime

        runtime.update(name="onnxruntime", version=onnxruntime.__version__)
        if target == "web":
            from distill.export.web import write_page

            web = write_page(folder, self.meta)
            runtime["note"] = (f"page runs {web['name']} {web['version']} ({web['runtime_bytes']:,} bytes of runtime "
                               "files); numerics checked here with onnxruntime on the same model.onnx")
            runtime["web"] = web
        return path, OrtRunner(path, threads), runtime

    def export(self, target: str, precision: str) -> dict[str, Any]:
        """Build, verify and describe one variant; returns its card (``status`` verified or refused)."""
        folder = self.out_dir / f"{target}-{precision}"
        if folder.exists():
            if any(folder.iterdir()) and not any((folder / name).is_file() for name in (MARKER, "card.json")):
                raise ExportError(f"{folder} exists and is not an export folder (no card.json); choose another --out")
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        (folder / MARKER).touch()  # this folder is ours to replace, even when an export stops half-way
        path, runner, runtime = self.build(target, precision, folder)
        logits = run_batched(runner, self.inputs)
        tolerance = DEFAULT_TOLERANCES[precision].with_overrides(self.options.max_abs_diff, self.options.min_agreement)
        check = parity(logits, self.eager_logits, tolerance)
        check["reference"] = ("eager PyTorch, packed student (its integer codes dequantized)" if self.student.quantized
                              else "eager PyTorch, float student")
        timing = latency(runner, self.sample, repeats=self.options.latency_repeats)
        artifact_bytes = path.stat().st_size
        source = self.student
        batch_dim: Any = "batch"
        if "programs" in runtime:  # static shapes: one program per batch size
            batch_dim = " | ".join(f"{batch} ({name})" for batch, name in runtime["programs"].items())
        card = {
            "name": f"{source.checkpoint.parent.name}-{target}-{precision}",
            "target": target, "precision": precision, "status": "verified" if check["passed"] else "refused",
            "artifact": {"file": path.name, "bytes": artifact_bytes, "sha256": file_sha256(path)},
            "runtime": {**runtime, "target_runtime": RUNTIMES[target]},
            "inputs": [{"name": onnx_cpu.INPUT_NAME, "dtype": "float32", "shape": [batch_dim, *source.input_shape]}],
            "outputs": [{"name": onnx_cpu.OUTPUT_NAME, "dtype": "float32", "shape": [batch_dim, source.num_classes]}],
            "preprocessing": {"description": "pixel / 255, then (x - mean) / std per channel", "mean": self.meta["mean"],
                              "std": self.meta["std"], "classes": self.classes},
            "size": {"artifact_bytes": artifact_bytes, "fp32_onnx_bytes": len(self.fp32_proto.SerializeToString()),
                     "checkpoint_bytes": source.checkpoint.stat().st_size},
            "parity": check,
            "accuracy": {"dataset": source.data_name, "split": "test", "samples": len(self.targets),
                         "accuracy": float((logits.argmax(-1) == self.targets.numpy()).mean()),
                         "eager_accuracy": self.eager_accuracy},
            "latency": timing, "eager_latency": self.eager_latency,
            "source": {"checkpoint": str(source.checkpoint.resolve()), "sha256": file_sha256(source.checkpoint),
                       "model": source.spec["model"], "spec": source.spec, "run_dir": str(source.run_dir or ""),
                       "teacher_checkpoint": source.teacher_checkpoint, "quantized": source.quantized,
                       "data_root": source.data_root},
            "command": self.options.command, "date": dt.datetime.now().isoformat(timespec="seconds"),
            "versions": {"torch": torch.__version__, "numpy": np.__version__},
            "notes": [],
        }
        if target == "gpu":
            card["notes"].append("latency measured with onnxruntime's CPU provider, which emulates fp16 slowly: "
                                 "time it on the GPU")
        for key, text in (("own_codes", "4-bit layers holding the student's own codes"),
                          ("torchao_rounded", "layers rounded to 4 bits by torchao (groups of 32)"),
                          ("kept_float_linears", "Linear layers kept in float (inputs not a multiple of 32)")):
            if runtime.get(key):
                card["notes"].append(f"8da4w: {text}: {', '.join(runtime[key])}")
        if runtime.get("not_delegated_ops"):
            card["notes"].append(f"ops left to ExecuTorch's portable kernels: {', '.join(runtime['not_delegated_ops'])}")
        write_card(folder, card)
        return card
