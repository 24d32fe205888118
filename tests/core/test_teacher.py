"""Teacher sources: every kind loads frozen and computes what the original module computes; every
wrong source is refused naming it; no file makes distill run code (crafted files write a sentinel
if their code ever runs)."""
from __future__ import annotations

import json
import os
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from distill.artifacts import save_model
from distill.core.io import forward_logits
from distill.core.teacher import (KINDS, MissingExtraError, TeacherNotFoundError, TeacherSource, TeacherSourceError,
                                  describe_module, load_teacher, teacher_kind)
from distill.models import MLP


class TinyNet(nn.Module):
    """(B, 6) -> (B, 3); batch norm and dropout so that eval mode matters."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, width), nn.BatchNorm1d(width), nn.ReLU(), nn.Dropout(0.5))
        self.head = nn.Linear(width, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def tiny_net() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    with torch.no_grad():  # running statistics that are not the defaults, so that they must load too
        model.body[1].running_mean.uniform_(-1, 1)
        model.body[1].running_var.uniform_(0.5, 2)
    return model.eval()


INPUTS = torch.randn(4, 6, generator=torch.Generator().manual_seed(1))


def logits(model: nn.Module, inputs=INPUTS) -> torch.Tensor:
    with torch.no_grad():
        return forward_logits(model, inputs)


def assert_frozen(source: TeacherSource) -> None:
    assert source.kind in KINDS
    assert all(not module.training for module in source.model.modules())
    assert all(not parameter.requires_grad for parameter in source.model.parameters())
    assert source.description and "\n" not in source.description


@pytest.fixture
def original() -> TinyNet:
    return tiny_net()


@pytest.fixture
def builder_module(tmp_path, monkeypatch):
    """An importable module ``teacher_builders_<id>`` with ``make()`` building TinyNet; returns its name."""
    name = f"teacher_builders_{abs(hash(str(tmp_path))) % 10**8}"
    folder = tmp_path / "mods"
    folder.mkdir()
    source = Path(__file__).read_text()
    start, end = source.index("class TinyNet"), source.index("INPUTS =")
    (folder / f"{name}.py").write_text("import torch\nfrom torch import nn\n\n" + source[start:end] +
                                       "\n\ndef make():\n    return TinyNet()\n")
    monkeypatch.syspath_prepend(str(folder))
    yield name
    sys.modules.pop(name, None)


@pytest.fixture
def sentinel(tmp_path) -> Path:
    return tmp_path / "code-ran"


class Payload:
    """Unpickling this creates ``path`` (what a malicious pickle would do)."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return open, (self.path, "w")


# ---------------------------------------------------------------------------------------------- module

def test_live_module_is_frozen_in_place(original):
    original.train()
    expected = logits(tiny_net())
    source = load_teacher(original)
    assert source.model is original and source.kind == "module" and source.path is None and source.spec is None
    assert_frozen(source)
    torch.testing.assert_close(logits(source.model), expected, rtol=0, atol=0)
    assert source.description == "TinyNet (live module, 99 parameters)"


def test_data_parallel_module_refused(original):
    with pytest.raises(TeacherSourceError, match=r"DataParallel.*teacher\.module"):
        load_teacher(nn.DataParallel(original))


def test_describe_module_counts_shared_parameters_once():
    tied = nn.Sequential(nn.Linear(10, 10), nn.Linear(10, 10))
    tied[1].weight = tied[0].weight
    assert describe_module(tied) == "Sequential (120 parameters)"
    assert describe_module(nn.Linear(1000, 1000)) == "Linear (1.0M parameters)"
    assert describe_module(nn.Linear(100, 100)) == "Linear (10.1K parameters)"


# ---------------------------------------------------------------------------------------------- distill file

def test_distill_model_file(tmp_path):
    torch.manual_seed(0)
    model = MLP(input_shape=(1, 2, 3), num_classes=3, hidden=(5,)).eval()
    spec = {"model": "mlp", "params": {"hidden": [5]}, "input_shape": [1, 2, 3], "num_classes": 3}
    path = save_model(model, tmp_path / "teacher.safetensors", spec)
    inputs = INPUTS.reshape(4, 1, 2, 3)
    assert teacher_kind(path) == "distill-file"
    source = load_teacher(path)
    assert_frozen(source)
    assert source.kind == "distill-file" and source.spec["model"] == "mlp" and source.path == path
    assert "distill model file 'mlp'" in source.description and str(path) in source.description
    torch.testing.assert_close(logits(source.model, inputs), logits(model, inputs), rtol=0, atol=0)
    # builder= gives the architecture instead of the spec (e.g. for a spec naming code you have yourself)
    built = load_teacher(path, builder=lambda: MLP(input_shape=(1, 2, 3), num_classes=3, hidden=(5,)))
    torch.testing.assert_close(logits(built.model, inputs), logits(model, inputs), rtol=0, atol=0)


