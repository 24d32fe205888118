"""Model files: safetensors weights that carry the spec needed to rebuild the model.

A distill model file is a ``.safetensors`` file whose metadata holds, under the key
``distill``, a JSON object ``{"model": name, "params": {...}, "input_shape": [C, H, W],
"num_classes": K, ...}``. Loading never unpickles anything.

**Trust.** A model file is data: it may only name a *registered* architecture
(``distill.models.MODELS``). A spec naming user code (``package.module:callable``) is refused
unless the caller passes ``trust_code=True`` (``--trust-code`` on the command line, as Hugging
Face's ``trust_remote_code``), because loading it would import and run that code.

**Integrity.** :func:`save_model` stores a sha256 of the tensors (names, dtypes, shapes and
bytes, :func:`tensor_digest`) in the metadata key ``distill.sha256`` and refuses to write
non-finite weights; :func:`load_state` recomputes the digest and refuses a file whose bytes
changed (a flipped byte loads as a NaN model otherwise). Files without a digest (written
before it existed, or by other tools) load unchecked.

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
DIGEST_KEY = "distill.sha256"


class ArtifactError(ValueError):
    """A model file that is missing, unreadable or not a distill model."""


class UntrustedCodeError(ArtifactError):
    """A model file that names user code to import (``package.module:callable``) without ``trust_code``."""


def tensor_digest(state: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor of ``state`` in name order: its name, dtype, shape and raw bytes."""
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(f"{name}|{str(tensor.dtype)}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold a NaN or an infinity."""
    return [name for name, tensor in state.items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())]


def check_finite_state(state: dict[str, torch.Tensor], what: str) -> None:
    """Raise ArtifactError when a tensor of ``state`` is not finite (nothing non-finite is ever written)."""
    bad = nonfinite_tensors(state)
    if bad:
        raise ArtifactError(f"{what}: {len(bad)} tensor(s) hold NaN or inf values ({', '.join(bad[:5])}); "
                            "refusing to write them")


def read_metadata(path: str | Path, *, what: str = "model file") -> dict[str, str]:
    """The ``__metadata__`` strings of the safetensors file ``path`` (ArtifactError naming it if unreadable)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{what} {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable .safetensors file (truncated or not a model file?): {exc}") from exc


def load_state(path: str | Path, *, what: str = "model file") -> dict[str, torch.Tensor]:
    """All tensors of the safetensors file ``path``, verified against its ``distill.sha256`` digest.

    Raises ArtifactError (naming the file) when it is missing, unreadable, truncated or corrupted.
    """
    metadata = read_metadata(path, what=what)
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{path} is not a readable .safetensors file (truncated or not a model file?): {exc}") from exc
    expected = metadata.get(DIGEST_KEY)
    if expected is not None and tensor_digest(state) != expected:
        raise ArtifactError(f"{what} {path} is corrupted: its tensors do not match the sha256 recorded when it was "
                            "written (a changed or damaged file); use an intact copy")
    return state


def with_digest(state: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> dict[str, str]:
    """``metadata`` plus the :data:`DIGEST_KEY` entry for ``state``."""
    return {**(metadata or {}), DIGEST_KEY: tensor_digest(state)}


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
    check_finite_state(state, f"model file {path}")
    metadata = with_digest(state, {key: json.dumps(spec, sort_keys=True)})
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    return path


def read_spec(path: str | Path) -> dict[str, Any]:
    """The rebuild spec stored in a distill model file."""
    path = Path(path)
    metadata = read_metadata(path)
    if METADATA_KEY not in metadata:
        raise ArtifactError(
            f"{path} has no '{METADATA_KEY}' metadata: it was not written by distill, so give "
            "'model' and 'params' next to 'checkpoint' in the recipe"
        )
    try:
        spec = json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: its '{METADATA_KEY}' metadata is not valid JSON ({exc}); the file is damaged") from None
    missing = [key for key in ("model", "input_shape", "num_classes") if not isinstance(spec, dict) or key not in spec]
    if missing:
        raise ArtifactError(f"{path}: its '{METADATA_KEY}' metadata lacks {', '.join(missing)}; the file is damaged "
                            "or was not written by distill.save_model")
    if not isinstance(spec.get("params", {}), dict) or not isinstance(spec["input_shape"], (list, type(None))):
        raise ArtifactError(f"{path}: its '{METADATA_KEY}' metadata has 'params' that is not a mapping or "
                            "'input_shape' that is not a list; the file is damaged")
    return spec


def refuse_code_named_by_file(name: str, registered, source: str, *, trust_code: bool = False) -> str:
    """``name`` (read from the file ``source``) unless it names user code without ``trust_code``.

    A name outside ``registered`` of the form ``package.module:callable`` would be imported and
    called; a file may only do that with the user's explicit ``trust_code`` (``--trust-code``).
    """
    if name in registered or ":" not in str(name) or trust_code:
        return name
    raise UntrustedCodeError(
        f"{source} names code to import and run, {name!r}. distill never runs code named by a file unless you "
        "say you trust it: pass --trust-code (trust_code=True in Python, like Hugging Face's trust_remote_code) "
        "only for a file from someone you trust, or name it yourself (e.g. --data)"
    )


def check_architecture(spec: dict[str, Any], path: str | Path, *, trust_code: bool = False) -> str:
    """The architecture name a model file's ``spec`` gives, if distill may build it.

    Registered names are always allowed. ``package.module:callable`` (user code) only with
    ``trust_code=True``: otherwise :class:`UntrustedCodeError` says why and how to allow it.
    Anything else is an ArtifactError naming the valid architectures.
    """
    from distill.models import MODELS

    name = spec.get("model")
    if isinstance(name, str) and name in MODELS:
        return name
    if isinstance(name, str) and ":" in name:
        if trust_code:
            return name
        raise UntrustedCodeError(
            f"{path} names its architecture as code to import and run, {name!r}. distill never runs code named by a "
            "model file unless you say you trust it: pass --trust-code (trust_code=True in Python, like Hugging "
            "Face's trust_remote_code) only for a file from someone you trust, or give the architecture yourself "
            "(a recipe's 'model:' next to 'checkpoint:')"
        )
    raise ArtifactError(f"{path} names an unknown architecture {name!r}; valid: {', '.join(MODELS.names())}")


def load_weights(model: nn.Module, path: str | Path) -> nn.Module:
    """Load safetensors weights into ``model``; a mismatch names the missing/unexpected keys."""
    path = Path(path)
    state = load_state(path)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # tensor shapes that differ from the model's
        details = " ".join(str(exc).split())
        raise ArtifactError(f"{path} does not fit the model its spec describes: {details[:400]}") from None
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


def load_model(path: str | Path, *, trust_code: bool = False) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from a distill model file; returns ``(model in eval mode, spec)``.

    The file may only name a registered architecture, unless ``trust_code=True`` lets it name
    ``package.module:callable`` (which is then imported and called: only for trusted files).
    """
    from distill.models import build_model

    spec = read_spec(path)
    name = check_architecture(spec, path, trust_code=trust_code)
    try:
        model = build_model(name, input_shape=tuple(spec["input_shape"]), num_classes=spec["num_classes"],
                            **spec.get("params", {}))
    except (ValueError, TypeError, KeyError) as exc:
        raise ArtifactError(f"{path}: its spec does not build a model: {exc}") from None
    load_into(model, path, spec)
    return model.eval(), spec
