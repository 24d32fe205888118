"""The web target: ``model.onnx`` plus a static page running it with onnxruntime-web (wasm)
(:mod:`distill.export.web`); the numerics are checked here with onnxruntime on the same file, the
page itself in headless Chromium by ``tests/export/test_web.py``. ``int4`` is the student's own
codes (``MatMulNBits``, which onnxruntime-web runs), a default only for a 4-bit student.
A text student's page tokenises typed text itself: it needs the student's tokenizer.json (refused,
before anything is written, without one or with one the page cannot reproduce).
"""
from __future__ import annotations

from pathlib import Path

from distill.export.errors import ExportError
from distill.export.targets.base import Built, Target, register


def build(context, precision: str, folder: Path) -> Built:
    from distill.export import onnx_cpu
    from distill.export.runtime import OrtRunner
    from distill.export.web import write_page

    student = context.student
    if student.tokens is not None:
        from distill.export.text import check_web_tokenizer

        if student.tokenizer_path is None:
            where = student.checkpoint or student.spec["model"]
            raise ExportError(f"{where}: the web page tokenises typed text itself, so a text student needs its "
                              "tokenizer: save it as <model stem>.tokenizer.json beside the model file (e.g. "
                              "model.tokenizer.json; tokenizer.json in the same folder also works), or pass "
                              "tokenizer= to distill.export.text.text_student")
        check_web_tokenizer(student.tokenizer_path)
    path = folder / "model.onnx"
    runtime = onnx_cpu.write_variant(context, precision, path)
    web = write_page(folder, context.meta, student.tokenizer_path)
    runtime["note"] = (f"page runs {web['name']} {web['version']} ({web['runtime_bytes']:,} bytes of runtime "
                       "files); numerics checked here with onnxruntime on the same model.onnx")
    runtime["web"] = web
    return Built(path, OrtRunner(path, context.options.threads), runtime)


def load(folder: Path, card: dict, threads: int):
    from distill.export.runtime import OrtRunner

    return OrtRunner(folder / card["artifact"]["file"], threads)


def check() -> None:
    """onnxruntime-web's files must be installed (npm): the page folder gets a copy."""
    from distill.export.web import ort_web_dist

    ort_web_dist()


TARGET = register(Target(
    name="web",
    precisions=("fp32", "int4"),  # the precisions the browser test runs in Chromium
    needs_codes={"int4": 4},
    target_runtime="onnxruntime-web (wasm); checked here with onnxruntime",
    extra="export", modules=("onnx", "onnxruntime"), check=check,
    build=build, load=load,
))
