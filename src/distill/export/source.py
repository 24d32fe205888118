"""What an export starts from: the student checkpoint, its eager reference model and its data.

``load_student(path)`` takes a run folder (from ``distill run``) or a distill model file. The
eager reference is what ``distill eval`` measures: the float model, or for a quantized student
the *packed* model (integer codes dequantized in the forward), so every variant is compared
with the numbers the student really computes. Held-out data comes from ``--data`` or from the
run folder's ``recipe.yaml`` (``data.name`` / ``data.root``), as ``distill eval`` takes it.
"""
from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from distill.artifacts import METADATA_KEY, ArtifactError, UntrustedCodeError, load_model, nonfinite_tensors
from distill.artifacts import refuse_code_named_by_file
from distill.export.errors import ExportError, MissingRuntimeError, require  # noqa: F401 (re-exported)
from distill.export.text import RANDOM_TOKENS, token_inputs, tokenizer_path_for
from distill.models.utils import set_module


@dataclass
class Student:
    """A loaded student: ``model`` (eager reference, eval mode), its ``spec``, where it came from,
    and the data to check it on (``test_set``; ``train_set`` loaded on demand for calibration)."""

    model: nn.Module
    spec: dict[str, Any]
    checkpoint: Path | None  # None: a model held in Python (distill.export.text.text_student)
    run_dir: Path | None
    data_name: str
    data_root: str | None
    seed: int = 0
    teacher_checkpoint: str | None = None
    data_params: dict[str, Any] = field(default_factory=dict)  # the run's data.params (e.g. image_folder's size)
    tokens: Any = None  # distill.export.text.TokenInputs for a model over token ids, else None
    tokenizer_path: Path | None = None  # its tokenizer.json (see distill.export.text)
    _test_set: Any = field(default=None, repr=False)
    _train_set: Any = field(default=None, repr=False)

    @property
    def quantized(self) -> bool:
        return bool(packed_modules(self.model))

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.spec["input_shape"])

    @property
    def num_classes(self) -> int | None:
        """K; None for a text model giving (B, D) vectors (an embedding model)."""
        return None if self.spec.get("num_classes") is None else int(self.spec["num_classes"])

    @property
    def name(self) -> str:
        """What the card calls the student: its run folder's (or model file's folder's) name."""
        return self.checkpoint.parent.name if self.checkpoint is not None else str(self.spec["model"])

    def tokenizer(self):
        """The ``tokenizers.Tokenizer`` of a text student (None without a tokenizer.json)."""
        if self.tokenizer_path is None:
            return None
        from distill.export.text import load_tokenizer

        return load_tokenizer(self.tokenizer_path, self.tokens)

    def dataset(self, split: str):
        from distill.data import build_dataset

        cached = self._test_set if split == "test" else self._train_set
        if cached is None and self.tokens is not None and self.data_name == RANDOM_TOKENS:
            from distill.export.text import random_token_data

            cached = random_token_data(self.tokens, split, self.seed, self.tokenizer(), self.spec.get("classes"))
        elif cached is None and self.tokens is not None:
            cached = build_dataset(self.data_name, split, root=self.data_root, **self.data_params)
            check_token_data(self, cached)
        if cached is None:
            cached = build_dataset(self.data_name, split, root=self.data_root, **self.data_params)
            if isinstance(cached.input_shape, dict) or tuple(cached.input_shape) != self.input_shape \
                    or cached.num_classes != self.num_classes:
                raise ExportError(
                    f"{self.checkpoint}: the model takes {self.input_shape} with {self.num_classes} classes but dataset "
                    f"{self.data_name!r} has {tuple(cached.input_shape)} with {cached.num_classes}; pass --data with "
                    "the dataset it was trained on")
        if split == "test":
            self._test_set = cached
        else:
            self._train_set = cached
        return cached

    def calibration_inputs(self, num_samples: int):
        """``num_samples`` real training inputs (seeded random subset) for static quantization: a tensor, or
        for a text student ``{"input_ids", "attention_mask"}``."""
        train = self.dataset("train")
        generator = torch.Generator().manual_seed(self.seed)
        index = torch.randperm(len(train), generator=generator)[:num_samples]
        if isinstance(train.inputs, dict):
            return {name: train.inputs[name][index] for name in self.tokens.names}
        return train.inputs[index]

    def float_model(self) -> nn.Module:
        """A float copy of the reference: packed layers become nn.Linear / nn.Conv2d holding the
        dequantized weights (the same function when no layer quantizes its input)."""
        return float_copy(self.model)


