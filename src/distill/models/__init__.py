"""Tiny reference models by name: ``build_model("resnet", input_shape=(3, 32, 32), num_classes=10, depth=20)``.

Every builder takes ``input_shape`` (C, H, W) and ``num_classes`` plus its own keyword
parameters and returns an ``nn.Module`` mapping (B, C, H, W) float32 -> (B, num_classes)
logits. Every model stores its constructor arguments verbatim in ``model.config``, so
``type(model)(**model.config)`` rebuilds it. A name of the form ``package.module:callable``
builds the user's own model with the same call.
"""
from __future__ import annotations

import inspect

from torch import nn

from distill.registry import Registry, closest

MODELS: Registry = Registry("model")

from distill.models.cnn import CNN  # noqa: E402  (the submodules register themselves)
from distill.models.mlp import MLP  # noqa: E402
from distill.models.resnet import ResNet  # noqa: E402
from distill.models.utils import count_parameters, describe, model_bytes  # noqa: E402
from distill.models.static import StaticEmbedding  # noqa: E402
from distill.models.text import TokenCNN  # noqa: E402
from distill.models.transformer import TransformerStudent  # noqa: E402
from distill.models.vit import ViT  # noqa: E402
from distill.models.causal_lm import causal_lm  # noqa: E402,F401  (transformers imported on use)

__all__ = ["MODELS", "build_model", "MLP", "CNN", "ResNet", "ViT", "TokenCNN", "TransformerStudent", "StaticEmbedding", "count_parameters", "model_bytes", "describe"]


def _valid_params(factory) -> tuple[list[str], bool]:
    """(keyword parameter names other than input_shape/num_classes, whether it takes **kwargs)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):  # some builtins have no signature: accept anything
        return [], True
    names = [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    takes_any = any(p.kind is p.VAR_KEYWORD for p in parameters)
    return [n for n in names if n not in ("input_shape", "num_classes")], takes_any


def build_model(name: str, *, input_shape: tuple[int, ...], num_classes: int, **params) -> nn.Module:
    """Build the model registered as ``name`` (or ``package.module:callable``).

    Calls ``factory(input_shape=tuple(input_shape), num_classes=num_classes, **params)``.
    An unknown name raises ``UnknownNameError`` suggesting the closest one; a parameter the
    builder does not take raises ``ValueError`` naming the model, the parameter and the
    valid parameter names.
    """
    factory = MODELS.get(name)
    valid, takes_any = _valid_params(factory)
    valid_text = ", ".join(valid) or "(none)"
    unknown = [key for key in params if key not in valid]
    if unknown and not takes_any:
        hints = [f"{key!r} (did you mean {closest(key, valid)!r}?)" if closest(key, valid) else repr(key) for key in unknown]
        raise ValueError(f"model {name!r} has no parameter {', '.join(hints)}; valid parameters: {valid_text}")
    try:
        return factory(input_shape=tuple(input_shape), num_classes=num_classes, **params)
    except TypeError as exc:
        raise ValueError(f"model {name!r} rejected parameters {params}: {exc}; valid parameters: {valid_text}") from exc
    except ValueError as exc:
        raise ValueError(f"model {name!r}: {exc}") from exc
