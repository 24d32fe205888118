"""Teacher sources: whatever a user brings as a teacher, turned into a frozen ``nn.Module``.

``load_teacher(source)`` returns a :class:`TeacherSource`: the model (``eval()`` mode, every
parameter ``requires_grad=False``), its kind, a one-line description for reports and, for a
distill model file, its spec. ``source`` is one of (``teacher_kind`` tells which, without loading):

========================  ==========================================================================
kind                      what it is, and how it is loaded
========================  ==========================================================================
``"module"``              a live ``nn.Module``: frozen in place, as it is (not moved, not copied)
``"distill-file"``        a ``.safetensors`` file with ``distill`` metadata:
                          :func:`distill.artifacts.load_model`
``"huggingface"``         a folder with ``config.json`` and safetensors weights: ``transformers``
                          ``from_pretrained(folder, local_files_only=True, use_safetensors=True)``
``"state-dict"``          ``.pt`` / ``.pth`` / ``.bin`` (``torch.save``) or plain ``.safetensors``
                          weights, plus ``builder=``: ``torch.load(weights_only=True)``, then a
                          strict ``load_state_dict``
``"torchscript"``         ``torch.jit.save`` output: ``torch.jit.load``
``"exported-program"``    ``torch.export.save`` output (``.pt2``): ``torch.export.load(...).module()``
========================  ==========================================================================

Files are told apart by their bytes, never by their suffix alone: a zip archive with a ``code/``
folder is TorchScript, one with ``archive_format`` / ``models/*.json`` is a torch.export program,
one with only ``data.pkl`` is a ``torch.save`` file; an 8-byte length and a JSON header is
safetensors; a leading pickle opcode is a legacy ``torch.save`` file.

**Trust: which sources may run code.**

- A live module and a ``builder`` are the user's own code (a ``"package.module:callable"``
  builder is imported with :func:`distill.registry.import_callable` because the user named it).
- Files never make distill import or run Python code. Weights are read with safetensors or
  ``torch.load(weights_only=True)``; a pickled whole model is refused, never unpickled.
- TorchScript and torch.export files carry a graph, the model's own forward, which torch runs
  (TorchScript in its own interpreter; an exported graph as a sequence of operators). That is
  what loading such a teacher means. ``torch.export.load`` itself may unpickle payloads and
  ``eval`` the symbolic shape expressions in the file, so distill first checks the archive: its
  pickled payloads must load with ``weights_only=True``, it may hold no custom or opaque objects
  and no AOTInductor (compiled native) code, every graph node must call a torch operator
  (``torch.ops.*``, ``_operator.*``, ``math.*``, ``torch.sym_*``), and every symbolic expression
  may use only sympy arithmetic on shape symbols. A file that fails the check is refused.
- ``trust_code=True`` (``--trust-code``) is the one way to let a file name code: a distill model
  file whose spec names ``package.module:callable``, a Hugging Face folder whose ``config.json``
  has ``auto_map`` (remote code; ``trust_remote_code=True`` is passed to transformers only then),
  and a torch.export file that fails the check above. Use it only for files from someone you
  trust.

Every failure is a :class:`TeacherSourceError` (a ``ValueError``) naming the source, what was
wrong and what would be right.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import tokenize
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import torch
from torch import Tensor, nn

KINDS = ("module", "distill-file", "huggingface", "state-dict", "torchscript", "exported-program")

#: Keys under which checkpoints commonly keep the model's state dict, tried in this order.
STATE_DICT_KEYS = ("state_dict", "model_state_dict", "model")
#: Prefixes wrappers add to every key: DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")

_LABELS = {"module": "live module", "distill-file": "distill model file", "huggingface": "Hugging Face",
           "state-dict": "state dict", "torchscript": "TorchScript", "exported-program": "torch.export program"}
_ACCEPTED = ("an nn.Module, a distill model file (.safetensors), a Hugging Face model folder (with config.json "
             "and safetensors weights), a state dict file (.pt / .pth / .bin / .safetensors, with builder=), a "
             "TorchScript file (torch.jit.save) or a torch.export program (.pt2, torch.export.save)")
_SAVE_INSTEAD = ("save the weights instead, torch.save(model.state_dict(), 'teacher.pth'), and pass "
                 "builder= (the code that builds the model); or save the model with its forward: "
                 "torch.jit.save(torch.jit.script(model), 'teacher.ts') or "
                 "torch.export.save(torch.export.export(model.eval(), example_args), 'teacher.pt2')")

Builder = Union[nn.Module, Callable[[], nn.Module], str]


class TeacherSourceError(ValueError):
    """A teacher source distill cannot use; the message names it, what was wrong and what would be right."""


class TeacherNotFoundError(TeacherSourceError, FileNotFoundError):
    """A teacher path that does not exist (also a ``FileNotFoundError``)."""


class MissingExtraError(TeacherSourceError, ImportError):
    """An optional dependency a teacher source needs is not installed; the message names the pip extra."""


@dataclass
class TeacherSource:
    """A loaded teacher.

    Attributes:
        model: the teacher, in ``eval()`` mode with every parameter ``requires_grad=False``.
        kind: one of :data:`KINDS`.
        description: one line for reports, e.g. ``"BertForSequenceClassification from ./bert
            (Hugging Face, 4.4M parameters)"``.
        path: the file or folder it was loaded from (None for a live module).
        spec: the distill model file's spec when ``kind == "distill-file"``, else None.
    """

    model: nn.Module
    kind: str
    description: str
    path: Path | None = None
    spec: dict | None = None


# ----------------------------------------------------------------------------------------------
# descriptions

def _count_text(count: int) -> str:
    for scale, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}"
    return str(count)


def _class_name(model: nn.Module) -> str:
    if isinstance(model, torch.jit.ScriptModule):  # RecursiveScriptModule: the scripted class's name
        return getattr(model, "original_name", None) or type(model).__name__
    if isinstance(model, torch.fx.GraphModule):  # an exported program's module: GraphModuleImpl
        return "GraphModule"
    return type(model).__name__


def _parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())  # shared parameters once


def describe_module(model: nn.Module) -> str:
    """``"MLP (12.3K parameters)"``: the model's class name (a TorchScript module's original class)
    and its parameter count (shared parameters counted once)."""
    return f"{_class_name(model)} ({_count_text(_parameter_count(model))} parameters)"


def _description(model: nn.Module, kind: str, where: str | None, detail: str | None = None) -> str:
    label = _LABELS[kind] + (f" {detail}" if detail else "")
    origin = f" from {where}" if where else ""
    return f"{_class_name(model)}{origin} ({label}, {_count_text(_parameter_count(model))} parameters)"


# ----------------------------------------------------------------------------------------------
# detection

def _as_path(source: Any) -> Path:
    if isinstance(source, (str, os.PathLike)):
        return Path(source)
    if isinstance(source, torch.export.ExportedProgram):
        raise TeacherSourceError("the teacher is a torch.export ExportedProgram, which is not a module: pass "
                                 "program.module(), or the .pt2 file torch.export.save wrote")
    raise TeacherSourceError(f"a teacher source of type {type(source).__name__} ({source!r:.80}) cannot be used; "
                             f"give {_ACCEPTED}")


def _require_exists(path: Path, source: Any) -> None:
    if not path.exists():
        raise TeacherNotFoundError(
            f"teacher {os.fspath(source)!r} does not exist (looked for {path.absolute()}). Give {_ACCEPTED}. "
            "distill never downloads models: for a Hugging Face Hub id, download it first "
            "(e.g. `hf download ID --local-dir DIR`) and pass DIR")


def _zip_members(path: Path) -> tuple[list[str], str]:
    """(member names relative to the archive's single top folder, that folder + '/' or '')."""
    with zipfile.ZipFile(path) as archive:
        names = [name for name in archive.namelist() if name and not name.endswith("/")]
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names):
        top = next(iter(tops)) + "/"
        return [name[len(top):] for name in names], top
    return names, ""