def test_distill_file_naming_code_refused_without_trust(tmp_path, sentinel):
    model = MLP(input_shape=(1, 2, 3), num_classes=3, hidden=(5,))
    spec = {"model": "os:system", "params": {}, "input_shape": [1, 2, 3], "num_classes": 3}
    path = save_model(model, tmp_path / "gift.safetensors", spec)
    with pytest.raises(TeacherSourceError, match="trust"):
        load_teacher(path)


# ---------------------------------------------------------------------------------------------- state dicts

@pytest.mark.parametrize("builder_kind", ["instance", "callable", "string"])
def test_state_dict_with_each_builder(tmp_path, original, builder_module, builder_kind):
    path = tmp_path / "teacher.pth"
    torch.save(original.state_dict(), path)
    builder = {"instance": TinyNet(), "callable": TinyNet, "string": f"{builder_module}:make"}[builder_kind]
    assert teacher_kind(path) == "state-dict"
    source = load_teacher(path, builder=builder)
    assert_frozen(source)
    assert source.kind == "state-dict" and source.description == f"TinyNet from {path} (state dict, 99 parameters)"
    torch.testing.assert_close(logits(source.model), logits(original), rtol=0, atol=0)


@pytest.mark.parametrize("wrap", [
    lambda state: {f"module.{key}": value for key, value in state.items()},
    lambda state: {"state_dict": {f"module.{key}": value for key, value in state.items()}, "epoch": 3},
    lambda state: {"model": {f"_orig_mod.{key}": value for key, value in state.items()}, "optimizer": {"lr": 0.1}},
    lambda state: {"model_state_dict": {f"module._orig_mod.{key}": value for key, value in state.items()}},
], ids=["ddp-prefix", "state_dict-wrapper", "model-wrapper-compile-prefix", "model_state_dict-both-prefixes"])
def test_state_dict_wrappers_and_prefixes(tmp_path, original, wrap):
    path = tmp_path / "checkpoint.pt"
    torch.save(wrap(original.state_dict()), path)
    source = load_teacher(path, builder=TinyNet)
    torch.testing.assert_close(logits(source.model), logits(original), rtol=0, atol=0)


def test_plain_safetensors_and_legacy_torch_save(tmp_path, original):
    state = {key: value.contiguous() for key, value in original.state_dict().items()}
    save_file(state, tmp_path / "weights.safetensors")
    torch.save(state, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
    for name in ("weights.safetensors", "legacy.bin"):
        assert teacher_kind(tmp_path / name) == "state-dict"
        source = load_teacher(tmp_path / name, builder=TinyNet)
        torch.testing.assert_close(logits(source.model), logits(original), rtol=0, atol=0)


def test_state_dict_mismatch_names_keys_and_shapes(tmp_path, original):
    state = original.state_dict()
    state["extra.weight"] = torch.zeros(2)
    del state["head.bias"]
    path = tmp_path / "teacher.pth"
    torch.save(state, path)
    with pytest.raises(TeacherSourceError) as error:
        load_teacher(path, builder=lambda: TinyNet(width=16))
    message = str(error.value)
    assert str(path) in message and "head.bias" in message and "extra.weight" in message
    assert "body.0.weight: file (8, 6) vs model (16, 6)" in message


def test_state_dict_without_builder_refused(tmp_path, original):
    torch.save(original.state_dict(), tmp_path / "teacher.pth")
    with pytest.raises(TeacherSourceError, match=r"only weights.*builder="):
        load_teacher(tmp_path / "teacher.pth")


def test_not_a_state_dict_refused(tmp_path):
    torch.save({"epoch": 3, "optimizer": {"lr": 0.1}}, tmp_path / "checkpoint.pt")
    with pytest.raises(TeacherSourceError, match=r"keys \['epoch', 'optimizer'\].*not a state dict"):
        load_teacher(tmp_path / "checkpoint.pt", builder=TinyNet)


def test_pickled_whole_model_refused(tmp_path, original, sentinel):
    torch.save(original, tmp_path / "whole.pt")
    with pytest.raises(TeacherSourceError, match=r"never unpickles.*state_dict\(\).*torch\.jit\.save.*torch\.export"):
        load_teacher(tmp_path / "whole.pt", builder=TinyNet)
    torch.save({"state_dict": original.state_dict(), "extra": Payload(sentinel)}, tmp_path / "gift.pt")
    with pytest.raises(TeacherSourceError, match="never unpickles"):
        load_teacher(tmp_path / "gift.pt", builder=TinyNet)
    assert not sentinel.exists()


def test_bad_builders_refused(tmp_path, original):
    torch.save(original.state_dict(), tmp_path / "teacher.pth")
    with pytest.raises(TeacherSourceError, match="package.module:callable"):
        load_teacher(tmp_path / "teacher.pth", builder="TinyNet")
    with pytest.raises(TeacherSourceError, match="no_such_module_xyz"):
        load_teacher(tmp_path / "teacher.pth", builder="no_such_module_xyz:make")
    with pytest.raises(TeacherSourceError, match="not an nn.Module"):
        load_teacher(tmp_path / "teacher.pth", builder=lambda: "a string")
    with pytest.raises(TeacherSourceError, match="functools.partial"):
        load_teacher(tmp_path / "teacher.pth", builder=lambda width: TinyNet(width))


# ---------------------------------------------------------------------------------------------- TorchScript

JIT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.*deprecated:DeprecationWarning",
                                            "ignore::torch.jit.TracerWarning")


