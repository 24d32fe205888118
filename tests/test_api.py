"""The public Python API: the README's example runs as written; distil() on plain objects."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import distill

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_example() -> str:
    text = README.read_text()
    match = re.search(r"<!-- python-api-example -->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its Python API example"
    return match.group(1)


def test_readme_example_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(readme_example(), "README.md:python-api-example", "exec"), namespace)  # noqa: S102
    result = namespace["result"]
    out = capsys.readouterr().out
    assert "student:" in out
    assert result.metrics["accuracy"] > 0.9 and result.metrics["agreement"] > 0.9
    for name in ("recipe.yaml", "metrics.jsonl", "model.safetensors", "eval.json", "report.md"):
        assert (tmp_path / "runs/api/student" / name).is_file(), name
    reloaded = namespace["same"]
    inputs = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(reloaded(inputs), result.model(inputs))
    # the CLI evaluates the script's student from its file
    from typer.testing import CliRunner

    from distill.cli import app

    cli = CliRunner().invoke(app, ["eval", str(tmp_path / "runs/api/student/model.safetensors"), "--data", "digits"])
    assert cli.exit_code == 0, cli.output
    assert f"{result.metrics['accuracy']:.2%}" in cli.output


def digits_tensors():
    from distill.data import build_dataset

    train, test = build_dataset("digits", "train"), build_dataset("digits", "test")
    return (train.inputs, train.targets), (test.inputs, test.targets)


@pytest.fixture(scope="module")
def digits_teacher(tmp_path_factory):
    """A CNN teacher trained on digits labels through distil(teacher=None): (module, its run)."""
    from distill.models import CNN

    torch.manual_seed(0)
    train, test = digits_tensors()
    teacher = CNN(input_shape=(1, 8, 8), num_classes=10, channels=[16, 32])
    result = distill.distil(None, teacher, train, eval=test, epochs=8, lr=3e-3, progress=False, measure_latency=False,
                            output_dir=tmp_path_factory.mktemp("teacher") / "run")
    assert result.metrics["accuracy"] > 0.9
    return teacher, result


def test_the_same_loss_twice_with_labels(tmp_path, digits_teacher):
    from distill.models import MLP

    teacher, _ = digits_teacher
    train, test = digits_tensors()
    student = MLP(input_shape=(1, 8, 8), num_classes=10, hidden=[16])
    losses = [{"name": "kl", "temperature": 1.0, "label": "kl_t1"}, {"name": "kl", "temperature": 4.0, "label": "kl_t4"},
              {"name": "cross_entropy", "weight": 0.1}]
    result = distill.distil(teacher, student, train, eval=test, steps=20, losses=losses, output_dir=tmp_path / "run",
                            progress=False, measure_latency=False)
    import json

    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    train_records = [r for r in records if r["split"] == "train"]
    assert {"kl_t1", "kl_t4", "cross_entropy"} <= set(train_records[-1])
    assert train_records[-1]["kl_t1"] != train_records[-1]["kl_t4"]
    with pytest.raises(distill.api.RecipeError if hasattr(distill.api, "RecipeError") else ValueError,
                       match=r"more than once .*label"):
        distill.distil(teacher, student, train, steps=2, losses=[{"name": "kl"}, {"name": "kl"}],
                       output_dir=tmp_path / "twice", progress=False)


USER_MODULE = '''
import torch
from torch import nn


class Wide(nn.Module):
    """The user's own student: not a registered architecture."""

    def __init__(self, width=24):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.GELU(), nn.Linear(width, 10))

    def forward(self, images):
        return self.body(images)


def build(input_shape, num_classes, width=24):
    return Wide(width)