def _zip_kind(path: Path) -> str:
    try:
        members, _ = _zip_members(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TeacherSourceError(f"{path} looks like a zip archive but cannot be read ({exc}); it is truncated "
                                 "or damaged: use an intact copy") from None
    if any(name.startswith("code/") for name in members) or "constants.pkl" in members \
            or "bytecode.pkl" in members:
        return "torchscript"
    if "archive_format" in members or any(name.startswith("models/") and name.endswith(".json") for name in members) \
            or any(name.startswith("data/aotinductor/") for name in members):
        return "exported-program"
    if "data.pkl" in members:
        return "state-dict"
    shown = ", ".join(members[:6]) + (f" and {len(members) - 6} more" if len(members) > 6 else "")
    raise TeacherSourceError(f"{path} is a zip archive but not one torch writes (it holds {shown or 'nothing'}): "
                             f"give {_ACCEPTED}")


def _is_safetensors(head: bytes, size: int) -> bool:
    if len(head) < 9:
        return False
    header_length = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 8 + header_length <= size


def teacher_kind(source: Any) -> str:
    """The kind of teacher ``source`` is (one of :data:`KINDS`), read from its bytes, without loading it.

    Raises :class:`TeacherSourceError` for a path that does not exist (:class:`TeacherNotFoundError`),
    a folder without ``config.json``, or a file of a format distill does not load.
    """
    if isinstance(source, nn.Module):
        return "module"
    path = _as_path(source)
    _require_exists(path, source)
    if path.is_dir():
        if (path / "config.json").is_file():
            return "huggingface"
        hints = []
        if (path / "model.safetensors").is_file():
            hints.append(f"for a distill run folder, pass its model file {path / 'model.safetensors'}")
        if (path / "adapter_config.json").is_file():
            hints.append("for a PEFT adapter, merge it into its base model (merge_and_unload) and "
                         "save_pretrained the result")
        hint = "; ".join(hints) or f"give {_ACCEPTED}"
        raise TeacherSourceError(f"{path} is a folder without config.json, so not a Hugging Face model folder; {hint}")
    with open(path, "rb") as handle:
        head = handle.read(16)
    size = path.stat().st_size
    if head[:4] == b"PK\x03\x04":
        return _zip_kind(path)
    if _is_safetensors(head, size):
        from distill.artifacts import METADATA_KEY

        return "distill-file" if METADATA_KEY in _read_metadata(path) else "state-dict"
    if head[:1] == b"\x80":  # a pickle protocol opcode: torch.save(_use_new_zipfile_serialization=False)
        return "state-dict"
    suffix = path.suffix.lower()
    if size == 0:
        what = "an empty file"
    elif head[:4] == b"GGUF":
        what = "a GGUF (llama.cpp) file"
    elif head[:4] == b"\x89HDF" or suffix in (".h5", ".keras"):
        what = "an HDF5 (Keras / TensorFlow) file"
    elif suffix == ".onnx":
        what = "an ONNX file (an export target, not a PyTorch model)"
    elif suffix == ".pte":
        what = "an ExecuTorch program (an export target, not a PyTorch model)"
    elif suffix == ".safetensors":
        what = "a damaged .safetensors file (its header is not valid)"
    else:
        what = f"a file of unknown format (it starts with {head[:8]!r})"
    raise TeacherSourceError(f"{path} is {what}; distill loads PyTorch teachers: give {_ACCEPTED}")


def _read_metadata(path: Path) -> dict[str, str]:
    from distill.artifacts import ArtifactError, read_metadata

    try:
        return read_metadata(path)
    except ArtifactError as exc:
        raise TeacherSourceError(str(exc)) from None


# ----------------------------------------------------------------------------------------------
# freezing

def _exported_training_ops(model: nn.Module) -> list[str]:
    """Nodes of a torch.export graph that run as in training (dropout / batch norm with train=True)."""
    found = []
    for module in model.modules():
        if not isinstance(module, torch.fx.GraphModule):
            continue
        for node in module.graph.nodes:
            target = node.target
            if node.op != "call_function" or not isinstance(target, torch._ops.OpOverload):
                continue
            name = target.name()
            if "_batch_norm_with_update" in name:
                found.append(name)
                continue
            if "dropout" not in name and "batch_norm" not in name:
                continue
            for index, argument in enumerate(target._schema.arguments):
                if argument.name in ("train", "training"):
                    value = node.args[index] if index < len(node.args) else node.kwargs.get(argument.name)
                    if value is True:
                        found.append(name)
    return found


def _torchscript_training_ops(model: torch.jit.ScriptModule) -> list[str]:
    """Ops of a TorchScript forward with a constant train=True (a model traced in training mode)."""
    try:
        graph = model.inlined_graph
    except (RuntimeError, AttributeError):  # no forward method
        return []
    found = []

    def visit(block) -> None:
        for node in block.nodes():
            for inner in node.blocks():
                visit(inner)
            kind = node.kind()
            if "dropout" not in kind and "batch_norm" not in kind:
                continue
            try:
                schema = torch._C.parse_schema(node.schema())
            except RuntimeError:  # "(no schema)"
                continue
            inputs = list(node.inputs())
            for index, argument in enumerate(schema.arguments):
                if argument.name in ("train", "training") and index < len(inputs):
                    value = inputs[index]
                    if value.node().kind() == "prim::Constant" and value.toIValue() is True:
                        found.append(kind)

    visit(graph)
    return found


def freeze(model: nn.Module, where: str = "the teacher") -> nn.Module:
    """Eval mode and ``requires_grad=False`` for every parameter, in place.

    A torch.export module cannot be switched to eval mode (its graph is fixed when exported, and
    its ``eval()`` raises), so its graph is checked to hold no training-mode op and its ``training``
    flags are set to False. A TorchScript module traced in training mode has its dropout / batch
    norm mode baked in, so eval() cannot switch it: refused.
    """
    retrace = ("re-export the teacher from eval mode: call model.eval() before "
               "torch.export.export / torch.jit.trace")
    if isinstance(model, torch.jit.ScriptModule):
        training_ops = _torchscript_training_ops(model)
        if training_ops:
            raise TeacherSourceError(f"{where} was traced in training mode: its graph runs "
                                     f"{', '.join(sorted(set(training_ops)))} with train=True baked in, so eval() "
                                     f"cannot switch it; {retrace}")
    try:
        model.eval()
    except NotImplementedError:  # torch.export's module: "Calling eval() is not supported yet"
        training_ops = _exported_training_ops(model)
        if training_ops:
            raise TeacherSourceError(f"{where} was exported in training mode: its graph runs "
                                     f"{', '.join(sorted(set(training_ops)))} as in training, so the teacher would be "
                                     f"random (dropout) or use batch statistics; {retrace}") from None
        for module in model.modules():
            module.training = False
    for parameter in model.parameters():  # not model.requires_grad_(): ScriptModules refuse it
        parameter.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------------------------
# state dicts

def _builder_name(builder: Builder) -> str:
    if isinstance(builder, str):
        return builder
    if isinstance(builder, nn.Module):
        return f"a {type(builder).__name__} instance"
    return getattr(builder, "__qualname__", None) or type(builder).__name__


def _build(builder: Builder, where: str) -> nn.Module:
    """The module ``builder`` gives: the module itself, ``builder()``, or the imported ``package.module:callable``()."""
    if isinstance(builder, nn.Module):
        return builder
    if isinstance(builder, str):
        from distill.registry import UnknownNameError, import_callable

        if ":" not in builder:
            raise TeacherSourceError(f"builder {builder!r} for {where} is not of the form 'package.module:callable'; "
                                     "give an nn.Module, a zero-argument callable returning one, or "
                                     "'package.module:callable'")
        try:
            factory = import_callable(builder)
        except UnknownNameError as exc:
            raise TeacherSourceError(f"builder for {where}: {exc}") from None
    elif callable(builder):
        factory = builder
    else:
        raise TeacherSourceError(f"builder for {where} is a {type(builder).__name__}; give an nn.Module, a "
                                 "zero-argument callable returning one, or 'package.module:callable'")
    try:
        model = factory()
    except TypeError as exc:
        raise TeacherSourceError(f"builder {_builder_name(builder)} for {where} could not be called with no "
                                 f"arguments ({exc}); bind its arguments first, e.g. functools.partial(MyNet, "
                                 "width=256), or pass the built nn.Module") from None
    if not isinstance(model, nn.Module):
        raise TeacherSourceError(f"builder {_builder_name(builder)} for {where} returned a {type(model).__name__}, "
                                 "not an nn.Module")
    return model


def _is_state_dict(value: Any) -> bool:
    return isinstance(value, Mapping) and bool(value) and all(isinstance(item, Tensor) for item in value.values())


def _unwrap_state(loaded: Any, where: str) -> dict[str, Tensor]:
    """The state dict in ``loaded``: itself, or under ``state_dict`` / ``model_state_dict`` / ``model``."""
    trail = []
    for _ in range(len(STATE_DICT_KEYS) + 1):
        if _is_state_dict(loaded):
            return dict(loaded)
        if not isinstance(loaded, Mapping):
            break
        key = next((key for key in STATE_DICT_KEYS if isinstance(loaded.get(key), Mapping)), None)
        if key is None:
            break
        trail.append(key)
        loaded = loaded[key]
    inside = "".join(f"[{key!r}]" for key in trail)
    if isinstance(loaded, Mapping):
        other = [key for key, value in loaded.items() if not isinstance(value, Tensor)]
        found = (f"a mapping with keys {list(loaded)[:8]}" if loaded else "an empty mapping") + \
            (f" ({len(other)} of them not tensors: {other[:5]})" if other else "")
    else:
        found = f"a {type(loaded).__name__}"
    raise TeacherSourceError(f"{where}{inside} holds {found}, not a state dict (a mapping of parameter names to "
                             f"tensors, alone or under one of the keys {list(STATE_DICT_KEYS)}); save "
                             "model.state_dict()")


def _strip(state: dict[str, Tensor], prefix: str) -> dict[str, Tensor]:
    return {key[len(prefix):]: value for key, value in state.items()}


def _fit_keys(state: dict[str, Tensor], expected: set[str]) -> dict[str, Tensor]:
    """``state``, or ``state`` without a DDP / torch.compile prefix when that makes its keys ``expected``.

    When no version fits, the one sharing most keys with ``expected`` (for the error message).
    """
    candidates = [state]
    current = state
    while True:
        prefix = next((prefix for prefix in WRAPPER_PREFIXES
                       if all(key.startswith(prefix) for key in current)), None)
        if prefix is None:
            break
        current = _strip(current, prefix)
        candidates.append(current)
    for candidate in candidates:
        if set(candidate) == expected:
            return candidate
    return max(candidates, key=lambda candidate: len(set(candidate) & expected))


def _listed(keys: list[str], limit: int = 5) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _load_state_into(model: nn.Module, state: dict[str, Tensor], where: str, builder: Builder) -> nn.Module:
    """Strict ``load_state_dict`` of ``state`` into ``model``; a mismatch names the keys and shapes."""
    own = model.state_dict()
    state = _fit_keys(state, set(own))
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [f"{key}: file {tuple(state[key].shape)} vs model {tuple(own[key].shape)}"
              for key in own if key in state and tuple(state[key].shape) != tuple(own[key].shape)]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing from the file {len(missing)} of the model's {len(own)} keys ({_listed(missing)})")
        if unexpected:
            problems.append(f"unexpected in the file {len(unexpected)} keys ({_listed(unexpected)})")
        if shapes:
            problems.append(f"shape mismatches ({_listed(shapes, 3)})")
        raise TeacherSourceError(f"{where} does not fit the {type(model).__name__} that builder "
                                 f"{_builder_name(builder)} makes: {'; '.join(problems)}. The builder must make "
                                 "the same architecture, with the same sizes, as the model that saved the file")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise TeacherSourceError(f"{where} does not fit {type(model).__name__}: {' '.join(str(exc).split())[:400]}") \
            from None
    return model


def _read_state_file(path: Path, map_location: torch.device, where: str) -> dict[str, Tensor]:
    with open(path, "rb") as handle:
        head = handle.read(16)
    if _is_safetensors(head, path.stat().st_size):
        from distill.artifacts import ArtifactError, load_state

        try:
            return load_state(path, what="state dict file")
        except ArtifactError as exc:
            raise TeacherSourceError(str(exc)) from None
    try:
        loaded = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
        what = f" (it names {found.group(1)})" if found else ""
        raise TeacherSourceError(
            f"{where} holds pickled Python objects, not only tensors{what}: a whole model saved with "
            "torch.save(model), or a checkpoint with custom objects. distill never unpickles files, because "
            f"unpickling runs code named by the file; {_SAVE_INSTEAD}") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise TeacherSourceError(f"{where} is not a readable torch.save file (truncated or damaged?): "
                                 f"{' '.join(str(exc).split())[:300]}") from None
    return _unwrap_state(loaded, where)


# ----------------------------------------------------------------------------------------------
# torch.export archives

_OPERATOR_TARGETS = frozenset({
    "add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "neg", "pos", "abs", "eq", "ne", "lt", "le", "gt",
    "ge", "and_", "or_", "xor", "not_", "invert", "getitem", "lshift", "rshift", "matmul", "truth", "index"})
_SYMPY_NAMES = frozenset({
    "Symbol", "Integer", "Rational", "Float", "Add", "Mul", "Pow", "Mod", "Max", "Min", "Abs", "Eq", "Ne", "Lt",
    "Le", "Gt", "Ge", "StrictLessThan", "StrictGreaterThan", "LessThan", "GreaterThan", "Equality", "Unequality",
    "And", "Or", "Not", "Xor", "ITE", "Piecewise", "ExprCondPair", "ceiling", "floor", "sqrt", "oo", "zoo", "nan",
    "true", "false", "True", "False", "None", "Half", "One", "Zero", "NegativeOne", "Infinity",
    "NegativeInfinity", "BooleanTrue", "BooleanFalse", "IntInfinity", "NegativeIntInfinity", "precision"})
_EXPR_OPERATORS = frozenset({"(", ")", ",", "=", "+", "-", "*", "/", "//", "**", "%", "<", ">", "<=", ">=", "==",
                             "!=", "&", "|", "^", "~"})
_SYMBOL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\Z|[-+]?(inf|nan)\Z")


def _expression_names() -> frozenset[str]:
    """Names a symbolic shape expression may use: sympy arithmetic, torch's sympy functions, assumptions."""
    names = set(_SYMPY_NAMES)
    try:
        import sympy
        import torch.utils._sympy.functions as functions

        names.update(name for name, value in vars(functions).items()
                     if isinstance(value, type) and issubclass(value, sympy.Basic) and not name.startswith("_")
                     and value.__module__ == functions.__name__)
        from sympy.core.assumptions import _assume_defined

        names.update(_assume_defined)  # positive=True, integer=True ...
    except (ImportError, AttributeError):
        pass
    return frozenset(names)


def _unsafe_expression(text: str, allowed: frozenset[str]) -> str | None:
    """Why the sympy expression ``text`` is not plain arithmetic on shape symbols, or None when it is.

    ``text`` is what ``sympy.srepr`` writes (``Mul(Integer(2), Symbol('s0', positive=True, integer=True))``),
    and torch.export.load hands it to ``sympy.sympify``, which evals it. Allowed: numbers, the
    operators of :data:`_EXPR_OPERATORS`, the names of ``allowed`` and a string only as the first
    argument of ``Symbol(`` (a symbol name) or ``Float(`` (a number). No attribute access, no other
    strings (``S('...')`` or ``Max('...')`` would sympify them in turn), no other names (builtins).
    """
    try:
        tokens = [token for token in tokenize.generate_tokens(io.StringIO(text).readline)
                  if token.type not in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.INDENT,
                                        tokenize.DEDENT)]
    except (tokenize.TokenError, SyntaxError, IndentationError) as exc:
        return f"it does not parse ({exc})"
    for index, token in enumerate(tokens):
        if token.type == tokenize.NUMBER:
            continue
        if token.type == tokenize.NAME and token.string in allowed:
            continue
        if token.type == tokenize.OP and token.string in _EXPR_OPERATORS:
            continue
        if token.type == tokenize.STRING and index >= 2 and tokens[index - 1].string == "(":
            caller, body = tokens[index - 2].string, token.string
            quoted = len(body) >= 2 and body[0] in "'\"" and body[-1] == body[0]
            pattern = {"Symbol": _SYMBOL_NAME, "Float": _FLOAT_TEXT}.get(caller)
            if quoted and pattern is not None and pattern.match(body[1:-1]):
                continue
        return f"it uses {token.string!r}"
    return None