@JIT_DEPRECATED
@pytest.mark.parametrize("suffix", [".ts", ".pt"])
def test_torchscript_round_trip(tmp_path, original, suffix):
    path = tmp_path / f"teacher{suffix}"
    torch.jit.save(torch.jit.script(tiny_net().train()), path)  # scripted in train mode: eval() switches it
    assert teacher_kind(path) == "torchscript"
    source = load_teacher(path)
    assert_frozen(source)
    assert source.description == f"TinyNet from {path} (TorchScript, 99 parameters)"
    torch.testing.assert_close(logits(source.model), logits(original), rtol=0, atol=0)


@JIT_DEPRECATED
def test_torchscript_traced_in_training_mode_refused(tmp_path):
    traced = torch.jit.trace(tiny_net().train(), INPUTS, check_trace=False)
    torch.jit.save(traced, tmp_path / "traced.pt")
    with pytest.raises(TeacherSourceError, match=r"traced in training mode.*model\.eval\(\)"):
        load_teacher(tmp_path / "traced.pt")


# ---------------------------------------------------------------------------------------------- torch.export

def export(model: nn.Module, path: Path, dynamic: bool = False) -> Path:
    shapes = {"x": {0: torch.export.Dim("batch", min=2, max=64)}} if dynamic else None
    torch.export.save(torch.export.export(model, (INPUTS,), dynamic_shapes=shapes), path)
    return path


def rewrite(source: Path, target: Path, edit) -> Path:
    """Copy the zip ``source`` to ``target`` with ``edit(name, data) -> data`` applied to every member."""
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        for info in old.infolist():
            new.writestr(info, edit(info.filename, old.read(info.filename)))
    return target


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic-batch"])
def test_exported_program_round_trip(tmp_path, original, dynamic):
    path = export(original, tmp_path / "teacher.pt2", dynamic)
    assert teacher_kind(path) == "exported-program"
    source = load_teacher(path)
    assert_frozen(source)
    assert source.description == f"GraphModule from {path} (torch.export program, 99 parameters)"
    torch.testing.assert_close(logits(source.model), logits(original), rtol=0, atol=0)


def test_exported_in_training_mode_refused(tmp_path):
    path = export(tiny_net().train(), tmp_path / "train.pt2")
    with pytest.raises(TeacherSourceError, match=r"exported in training mode.*model\.eval\(\)"):
        load_teacher(path)


def test_live_exported_module(original):
    program = torch.export.export(original, (INPUTS,))
    with pytest.raises(TeacherSourceError, match=r"program\.module\(\)"):
        load_teacher(program)
    source = load_teacher(program.module())  # its eval() raises: frozen by checking its graph instead
    assert_frozen(source)
    torch.testing.assert_close(logits(source.model), logits(original), rtol=0, atol=0)
    with pytest.raises(TeacherSourceError, match="exported in training mode"):
        load_teacher(torch.export.export(tiny_net().train(), (INPUTS,)).module())


