"""One small generic registry: name -> factory.

Recipes name models, datasets and losses by their registered name. A name of the
form ``package.module:callable`` imports the user's own callable instead, so users
never have to register anything to plug their code in.
"""
from __future__ import annotations

import difflib
import importlib
from typing import Callable, Generic, Iterator, TypeVar

T = TypeVar("T", bound=Callable)
PYTHON_OBJECT = "python"  # ``python:<name>`` in a recipe.yaml: an object a Python call passed in


class UnknownNameError(KeyError):
    """A name that is neither registered nor an importable ``module:callable``."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


def closest(name: str, choices: list[str] | tuple[str, ...]) -> str | None:
    """The closest valid spelling of ``name`` among ``choices`` (or None)."""
    matches = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return matches[0] if matches else None


def import_callable(path: str) -> Callable:
    """Import ``package.module:attr`` (attr may be dotted) and return it."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise UnknownNameError(f"{path!r} is not of the form 'package.module:callable'")
    if module_name == PYTHON_OBJECT:
        raise UnknownNameError(f"{path!r} stands for a Python object given to distill.distil(): a recipe.yaml "
                               "written by a Python run records it, but cannot rebuild it; run that script again, "
                               "or name a registered model / data set or 'package.module:callable'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise UnknownNameError(f"cannot import module {module_name!r} named in {path!r}: {exc}") from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UnknownNameError(f"module {module_name!r} has no attribute {attr!r} (from {path!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise UnknownNameError(f"{path!r} is not callable")
    return obj


class Registry(Generic[T]):
    """Maps names to factories for one kind of thing (``kind`` is used in errors).

    >>> models = Registry("model")
    >>> @models.register("mlp")
    ... def mlp(**kw): ...
    >>> models.get("mlp") is mlp
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str, factory: T | None = None):
        """Register ``factory`` under ``name``; usable as a decorator."""

        def add(fn: T) -> T:
            if name in self._entries and self._entries[name] is not fn:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = fn
            return fn

        return add(factory) if factory is not None else add

    def get(self, name: str) -> T:
        """The factory for ``name``; ``module:callable`` imports user code.

        Raises UnknownNameError naming the closest registered name on a typo.
        """
        if name in self._entries:
            return self._entries[name]
        if ":" in name:
            return import_callable(name)  # type: ignore[return-value]
        hint = closest(name, self.names())
        suggestion = f"; did you mean {hint!r}?" if hint else "."
        raise UnknownNameError(
            f"unknown {self.kind} {name!r}{suggestion} Valid names: {', '.join(self.names())}, "
            f"or 'package.module:callable' for your own code."
        )

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, names={self.names()})"
