"""distill report: one self-contained page (tables, SVG plots, Pareto fronts, export table, sample
grid) built from real run folders, that renders in Chromium with no request, and a light/dark toggle."""
from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared_data import IN_CI, require_module  # noqa: E402

import distill  # noqa: E402
from distill.report.html import (  # noqa: E402
    pareto_front,
    section,
    tradeoff_points,
    write_html_report,
)

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
PLAYWRIGHT = REPO / "web" / "node_modules" / "playwright-core"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A distill.distil run on tensors: a teacher row, two loss terms, accuracy/agreement per epoch."""
    require_module("matplotlib", "the report's plots need matplotlib (the plots extra)")
    torch.manual_seed(0)
    inputs, targets = torch.randn(128, 6), torch.randint(0, 3, (128,))
    teacher = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    result = distill.distil(teacher, torch.nn.Linear(6, 3), (inputs, targets), eval=(inputs[:64], targets[:64]),
                            epochs=3, batch_size=32, output_dir=tmp_path_factory.mktemp("runs") / "run",
                            progress=False, threads=1, tensorboard=importlib.util.find_spec("tensorboard") is not None)
    return result.run_dir


@pytest.fixture(scope="module")
def exported_run(tmp_path_factory):
    """A recipe run (an MLP on scikit-learn's digits, one epoch) exported for cpu in fp32 by distill export's machinery."""
    require_module("matplotlib", "the report's plots need matplotlib (the plots extra)")
    require_module("onnxruntime", "the cpu export needs the export extra")
    from distill.export import Exporter, ExportOptions, load_student
    from distill.recipe import load_recipe
    from distill.runner import run_recipe

    folder = tmp_path_factory.mktemp("digits") / "digits-mlp"
    run = run_recipe(load_recipe({"name": "digits-mlp", "seed": 0, "output_dir": str(folder),
                                  "data": {"name": "digits", "batch_size": 128}, "student": {"model": "mlp", "params": {
                                      "hidden": [16]}}, "losses": [{"name": "cross_entropy"}],
                                  "train": {"epochs": 1, "threads": 1}}), progress=False)
    Exporter(load_student(run.run_dir), run.run_dir / "export", ExportOptions(threads=1, latency_repeats=3)).export(
        "cpu", "fp32")
    return run.run_dir


@pytest.fixture(scope="module")
def samples_dir(tmp_path_factory):
    """A diffusion sample folder as `distill diffusion sample` writes it (its own grid and report writers)."""
    require_module("matplotlib", "the sample grid needs matplotlib")
    from distill.diffusion.report import sample_report, write_sample_grid

    folder = tmp_path_factory.mktemp("diffusion") / "samples"
    torch.manual_seed(0)
    write_sample_grid({n: torch.rand(16, 1, 8, 8) for n in (1, 2)}, folder / "samples.png", title="student")
    rows = {n: {"mmd2": 0.1 / n, "sliced_w2": 0.2 / n, "ms_per_sample": 0.5 * n} for n in (1, 2)}
    spec = {"kind": "consistency", "net": {"name": "unet"}, "data": "digits",
            "denoiser": {"prediction": "x0", "schedule": {"name": "karras"}}}
    (folder / "report.md").write_text(sample_report("student.safetensors", spec, rows, "samples.png",
                                                    "distill diffusion sample student.safetensors --steps 1 --steps 2"))
    return folder


def fit_folder(tmp_path: Path) -> Path:
    """A fit.json as docs/report.md describes it (the schema distill fit writes)."""
    folder = tmp_path / "fit"
    folder.mkdir()
    candidates = [{"name": f"mlp-{w}", "model": "mlp", "params": {"hidden": [w]}, "precision": "fp32",
                   "parameters": w * 10, "latency_ms": 0.01 * w, "bytes": 400 * w, "within_budget": w <= 8,
                   "stage": "rung_0" if w <= 8 else "over_budget", "scores": [0.5 + 0.05 * w] if w <= 8 else [],
                   "accuracy": None, "chosen": False} for w in (1, 2, 4, 8, 16)]
    candidates[2]["scores"] = [0.2]  # dominated: slower and worse than mlp-2
    candidates[3].update(chosen=True, stage="winner", accuracy=0.93, scores=[0.9, 0.92])
    record = {"target": "cpu", "batch": 1, "threads": 1, "metric": "accuracy",
              "budget": {"max_latency_ms": 0.1, "max_bytes": None},
              "teacher": {"name": "teacher", "parameters": 5000, "latency_ms": 0.5, "bytes": 20000, "accuracy": 0.95},
              "candidates": candidates, "rungs": [{"epochs": 1, "trained": ["mlp-1"], "kept": ["mlp-1"]}],
              "winner": {"name": "mlp-8", "accuracy": 0.93, "latency_ms": 0.08, "bytes": 3200,
                         "run_dir": str(folder / "winner"), "export_dir": None}, "seconds": 12.0}
    (folder / "fit.json").write_text(json.dumps(record))
    return folder


def test_pareto_front_keeps_only_undominated_points():
    points = [(1.0, 0.5), (2.0, 0.6), (4.0, 0.2), (8.0, 0.9), (3.0, 0.6)]
    assert pareto_front(points) == [0, 1, 3]


def test_the_page_holds_the_runs_tables_and_plots(run_dir, tmp_path):
    page = write_html_report([run_dir, fit_folder(tmp_path)], tmp_path / "report.html").read_text()
    # across folders (accuracy vs latency and vs size), the run's loss terms and held-out metrics, the fit's two
    assert page.count('<svg class="plot"') == 6
    assert "Across folders" in page and "(run)" in page and "(distill fit)" in page
    for term in ("kl", "cross_entropy", "agreement", "Pareto front", "budget", "chosen: mlp-8", "teachers"):
        assert term in page, term
    assert "teacher (Sequential)" in page  # the eval table's teacher row
    assert ("tensorboard --logdir" in page) == (run_dir / "tensorboard").is_dir()
    assert '<tr class=chosen><td>mlp-8</td>' in page and "over_budget" in page and "90.00% / 92.00%" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page) and "<link" not in page  # nothing to fetch


def test_fit_points_are_the_trained_candidates_and_the_teacher(tmp_path):
    points = {p["label"]: p for p in tradeoff_points(fit_folder(tmp_path))}
    assert points["mlp-8"]["accuracy"] == 0.93 and points["mlp-8"]["chosen"]  # the chosen one: its test accuracy
    assert points["mlp-2"]["accuracy"] == pytest.approx(0.6)  # the others: their last validation rung
    assert points["mlp-16"]["accuracy"] is None  # over budget, never trained: not plotted
    assert points["teacher"]["kind"] == "teacher" and points["teacher"]["latency_ms"] == 0.5


def test_export_table_and_sample_grid(exported_run, samples_dir, tmp_path):
    page = write_html_report([exported_run, samples_dir], tmp_path / "report.html").read_text()
    assert "<h3>Exported variants</h3>" in page and "<td>cpu-fp32</td>" in page and "verified" in page.lower()
    assert "(diffusion samples)" in page and 'src="data:image/png;base64,' in page
    assert "<th>mmd2</th>" in page and "<th>sliced_w2</th>" in page and "distill diffusion sample" in page
    # one run with an exported variant: the student and its variant on the across-folders plots
    assert "Across folders" in page and "digits-mlp/cpu-fp32" in page
    card = json.loads((exported_run / "export" / "cpu-fp32" / "card.json").read_text())
    assert f"{card['artifact']['bytes']:,}" in page
    # an export folder given alone
    assert "<td>cpu-fp32</td>" in section(exported_run / "export")


def test_missing_and_non_finite_numbers_render_as_dashes(run_dir, tmp_path):
    folder = Path(shutil.copytree(run_dir, tmp_path / "copy"))
    metrics = json.loads((folder / "eval.json").read_text())
    metrics["accuracy"] = None
    metrics.pop("agreement", None)
    metrics["teacher_metrics"]["ece"] = "NaN"
    (folder / "eval.json").write_text(json.dumps(metrics))
    with open(folder / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 99, "split": "train", "loss": NaN}\n{"step": null, "split": "test", "accuracy": 1}\n'
                     '[1, 2]\n{"cut by a cra')
    assert "<td>-</td>" in section(folder)
    fit = tmp_path / "fit"
    fit.mkdir()
    # json.dumps writes Infinity for inf (as Python's json does): the reader must survive it
    (fit / "fit.json").write_text(json.dumps({"candidates": [{"name": "a"}, {"latency_ms": "fast", "scores": None,
                                                                           "chosen": True, "accuracy": float("inf")}],
                                              "teacher": {"accuracy": None}, "budget": None, "winner": None}))
    html = write_html_report([folder, fit], tmp_path / "page.html").read_text()
    assert "<td>-</td>" in html and "nan" not in html.lower().replace("nanosecond", "")


def test_folders_that_are_not_distill_folders_are_named(run_dir, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty is not a distill folder"):
        write_html_report([run_dir, tmp_path / "empty"], tmp_path / "out.html")
    assert not (tmp_path / "out.html").exists()  # every folder checked before anything is written
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        section(tmp_path / "nowhere")
    with pytest.raises(NotADirectoryError, match="eval.json is a file"):
        section(run_dir / "eval.json")
    fit = fit_folder(tmp_path)
    (fit / "fit.json").write_text("{broken")
    with pytest.raises(ValueError, match="fit.json is not valid JSON"):
        section(fit)
    # json.dumps writes Infinity for inf (as Python's json does): the reader must survive it
    (fit / "fit.json").write_text(json.dumps({"candidates": {"a": 1}}))
    with pytest.raises(ValueError, match="fit.json is not a distill fit record"):
        section(fit)
    with pytest.raises(ValueError, match="theme must be one of auto, light, dark"):
        write_html_report([run_dir], tmp_path / "out.html", theme="sepia")


def cli_app() -> typer.Typer:
    from distill.cli import app  # the command as users run it (distill.cli registers report_cli.report)

    return app


def test_report_command_writes_the_page_and_links_it_from_report_md(run_dir, tmp_path):
    folder = Path(shutil.copytree(run_dir, tmp_path / "run"))
    done = CliRunner().invoke(cli_app(), ["report", str(folder), "--theme", "dark"])
    assert done.exit_code == 0, done.output
    page = (folder / "report.html").read_text()
    assert page.startswith("<!doctype html><html lang=en data-theme=dark>")
    CliRunner().invoke(cli_app(), ["report", str(folder)])  # again: the link is added once
    assert (folder / "report.md").read_text().count("[report.html](report.html)") == 1
    done = CliRunner().invoke(cli_app(), ["report", str(folder), str(fit_folder(tmp_path)), "-o", str(tmp_path / "c.html")])
    assert done.exit_code == 0 and (tmp_path / "c.html").is_file(), done.output
    done = CliRunner().invoke(cli_app(), ["report", str(tmp_path)])
    assert done.exit_code == 2 and "is not a distill folder" in done.output


def browse(page: Path) -> dict:
    """What Chromium saw with the system in light and in dark: {"light": {...}, "dark": {...}}."""
    if not CHROMIUM.is_file() or shutil.which("node") is None or not PLAYWRIGHT.is_dir():
        message = "chromium, node or web/node_modules/playwright-core is missing (scripts/setup_export.sh installs them)"
        if IN_CI:
            pytest.fail(message + " and CI=true requires them")
        pytest.skip(message)
    done = subprocess.run(["node", str(REPO / "web" / "report_check.mjs"), page.resolve().as_uri(), str(CHROMIUM)],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_the_page_renders_in_chromium_with_no_request_and_toggles_its_theme(run_dir, exported_run, samples_dir, tmp_path):
    page = write_html_report([run_dir, exported_run, samples_dir, fit_folder(tmp_path)], tmp_path / "report.html")
    light, dark = (seen := browse(page))["light"], seen["dark"]
    assert light["requests"] == dark["requests"] == [] and light["errors"] == []  # every request intercepted: none made
    assert light["plots"] == light["drawn"] == 2 + 2 + 2 + 2  # across, each run's curves (two runs), the fit's
    assert light["images"] == [True]  # the sample grid, from its data: URL
    assert light["chosen"] == 2  # the chosen candidate, in the fit table and the across-folders table
    assert light["headings"][0].startswith("Across folders")
    assert light["before"] == {"theme": "system", "background": "rgb(255, 255, 255)", "button": "dark theme"}
    assert light["after"] == {"theme": "dark", "background": "rgb(13, 17, 23)", "button": "light theme"}
    # the system's dark scheme first; the button gives light
    assert dark["before"] == {"theme": "system", "background": "rgb(13, 17, 23)", "button": "light theme"}
    assert dark["after"] == {"theme": "light", "background": "rgb(255, 255, 255)", "button": "dark theme"}