def test_exported_program_with_code_in_expression_refused(tmp_path, original, sentinel):
    """torch.export.load sympifies (evals) shape expressions: a crafted one would run code."""
    path = export(original, tmp_path / "teacher.pt2", dynamic=True)
    payload = f'(__import__("pathlib").Path({str(sentinel)!r}).touch(), Symbol("s0", integer=True))[1]'

    def edit(name, data):
        if not name.endswith("models/model.json"):
            return data
        tree = json.loads(data)
        first = next(value for value in tree["graph_module"]["graph"]["tensor_values"].values()
                     if any("as_expr" in size for size in value["sizes"]))
        next(size for size in first["sizes"] if "as_expr" in size)["as_expr"]["expr_str"] = payload
        return json.dumps(tree).encode()

    crafted = rewrite(path, tmp_path / "gift.pt2", edit)
    with pytest.raises(TeacherSourceError, match=r"symbolic expression.*trust_code"):
        load_teacher(crafted)
    assert not sentinel.exists()


def test_exported_program_with_pickled_payload_or_foreign_call_refused(tmp_path, original, sentinel):
    path = export(original, tmp_path / "teacher.pt2")
    pickled = tmp_path / "payload.pt"
    torch.save(((Payload(sentinel),), {}), pickled)
    crafted = rewrite(path, tmp_path / "gift.pt2",
                      lambda name, data: pickled.read_bytes() if name.endswith("sample_inputs/model.pt") else data)
    with pytest.raises(TeacherSourceError, match=r"sample_inputs/model\.pt.*weights_only"):
        load_teacher(crafted)
    assert not sentinel.exists()
    foreign = rewrite(path, tmp_path / "foreign.pt2", lambda name, data: data.replace(
        b'"torch.ops.aten.linear.default"', b'"torch.hub.load"') if name.endswith("models/model.json") else data)
    with pytest.raises(TeacherSourceError, match=r"calls 'torch\.hub\.load', not a torch operator"):
        load_teacher(foreign)


# ---------------------------------------------------------------------------------------------- wrong sources

def test_nonexistent_path(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(TeacherNotFoundError, match=r"nope\.safetensors.*does not exist.*never downloads"):
        load_teacher(missing)
    with pytest.raises(FileNotFoundError):
        teacher_kind(str(missing))
    with pytest.raises(ValueError):
        load_teacher("bert-base-uncased")


def test_unknown_formats_and_folders_refused(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"\x08\x07\x12\x04onnx")
    (tmp_path / "noise.bin").write_bytes(b"not a model at all")
    (tmp_path / "folder").mkdir()
    with zipfile.ZipFile(tmp_path / "archive.zip", "w") as archive:
        archive.writestr("readme.txt", "hello")
    for name, message in [("model.onnx", "ONNX"), ("noise.bin", "unknown format"), ("folder", "without config.json"),
                          ("archive.zip", "zip archive but not one torch writes")]:
        with pytest.raises(TeacherSourceError, match=message):
            teacher_kind(tmp_path / name)
    with pytest.raises(TeacherSourceError, match="type int"):
        load_teacher(42)


@JIT_DEPRECATED
def test_options_for_other_kinds_refused(tmp_path, original):
    path = tmp_path / "teacher.ts"
    torch.jit.save(torch.jit.script(original), path)
    with pytest.raises(TeacherSourceError, match="builder= is only for state dict"):
        load_teacher(path, builder=TinyNet)
    with pytest.raises(TeacherSourceError, match="hf_class=.*only for Hugging Face"):
        load_teacher(original, hf_class="AutoModel")
    torch.save(original.state_dict(), tmp_path / "teacher.pth")
    with pytest.raises(TeacherSourceError, match="map_location"):
        load_teacher(tmp_path / "teacher.pth", builder=TinyNet, map_location="nowhere")


# ---------------------------------------------------------------------------------------------- Hugging Face

@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory):
    """A tiny BertForSequenceClassification saved with safetensors weights; returns (folder, model)."""
    transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install 'distill[hf]')")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, num_labels=4)
    model = transformers.BertForSequenceClassification(config).eval()
    folder = tmp_path_factory.mktemp("hf") / "bert"
    model.save_pretrained(folder, safe_serialization=True)
    return folder, model


