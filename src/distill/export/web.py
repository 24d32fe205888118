"""The web target: the ONNX model plus a static page that runs it with onnxruntime-web.

The folder holds ``model.onnx``, ``index.html`` + ``app.js`` (drop an image, see the class),
``meta.json`` (input shape, classes, normalisation) and onnxruntime-web's files copied from an
npm install (``npm install --prefix web``, see ``web/package.json``; or ``DISTILL_ORT_WEB_DIST``
naming a ``onnxruntime-web/dist`` folder). Serve the folder from any static server
(``python -m http.server``): browsers do not load WebAssembly from ``file://``.

A text student's folder holds ``index.html`` + ``text.js`` (type text, see the class or the
embedding), ``wordpiece.js`` (the tokenizer, in plain JavaScript) and ``tokenizer.json`` (the
student's, copied): the page tokenises in the browser (see :mod:`distill.export.text`).
"""
from __future__ import annotations

import json
import os
import shutil
from importlib import resources
from pathlib import Path

from distill.export.errors import MissingRuntimeError

ORT_FILES = ("ort.wasm.min.js", "ort-wasm-simd-threaded.wasm", "ort-wasm-simd-threaded.mjs")
REPO_ROOT = Path(__file__).resolve().parents[3]


def ort_web_dist() -> Path:
    """The installed ``onnxruntime-web/dist`` folder; MissingRuntimeError naming the npm step when absent."""
    candidates = [Path(p) for p in [os.environ.get("DISTILL_ORT_WEB_DIST")] if p]
    candidates += [base / "web" / "node_modules" / "onnxruntime-web" / "dist" for base in (Path.cwd(), REPO_ROOT)]
    candidates += [Path.cwd() / "node_modules" / "onnxruntime-web" / "dist"]
    for candidate in candidates:
        if all((candidate / name).is_file() for name in ORT_FILES):
            return candidate
    raise MissingRuntimeError(
        "the web target copies onnxruntime-web (npm) into the export folder, but no installed copy was found in "
        f"{', '.join(str(c) for c in candidates)}; run `npm install --prefix web` in the distill repository "
        "(web/package.json) or set DISTILL_ORT_WEB_DIST to an onnxruntime-web/dist folder")


def ort_web_version(dist: Path) -> str:
    package = dist.parent / "package.json"
    return json.loads(package.read_text()).get("version", "unknown") if package.is_file() else "unknown"


IMAGE_PAGE = {"index.html": "index.html", "app.js": "app.js"}  # folder name: page source
TEXT_PAGE = {"index.html": "text.html", "text.js": "text.js", "wordpiece.js": "wordpiece.js"}


def write_page(folder: Path, meta: dict, tokenizer: Path | None = None) -> dict:
    """Copy the page and onnxruntime-web into ``folder`` (which already holds model.onnx); returns runtime facts.

    ``meta["kind"] == "text"``: the text page, and ``tokenizer`` (a tokenizer.json the page can reproduce,
    :func:`distill.export.text.check_web_tokenizer`) copied as ``tokenizer.json``."""
    dist = ort_web_dist()
    for name in ORT_FILES:
        shutil.copyfile(dist / name, folder / name)
    page = resources.files("distill.export") / "page"
    files = TEXT_PAGE if meta.get("kind") == "text" else IMAGE_PAGE
    for name, source in files.items():
        (folder / name).write_text((page / source).read_text())
    if meta.get("kind") == "text":
        shutil.copyfile(tokenizer, folder / "tokenizer.json")
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    runtime_bytes = sum((folder / name).stat().st_size for name in ORT_FILES)
    return {"name": "onnxruntime-web (wasm)", "version": ort_web_version(dist), "runtime_bytes": runtime_bytes}
