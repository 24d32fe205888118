"""Model files: safetensors weights that carry the spec needed to rebuild the model.

A distill model file is a ``.safetensors`` file whose metadata holds, under the key
``distill``, a JSON object ``{"model": name, "params": {...}, "input_shape": [C, H, W],
"num_classes": K, ...}``. Loading never unpickles anything.

A quantized model (``distill.quant``) carries its :class:`~distill.quant.QuantConfig` in the
spec as ``"quantize"``: :func:`load_model` rebuilds the float model, ``prepare``s it with that
config and loads the fake-quantized weights and quantizer parameters. A packed file
(``model.packed.safetensors``, written by :func:`distill.quant.save_packed` with the same spec)
loads as the converted model: integer codes, dequantized in the forward.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

METADATA_KEY = "distill"


class ArtifactError(ValueError):
    """A model file that is missing, unreadable or not a distill model."""


def atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)`` then move the file into place, so readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def state_copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous, de-aliased CPU copies of a state dict's tensors (safetensors refuses shared storage)."""
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in state.items()}


def model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """:func:`state_copy` of ``model.state_dict()``."""
    return state_copy(model.state_dict())


def save_model(model: nn.Module, path: str | Path, spec: dict[str, Any], *, key: str = METADATA_KEY) -> Path:
    """Write ``model``'s weights and its rebuild ``spec`` (metadata ``key``) atomically to ``path``."""
    path = Path(path)
    state = model_state(model)
    metadata = {key: json.dumps(spec, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    return path


def read_spec(path: str | Path) -> dict[str, Any]:
    """The rebuild spec stored in a distill model file."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable .safetensors file: {exc}") from exc
    if METADATA_KEY not in metadata:
        raise ArtifactError(
            f"{path} has no '{METADATA_KEY}' metadata: it was not written by distill, so give "
            "'model' and 'params' next to 'checkpoint' in the recipe"
        )
    return json.loads(metadata[METADATA_KEY])


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors weights into ``model``; a mismatch names the missing/unexpected keys."""
    path = Path(path)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable .safetensors file: {exc}") from exc
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ArtifactError(
            f"{path} does not fit the model: missing {result.missing_keys[:5]}, "
            f"unexpected {result.unexpected_keys[:5]}"
        )
    return model


def quant_config_dict(config) -> dict[str, Any]:
    """A QuantConfig as the JSON-ready ``spec["quantize"]``: every field, except that each
    override keeps only the fields written in it (those are the ones it applies)."""
    tree = config.model_dump(mode="json")
    tree["overrides"] = {pattern: override.model_dump(mode="json", exclude_unset=True)
                         for pattern, override in config.overrides.items()}
    return tree


def is_packed_file(path: str | Path) -> bool:
    """True for a packed quantized model file (:func:`distill.quant.save_packed`)."""
    from distill.quant.api import FORMAT

    try:
        with safe_open(str(path), framework="pt") as handle:
            return (handle.metadata() or {}).get("format") == FORMAT
    except (SafetensorError, OSError) as exc:
        raise ArtifactError(f"{path} is not a readable .safetensors file: {exc}") from exc


def load_into(model: nn.Module, path: str | Path, spec: dict[str, Any]) -> nn.Module:
    """Load the distill model file ``path`` into ``model``, a float instance of ``spec``'s model.

    A quantized file (``spec["quantize"]``) first ``prepare``s the model with its config; a
    packed file swaps in the packed layers (:func:`distill.quant.load_packed`). Returns ``model``.
    """
    if is_packed_file(path):
        from distill.quant import load_packed

        try:
            return load_packed(path, model)
        except (ValueError, RuntimeError) as exc:
            raise ArtifactError(f"{path} does not fit the model: {exc}") from exc
    if spec.get("quantize") is not None:
        from distill.quant import prepare

        prepare(model, spec["quantize"])
    return load_weights(model, path)


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a distill model file; returns ``(model in eval mode, spec)``."""
    from distill.models import build_model

    spec = read_spec(path)
    model = build_model(
        spec["model"], input_shape=tuple(spec["input_shape"]), num_classes=spec["num_classes"], **spec.get("params", {})
    )
    load_into(model, path, spec)
    return model.eval(), spec
