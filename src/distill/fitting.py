"""``distill fit``: the best student that meets a latency (and/or size) budget on a target.

    distill fit recipes/fashion_mnist_kd.yaml --target cpu --max-latency-ms 0.05 --batch 1

1. **Candidates**: the recipe's student model at several widths and depths (:data:`FAMILIES`), each
   at the precisions the target offers (``cpu``: ONNX Runtime fp32 and dynamic int8; ``torch``:
   eager fp32).
2. **Measured before training**: every candidate is built with untrained weights (they time the
   same), exported for the target and timed there (median of repeated runs at ``--batch``) and its
   deployed size taken; those over budget are dropped. An impossible budget is an error that
   names the fastest and the smallest candidate's measured numbers, and nothing is trained.
   Each architecture keeps its most precise precision within budget.
3. **Successive halving** (Jamieson & Talwalkar 2016; Li et al. 2018, "Hyperband"): all survivors
   are distilled briefly (the recipe's epochs / eta^k), scored on a validation split held out of
   the training data (never the test set), the best 1/eta kept, trained longer, and so on.
4. **The winner** is distilled with the recipe's full budget on all training data, evaluated on
   the test set, exported for the target (verified against eager PyTorch and timed again by
   ``distill export``), and everything measured is written to ``fit.json`` in the fit folder.

The result's ``fit.json`` schema (read by ``distill report``)::

    {"target", "batch", "threads", "budget": {"max_latency_ms", "max_bytes"}, "metric",
     "teacher": {"name", "parameters", "latency_ms", "bytes", "accuracy"} | null,
     "candidates": [{"name", "model", "params", "precision", "parameters", "latency_ms", "bytes",
                     "within_budget", "stage", "scores": [validation score per rung], "accuracy",
                     "chosen"}],
     "rungs": [{"epochs", "trained": [names], "kept": [names]}],
     "winner": {"name", "run_dir", "export_dir", "accuracy", "latency_ms", "bytes"}, "seconds"}

``stage``: ``over_budget``, ``not_kept`` (over the candidate cap), ``rung_k`` (the last rung it was
trained in) or ``winner``; ``accuracy`` is the test accuracy (winner and teacher), else null.
"""
from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

FIT_TARGETS = ("cpu", "torch")  # where fit can time a candidate before training
PRECISIONS = {"cpu": ("fp32", "int8-dynamic"), "torch": ("fp32",)}  # as `distill export` names them
PRECISION_ORDER = ("fp32", "int8-dynamic")  # most precise first


class FitError(ValueError):
    """A budget no candidate meets, or a recipe fit cannot size (the message says what would be right)."""


@dataclass
class Candidate:
    """One student architecture at one precision, with what was measured and how far it got."""

    name: str
    model: str
    params: dict[str, Any]
    precision: str = "fp32"
    parameters: int = 0
    latency_ms: float | None = None  # median ms per batch of ``batch`` on the target
    bytes: int | None = None  # the deployed artifact's size
    within_budget: bool | None = None
    stage: str = "measured"
    scores: list[float] = field(default_factory=list)
    accuracy: float | None = None
    chosen: bool = False


# --------------------------------------------------------------------------------------- families
def _round_width(value: float) -> int:
    return max(4, int(round(value / 4.0)) * 4)


def _mlp_family(params: dict[str, Any]) -> list[dict[str, Any]]:
    hidden = list(params.get("hidden", [1200, 1200]))
    width = max(hidden) if hidden else 64
    depths = sorted({max(1, len(hidden) - 1), len(hidden), len(hidden) + 1})
    widths = sorted({_round_width(width * scale) for scale in (0.125, 0.25, 0.5, 1.0, 2.0)})
    return [{**params, "hidden": [w] * d} for d in depths for w in widths]


def _cnn_family(params: dict[str, Any]) -> list[dict[str, Any]]:
    channels = list(params.get("channels", [32, 64]))
    depths = sorted({max(1, len(channels) - 1), len(channels), len(channels) + 1})
    first = channels[0] if channels else 32
    out = []
    for depth in depths:
        for scale in (0.25, 0.5, 1.0, 2.0):
            base = max(4, int(round(first * scale)))
            out.append({**params, "channels": [base * 2 ** i for i in range(depth)]})
    return out