def check_token_data(student: Student, data) -> None:
    """A text data set fits a text student: ``input_ids`` (and ``attention_mask``) of at most max_length
    ids below vocab_size, and the student's number of classes."""
    tokens, where = student.tokens, f"{student.checkpoint or student.spec['model']}"
    inputs = data.inputs if isinstance(data.inputs, dict) else {}
    if "input_ids" not in inputs:
        raise ExportError(f"{where}: the model takes token ids (input_ids, attention_mask) but dataset "
                          f"{student.data_name!r} gives {data.input_shape}; pass --data with a text data set "
                          "(text_classification) or none (the export then checks parity on random token batches)")
    ids = inputs["input_ids"]
    if ids.shape[1] > tokens.max_length or (ids.numel() and int(ids.max()) >= tokens.vocab_size):
        raise ExportError(f"{where}: dataset {student.data_name!r} holds ids up to {int(ids.max())} in rows of "
                          f"{ids.shape[1]}, but the model takes at most {tokens.max_length} ids below "
                          f"{tokens.vocab_size}; give the data set tokenised as the student was trained "
                          "(data.params max_length / max_vocab)")
    if student.num_classes is not None and data.num_classes not in (None, student.num_classes):
        raise ExportError(f"{where}: the model has {student.num_classes} classes but dataset {student.data_name!r} "
                          f"has {data.num_classes}; pass --data with the dataset it was trained on")
    if "attention_mask" not in inputs:
        data.inputs = {**inputs, "attention_mask": torch.ones_like(ids)}


def packed_modules(model: nn.Module) -> dict[str, nn.Module]:
    from distill.quant.modules import _PackedBase

    return {path: module for path, module in model.named_modules() if isinstance(module, _PackedBase)}


