"""Read any module's output (or input) by its dotted path, through forward hooks.

A *tap* names one module of a model by the path ``model.named_modules()`` gives it
(``stages.1``, ``layer3.1.conv2``, ``blocks.3.attn``, ``encoder.layer.4.output``) and captures
the tensor that module returns (``capture="output"``) or receives (``capture="input"``) at every
forward. The model is never edited: :class:`Taps` only registers hooks, and removes every one
of them on :meth:`Taps.remove` and when its ``with`` block ends, even by an exception.

    with Taps(student, {"s1": "stages.1", "s2": "stages.2"}) as taps:
        logits = student(images)
        taps.require_all()                  # each tap fired during this forward
        feature = taps.values["s1"]         # (B, C, H, W), still attached to the graph

Which tensor a tap holds (:func:`first_tensor`): a tensor as it is; a tuple or list, its first
tensor element (searched depth-first: ``(hidden, attn_weights)`` gives ``hidden``); a mapping
(Hugging Face ``ModelOutput`` is an ``OrderedDict``) or any object with a tensor attribute
``last_hidden_state``, that attribute, else the mapping's first tensor value. With
``capture="input"`` the same rule is applied to the positional arguments, then to the keyword
arguments. An output that holds no tensor is an error at capture time, naming the path.

Values are the module's own tensors: not detached (the student's features keep their graph)
and not copied. A later in-place op (``nn.ReLU(inplace=True)`` right after the tapped module)
would change what a tap holds: tap a module whose output is not overwritten, or its successor.

Each forward of the *root* model starts by clearing ``values`` (a pre-hook on the model), so
after ``model(x)`` the values are exactly those of that forward and :meth:`Taps.require_all`
catches a tap that did not fire (a module behind a branch that was not taken, or one that the
model bypasses with a functional call). When a module runs several times in one forward
(shared weights) the tap holds its last call; ``calls`` counts them. Calling a submodule
directly does not clear: use :meth:`Taps.clear`.

Paths are checked when the taps are made: a wrong path raises ``ValueError`` that names it and
the closest real paths (:func:`resolve_path`). :func:`probe` runs one forward to learn each
tap's shape (projectors are built from these shapes), :func:`list_paths` lists every module
with its output shape (``distill inspect``).
"""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

CAPTURES = ("output", "input")