def _unsafe_target(target: str) -> bool:
    """True unless ``target`` (a serialized graph-node target) names a torch operator or a pure builtin."""
    if target.startswith("torch.ops."):
        obj: Any = torch
        for part in target.split(".")[1:]:
            try:
                obj = getattr(obj, part)
            except (AttributeError, RuntimeError):
                return False  # an op torch does not know: deserialization fails on its own, running nothing
        return not isinstance(obj, (torch._ops.OpOverload, torch._ops.OpOverloadPacket, torch._ops.HigherOrderOperator))
    module, _, name = target.partition(".")
    if module == "_operator":
        return name not in _OPERATOR_TARGETS
    if module == "math":
        return "." in name or not name.isidentifier()
    if module == "torch" and re.fullmatch(r"_?sym_\w+|_check\w*", name):
        return False
    return True


def _exported_program_problems(path: Path) -> list[str]:
    """What in the torch.export archive ``path`` could make ``torch.export.load`` run code (empty when nothing)."""
    problems: list[str] = []
    members, top = _zip_members(path)
    if not top:
        return ["its members are not all under one top folder (torch.export.save writes one; an archive like this "
                "makes torch.export.load fall back to its older, pickle-based format)"]
    member_set = set(members)
    if any(name.startswith("data/aotinductor/") for name in members):
        problems.append("it holds AOTInductor compiled native code (data/aotinductor/)")
    models = [name for name in members if name.startswith("models/") and name.endswith(".json")]
    if "archive_format" not in member_set or not models:
        problems.append("it lacks archive_format or models/*.json (an older torch.export format, loaded with pickle)")
        return problems
    with zipfile.ZipFile(path) as archive:
        def weights_only(name: str) -> None:
            try:
                torch.load(io.BytesIO(archive.read(top + name)), map_location="cpu", weights_only=True)
            except Exception as exc:  # noqa: BLE001 - any failure means torch would fall back to full pickle
                problems.append(f"{name} is a pickle that does not load with weights_only=True "
                                f"({' '.join(str(exc).split())[:120]})")

        for name in members:  # sample inputs and legacy weight / constant files: torch.save payloads
            if name.startswith("data/") and name.endswith(".pt"):
                weights_only(name)
        for name in members:
            if not (name.startswith(("data/weights/", "data/constants/")) and name.endswith("_config.json")):
                continue
            folder = name.rsplit("/", 1)[0] + "/"
            try:
                entries = json.loads(archive.read(top + name))["config"]
            except (ValueError, KeyError, TypeError) as exc:
                problems.append(f"{name} is not a valid payload config ({exc})")
                continue
            for fqn, entry in entries.items():
                file_name = str(entry.get("path_name", ""))
                if folder == "data/constants/" and not file_name.startswith("tensor"):
                    problems.append(f"constant {fqn!r} is a custom or opaque object ({file_name}), restored by "
                                    "unpickling")
                elif entry.get("use_pickle"):
                    weights_only(folder + file_name)
        allowed = _expression_names()
        for model_file in models:
            try:
                tree = json.loads(archive.read(top + model_file))
            except ValueError as exc:
                problems.append(f"{model_file} is not valid JSON ({exc})")
                continue
            _check_graph_tree(tree, model_file, allowed, problems)
    return problems