def _resnet_family(params: dict[str, Any]) -> list[dict[str, Any]]:
    return [{**params, "depth": depth, "width": width} for depth in (8, 14, 20, 32) for width in (0.5, 1.0, 2.0)]


def _vit_family(params: dict[str, Any]) -> list[dict[str, Any]]:
    heads = int(params.get("heads", 4))
    out = []
    for dim in (32, 64, 128, 192):
        for depth in (2, 4, 6):
            if dim % heads == 0:
                out.append({**params, "dim": dim, "depth": depth})
    return out


# -- text students (token ids in; every family keeps the recipe's vocab_size, so each candidate exports as text)
def _token_cnn_family(params: dict[str, Any]) -> list[dict[str, Any]]:
    embed, channels = int(params.get("embed_dim", 64)), int(params.get("channels", 64))
    return [{**params, "embed_dim": _round_width(embed * e), "channels": _round_width(channels * c)}
            for e in (0.5, 1.0, 2.0) for c in (0.25, 0.5, 1.0, 2.0)]


def _token_gru_family(params: dict[str, Any]) -> list[dict[str, Any]]:
    embed, hidden, layers = int(params.get("embed_dim", 64)), int(params.get("hidden", 64)), int(params.get("layers", 1))
    return [{**params, "embed_dim": _round_width(embed * scale), "hidden": _round_width(hidden * scale), "layers": depth}
            for depth in sorted({1, layers, layers + 1}) for scale in (0.25, 0.5, 1.0, 2.0)]


def _static_family(params: dict[str, Any]) -> list[dict[str, Any]]:
    """The static table's width: the (vocab_size, dim) table is nearly all of the model's bytes."""
    dim = int(params.get("dim", 256))
    return [{**params, "dim": _round_width(dim * scale)} for scale in (0.125, 0.25, 0.5, 1.0, 2.0)]


def _transformer_family(params: dict[str, Any]) -> list[dict[str, Any]]:
    """Blocks kept (1 .. the folder's count) x feed-forward units kept (1/4, 1/2, all of the folder's); and, when the
    recipe sets ``hidden_size`` (fresh weights), that width halved and doubled too (up to the folder's)."""
    from distill.models.transformer import folder_config

    if "folder" not in params:
        raise FitError("field 'student.params.folder': a transformer_student needs the teacher's folder (its blocks "
                       "and feed-forward width are what distill fit sizes)")
    try:
        config = folder_config(params["folder"])
    except ValueError as exc:
        raise FitError(f"field 'student.params.folder': {exc}") from None
    total, ffn = int(config["num_hidden_layers"]), int(config["intermediate_size"])
    widths = sorted({_round_width(ffn * scale) for scale in (0.25, 0.5, 1.0)})
    hidden = params.get("hidden_size")
    hiddens = [None] if hidden is None else sorted({w for w in (_round_width(hidden * 0.5), hidden, hidden * 2)
                                                    if w <= int(config["hidden_size"])
                                                    and w % int(config.get("num_attention_heads") or 1) == 0})
    return [{**params, "layers": depth, "ffn_width": width, **({} if h is None else {"hidden_size": h})}
            for depth in range(1, total + 1) for width in widths for h in hiddens]


# model name -> (its recipe params -> candidate params); a registered model of your own joins with
# FAMILIES["name"] = fn. Text students (params.vocab_size, input_shape [max_length]) are timed on token ids.
FAMILIES: dict[str, Callable[[dict[str, Any]], list[dict[str, Any]]]] = {
    "mlp": _mlp_family, "cnn": _cnn_family, "resnet": _resnet_family, "vit": _vit_family,
    "token_cnn": _token_cnn_family, "token_gru": _token_gru_family, "static_classifier": _static_family,
    "transformer_student": _transformer_family,
}


SIZE_KEYS = ("hidden", "channels", "depth", "width", "dim", "embed_dim", "layers", "ffn_width", "hidden_size")


