"""The export-target contract: a :class:`Target` declares what it builds, in which precisions, and
what runs it; :data:`TARGETS` (a :class:`distill.registry.Registry`) holds them by name.

Adding a target is adding one module to this package (imported by its ``__init__``) that calls
``register(Target(...))``; a user's own code may register one the same way before exporting.
:class:`distill.export.Exporter`, ``check_request``, ``default_precisions``, ``distill bench`` and
the CLI help read everything from here: nothing else names a target.

A target's ``build(context, precision, folder)`` writes the artifact into ``folder`` and returns a
:class:`Built` (artifact path, runner, runtime facts); the exporter then runs the runner on the
held-out split, checks parity against eager PyTorch with the precision's tolerance, times it and
writes the card. ``load(folder, card, threads)`` gives the runner back from an export folder (for
``distill bench``). Both import their runtime lazily, so that this registry stays light.
"""
from __future__ import annotations

import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, NamedTuple, Protocol

from distill.export.errors import ExportError, require
from distill.export.parity import DEFAULT_TOLERANCES, Tolerance
from distill.registry import Registry, UnknownNameError, closest

if TYPE_CHECKING:
    import numpy as np

    from distill.export.api import ExportOptions
    from distill.export.source import Student

TARGETS: Registry = Registry("export target")
NAME = re.compile(r"[a-z][a-z0-9_]*")  # names folders (<target>-<precision>) and the --target value


class Runner(Protocol):
    """``float32 array (B, *input_shape) -> float32 logits (B, K)``, its thread count fixed (``threads``)."""

    threads: int

    def __call__(self, inputs: np.ndarray) -> np.ndarray: ...


class ExportContext(Protocol):
    """What a target's ``build`` may read: :class:`distill.export.Exporter` provides it."""

    student: Student  # model (the eager reference), float_model(), input_shape, calibration_inputs(n) ...
    options: ExportOptions  # threads, calibration_samples ...
    meta: dict[str, Any]  # name, input_shape, classes, mean, std: what an app needs beside the model
    sample: np.ndarray  # one held-out input, (1, *input_shape) float32

    @property
    def fp32_proto(self) -> Any: ...  # the fp32 ONNX ModelProto, built once and shared between variants


class Built(NamedTuple):
    """What ``build`` returns."""

    artifact: Path  # the file the card names, sizes and hashes
    runner: Runner  # the artifact loaded back in its runtime
    runtime: dict[str, Any]  # facts for the card's "runtime": at least "name" and "version" of what ran it;
    # "programs" ({batch size: file name}, static shapes) makes the card list them and bench check each file


class UnknownTargetError(ExportError, UnknownNameError):
    """A target name that is not registered: an :class:`ExportError` and the registry's UnknownNameError."""


