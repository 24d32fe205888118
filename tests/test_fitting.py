"""distill fit: candidates measured before training, budgets enforced, successive halving, fit.json."""
from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from distill.fitting import Candidate, FitError, _fits, candidates_for, fit, measure, rung_epochs
from distill.models import build_model

RECIPE = {
    "name": "fit-test", "seed": 0, "data": {"name": "digits", "batch_size": 64},
    "student": {"model": "mlp", "params": {"hidden": [32]}},
    "losses": [{"name": "cross_entropy"}],
    "optimizer": {"name": "adamw", "lr": 0.003},
    "train": {"epochs": 4, "threads": 1},
}


def recipe(tmp_path, **changes):
    tree = json.loads(json.dumps(RECIPE))
    tree["output_dir"] = str(tmp_path / "run")
    tree.update(changes)
    return tree


def test_the_family_holds_the_recipes_student_and_distinct_sizes():
    family = candidates_for("mlp", {"hidden": [32]})
    names = [name for name, _ in family]
    assert family[0][1] == {"hidden": [32]} and len(set(names)) == len(names) > 5
    assert {"hidden": [64, 64]} in [params for _, params in family]
    cnn = candidates_for("cnn", {"channels": [8, 16]})
    assert all(params["channels"][i + 1] == 2 * params["channels"][i] for _, params in cnn
               for i in range(len(params["channels"]) - 1))
    with pytest.raises(FitError, match="static_embedding.*FAMILIES"):
        candidates_for("static_embedding", {})


def test_rungs_grow_by_eta_up_to_the_final_budget():
    assert rung_epochs(8, 2, 2) == [2, 4]
    assert rung_epochs(9, 2, 3) == [1, 3]
    assert rung_epochs(1, 3, 2) == [1, 1, 1]


def test_measure_gives_the_deployed_onnx_size():
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) times the cpu target")
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    latency, size = measure(model, (1, 8, 8), "cpu", "fp32", repeats=5)
    latency8, size8 = measure(model, (1, 8, 8), "cpu", "int8-dynamic", repeats=5)
    weights = 4 * sum(p.numel() for p in model.parameters())
    assert latency > 0 and latency8 > 0
    assert weights < size < weights + 4096  # fp32 weights plus the graph
    assert size8 < size  # int8 weights


def test_an_impossible_budget_names_the_smallest_candidate_and_trains_nothing(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) times the cpu target")
    with pytest.raises(FitError, match=r"no candidate meets the budget \(<= 100 bytes.*smallest.*bytes.*Nothing was trained"):
        fit(recipe(tmp_path), max_bytes=100, output_dir=tmp_path / "fit", progress=False, say=lambda _: None)
    assert not (tmp_path / "fit" / "candidates").exists()
    with pytest.raises(FitError, match="give a budget"):
        fit(recipe(tmp_path), output_dir=tmp_path / "fit2", progress=False)
    with pytest.raises(FitError, match="--target 'gpu'"):
        fit(recipe(tmp_path), target="gpu", max_bytes=10_000, output_dir=tmp_path / "fit3", progress=False)


def test_the_latency_margin_is_held_back_from_the_budget_and_sizes_are_exact(tmp_path):
    candidate = Candidate("mlp@fp32", "mlp", {}, latency_ms=0.095, bytes=1000)
    assert _fits(candidate, 0.1, None) and not _fits(candidate, 0.1, None, 0.1)  # 0.095 > 0.1 x 0.9
    assert _fits(candidate, 0.106, None, 0.1) and _fits(candidate, None, 1000, 0.5) and not _fits(candidate, None, 999)
    for margin in (1.0, -0.1, "0.1", True):
        with pytest.raises(FitError, match="latency_margin must be a number in \\[0, 1\\)"):
            fit(recipe(tmp_path), max_latency_ms=1.0, latency_margin=margin, output_dir=tmp_path / "fit")


def test_fit_picks_a_student_within_the_size_budget_by_successive_halving(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) times the cpu target")
    budget = 12_000  # bytes of the deployed ONNX file: deterministic, unlike a latency
    result = fit(recipe(tmp_path), max_bytes=budget, output_dir=tmp_path / "fit", rungs=2, eta=2, max_candidates=4,
                 progress=False, say=lambda _: None)
    record = json.loads((tmp_path / "fit" / "fit.json").read_text())
    candidates = record["candidates"]
    assert all(c["within_budget"] == (c["bytes"] <= budget) for c in candidates)
    assert any(not c["within_budget"] for c in candidates)  # the family spans the budget
    # rung 0 trains the 4 largest fitting architectures for 1 epoch, rung 1 the best 2 for 2 epochs
    assert [len(r["trained"]) for r in record["rungs"]] == [4, 2] and [r["epochs"] for r in record["rungs"]] == [1, 2]
    first = {c["name"]: c for c in candidates if c["stage"] in ("rung_0", "rung_1", "winner")}
    assert record["rungs"][1]["trained"] == sorted(record["rungs"][0]["trained"],
                                                   key=lambda n: -first[n]["scores"][0])[:2]
    chosen = [c for c in candidates if c["chosen"]]
    assert len(chosen) == 1 and chosen[0]["name"] == record["winner"]["name"] == result.winner.name
    # the winner's export was verified and measured again: still within budget
    assert record["winner"]["bytes"] <= budget and record["winner"]["within_budget_after_export"]
    assert record["winner"]["accuracy"] > 0.5
    card = json.loads((tmp_path / "fit" / "winner" / "export" / f"cpu-{result.winner.precision}" / "card.json").read_text())
    assert card["status"] == "verified" and card["artifact"]["bytes"] == record["winner"]["bytes"]
    assert (tmp_path / "fit" / ".distill-owned").is_file()


def test_cli_fit_reports_an_impossible_budget(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) times the cpu target")
    import yaml

    from distill.cli import app

    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe(tmp_path)))
    done = CliRunner().invoke(app, ["fit", str(path), "--max-bytes", "100", "--out", str(tmp_path / "fit"),
                                    "--no-progress"])
    assert done.exit_code == 2 and "Nothing was trained" in done.output