def candidate_name(model: str, params: dict[str, Any], base: dict[str, Any]) -> str:
    """A short name from the params that differ from the recipe's (``mlp-hidden=64x2``)."""
    parts = []
    for key in sorted(params):
        if base.get(key) == params[key] and key not in SIZE_KEYS:
            continue
        value = params[key]
        if isinstance(value, (list, tuple)):
            same = len(set(value)) == 1
            value = f"{value[0]}x{len(value)}" if same and value else "-".join(str(v) for v in value)
        parts.append(f"{key}={value}")
    return f"{model}-" + ",".join(parts) if parts else model


def candidates_for(model: str, params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, params) of every distinct architecture of the family, the recipe's own included."""
    if model not in FAMILIES:
        raise FitError(f"field 'student.model': distill fit sizes {', '.join(sorted(FAMILIES))} students; "
                       f"{model!r} has no family (add one: distill.fitting.FAMILIES[{model!r}] = fn(params) -> [params])")
    seen, out = set(), []
    for option in [dict(params), *FAMILIES[model](dict(params))]:
        key = json.dumps(option, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append((candidate_name(model, option, params), option))
    return out


# ------------------------------------------------------------------------------------- measuring
def measure(model: nn.Module, input_shape: tuple[int, ...], target: str, precision: str, *, batch: int = 1,
            threads: int = 1, repeats: int = 200, tokens: Any = None) -> tuple[float, int]:
    """(median ms per batch of ``batch`` on ``target``, deployed bytes) of ``model`` (its weights do not matter).

    ``cpu``: the ONNX graph ``distill export --target cpu`` writes (fp32, or int8 dynamic), run by ONNX
    Runtime's CPU provider with ``threads`` intra-op threads; ``torch``: eager PyTorch, fp32 weights.
    Inputs: (batch, *input_shape) float32, or for a text student (``tokens``, a
    :class:`distill.export.text.TokenInputs`) ``input_ids`` / ``attention_mask`` (batch, max_length) int64 with
    no padding (the longest input the model is built for), exported with int8 weights per output channel as
    ``distill export`` writes text students."""
    from distill.export.runtime import EagerRunner, OrtRunner, latency

    model = model.eval()
    if tokens is None:
        sample = torch.randn(1, *input_shape, generator=torch.Generator().manual_seed(0)).numpy()
    else:
        ids = torch.randint(0, tokens.vocab_size, (1, tokens.max_length), generator=torch.Generator().manual_seed(0))
        sample = {"input_ids": ids.numpy(), "attention_mask": torch.ones_like(ids).numpy()}
    if target == "torch":
        from distill.models.utils import model_bytes

        runner, size = EagerRunner(model, threads), int(model_bytes(model))
        timing = latency(runner, sample, batch_sizes=(batch,), repeats=repeats, warmup=20, min_seconds=0.2)
        return timing[f"b{batch}_ms"], size
    from distill.export import onnx_cpu

    with tempfile.TemporaryDirectory(prefix="distill-fit-") as scratch:
        path = onnx_cpu.save(onnx_cpu.to_onnx(model, input_shape, tokens), Path(scratch) / "model.onnx")
        if precision == "int8-dynamic":
            path = onnx_cpu.quantize_int8_dynamic(path, Path(scratch) / "model.int8.onnx", per_channel=tokens is not None)
        size = path.stat().st_size
        runner = OrtRunner(path, threads)
        timing = latency(runner, sample, batch_sizes=(batch,), repeats=repeats, warmup=20, min_seconds=0.2)
    return timing[f"b{batch}_ms"], size


def candidate_tokens(model: str, params: dict[str, Any], input_shape: tuple[int, ...]):
    """The token inputs a text candidate is timed on (:class:`distill.export.text.TokenInputs`: its
    ``params.vocab_size`` ids, rows of ``input_shape[0]`` = the length the model is built for), by the rule
    ``distill export`` reads off a model file; FitError when the params do not make it a text model."""
    from distill.export.errors import ExportError
    from distill.export.text import token_inputs

    spec = {"params": params, "input_shape": list(input_shape)}
    try:
        tokens = token_inputs(spec, where=f"field 'student' ({model})")
    except ExportError as exc:
        raise FitError(str(exc)) from None
    if tokens is None:
        raise FitError(f"field 'student.params.vocab_size': the data holds token ids but the {model} student's params "
                       f"{params} give no vocab_size; set it to the tokenizer's vocabulary size (a text student "
                       "records it, so each candidate is timed and exported on token ids)")
    return tokens


def _fits(candidate: Candidate, max_latency_ms: float | None, max_bytes: int | None, margin: float = 0.0) -> bool:
    """Within budget: latency <= ``max_latency_ms x (1 - margin)`` (the margin is held back for timing
    noise) and bytes <= ``max_bytes`` (sizes are exact, no margin)."""
    return ((max_latency_ms is None or candidate.latency_ms <= max_latency_ms * (1.0 - margin))
            and (max_bytes is None or candidate.bytes <= max_bytes))


def rung_epochs(epochs: int, rungs: int, eta: int) -> list[int]:
    """Epochs of each successive-halving rung before the final run: ``epochs / eta^k`` for k = rungs..1."""
    return [max(1, int(round(epochs / eta ** k))) for k in range(rungs, 0, -1)]


# ------------------------------------------------------------------------------------------ fit
@dataclass
class FitResult:
    """What :func:`fit` found: ``winner`` (a Candidate), its run (a :class:`distill.RunResult`),
    its export folder, every candidate, and the folder holding ``fit.json``."""

    winner: Candidate
    run: Any
    export_dir: Path | None
    candidates: list[Candidate]
    fit_dir: Path
    record: dict[str, Any]


def _split(train_set: Any, fraction: float, seed: int):
    """(fit-train, validation) TensorData: a seeded ``fraction`` of the training rows held out."""
    from distill.core.io import select
    from distill.data.sources import TensorData

    size = len(train_set)
    count = max(1, int(round(size * fraction)))
    if count >= size:
        raise FitError(f"validation_fraction={fraction} leaves no training data ({size} samples)")
    order = torch.randperm(size, generator=torch.Generator().manual_seed(seed + 7919))
    held, kept = order[:count].sort().values, order[count:].sort().values
    classes = getattr(train_set, "classes", None)

    def part(rows, split):
        targets = train_set.targets[rows] if train_set.targets is not None else None
        return TensorData(select(train_set.inputs, rows), targets, name=getattr(train_set, "name", "data"),
                          classes=list(classes) if classes is not None else None, split=split)

    return part(kept, "train"), part(held, "validation")


def fit(recipe: Any, *, target: str = "cpu", max_latency_ms: float | None = None, max_bytes: int | None = None,
        batch: int = 1, threads: int = 1, rungs: int = 2, eta: int = 2, max_candidates: int = 8,
        validation_fraction: float = 0.1, latency_margin: float = 0.1, output_dir: str | Path | None = None, export: bool = True,
        overwrite: bool = False, progress: bool = True, say: Callable[[str], None] = print) -> FitResult:
    """Find, train and export the best student of the recipe's family within the budget (see the module doc).

    ``recipe``: a recipe path, dict or :class:`distill.recipe.Recipe` (its student names the family,
    its ``train.epochs`` the final budget); ``max_latency_ms``: per batch of ``batch`` on ``target``;
    ``max_bytes``: the deployed file; ``latency_margin``: the share of the latency budget held back
    for timing noise (a candidate fits when it measures at most ``max_latency_ms x (1 - margin)``, so
    that it still meets the budget timed again elsewhere; 0 uses the whole budget); ``rungs`` / ``eta``: successive halving (``eta`` = 1/fraction
    kept per rung); ``max_candidates``: the most trained in the first rung (the largest that fit).
    Writes ``<output_dir>/fit.json``, ``report.html`` (accuracy vs latency and size, the Pareto front),
    ``candidates/<name>/rung_k`` runs and the winner's run ``winner/``.
    """
    from distill.recipe import Recipe, RecipeError, load_recipe
    from distill.runner import RunObjects, build_from_spec, build_teacher, load_data, model_input_shape, run_recipe
    from distill.safety import check_writable_dir, mark_owned, remove_owned

    start = time.perf_counter()
    if target not in FIT_TARGETS:
        raise FitError(f"--target {target!r}: distill fit times candidates on {', '.join(FIT_TARGETS)} "
                       "(cpu = ONNX Runtime, as `distill export --target cpu` deploys; torch = eager PyTorch)")
    if max_latency_ms is None and max_bytes is None:
        raise FitError("give a budget: --max-latency-ms and/or --max-bytes")
    for name, value in (("max_latency_ms", max_latency_ms), ("max_bytes", max_bytes)):
        if value is not None and (isinstance(value, bool) or not math.isfinite(value) or value <= 0):
            raise FitError(f"{name} must be a positive finite number, got {value!r}")
    if isinstance(latency_margin, bool) or not isinstance(latency_margin, (int, float)) or not 0 <= latency_margin < 1:
        raise FitError(f"latency_margin must be a number in [0, 1) (the share of the latency budget held back for "
                       f"timing noise), got {latency_margin!r}")
    for name, value, low in (("batch", batch, 1), ("rungs", rungs, 0), ("eta", eta, 2), ("max_candidates", max_candidates, 1),
                             ("threads", threads, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise FitError(f"{name} must be an int >= {low}, got {value!r}")
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if recipe.student.model is None or recipe.student.checkpoint is not None:
        raise FitError("field 'student': distill fit sizes a student built from 'model' and 'params', not a checkpoint")
    if recipe.task != "classification":
        raise FitError(f"field 'task': distill fit scores classification students (accuracy); got {recipe.task!r}")
    family = candidates_for(recipe.student.model, recipe.student.params)
    fit_dir = check_writable_dir(Path(output_dir) if output_dir is not None else Path(recipe.output_dir).with_name(
        Path(recipe.output_dir).name + "-fit"), "output_dir:")
    if fit_dir.exists() and any(fit_dir.iterdir()):
        if not overwrite:
            raise FitError(f"output_dir: {fit_dir} is not empty; pass overwrite=True (--overwrite) to replace a fit "
                           "distill made, or choose another folder")
        remove_owned(fit_dir, "output_dir:")
    mark_owned(fit_dir, "fit")
    torch.set_num_threads(threads)

    train_set, _ = load_data(recipe)
    shape, classes = model_input_shape(train_set), train_set.num_classes
    text = isinstance(train_set.inputs, dict)
    say(f"fit: {len(family)} {recipe.student.model} architectures x {len(PRECISIONS[target])} precisions, "
        f"timed on {target} at batch {batch} ({threads} thread{'s' if threads > 1 else ''})")

    # 1-2: measure every candidate untrained; keep each architecture's most precise fitting precision
    measured: list[Candidate] = []
    from tqdm.auto import tqdm

    build_error = None
    for name, params in tqdm(family, desc="measure", disable=not progress, leave=False):
        try:
            model, _ = build_from_spec(recipe.student.model_copy(update={"params": params}), shape, classes, "student")
        except RecipeError as exc:
            build_error = exc
            continue  # a family member the data cannot take (e.g. too many poolings for the image size)
        count = sum(p.numel() for p in model.parameters())
        tokens = candidate_tokens(recipe.student.model, params, shape) if text else None
        for precision in PRECISIONS[target]:
            latency_ms, size = measure(model, shape, target, precision, batch=batch, threads=threads, tokens=tokens)
            candidate = Candidate(f"{name}@{precision}", recipe.student.model, params, precision, count, latency_ms, size)
            candidate.within_budget = _fits(candidate, max_latency_ms, max_bytes, latency_margin)
            candidate.stage = "measured" if candidate.within_budget else "over_budget"
            measured.append(candidate)
    if not measured:
        raise FitError(f"no {recipe.student.model} architecture of the family could be built for inputs {shape}"
                       + (f" (the last: {build_error})" if build_error is not None else ""))
    fitting = [c for c in measured if c.within_budget]
    if not fitting:
        fastest = min(measured, key=lambda c: c.latency_ms)
        smallest = min(measured, key=lambda c: c.bytes)
        raise FitError(
            f"no candidate meets the budget ({_budget_text(max_latency_ms, max_bytes)} at batch {batch} on {target}): "
            f"the fastest, {fastest.name}, takes {fastest.latency_ms:.4f} ms and {fastest.bytes:,} bytes; the smallest, "
            f"{smallest.name}, {smallest.latency_ms:.4f} ms and {smallest.bytes:,} bytes"
            + (f" (candidates must time <= {max_latency_ms * (1 - latency_margin):.4g} ms: latency_margin "
               f"{latency_margin:g} of the budget is held back for timing noise)" if max_latency_ms and latency_margin else "")
            + ". Nothing was trained.")
    best_per_arch: dict[str, Candidate] = {}
    for candidate in fitting:
        arch = candidate.name.rsplit("@", 1)[0]
        current = best_per_arch.get(arch)
        if current is None or PRECISION_ORDER.index(candidate.precision) < PRECISION_ORDER.index(current.precision):
            best_per_arch[arch] = candidate
    pool = sorted(best_per_arch.values(), key=lambda c: -c.parameters)
    for candidate in fitting:
        if candidate not in pool:
            candidate.stage = "other_precision"
    for candidate in pool[max_candidates:]:
        candidate.stage = "not_kept"
    pool = pool[:max_candidates]
    say(f"fit: {len(fitting)} of {len(measured)} within {_budget_text(max_latency_ms, max_bytes)}; training "
        f"{len(pool)} (the largest per architecture)")

    # 3: successive halving on a validation split of the training data
    fit_train, validation = _split(train_set, validation_fraction, recipe.seed)
    teacher = build_teacher(recipe, shape, classes)
    epochs = recipe.train.epochs or 1
    schedule = rung_epochs(epochs, rungs, eta) if len(pool) > 1 else []
    rung_records = []
    for index, rung_epochs_ in enumerate(schedule):
        if len(pool) == 1:
            break
        for candidate in pool:
            run = _train(recipe, candidate, shape, classes, teacher, fit_train, validation, rung_epochs_,
                         fit_dir / "candidates" / _folder(candidate) / f"rung_{index}", build_from_spec, RunObjects,
                         run_recipe, load_recipe)
            candidate.scores.append(float(run.metrics["accuracy"]))
            candidate.stage = f"rung_{index}"
            say(f"fit: rung {index} ({rung_epochs_} epoch{'s' if rung_epochs_ > 1 else ''}) {candidate.name}: "
                f"validation accuracy {candidate.scores[-1]:.2%}")
        ranked = sorted(pool, key=lambda c: (-c.scores[-1], c.latency_ms))
        kept = ranked[:max(1, math.ceil(len(pool) / eta))]
        rung_records.append({"epochs": rung_epochs_, "trained": [c.name for c in pool], "kept": [c.name for c in kept]})
        pool = kept

    # 4: the winner, trained in full and exported
    winner = sorted(pool, key=lambda c: (-(c.scores[-1] if c.scores else 0.0), c.latency_ms))[0]
    winner.chosen, winner.stage = True, "winner"
    say(f"fit: winner {winner.name} ({winner.parameters:,} parameters, {winner.latency_ms:.4f} ms, "
        f"{winner.bytes:,} bytes); training it for {epochs} epochs")
    tree = recipe.model_dump(mode="json")
    tree["student"] = {**tree["student"], "params": winner.params}
    tree["output_dir"] = str(fit_dir / "winner")
    run = run_recipe(load_recipe(tree), progress=progress)
    winner.accuracy = float(run.metrics["accuracy"])
    export_dir, winner_latency, winner_bytes = None, winner.latency_ms, winner.bytes
    if export and target == "cpu":
        export_dir, winner_latency, winner_bytes = _export(run.run_dir, winner, batch, threads)
    teacher_row = _teacher_row(run, teacher, shape, target, batch, threads, text)
    record = {
        "target": target, "batch": batch, "threads": threads, "metric": "accuracy",
        "budget": {"max_latency_ms": max_latency_ms, "max_bytes": max_bytes, "latency_margin": latency_margin},
        "teacher": teacher_row, "candidates": [asdict(c) for c in measured], "rungs": rung_records,
        "winner": {"name": winner.name, "run_dir": str(run.run_dir), "export_dir": str(export_dir) if export_dir else None,
                   "accuracy": winner.accuracy, "latency_ms": winner_latency, "bytes": winner_bytes,
                   "within_budget_after_export": (max_latency_ms is None or winner_latency <= max_latency_ms)
                   and (max_bytes is None or winner_bytes <= max_bytes)},
        "seconds": time.perf_counter() - start,
    }
    (fit_dir / "fit.json").write_text(json.dumps(record, indent=2, allow_nan=False))
    try:  # the trade-off as a picture: fit_dir/report.html (matplotlib, the plots extra)
        from distill.report.html import write_html_report

        write_html_report([fit_dir], fit_dir / "report.html", title=f"distill fit: {recipe.name}")
    except ImportError:
        pass
    say(f"fit: {winner.name}: test accuracy {winner.accuracy:.2%}, {winner_latency:.4f} ms, {winner_bytes:,} bytes "
        f"-> {fit_dir / 'fit.json'}")
    return FitResult(winner, run, export_dir, measured, fit_dir, record)


def _budget_text(max_latency_ms: float | None, max_bytes: int | None) -> str:
    parts = ([f"<= {max_latency_ms:g} ms"] if max_latency_ms is not None else []) + (
        [f"<= {int(max_bytes):,} bytes"] if max_bytes is not None else [])
    return " and ".join(parts)


def _folder(candidate: Candidate) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.=@" else "_" for ch in candidate.name)


def _train(recipe, candidate, shape, classes, teacher, train, validation, epochs, folder, build_from_spec, RunObjects,
           run_recipe, load_recipe):
    """One short distillation of ``candidate`` scored on ``validation``: a normal run folder."""
    tree = recipe.model_dump(mode="json")
    tree["student"] = {**tree["student"], "params": candidate.params}
    tree["output_dir"] = str(folder)
    tree["train"] = {**tree["train"], "epochs": epochs, "steps": None, "checkpoint_every": 0}
    variant = load_recipe(tree)
    torch.manual_seed(variant.seed)
    student, spec = build_from_spec(variant.student, shape, classes, "student")
    objects = RunObjects(student, spec, teacher, train, validation, classes, quantized=variant.quantize is None,
                         descriptions={"teacher": variant.teacher.describe()} if variant.teacher is not None else {})
    if variant.quantize is not None:
        from distill.runner import quantize_student

        quantize_student(variant, student, train)
        objects.quantized = True
    return run_recipe(variant, objects=objects, progress=False, measure_latency=False)


def _export(run_dir: Path, winner: Candidate, batch: int, threads: int) -> tuple[Path, float, int]:
    """Export the winner with ``distill export``'s machinery; its verified card's latency and size."""
    from distill.export import ExportOptions, Exporter, load_student

    student = load_student(run_dir)
    out_dir = Path(run_dir) / "export"
    card = Exporter(student, out_dir, ExportOptions(threads=threads)).export("cpu", winner.precision)
    timing = card["latency"]
    latency_ms = timing.get(f"b{batch}_ms", timing.get("b1_ms"))
    return out_dir, float(latency_ms), int(card["artifact"]["bytes"])


def _teacher_row(run: Any, teacher: nn.Module | None, shape, target: str, batch: int, threads: int,
                 text: bool = False) -> dict | None:
    if teacher is None:
        return None
    row = {"name": "teacher", "parameters": sum(p.numel() for p in teacher.parameters()),
           "accuracy": (run.metrics.get("teacher_metrics") or {}).get("accuracy")}
    try:
        tokens = None
        if text:
            from distill.export.text import TokenInputs, vocabulary_size

            tokens = TokenInputs(vocab_size=vocabulary_size(teacher), max_length=int(shape[0]))
        row["latency_ms"], row["bytes"] = measure(teacher, shape, target, "fp32", batch=batch, threads=threads,
                                                  tokens=tokens)
    except Exception as exc:  # a teacher ONNX cannot take is reported, not fatal
        row["latency_ms"], row["bytes"], row["error"] = None, None, str(exc).splitlines()[0]
    return row


__all__ = ["FAMILIES", "Candidate", "FitError", "FitResult", "candidates_for", "fit", "measure", "rung_epochs"]