# ----------------------------------------------------------------------------- helpers
def first_tensor(value: Any) -> Tensor | None:
    """The tensor a tap keeps from a module's output (or inputs); None when there is none.

    Tensor -> itself; object or mapping with a tensor ``last_hidden_state`` -> that; tuple/list
    -> first tensor found depth-first; mapping -> first tensor value (depth-first).
    """
    if isinstance(value, Tensor):
        return value
    hidden = value.get("last_hidden_state") if isinstance(value, Mapping) else getattr(value, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    items = value.values() if isinstance(value, Mapping) else value if isinstance(value, (tuple, list)) else ()
    for item in items:
        found = first_tensor(item)
        if found is not None:
            return found
    return None


def module_paths(model: nn.Module) -> list[str]:
    """Every submodule's dotted path, in ``named_modules`` order (the root, ``""``, left out)."""
    return [name for name, _ in model.named_modules() if name]


def resolve_path(model: nn.Module, path: str) -> nn.Module:
    """The submodule at dotted ``path`` (``""`` is the model itself).

    Raises ``ValueError`` naming ``path`` and up to 5 of the closest real paths (difflib over
    ``named_modules``), or the top-level children when nothing is close.
    """
    if not isinstance(path, str):
        raise ValueError(f"a module path must be a string like 'layer3.1.conv2', got {path!r}")
    try:
        return model.get_submodule(path)
    except AttributeError:
        names = module_paths(model)
        close = difflib.get_close_matches(path, names, n=5, cutoff=0.4)
        if close:
            hint = "closest paths: " + ", ".join(close)
        else:
            children = [name for name, _ in model.named_children()]
            hint = ("top-level modules: " + ", ".join(children[:10])) if children else "the model has no submodules"
        raise ValueError(f"{type(model).__name__} has no module at path {path!r}; {hint} "
                         f"(`distill inspect` lists every path with its output shape)") from None


def _normalise_paths(paths: list[str] | tuple[str, ...] | dict[str, str]) -> dict[str, str]:
    if isinstance(paths, str):
        raise ValueError(f"paths must be a list of module paths or a dict name -> path, got the string {paths!r}")
    if isinstance(paths, Mapping):
        named = dict(paths)
    else:
        named = {path: path for path in paths}
        if len(named) != len(paths):
            raise ValueError(f"duplicate module paths in {list(paths)}")
    if not named:
        raise ValueError("no module paths given to tap")
    return named


def _call(model: nn.Module, sample_input: Any) -> Any:
    """``model(x)`` for a tensor, ``model(*args)`` for a tuple/list, ``model(**kwargs)`` for a dict."""
    if isinstance(sample_input, Mapping):
        return model(**sample_input)
    if isinstance(sample_input, (tuple, list)):
        return model(*sample_input)
    return model(sample_input)


class _EvalNoGrad:
    """Put every module in eval mode and disable grad; restore each module's own flag after."""

    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.modes = [(module, module.training) for module in self.model.modules()]
        self.model.eval()
        self.no_grad = torch.no_grad()
        self.no_grad.__enter__()
        return self

    def __exit__(self, *exc):
        self.no_grad.__exit__(*exc)
        for module, mode in self.modes:
            module.training = mode
        return False


# ----------------------------------------------------------------------------- Taps
class Taps:
    """Forward hooks that capture named modules of ``model`` at every forward.

    Args:
        model: any ``nn.Module``; only hooks are added to it.
        paths: a list of dotted module paths (each tap is named by its path) or a dict
            ``name -> path``.
        capture: ``"output"`` (what the module returns) or ``"input"`` (its first tensor
            argument).

    Attributes:
        values: ``name -> Tensor`` captured during the latest forward of ``model``.
        calls: ``name -> int``, how many times each tapped module ran in that forward.
        paths, capture, model: the arguments, verbatim.

    Hooks are registered at construction (and again by ``attach`` / ``with`` after a
    ``remove``); ``remove`` and the end of a ``with`` block take every hook off the model.
    Wrong paths raise ``ValueError`` here, before any forward.
    """

    def __init__(self, model: nn.Module, paths: list[str] | dict[str, str], *, capture: str = "output"):
        if capture not in CAPTURES:
            raise ValueError(f"capture={capture!r} is not one of {CAPTURES}")
        self.model = model
        self.paths = paths
        self.capture = capture
        self.named_paths = _normalise_paths(paths)
        self.modules = {name: resolve_path(model, path) for name, path in self.named_paths.items()}
        self.values: dict[str, Tensor] = {}
        self.calls: dict[str, int] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.attach()

    def __repr__(self) -> str:
        return (f"Taps({type(self.model).__name__}, {self.paths!r}, capture={self.capture!r}, "
                f"attached={self.attached})")

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> "Taps":
        """Register the hooks (a no-op when already attached)."""
        if self._handles:
            return self
        self._handles.append(self.model.register_forward_pre_hook(lambda module, args: self.clear()))
        for name, module in self.modules.items():
            self._handles.append(module.register_forward_hook(self._hook(name), with_kwargs=True))
        return self

    def _hook(self, name: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
            if self.capture == "output":
                value = first_tensor(output)
            else:
                value = first_tensor(args)
                value = first_tensor(kwargs) if value is None else value
            if value is None:
                raise TypeError(f"tap {name!r}: module {self.named_paths[name]!r} ({type(module).__name__}) "
                                f"{'returned' if self.capture == 'output' else 'received'} no tensor "
                                f"(got {type(output if self.capture == 'output' else args).__name__}); "
                                "tap a module that produces a tensor")
            self.values[name] = value
            self.calls[name] = self.calls.get(name, 0) + 1
        return hook

    def clear(self) -> None:
        """Forget the captured values (done automatically at each forward of the root model)."""
        self.values.clear()
        self.calls.clear()

    def remove(self) -> None:
        """Remove every hook this object registered (idempotent) and drop the captured values."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self.clear()

    def require_all(self) -> dict[str, Tensor]:
        """The captured values, after checking that every tap fired in the latest forward.

        Raises ``ValueError`` naming each tap that did not fire and its module path.
        """
        missing = [name for name in self.named_paths if name not in self.values]
        if missing:
            described = ", ".join(f"{name!r} (module {self.named_paths[name]!r}, "
                                  f"{type(self.modules[name]).__name__})" for name in missing)
            raise ValueError(f"tap {described} did not fire: the module is never called in forward "
                             "(it sits behind a branch that was not taken, or the model calls a function "
                             "instead of the module); tap a module that runs, see `distill inspect`")
        return self.values

    def __enter__(self) -> "Taps":
        return self.attach()

    def __exit__(self, *exc) -> bool:
        self.remove()
        return False


# ----------------------------------------------------------------------------- probing
def probe(model: nn.Module, sample_input: Any, paths: list[str] | dict[str, str], *,
          capture: str = "output") -> dict[str, torch.Size]:
    """Each tap's shape (batch dim included) from one forward of ``sample_input``.

    The forward runs in eval mode under ``torch.no_grad()``; every module's train/eval flag is
    restored afterwards and every hook removed. ``sample_input``: a tensor (``model(x)``), a
    tuple/list (``model(*args)``) or a dict (``model(**kwargs)``, e.g. a tokenizer's output).
    Raises ``ValueError`` for a wrong path, and for a tap that never fires ("module X is never
    called in forward").
    """
    with Taps(model, paths, capture=capture) as taps, _EvalNoGrad(model):
        _call(model, sample_input)
        missing = [name for name in taps.named_paths if name not in taps.values]
        if missing:
            raise ValueError("; ".join(f"module {taps.named_paths[name]!r} is never called in forward "
                                       f"(tap {name!r}, {type(taps.modules[name]).__name__})" for name in missing)
                             + ": tap a module that runs, see `distill inspect`")
        return {name: taps.values[name].shape for name in taps.named_paths}


def list_paths(model: nn.Module, sample_input: Any,
               max_depth: int | None = None) -> list[tuple[str, str, tuple | None]]:
    """``(path, module class, output shape)`` for every submodule, in ``named_modules`` order.

    One forward (eval, no grad, flags restored, hooks removed) with a hook on every module.
    ``max_depth`` keeps paths with at most that many dotted parts (1: top-level children).
    The shape is the last call's output (batch dim included), ``None`` for a module that never
    runs in forward or returns no tensor. The root model itself is not listed.
    """
    if max_depth is not None and max_depth < 1:
        raise ValueError(f"max_depth must be >= 1 or None, got {max_depth}")
    entries = [(name, module) for name, module in model.named_modules()
               if name and (max_depth is None or name.count(".") + 1 <= max_depth)]
    shapes: dict[str, tuple] = {}
    handles = []

    def recorder(name: str):
        def hook(module, args, output):
            value = first_tensor(output)
            if value is not None:
                shapes[name] = tuple(value.shape)
        return hook

    try:
        for name, module in entries:
            handles.append(module.register_forward_hook(recorder(name)))
        with _EvalNoGrad(model):
            _call(model, sample_input)
    finally:
        for handle in handles:
            handle.remove()
    return [(name, type(module).__name__, shapes.get(name)) for name, module in entries]