def float_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` with every packed layer replaced by its float equivalent."""
    model = copy.deepcopy(model).eval()
    for path, module in packed_modules(model).items():
        weight = module.dequantized_weight()
        if module.kind == "linear":
            layer = nn.Linear(module.in_features, module.out_features, bias=module.bias is not None)
        else:
            conv = module.conv
            out_channels, in_per_group, kh, kw = weight.shape
            layer = nn.Conv2d(in_per_group * conv["groups"], out_channels, (kh, kw), stride=conv["stride"],
                              padding=conv["padding"], dilation=conv["dilation"], groups=conv["groups"],
                              bias=module.bias is not None, padding_mode=conv["padding_mode"])
        with torch.no_grad():
            layer.weight.copy_(weight)
            if module.bias is not None:
                layer.bias.copy_(module.bias)
        set_module(model, path, layer)
    return model


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _not_a_student(path: Path, reason: str) -> ExportError:
    return ExportError(f"{path} is not a student checkpoint: {reason}. Give a run folder made by `distill run` "
                       "or its model.safetensors (a distill model file, which records the architecture)")


def resolve_checkpoint(path: str | Path) -> tuple[Path, Path | None]:
    """(model file, run folder or None) for a run folder or a model file."""
    path = Path(path)
    if path.is_dir():
        model_file = path / "model.safetensors"
        if not model_file.is_file():
            raise _not_a_student(path, "the folder has no model.safetensors")
        return model_file, path
    if not path.is_file():
        raise ExportError(f"checkpoint {path} does not exist (give a run folder or its model.safetensors)")
    run_dir = path.parent if (path.parent / "recipe.yaml").is_file() else None
    return path, run_dir


def read_run_recipe(run_dir: Path) -> dict[str, Any]:
    """The ``recipe.yaml`` of a run folder as a mapping; ExportError naming it when it is not one.

    Only what an export reads is checked: the top level is a mapping, ``data`` (if present) a
    mapping, and ``data.name`` / ``data.root`` / ``teacher.checkpoint`` strings.
    """
    path = Path(run_dir) / "recipe.yaml"
    fix = ("restore the recipe.yaml that `distill run` wrote there (or copy the model file out of the run folder and "
           "pass --data, and --root, for its held-out data)")
    try:
        recipe = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ExportError(f"{path} is not readable YAML ({' '.join(str(exc).split())}); {fix}") from None
    recipe = {} if recipe is None else recipe
    if not isinstance(recipe, dict):
        raise ExportError(f"{path} holds a {type(recipe).__name__}, not a recipe mapping; {fix}")
    for section, keys in (("data", ("name", "root")), ("teacher", ("checkpoint",))):
        value = recipe.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            raise ExportError(f"{path}: '{section}' is {value!r}, not a mapping; {fix}")
        for key in keys:
            if value.get(key) is not None and not isinstance(value[key], str):
                raise ExportError(f"{path}: '{section}.{key}' is {value[key]!r}, not a string; {fix}")
    return recipe


def load_student(path: str | Path, *, data: str | None = None, root: str | Path | None = None,
                 trust_code: bool = False) -> Student:
    """Load the student at ``path`` (run folder or model file) with the data named by ``data``
    (else the run folder's recipe). Raises :class:`ExportError` for anything else: a missing,
    truncated or foreign file, a spec that does not build, NaN or inf weights, a recipe.yaml
    that is not a mapping; each message names the file and what would work. The model file and the
    run folder's recipe may name only registered architectures and data sets unless ``trust_code``
    (a ``package.module:callable`` there would be imported and run)."""
    from distill.quant.modules import _QuantMixin

    model_file, run_dir = resolve_checkpoint(path)
    if model_file.suffix != ".safetensors":
        raise _not_a_student(model_file, f"it is a {model_file.suffix or 'suffix-less'} file, not .safetensors")
    if (model_file.parent / "state.pt").is_file():
        run = model_file.parent.parent.parent
        raise _not_a_student(model_file, f"it is a training checkpoint (resume state); export the finished run {run}")
    try:
        model, spec = load_model(model_file, trust_code=trust_code)
    except UntrustedCodeError:
        raise
    except ArtifactError as exc:
        reason = str(exc)
        if f"has no '{METADATA_KEY}' metadata" in reason:
            reason = (f"it carries no '{METADATA_KEY}' metadata (the spec that rebuilds the model), so `distill run` "
                      "did not write it")
        elif reason.startswith(f"{model_file}: "):  # the reason names the file again: drop it
            reason = reason[len(f"{model_file}: "):]
        elif reason.startswith(f"{model_file} "):
            reason = "it " + reason[len(f"{model_file} "):]
        raise _not_a_student(model_file, reason) from exc
    bad = nonfinite_tensors(model.state_dict())
    if bad:
        raise ExportError(f"{model_file}: {len(bad)} weight tensor(s) hold NaN or inf values ({', '.join(bad[:5])}), "
                          "so every variant would compute NaN; export a finite checkpoint (re-train, or an earlier one)")
    if any(isinstance(m, _QuantMixin) for m in model.modules()):  # fake-quantized: its packed integer form
        from distill.quant import convert

        model = convert(model).eval()
    recipe = read_run_recipe(run_dir) if run_dir is not None else {}
    recipe_data = recipe.get("data") or {}
    data_name = data or recipe_data.get("name")
    if data is None and data_name is not None:  # read from a file: a registered data set only, unless trusted
        from distill.data import DATASETS

        refuse_code_named_by_file(data_name, DATASETS, f"{run_dir / 'recipe.yaml'} (data.name)", trust_code=trust_code)
    tokens = token_inputs(spec, where=str(model_file))
    if data_name is None and tokens is not None:  # a text student: parity on seeded token batches
        data_name = RANDOM_TOKENS
    if data_name is None:
        raise ExportError(f"{model_file}: no recipe.yaml beside it names the held-out data; pass --data "
                          "(digits, mnist, fashion_mnist, cifar10) and --root for the files")
    if data_name == RANDOM_TOKENS and tokens is None:
        raise ExportError(f"--data {RANDOM_TOKENS} is for models over token ids (a spec with params.vocab_size and "
                          f"input_shape [max_length]); {model_file} takes {spec.get('input_shape')}")
    data_root = str(root) if root is not None else (recipe_data.get("root") if data is None or data == recipe_data.get("name") else None)
    teacher = (recipe.get("teacher") or {}).get("checkpoint")
    same_data = data is None or data == recipe_data.get("name")
    params = recipe_data.get("params") if same_data and isinstance(recipe_data.get("params"), dict) else {}
    tokenizer_path = tokenizer_path_for(model_file) if tokens is not None else None
    if tokenizer_path is not None:
        from distill.export.text import load_tokenizer

        load_tokenizer(tokenizer_path, tokens)  # a tokenizer that does not fit the model is refused here
    return Student(model=model.eval(), spec=spec, checkpoint=model_file, run_dir=run_dir, data_name=data_name,
                   data_root=data_root, seed=int(recipe.get("seed", 0) or 0), teacher_checkpoint=teacher,
                   data_params=params, tokens=tokens, tokenizer_path=tokenizer_path)
