"""Model size helpers: parameter count, bytes as stored, a one-paragraph description."""
from __future__ import annotations

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
