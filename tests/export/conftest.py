"""Tiny run folders for the export tests: an MLP trained for a moment on scikit-learn's digits
(bundled, no download), float and 4/2-bit (round-to-nearest) quantized, each with the
``recipe.yaml`` that names its data, as ``distill run`` leaves them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
import yaml

from distill.artifacts import quant_config_dict, save_model
from distill.data import build_dataset
from distill.models import build_model
from distill.quant import QuantConfig, quantize_rtn
from shared_data import IN_CI
SPEC = {"model": "mlp", "params": {"hidden": [32]}, "input_shape": [1, 8, 8], "num_classes": 10}


def _skip_or_fail(message: str) -> None:
    if IN_CI:
        pytest.fail(message + " and CI=true requires it")
    pytest.skip(message)


@pytest.fixture
def skip_or_fail():
    """``skip_or_fail(message)``: skip the test, or fail it under CI=true (where .ci/run installs every
    optional runtime the export tests use)."""
    return _skip_or_fail


def trained_mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    train = build_dataset("digits", "train")
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[32])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(120):  # full batch: ~97% test accuracy in well under a second
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(train.inputs), train.targets).backward()
        optimizer.step()
    return model.eval()


def write_run(folder: Path, model: torch.nn.Module, spec: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, folder / "model.safetensors", spec)
    (folder / "recipe.yaml").write_text(yaml.safe_dump({"name": folder.name, "seed": 0, "data": {"name": "digits"}}))
    return folder


@pytest.fixture(scope="session")
def digits_runs(tmp_path_factory) -> dict[str, Path]:
    """{"fp32": run folder, "int4": ..., "int2": ...} (quantized by RTN, groups of 16, float students' weights)."""
    root = tmp_path_factory.mktemp("runs")
    runs = {"fp32": write_run(root / "fp32", trained_mlp(), SPEC)}
    for bits in (4, 2):
        config = QuantConfig(weight_bits=bits, group_size=16)
        model = quantize_rtn(trained_mlp(), config)
        runs[f"int{bits}"] = write_run(root / f"int{bits}", model, {**SPEC, "quantize": quant_config_dict(config)})
    return runs


@pytest.fixture
def fresh_run(digits_runs, tmp_path) -> Path:
    """A private copy of the float run folder (exports write into it)."""
    return Path(shutil.copytree(digits_runs["fp32"], tmp_path / "fp32"))