def _check_graph_tree(tree: Any, where: str, allowed: frozenset[str], problems: list[str]) -> None:
    """Every node target, operator argument and symbolic expression in a serialized exported program."""
    stack: list[tuple[Any, str]] = [(tree, "")]
    while stack and len(problems) < 8:
        value, key = stack.pop()
        if isinstance(value, dict):
            for child_key, child in value.items():
                if child_key == "target" and key == "nodes" and isinstance(child, str) and _unsafe_target(child):
                    problems.append(f"{where}: a graph node calls {child!r}, not a torch operator")
                elif child_key == "as_operator" and isinstance(child, str) and _unsafe_target(child):
                    problems.append(f"{where}: a graph node passes {child!r}, not a torch operator")
                elif child_key == "expr_str" and isinstance(child, str):
                    reason = _unsafe_expression(child, allowed)
                    if reason:
                        problems.append(f"{where}: the symbolic expression {child[:80]!r} is not plain arithmetic "
                                        f"on shape symbols ({reason}); torch.export.load would eval it")
                else:
                    stack.append((child, child_key))
        elif isinstance(value, list):
            stack.extend((item, key) for item in value)


def _load_exported_program(path: Path, where: str, trust_code: bool) -> nn.Module:
    try:
        problems = _exported_program_problems(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise TeacherSourceError(f"{where} cannot be read as a torch.export archive ({exc}); use an intact copy") \
            from None
    if problems and not trust_code:
        raise TeacherSourceError(
            f"{where} holds more than tensors and torch operators, and torch.export.load could run code from it: "
            f"{'; '.join(problems)}. distill does not run code named by a file: re-export the teacher with "
            "torch.export.save(torch.export.export(model.eval(), example_args)) from plain torch operators, save it "
            "as TorchScript or as a state dict with builder=, or pass trust_code=True (--trust-code) only if you "
            "made the file or trust who did")
    try:
        program = torch.export.load(path)
    except Exception as exc:  # noqa: BLE001 - torch raises many kinds here; all mean the same to the user
        raise TeacherSourceError(f"{where} could not be loaded with torch.export.load (saved by an incompatible "
                                 f"torch, or damaged?): {' '.join(str(exc).split())[:300]}") from None
    return program.module()


# ----------------------------------------------------------------------------------------------
# Hugging Face folders

_PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _check_hf_weights(folder: Path) -> None:
    files = [entry.name for entry in folder.iterdir() if entry.is_file()]
    if any(name.endswith(".safetensors") for name in files):
        return
    pickled = sorted(name for name in files if name.endswith(_PICKLE_WEIGHTS))
    if pickled:
        raise TeacherSourceError(
            f"{folder} has only pickle weights ({_listed(pickled, 3)}); distill loads only safetensors weights, "
            "because unpickling runs code named by the file. Convert it once, where you trust the file: "
            "model = AutoModel...from_pretrained(folder, use_safetensors=False) then "
            "model.save_pretrained(folder, safe_serialization=True), which writes model.safetensors")
    other = sorted(name for name in files if name.endswith((".h5", ".msgpack", ".gguf", ".onnx")))
    found = f" (it has {_listed(other, 3)}, not PyTorch safetensors weights)" if other else ""
    raise TeacherSourceError(f"{folder} has a config.json but no model weights{found}; a Hugging Face model folder "
                             "needs model.safetensors (or sharded model-*.safetensors with their index): write it "
                             "with model.save_pretrained(folder)")


def _import_transformers():
    try:
        import transformers
    except ImportError as exc:
        raise MissingExtraError(f"loading a Hugging Face model folder needs the transformers package, which is not "
                                f"installed ({exc}): pip install 'distill[hf]'") from None
    return transformers


def _model_class_or_none(transformers, name: str):
    """``transformers.<name>`` when it is a model class distill may call from_pretrained on, else None."""
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        return None
    try:
        obj = getattr(transformers, name)
    except (AttributeError, ImportError, RuntimeError):
        return None
    if not isinstance(obj, type):
        return None
    try:
        from transformers.models.auto.auto_factory import _BaseAutoModelClass
        is_auto = issubclass(obj, _BaseAutoModelClass)
    except ImportError:  # another transformers layout: fall back on the naming convention
        is_auto = name.startswith(("AutoModel", "AutoBackbone"))
    if is_auto and name.startswith("Auto"):
        return obj
    if issubclass(obj, transformers.PreTrainedModel):
        return obj
    return None


def _hf_class(transformers, folder: Path, config: dict, hf_class: str | None):
    if hf_class is not None:
        cls = _model_class_or_none(transformers, hf_class)
        if cls is None:
            import difflib

            candidates = [name for name in dir(transformers) if name.startswith("Auto") or name.endswith("Model")
                          or "For" in name]
            close = difflib.get_close_matches(str(hf_class), candidates, n=3, cutoff=0.6)
            hint = f"; did you mean {', '.join(map(repr, close))}?" if close else "."
            raise TeacherSourceError(
                f"hf_class {hf_class!r} for {folder} is not a transformers model class{hint} Give the name of an "
                "Auto class (e.g. 'AutoModelForSequenceClassification', 'AutoModel') or of a model class in "
                "transformers (e.g. 'BertForSequenceClassification'); distill never imports other code for it")
        return cls
    architectures = config.get("architectures") or []
    architecture = architectures[0] if isinstance(architectures, list) and architectures else None
    if isinstance(architecture, str):
        cls = _model_class_or_none(transformers, architecture)
        if cls is not None:
            return cls
        auto_map = config.get("auto_map")
        if isinstance(auto_map, dict):  # remote code (already allowed by trust_code): its own Auto class
            for auto_name, reference in auto_map.items():
                if isinstance(reference, str) and reference.rsplit(".", 1)[-1] == architecture:
                    cls = _model_class_or_none(transformers, auto_name)
                    if cls is not None:
                        return cls
    return transformers.AutoModel


def _load_huggingface(folder: Path, where: str, hf_class: str | None, trust_code: bool) -> nn.Module:
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise TeacherSourceError(f"{folder / 'config.json'} is not readable JSON ({exc}); the folder is damaged") \
            from None
    if not isinstance(config, dict):
        raise TeacherSourceError(f"{folder / 'config.json'} holds a {type(config).__name__}, not a JSON object")
    remote_code = "auto_map" in config
    if remote_code and not trust_code:
        raise TeacherSourceError(
            f"{folder}/config.json has auto_map: the model's classes are Python code shipped in the folder "
            f"({', '.join(map(str, config['auto_map'].values())) if isinstance(config['auto_map'], dict) else ''}), "
            "which loading would import and run. distill never runs code named by a file unless you say you trust "
            "it: pass trust_code=True (--trust-code; transformers' trust_remote_code) only for a folder from someone "
            "you trust")
    _check_hf_weights(folder)
    transformers = _import_transformers()
    cls = _hf_class(transformers, folder, config, hf_class)
    try:
        model = cls.from_pretrained(str(folder), local_files_only=True, use_safetensors=True,
                                    trust_remote_code=bool(remote_code and trust_code))
    except Exception as exc:  # noqa: BLE001 - transformers raises OSError, ValueError, KeyError, RuntimeError ...
        raise TeacherSourceError(f"transformers could not load {where} as {cls.__name__}: "
                                 f"{' '.join(str(exc).split())[:400]}") from None
    if not isinstance(model, nn.Module):
        raise TeacherSourceError(f"{cls.__name__}.from_pretrained({where}) gave a {type(model).__name__}, not a "
                                 "PyTorch nn.Module; name a PyTorch model class with hf_class=")
    return model


# ----------------------------------------------------------------------------------------------
# the entry point

def _device(map_location: Any) -> torch.device:
    try:
        return torch.device(map_location)
    except (RuntimeError, TypeError) as exc:
        raise TeacherSourceError(f"map_location {map_location!r} is not a device ({exc}); give 'cpu', 'cuda', "
                                 "'cuda:1' or a torch.device") from None


def load_teacher(source: nn.Module | str | os.PathLike, *, builder: Builder | None = None, hf_class: str | None = None,
                 trust_code: bool = False, map_location: str | torch.device = "cpu") -> TeacherSource:
    """Turn ``source`` into a frozen teacher: a :class:`TeacherSource` whose ``model`` is in eval mode
    with no parameter requiring gradients.

    Args:
        source: an ``nn.Module`` (frozen in place, as it is), or the path of a distill model file,
            a Hugging Face model folder, a state dict file, a TorchScript file or a torch.export
            ``.pt2`` file (see the module docstring; :func:`teacher_kind` tells them apart).
        builder: for a state dict file (required there): an ``nn.Module`` to load the weights into,
            a zero-argument callable returning one, or ``"package.module:callable"`` (the user's own
            code, imported). For a distill model file (optional): the model its weights load into,
            instead of the architecture its spec names. Refused for the other kinds.
        hf_class: for a Hugging Face folder: the transformers class to load it with, an Auto class
            (``"AutoModelForSequenceClassification"``) or a model class (``"BertForSequenceClassification"``).
            Default: ``architectures[0]`` of ``config.json`` when transformers has it, else ``AutoModel``.
        trust_code: let a file name code to import and run (see the module docstring). Only for
            files from someone you trust.
        map_location: the device the teacher's weights are loaded onto (files only: a live module is
            not moved).

    Returns:
        ``TeacherSource(model, kind, description, path, spec)``.

    Raises:
        TeacherSourceError: naming the source, what was wrong and what would be right
        (:class:`TeacherNotFoundError` for a missing path, :class:`MissingExtraError` when
        ``transformers`` is needed but not installed).
    """
    kind = teacher_kind(source)
    if hf_class is not None and kind != "huggingface":
        raise TeacherSourceError(f"hf_class={hf_class!r} is only for Hugging Face model folders, and "
                                 f"{_where(source)} is a {_LABELS[kind]}; drop hf_class=")
    if builder is not None and kind not in ("state-dict", "distill-file"):
        raise TeacherSourceError(f"builder= is only for state dict files (and distill model files), and "
                                 f"{_where(source)} is a {_LABELS[kind]} that carries its own architecture; "
                                 "drop builder=")
    if kind == "module":
        if isinstance(source, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            raise TeacherSourceError(f"the teacher is wrapped in {type(source).__name__}; a teacher is never "
                                     "DDP-wrapped (it is not trained): pass the wrapped model, teacher.module")
        model = freeze(source, f"the {type(source).__name__} teacher")
        return TeacherSource(model, kind, _description(model, kind, None))

    device = _device(map_location)
    path = Path(source)
    where = os.fspath(source)
    spec = None
    detail = None
    if kind == "distill-file":
        from distill.artifacts import ArtifactError, load_into, load_model, read_spec

        try:
            if builder is None:
                model, spec = load_model(path, trust_code=trust_code)
            else:
                spec = read_spec(path)
                model = load_into(_build(builder, where), path, spec)
        except ArtifactError as exc:  # UntrustedCodeError included: its message says how to allow it
            raise TeacherSourceError(str(exc)) from None
        detail = repr(spec.get("model")) if builder is None else f"into {_builder_name(builder)}"
        model = model.to(device)
    elif kind == "huggingface":
        model = _load_huggingface(path, where, hf_class, trust_code).to(device)
    elif kind == "state-dict":
        if builder is None:
            raise TeacherSourceError(
                f"{where} is a state dict: it holds only weights, not the model's architecture, so it needs "
                "builder= (an nn.Module to load into, a zero-argument callable returning one, or "
                "'package.module:callable'); or save the teacher with its architecture: a distill model file "
                "(distill.artifacts.save_model), TorchScript or a torch.export program" + (
                    f"; or, if it is a Hugging Face checkpoint, pass its folder {path.parent}"
                    if (path.parent / "config.json").is_file() else ""))
        state = _read_state_file(path, device, where)
        model = _load_state_into(_build(builder, where), state, where, builder).to(device)
    elif kind == "torchscript":
        try:
            model = torch.jit.load(str(path), map_location=device)
        except (RuntimeError, OSError, ValueError) as exc:
            raise TeacherSourceError(f"{where} could not be loaded with torch.jit.load (damaged, or saved with "
                                     f"ops this torch lacks?): {' '.join(str(exc).split())[:300]}") from None
    else:  # exported-program
        model = _load_exported_program(path, where, trust_code)
        if device.type != "cpu":
            model = model.to(device)
    model = freeze(model, where)
    return TeacherSource(model, kind, _description(model, kind, where, detail), path, spec)


def _where(source: Any) -> str:
    return f"the {type(source).__name__} teacher" if isinstance(source, nn.Module) else os.fspath(source)
