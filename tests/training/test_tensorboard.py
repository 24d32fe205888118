"""train.tensorboard: every metrics.jsonl number also lands in TensorBoard, at its step."""
import json

import pytest
import torch

import distill


def test_tensorboard_scalars_equal_the_metrics_file(tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (pip install 'distill[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    torch.manual_seed(0)
    inputs, targets = torch.randn(96, 6), torch.randint(0, 3, (96,))
    result = distill.distil(None, torch.nn.Linear(6, 3), (inputs, targets), eval=(inputs[:32], targets[:32]),
                            steps=6, batch_size=32, output_dir=tmp_path / "run", tensorboard=True, progress=False,
                            measure_latency=False)
    events = EventAccumulator(str(result.run_dir / "tensorboard"))
    events.Reload()
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"]
    assert train, "the run logged no training record"
    logged = {(event.step, round(event.value, 5)) for event in events.Scalars("train/loss")}
    assert {(r["step"], round(r["loss"], 5)) for r in train} <= logged
    assert "test/accuracy" in events.Tags()["scalars"]
