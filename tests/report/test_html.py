"""distill report: one self-contained page (tables, SVG plots, Pareto fronts) that renders in
Chromium with no request, and a light/dark toggle."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared_data import IN_CI, require_module  # noqa: E402

import distill  # noqa: E402
from distill.report.html import pareto_front, section, write_html_report  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = REPO / "web" / "node_modules" / "playwright-core"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    require_module("matplotlib", "the report's plots need matplotlib (the plots extra)")
    torch.manual_seed(0)
    inputs, targets = torch.randn(128, 6), torch.randint(0, 3, (128,))
    teacher = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    result = distill.distil(teacher, torch.nn.Linear(6, 3), (inputs, targets), eval=(inputs[:64], targets[:64]),
                            epochs=3, batch_size=32, output_dir=tmp_path_factory.mktemp("runs") / "run",
                            progress=False, measure_latency=False)
    return result.run_dir


def fit_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "fit"
    folder.mkdir()
    candidates = [{"name": f"mlp-{w}", "parameters": w * 10, "latency_ms": 0.01 * w, "bytes": 400 * w,
                   "within_budget": w <= 8, "stage": "rung_0" if w <= 8 else "over_budget",
                   "scores": [0.5 + 0.05 * w] if w <= 8 else [], "accuracy": None, "chosen": False} for w in (1, 2, 4, 8, 16)]
    candidates[2]["scores"] = [0.2]  # dominated: slower and worse than mlp-2
    candidates[3].update(chosen=True, stage="winner", accuracy=0.93)
    record = {"target": "cpu", "batch": 1, "threads": 1, "metric": "accuracy", "budget": {"max_latency_ms": 0.1,
              "max_bytes": None}, "teacher": {"name": "teacher", "parameters": 5000, "latency_ms": 0.5, "bytes": 20000,
              "accuracy": 0.95}, "candidates": candidates, "rungs": [], "winner": {"name": "mlp-8", "accuracy": 0.93,
              "latency_ms": 0.08, "bytes": 3200, "run_dir": str(folder / "winner")}, "seconds": 12.0}
    (folder / "fit.json").write_text(json.dumps(record))
    return folder


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.5), (2.0, 0.6), (4.0, 0.2), (8.0, 0.9), (3.0, 0.6)]
    assert pareto_front(points) == [0, 1, 3]


def test_the_page_holds_the_runs_tables_and_plots(run_dir, tmp_path):
    page = write_html_report([run_dir, fit_folder(tmp_path)], tmp_path / "report.html").read_text()
    assert page.count('<svg class="plot"') == 4  # loss terms, held-out metrics; accuracy vs latency and vs bytes
    assert "teacher" in page and "agreement" in page and "Pareto front" in page
    assert '<tr class=chosen><td>mlp-8</td>' in page and "over_budget" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "<link" not in page  # nothing to fetch
    with pytest.raises(ValueError, match="is not a distill folder"):
        section(tmp_path)
    (tmp_path / "fit" / "fit.json").write_text("{broken")
    with pytest.raises(ValueError, match="fit.json is not valid JSON"):
        section(tmp_path / "fit")


def test_missing_and_non_finite_numbers_render_as_dashes(run_dir, tmp_path):
    folder = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    metrics = json.loads((folder / "eval.json").read_text())
    metrics["accuracy"] = None
    metrics.pop("agreement", None)
    (folder / "eval.json").write_text(json.dumps(metrics))
    with open(folder / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 99, "split": "train", "loss": NaN}\n{"cut by a cra')
    assert "<td>-</td>" in section(folder)


def test_cli_report_writes_the_page_and_links_it_from_report_md(run_dir):
    from distill.cli import app

    done = CliRunner().invoke(app, ["report", str(run_dir)])
    assert done.exit_code == 0, done.output
    assert (run_dir / "report.html").is_file() and "[report.html](report.html)" in (run_dir / "report.md").read_text()


def test_the_page_renders_in_chromium_with_no_request_and_toggles_its_theme(run_dir, tmp_path):
    if not CHROMIUM.is_file() or shutil.which("node") is None or not PLAYWRIGHT.is_dir():
        message = "chromium, node or web/node_modules/playwright-core is missing (scripts/setup_export.sh installs them)"
        if IN_CI:
            pytest.fail(message + " and CI=true requires them")
        pytest.skip(message)
    page = write_html_report([run_dir, fit_folder(tmp_path)], tmp_path / "report.html")
    done = subprocess.run(["node", str(REPO / "web" / "report_check.mjs"), page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["requests"] == [] and seen["errors"] == []
    assert seen["plots"] == 4 and seen["tables"] == 2 and seen["chosen"] == 1
    assert seen["before"]["background"] == "rgb(255, 255, 255)"
    assert seen["after"] == {"theme": "dark", "background": "rgb(13, 17, 23)"}
