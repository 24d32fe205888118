"""Model I/O: the one place that decides how a model is called and how its logits are read.

Inputs are a tensor (``(B, ...)``: images, token ids, features) or a mapping of tensors that all
share the batch dimension (``{"input_ids": (B, L), "attention_mask": (B, L)}``,
``{"pixel_values": (B, C, H, W)}``); a mapping is passed as keyword arguments, as Hugging Face
models take it. Outputs are a tensor, a tuple / list whose first item is the logits, or a
mapping / Hugging Face ``ModelOutput`` with a ``logits`` entry.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Union

import torch
from torch import Tensor, nn

Inputs = Union[Tensor, Mapping[str, Tensor]]


class ModelOutputError(TypeError):
    """A model whose outputs cannot be read as logits; the message names the model and what it gave."""


def call_model(model: nn.Module, inputs: Inputs) -> Any:
    """``model(**inputs)`` for a mapping of tensors, else ``model(inputs)``."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    return model(inputs)


def _describe(output: Any) -> str:
    if isinstance(output, Tensor):
        return f"a tensor of shape {tuple(output.shape)}"
    if isinstance(output, Mapping):
        return f"a {type(output).__name__} with keys {list(output.keys())}"
    if isinstance(output, (tuple, list)):
        return f"a {type(output).__name__} of {len(output)} items ({', '.join(type(item).__name__ for item in output[:4])})"
    return f"a {type(output).__name__}"


def logits_of(output: Any, *, who: str = "the model") -> Tensor:
    """The logits in a model's ``output``: (B, K) for classifiers, (B, L, V) for token models.

    A tensor is taken as it is; a mapping or ``ModelOutput`` gives its ``logits``; a tuple or list
    its first item (recursively). Anything else raises :class:`ModelOutputError` naming ``who``
    and what it returned.
    """
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping):
        if "logits" in output and isinstance(output["logits"], Tensor):
            return output["logits"]
        raise ModelOutputError(f"{who} returned {_describe(output)}, with no 'logits' tensor: distill reads logits "
                               "from a tensor, a tuple whose first item is the logits, or an output with 'logits' "
                               "(wrap the model so that it returns its class scores)")
    if isinstance(output, (tuple, list)) and output:
        return logits_of(output[0], who=who)
    raise ModelOutputError(f"{who} returned {_describe(output)}; distill reads logits from a tensor, a tuple whose "
                           "first item is the logits, or an output with 'logits' (e.g. a Hugging Face ModelOutput)")


def forward_logits(model: nn.Module, inputs: Inputs, *, who: str | None = None) -> Tensor:
    """:func:`call_model` then :func:`logits_of`."""
    return logits_of(call_model(model, inputs), who=who or f"model {type(model).__name__}")


def batch_size_of(inputs: Inputs) -> int:
    """Rows in ``inputs`` (B); a mapping's tensors must agree on it."""
    if isinstance(inputs, Tensor):
        return len(inputs)
    sizes = {key: len(value) for key, value in inputs.items() if isinstance(value, Tensor)}
    if not sizes:
        raise ValueError(f"inputs hold no tensor (keys {list(inputs)})")
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the input tensors disagree on the batch size: {sizes}")
    return next(iter(sizes.values()))


def to_device(tree: Any, device: torch.device | str, *, non_blocking: bool = False) -> Any:
    """``tree`` (a tensor, or mappings / tuples / lists of them) with every tensor moved to ``device``."""
    if isinstance(tree, Tensor):
        return tree.to(device, non_blocking=non_blocking)
    if isinstance(tree, Mapping):
        return {key: to_device(value, device, non_blocking=non_blocking) for key, value in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(to_device(value, device, non_blocking=non_blocking) for value in tree)
    return tree


def select(inputs: Inputs, rows: slice | Tensor) -> Inputs:
    """Rows ``rows`` (a slice or an index tensor) of every tensor in ``inputs``."""
    if isinstance(inputs, Tensor):
        return inputs[rows]
    return {key: value[rows] if isinstance(value, Tensor) else value for key, value in inputs.items()}


def concat(parts: list[Inputs]) -> Inputs:
    """Concatenate inputs along the batch dimension (tensors, or mappings of tensors with the same keys)."""
    if isinstance(parts[0], Tensor):
        return torch.cat(parts)
    return {key: torch.cat([part[key] for part in parts]) for key in parts[0]}