'''


def test_user_module_and_dataloader_then_distill_export(tmp_path, monkeypatch, digits_teacher):
    """A script's own nn.Module trained from a DataLoader, saved with its builder, exported by the CLI."""
    from torch.utils.data import DataLoader, TensorDataset
    from typer.testing import CliRunner

    from distill.cli import app

    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "user_student.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    import user_student

    teacher, _ = digits_teacher
    (x, y), test = digits_tensors()
    torch.manual_seed(0)
    student = user_student.Wide(24)
    loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True)
    result = distill.distil(teacher, student, loader, eval=test, epochs=6, lr=1e-2, output_dir=tmp_path / "run",
                            progress=False, measure_latency=False)
    assert result.metrics["accuracy"] > 0.85 and result.metrics["agreement"] > 0.85
    with pytest.raises(ValueError, match="cannot rebuild by itself"):  # the run's file: weights + class name
        distill.load_model(result.model_path)
    path = distill.save_model(result.model, tmp_path / "student.safetensors", builder="user_student:build",
                              params={"width": 24}, input_shape=(1, 8, 8), num_classes=10)
    refused = CliRunner().invoke(app, ["export", str(path), "--target", "cpu", "--precision", "fp32", "--data", "digits"])
    assert refused.exit_code == 2 and "--trust-code" in " ".join(refused.output.split())
    exported = CliRunner().invoke(app, ["export", str(path), "--target", "cpu", "--precision", "fp32", "--data",
                                        "digits", "--trust-code", "--out", str(tmp_path / "export")])
    assert exported.exit_code == 0, exported.output
    card = __import__("json").loads((tmp_path / "export" / "cpu-fp32" / "card.json").read_text())
    assert card["status"] == "verified"
    assert card["accuracy"]["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-6)


class TokenData(torch.utils.data.Dataset):
    """Token-id sentences as a tokenizer gives them: dicts of input_ids / attention_mask / label.
    Class = which of the 4 'topic' tokens (5..8) the sentence holds most often."""

    def __init__(self, count: int, seed: int, length: int = 16, vocab: int = 60):
        generator = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(9, vocab, (count, length), generator=generator)
        topic = torch.randint(0, 4, (count,), generator=generator)
        for row in range(count):
            spots = torch.randperm(length, generator=generator)[:4]
            self.ids[row, spots] = 5 + topic[row]
        lengths = torch.randint(length // 2, length + 1, (count,), generator=generator)
        self.mask = (torch.arange(length)[None] < lengths[:, None]).long()
        self.ids = self.ids * self.mask  # 0 = padding
        self.labels = topic

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "attention_mask": self.mask[index], "label": self.labels[index]}


def test_hugging_face_bert_teacher_into_a_cnn_over_token_ids(tmp_path):
    transformers = pytest.importorskip("transformers", reason="the Hugging Face test needs transformers (dev extra)")
    from distill.models import TokenCNN

    config = transformers.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, num_labels=4, max_position_embeddings=32)
    torch.manual_seed(0)
    bert = transformers.BertForSequenceClassification(config)  # built from a config: no download
    train, test = TokenData(768, seed=1), TokenData(256, seed=2)
    taught = distill.distil(None, bert, train, eval=test, epochs=6, lr=3e-3, output_dir=tmp_path / "teacher",
                            progress=False, measure_latency=False)
    assert taught.metrics["accuracy"] > 0.7  # a BertForSequenceClassification trained through distil
    student = TokenCNN(input_shape=(16,), num_classes=4, vocab_size=60, embed_dim=16, channels=16)
    result = distill.distil(bert, student, train, eval=test, epochs=6, lr=1e-2, output_dir=tmp_path / "student",
                            progress=False, measure_latency=False)
    assert result.metrics["agreement"] > 0.7 and result.metrics["accuracy"] > 0.7
    reloaded = distill.load_model(result.model_path)  # a registered architecture: rebuilt by name
    batch = {"input_ids": train.ids[:4], "attention_mask": train.mask[:4]}
    torch.testing.assert_close(reloaded(**batch), result.model.eval()(**batch))


def test_bad_objects_get_one_clear_error(tmp_path, digits_teacher):
    from distill.data import DataFormatError
    from distill.models import MLP

    teacher, _ = digits_teacher
    train, test = digits_tensors()
    three = MLP(input_shape=(1, 8, 8), num_classes=3, hidden=[8])
    with pytest.raises(ValueError, match=r"disagree on the number of classes: the teacher gives 10 .* the student 3"):
        distill.distil(teacher, three, train, steps=2, output_dir=tmp_path / "a", progress=False)

    class Words(nn.Module):
        def forward(self, x):
            return "not logits"

    with pytest.raises(TypeError, match=r"the student returned a str"):
        distill.distil(None, Words(), train, steps=2, output_dir=tmp_path / "b", progress=False)

    class Strings(torch.utils.data.Dataset):
        def __len__(self):
            return 100

        def __getitem__(self, index):
            return "a sentence"

    with pytest.raises(DataFormatError, match="str"):
        distill.distil(teacher, MLP(input_shape=(1, 8, 8), num_classes=10, hidden=[8]), Strings(), steps=2,
                       output_dir=tmp_path / "c", progress=False)
    for folder in "abc":  # refused before the first step: nothing left behind
        assert not (tmp_path / folder).exists()


@pytest.mark.parametrize("kind", ["pth", "torchscript"])
def test_teacher_from_a_file(tmp_path, digits_teacher, kind):
    """A .pth state dict (with its builder) or a TorchScript file as the teacher: the same numbers as the
    live module it was saved from."""
    from distill.models import CNN, MLP

    teacher, _ = digits_teacher
    if kind == "pth":
        torch.save({"state_dict": teacher.state_dict()}, tmp_path / "teacher.pth")
        source = distill.load_teacher(tmp_path / "teacher.pth",
                                      builder=lambda: CNN(input_shape=(1, 8, 8), num_classes=10, channels=[16, 32]))
    else:
        torch.jit.trace(teacher.eval(), torch.zeros(2, 1, 8, 8)).save(str(tmp_path / "teacher.ts"))
        source = distill.load_teacher(tmp_path / "teacher.ts")
    train, test = digits_tensors()
    runs = {}
    for name, given in (("live", teacher), ("file", source)):
        torch.manual_seed(0)
        student = MLP(input_shape=(1, 8, 8), num_classes=10, hidden=[16])
        runs[name] = distill.distil(given, student, train, eval=test, steps=15, output_dir=tmp_path / name,
                                    progress=False, measure_latency=False)
    assert runs["file"].metrics["agreement"] == pytest.approx(runs["live"].metrics["agreement"], abs=1e-6)
    for key, tensor in runs["live"].model.state_dict().items():
        torch.testing.assert_close(runs["file"].model.state_dict()[key], tensor, rtol=1e-5, atol=1e-6)
    assert "state dict" in source.description or "TorchScript" in source.description


def test_distil_resumes_exactly_and_reports_the_teacher(tmp_path, digits_teacher):
    """The API's run folder is distill run's: checkpoints, exact resume, and a report with a teacher row."""
    from distill.models import MLP
    from distill.training.loop import StopTraining

    teacher, _ = digits_teacher
    train, test = digits_tensors()

    def run(folder, **kwargs):
        torch.manual_seed(0)
        student = MLP(input_shape=(1, 8, 8), num_classes=10, hidden=[16], dropout=0.1)  # dropout: RNG state matters
        return distill.distil(teacher, student, train, eval=test, steps=24, checkpoint_every=6, lr=3e-3,
                              output_dir=tmp_path / folder, progress=False, measure_latency=False, **kwargs)

    whole = run("whole")

    def stop(state):
        if state.step == 10:
            raise StopTraining

    with pytest.raises(StopTraining):
        run("parts", callbacks=[stop])
    resumed = run("parts", resume=True)
    assert resumed.state.step == 24
    for key, tensor in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], tensor), key
    report = (whole.run_dir / "report.md").read_text()
    assert "| teacher (CNN) |" in report and whole.metrics["teacher_metrics"]["accuracy"] > 0.9
    with pytest.raises(ValueError, match="another recipe"):  # a changed objective is refused on resume
        run("parts", resume=True, losses=[{"name": "kl"}])


def test_an_api_runs_recipe_yaml_records_it_but_cannot_rerun_it(tmp_path):
    from typer.testing import CliRunner

    from distill.cli import app
    from distill.models import MLP

    train, _ = digits_tensors()
    result = distill.distil(None, MLP(input_shape=(1, 8, 8), num_classes=10, hidden=[8]), train, steps=2,
                            output_dir=tmp_path / "run", progress=False, measure_latency=False)
    recorded = (result.run_dir / "recipe.yaml").read_text()
    assert "python:distill.models.mlp.MLP" in recorded and "steps: 2" in recorded
    again = CliRunner().invoke(app, ["run", str(result.run_dir / "recipe.yaml"), "output_dir=" + str(tmp_path / "b"),
                                     "--no-progress"])
    assert again.exit_code == 2 and "stands for a Python object given to distill.distil()" in " ".join(again.output.split())
