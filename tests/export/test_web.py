"""The web export end to end: the page, served from localhost, runs model.onnx with
onnxruntime-web in headless Chromium (playwright-core driving Debian's chromium) and gives the
eager model's logits and class for a dropped image. Skipped without chromium / npm packages
(`npm install --prefix web`), except under CI=true, where .ci/run installs them."""
from __future__ import annotations

import functools
import http.server
import json
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.export import ExportOptions, Exporter, MissingRuntimeError, load_student

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = REPO / "web" / "node_modules" / "playwright-core"

pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install 'distill[export]'")


def require_browser(skip_or_fail) -> None:
    if not CHROMIUM.is_file():
        skip_or_fail(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    if shutil.which("node") is None or not PLAYWRIGHT.is_dir():
        skip_or_fail(f"node or {PLAYWRIGHT} is missing (npm install --prefix web)")
    try:
        from distill.export.web import ort_web_dist

        ort_web_dist()
    except MissingRuntimeError as exc:
        skip_or_fail(str(exc))


@pytest.fixture(params=["fp32", "int4"])
def served(request, digits_runs, tmp_path, skip_or_fail):
    require_browser(skip_or_fail)
    precision = request.param  # int4: the page runs MatMulNBits with the student's own codes
    student = load_student(digits_runs[precision])
    card = Exporter(student, tmp_path / "export", ExportOptions(latency_repeats=3)).export("web", precision)
    folder = tmp_path / "export" / f"web-{precision}"
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield student, card, f"http://127.0.0.1:{server.server_address[1]}/index.html", tmp_path
    finally:
        server.shutdown()


def test_page_runs_the_model_in_chromium_like_eager_pytorch(served):
    student, card, url, tmp_path = served
    inputs = student.dataset("test").inputs[:8]
    (tmp_path / "inputs.json").write_text(json.dumps({"batch": len(inputs), "data": inputs.flatten().tolist()}))
    # an 8x8 grey image of a held-out digit (pixel values back from the normalisation in the card)
    mean, std = card["preprocessing"]["mean"][0], card["preprocessing"]["std"][0]
    pixels = np.clip(np.round((inputs[0, 0].numpy() * std + mean) * 255), 0, 255).astype(np.uint8)
    Image.fromarray(pixels, mode="L").convert("RGB").save(tmp_path / "digit.png")
    done = subprocess.run(["node", str(REPO / "web" / "e2e.mjs"), url, str(tmp_path / "inputs.json"),
                           str(tmp_path / "digit.png"), str(CHROMIUM)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["errors"] == [] and "model loaded" in result["status"]
    with torch.no_grad():
        eager = student.model(inputs).numpy()
        from_png = student.model(((torch.from_numpy(pixels).float() / 255 - mean) / std).view(1, 1, 8, 8)).numpy()
    np.testing.assert_allclose(np.array(result["logits"]).reshape(eager.shape), eager, rtol=0, atol=1e-4)
    assert result["dropped"] == int(from_png.argmax()) and result["label"] == card["preprocessing"]["classes"][result["dropped"]]
