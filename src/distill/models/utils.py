"""Model size helpers: parameter count, bytes as stored, a one-paragraph description; size checks for builders."""
from __future__ import annotations

import numbers
from typing import Any

from torch import nn


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_bytes(model: nn.Module) -> int:
    """Bytes of parameters + buffers in their stored dtypes (what a state_dict holds)."""
    tensors = list(model.parameters()) + list(model.buffers())
    return sum(t.numel() * t.element_size() for t in tensors)


def describe(model: nn.Module) -> str:
    """One line per top-level child with its parameter count, then totals and the config."""
    lines = [f"{type(model).__name__}: {count_parameters(model):,} parameters, {model_bytes(model) / 1e6:.3f} MB"]
    for name, child in model.named_children():
        lines.append(f"  {name:<16} {type(child).__name__:<16} {count_parameters(child):>12,}")
    if hasattr(model, "config"):
        lines.append(f"  config: {model.config}")
    return "\n".join(lines)


def set_module(model: nn.Module, path: str, module: nn.Module) -> None:
    """Put ``module`` at the dotted ``path`` of ``model`` (replacing what is there), in place."""
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def check_size(name: str, value: Any, rule: str, *, minimum: int = 1) -> None:
    """Raise ``ValueError("<name> is <value>; <rule>")`` unless ``value`` is an integer >= ``minimum``.

    ``rule`` says what would be right (e.g. ``"every hidden width must be an integer >= 1"``);
    booleans are not sizes. Builders call it before building, so a zero or negative size never
    turns into an empty layer or a silent clamp.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{name} is {value!r}; {rule}")


def check_sizes(name: str, values: Any, rule: str, *, minimum: int = 1) -> tuple:
    """:func:`check_size` on each entry of the list ``values`` (reported as ``name[i]``); returns it as a tuple.

    A bare number or string where a list belongs is refused with an example of the list form.
    """
    if isinstance(values, (str, bytes)) or not isinstance(values, (list, tuple)):
        raise ValueError(f"{name} must be a list of sizes, e.g. [{values!r}]; got {values!r}")
    for index, value in enumerate(values):
        check_size(f"{name}[{index}]", value, rule, minimum=minimum)
    return tuple(values)


def check_io(input_shape: Any, num_classes: Any) -> None:
    """Refuse an ``input_shape`` with a size < 1 and a ``num_classes`` < 1 (the arguments every classifier takes)."""
    check_sizes("input_shape", input_shape, "every input dimension must be an integer >= 1")
    check_size("num_classes", num_classes, "a classifier needs at least 1 class (an integer >= 1)")