TOKENS = {"input_ids": torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(2)),
          "attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2])}


@pytest.mark.parametrize("hf_class", [None, "AutoModelForSequenceClassification", "BertForSequenceClassification"])
def test_huggingface_folder(bert_folder, hf_class):
    folder, model = bert_folder
    assert teacher_kind(folder) == "huggingface"
    source = load_teacher(folder, hf_class=hf_class)
    assert_frozen(source)
    assert type(source.model).__name__ == "BertForSequenceClassification"
    assert source.description.startswith(f"BertForSequenceClassification from {folder} (Hugging Face, ")
    torch.testing.assert_close(logits(source.model, TOKENS), logits(model, TOKENS), rtol=0, atol=0)


def copy_folder(folder: Path, target: Path, *, weights: bool = True) -> Path:
    target.mkdir()
    for entry in folder.iterdir():
        if weights or not entry.name.endswith(".safetensors"):
            (target / entry.name).write_bytes(entry.read_bytes())
    return target


def test_huggingface_pickle_weights_refused(bert_folder, tmp_path, sentinel):
    folder, model = bert_folder
    target = copy_folder(folder, tmp_path / "bin-only", weights=False)
    torch.save({"weights": model.state_dict(), "gift": Payload(sentinel)}, target / "pytorch_model.bin")
    with pytest.raises(TeacherSourceError, match=r"only pickle weights.*only safetensors.*safe_serialization=True"):
        load_teacher(target)
    assert not sentinel.exists()


def test_huggingface_remote_code_refused_without_trust(bert_folder, tmp_path, sentinel):
    folder, _ = bert_folder
    target = copy_folder(folder, tmp_path / "remote")
    config = json.loads((target / "config.json").read_text())
    config["auto_map"] = {"AutoModelForSequenceClassification": "modeling_gift.GiftForSequenceClassification"}
    config["architectures"] = ["GiftForSequenceClassification"]
    (target / "config.json").write_text(json.dumps(config))
    (target / "modeling_gift.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(sentinel)!r}).write_text("imported")
    """))
    with pytest.raises(TeacherSourceError, match=r"auto_map.*modeling_gift.*trust_code=True"):
        load_teacher(target)
    with pytest.raises(TeacherSourceError, match=r"auto_map"):
        load_teacher(target, hf_class="BertForSequenceClassification")
    assert not sentinel.exists()


def test_huggingface_bad_class_and_missing_weights(bert_folder, tmp_path):
    folder, _ = bert_folder
    with pytest.raises(TeacherSourceError, match=r"'AutoModelForSequenceClasification'.*did you mean.*"
                                                 r"'AutoModelForSequenceClassification'"):
        load_teacher(folder, hf_class="AutoModelForSequenceClasification")
    for name in ("AutoTokenizer", "os.system", "pipeline"):
        with pytest.raises(TeacherSourceError, match="not a transformers model class"):
            load_teacher(folder, hf_class=name)
    with pytest.raises(TeacherSourceError, match="no model weights"):
        load_teacher(copy_folder(folder, tmp_path / "empty", weights=False))


def test_missing_transformers_names_the_extra(tmp_path, monkeypatch):
    folder = tmp_path / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    save_file({"weight": torch.zeros(1)}, folder / "model.safetensors")
    monkeypatch.setitem(sys.modules, "transformers", None)  # makes `import transformers` raise ImportError
    with pytest.raises(MissingExtraError, match=r"pip install 'distill\[hf\]'") as error:
        load_teacher(folder)
    assert isinstance(error.value, ImportError) and isinstance(error.value, ValueError)



@pytest.mark.parametrize("text, safe", [
    ("Symbol('s77', positive=True, integer=True)", True),
    ("Mul(Integer(2), FloorDiv(Symbol('s0', integer=True), Integer(3)))", True),
    ("Float('1.5', precision=53)", True),
    ("exec(chr(112))", False),
    ("S('exec')", False),                      # S(...) sympifies (evals) its string
    ("Max('chr')", False),                     # a string anywhere but Symbol(' / Float('
    ("Symbol('a/b')", False),
    ("Integer(1).__class__", False),           # attribute access
    ("__import__('os')", False),
])
def test_shape_expression_check(text, safe):
    from distill.core.teacher import _expression_names, _unsafe_expression

    assert (_unsafe_expression(text, _expression_names()) is None) is safe