@dataclass(frozen=True, eq=False)
class Target:
    """One export target.

    - ``name``: the ``--target`` value and the first half of each variant folder's name.
    - ``precisions``: every precision it builds, in the order they are exported and listed.
    - ``needs_codes``: the precisions that write a quantized student's own ``n``-bit codes
      (``{"int4": 4}``): they are defaults only for a student holding ``n``-bit codes; every other
      precision is a default for float and quantized students alike.
    - ``target_runtime``: what runs the artifact where it is deployed (the card's
      ``runtime.target_runtime``).
    - ``extra`` / ``modules``: the pip extra and the Python packages it needs; a missing one is a
      :class:`MissingRuntimeError` naming ``pip install 'distill[<extra>]'`` before anything is
      written. ``check``: any further check (raising MissingRuntimeError with its own hint).
    - ``build(context, precision, folder) -> Built`` and ``load(folder, card, threads) -> runner``.
    - ``tolerances``: parity bounds for precisions :data:`DEFAULT_TOLERANCES` lacks (or overrides).
    - ``notes(runtime facts) -> [str]``: lines for the card's notes.
    """

    name: str
    precisions: tuple[str, ...]
    target_runtime: str
    build: Callable[[ExportContext, str, Path], Built]
    load: Callable[[Path, dict[str, Any], int], Runner]
    extra: str = "export"
    modules: tuple[str, ...] = ()
    check: Callable[[], object] | None = None
    needs_codes: Mapping[str, int] = field(default_factory=dict)
    tolerances: Mapping[str, Tolerance] = field(default_factory=dict)
    notes: Callable[[dict[str, Any]], list[str]] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "precisions", tuple(self.precisions))
        object.__setattr__(self, "modules", tuple(self.modules))
        where = f"export target {self.name!r}"
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise ValueError(f"{where}: a target name is a lowercase word (letters, digits, _), starting with a letter")
        if not self.precisions or len(set(self.precisions)) != len(self.precisions):
            raise ValueError(f"{where}: precisions must be a non-empty tuple of distinct names, not {self.precisions}")
        for label, keys in (("needs_codes", self.needs_codes), ("tolerances", self.tolerances)):
            stray = sorted(set(keys) - set(self.precisions))
            if stray:
                raise ValueError(f"{where}: {label} names {stray}, which are not among its precisions "
                                 f"{list(self.precisions)}")
        untoleranced = [p for p in self.precisions if p not in self.tolerances and p not in DEFAULT_TOLERANCES]
        if untoleranced:
            raise ValueError(f"{where}: no parity tolerance for {untoleranced}; give them in "
                             f"Target(tolerances={{...}}) (defaults exist for {', '.join(DEFAULT_TOLERANCES)})")
        for label in ("build", "load"):
            if not callable(getattr(self, label)):
                raise ValueError(f"{where}: {label} must be callable")

    def default_precisions(self, code_bits: set[int] | frozenset[int] = frozenset()) -> list[str]:
        """The precisions exported when none is asked for, for a student holding codes of ``code_bits``
        bits (empty: a float student)."""
        return [p for p in self.precisions if p not in self.needs_codes or self.needs_codes[p] in code_bits]

    def check_precisions(self, precisions) -> None:
        for precision in precisions:
            if precision not in self.precisions:
                # 'int8' -> the int8 ones (difflib alone would offer 'int4')
                hints = [p for p in self.precisions if p.startswith(str(precision))]
                hints = hints or [p for p in [closest(str(precision), self.precisions)] if p]
                raise ExportError(f"--precision {precision!r} is not available for --target {self.name}; valid: "
                                  f"{', '.join(self.precisions)}"
                                  + (f"; did you mean {' or '.join(map(repr, hints))}?" if hints else ""))

    def check_runtime(self) -> None:
        """Raise MissingRuntimeError (naming the install step) when a runtime the target needs is absent."""
        for module in self.modules:
            if importlib.util.find_spec(module) is None:
                require(module, self.extra, f"the {self.name} target")
        if self.check is not None:
            self.check()

    def tolerance(self, precision: str) -> Tolerance:
        return self.tolerances[precision] if precision in self.tolerances else DEFAULT_TOLERANCES[precision]

    def card_notes(self, runtime: dict[str, Any]) -> list[str]:
        return list(self.notes(runtime)) if self.notes is not None else []

    def precision_summary(self) -> str:
        """``fp32 int8-dynamic int8-static int4/int2``: the precisions, code-bound ones as alternatives."""
        plain = [p for p in self.precisions if p not in self.needs_codes]
        coded = "/".join(p for p in self.precisions if p in self.needs_codes)
        return " ".join(plain + ([coded] if coded else []))


def register(target: Target) -> Target:
    """Add ``target`` to :data:`TARGETS` under its name (a name taken by another target is an error)."""
    if not isinstance(target, Target):
        raise TypeError(f"register() takes a Target, not {type(target).__name__}")
    return TARGETS.register(target.name, target)


def get_target(name: str) -> Target:
    """The registered target ``name``; UnknownTargetError naming the valid ones and the closest."""
    if isinstance(name, str) and name in TARGETS:
        return TARGETS.get(name)
    names = TARGETS.names()
    hint = closest(str(name), names)
    raise UnknownTargetError(f"--target {name!r} is not a target; valid: {', '.join(names)}"
                             + (f"; did you mean {hint!r}?" if hint else ""))
