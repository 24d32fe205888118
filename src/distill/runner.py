"""Run a recipe end to end: data, models, objective, training, evaluation, report.

``run_recipe(recipe)`` is what ``distill run`` calls. A run folder holds::

    recipe.yaml         the resolved recipe (after overrides and defaults)
    metrics.jsonl       training and per-epoch test metrics
    checkpoints/        resumable training checkpoints (safetensors + weights-only state)
    model.safetensors   the final student, with the spec that rebuilds it
    model.packed.safetensors  quantized runs (recipe ``quantize:``): the integer codes, scales and
                        zero points in ONNX Runtime's MatMulNBits layout, checked after loading back
    eval.json           final evaluation on the test split
    report.md           a short human-readable report
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from accelerate.utils import set_seed
from torch import nn

from distill.artifacts import METADATA_KEY, atomic_write, check_architecture, is_packed_file, load_into, load_model
from distill.artifacts import quant_config_dict, read_spec, save_model
from distill.data import build_dataset
from distill.data.datasets import ArrayDataset
from distill.data.augment import RandomCropFlip, RandomShift
from distill.data.loader import InMemoryLoader
from distill.distiller import Distiller, LossTerm
from distill.evaluation import evaluate, predict
from distill.models import build_model
from distill.quant import PackedConv2d, PackedLinear, QuantConv2d, QuantLinear, calibrate, convert, prepare
from distill.quant import quant_parameters, quantize_rtn, save_packed, size_report
from distill.quant.ptq import learned_activation_quantizers
from distill.recipe import AugmentSpec, ModelSpec, Recipe, RecipeError, check_files
from distill.safety import LOCK_FILE, LOCK_INFO, MARKER, check_writable_dir, mark_owned
from distill.tasks import ClassificationTask, build_task
from distill.safety import remove_owned, run_lock
from distill.training.checkpoint import latest_checkpoint
from distill.training.loop import MetricsLog, TrainState, train
from distill.training.optim import build_optimizer, build_scheduler
from distill.training.sharding import full_model_state, shard

MODEL_FILE = "model.safetensors"
PACKED_FILE = "model.packed.safetensors"
PACKED_ACCURACY_TOLERANCE = 1e-3  # packed vs fake-quantized test accuracy (the logits agree to ~1e-6)


@dataclass
class RunResult:
    """What a run leaves: its folder, the student's model file, the test metrics (``eval.json``),
    the final training counters, the training time and the trained student (eval mode, on CPU;
    None on the non-main processes of a multi-process run)."""

    run_dir: Path
    model_path: Path
    metrics: dict[str, Any]
    state: TrainState
    train_seconds: float
    model: nn.Module | None = None


def set_threads(threads: int | None) -> int:
    """Set torch's intra-op thread count and return it. Default: the cores shared out among the
    processes of this machine (``LOCAL_WORLD_SIZE`` under torchrun / accelerate launch)."""
    local_processes = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    threads = threads or max((os.cpu_count() or 1) // local_processes, 1)
    torch.set_num_threads(threads)
    return threads


def build_from_spec(spec: ModelSpec, input_shape: tuple[int, ...], num_classes: int, role: str) -> tuple[nn.Module, dict[str, Any]]:
    """Build the model a recipe names (loading its checkpoint if given); returns (model, rebuild spec)."""
    if spec.model is not None:
        rebuild = {"model": spec.model, "params": spec.params, "input_shape": list(input_shape), "num_classes": num_classes}
    else:
        rebuild = read_spec(spec.checkpoint)
        try:  # a model file names only registered architectures, unless the recipe trusts its code
            check_architecture(rebuild, spec.checkpoint, trust_code=spec.trust_code)
        except ValueError as exc:
            raise RecipeError(f"field '{role}.checkpoint': {exc}"
                              + (f" (in a recipe: '{role}.trust_code: true')" if ":" in str(rebuild.get("model")) else "")) from None
        rebuild = {**rebuild, "params": {**rebuild.get("params", {}), **spec.params}}
    if tuple(rebuild["input_shape"]) != tuple(input_shape) or rebuild["num_classes"] != num_classes:
        raise RecipeError(
            f"field '{role}.checkpoint': {spec.checkpoint} was made for inputs {tuple(rebuild['input_shape'])} and "
            f"{rebuild['num_classes']} classes, but the data has {tuple(input_shape)} and {num_classes}"
        )
    try:
        model = build_model(rebuild["model"], input_shape=tuple(input_shape), num_classes=num_classes, **rebuild["params"])
    except (ValueError, TypeError, KeyError) as exc:
        raise RecipeError(f"field '{role}': {exc}") from None
    if spec.checkpoint is not None:
        load_into(model, spec.checkpoint, rebuild)  # a quantized file is re-prepared, a packed one unpacked
    return model, rebuild


def is_quantized(model: nn.Module) -> bool:
    """True when ``model`` has fake-quantized (prepared) or packed (converted) layers."""
    return any(isinstance(m, (QuantLinear, QuantConv2d, PackedLinear, PackedConv2d)) for m in model.modules())


def shard_units(trainable: nn.Module, wrapped: bool) -> list[str]:
    """The submodules FSDP shards one by one: the student's stages (``student.``-prefixed inside a
    wrapper with heads), or none when it has no recognisable stages (then the whole is one unit)."""
    from distill.intermediate import stage_paths

    student = trainable.student if wrapped else trainable
    try:
        stages = stage_paths(student)
    except ValueError:
        return []
    return [f"student.{path}" if wrapped else path for path in stages]


def _endless_batches(loader: InMemoryLoader):
    epoch = 0
    while True:
        yield from loader.epoch_batches(epoch)
        epoch += 1


def quantize_student(recipe: Recipe, student: nn.Module, train_set) -> nn.Module:
    """Apply the recipe's ``quantize:`` section to the float ``student``, in place.

    ``qat``: :func:`distill.quant.prepare`, then learned activation ranges calibrated on the first
    training batches; ``rtn``: :func:`distill.quant.quantize_rtn` (clipping search when
    ``weight_init`` is ``mse``) calibrated on the same batches. Calibration sees the global batch
    (rank 0 of 1), so every process computes the same ranges before DDP wraps the model.
    """
    config = recipe.quantize.config()
    data = recipe.data
    count = max([config.calibration_batches] + [o.calibration_batches for o in config.overrides.values()
                                                 if o.calibration_batches is not None])
    calibration_loader = make_loader(train_set, recipe, shuffle=True, drop_last=True, augment=build_augment(data.augment))
    batches = itertools.islice(_endless_batches(calibration_loader), count)
    try:
        if recipe.quantize.method == "rtn":
            return quantize_rtn(student, config, batches, clip_search=config.weight_init == "mse")
        prepare(student, config)
    except ValueError as exc:
        raise RecipeError(f"field 'quantize': {exc}") from None
    if learned_activation_quantizers(student):
        calibrate(student, batches)
    return student


def write_packed(model: nn.Module, path: Path, spec: dict[str, Any], inputs: torch.Tensor, target: torch.Tensor,
                 *, fake_quant_accuracy: float, batch_size: int = 512) -> dict[str, Any]:
    """Convert the fake-quantized ``model`` to packed integers, write them to ``path``, load the
    file back into a fresh model and check its test accuracy against the fake-quantized one.

    Returns ``quantized_bytes`` (the true packed size, :func:`distill.quant.size_report`),
    ``fp32_bytes``, ``compression``, ``packed_accuracy``, ``packed_max_abs_logit_diff``,
    ``packed_file_bytes`` and ``quantized_layers`` (path -> weight bits). Raises RuntimeError when
    the accuracies differ by more than ``PACKED_ACCURACY_TOLERANCE``.
    """
    packed = convert(model)
    sizes = size_report(packed)
    atomic_write(path, lambda tmp: save_packed(packed, tmp, metadata={METADATA_KEY: spec}))
    reloaded = load_model(path)[0].cpu()
    logits = predict(reloaded, inputs, batch_size)
    accuracy = float((logits.argmax(-1) == target).float().mean())
    max_diff = float((logits - predict(model, inputs, batch_size)).abs().max())
    if abs(accuracy - fake_quant_accuracy) > PACKED_ACCURACY_TOLERANCE:
        raise RuntimeError(
            f"{path}: the packed model's test accuracy {accuracy:.4%} differs from the fake-quantized model's "
            f"{fake_quant_accuracy:.4%} (max |logit difference| {max_diff:.3g}): the packed codes do not reproduce "
            "the trained model"
        )
    return {"quantized_bytes": sizes["total_bytes"], "fp32_bytes": sizes["fp32_bytes"],
            "compression": sizes["compression"], "packed_accuracy": accuracy, "packed_max_abs_logit_diff": max_diff,
            "packed_file_bytes": Path(path).stat().st_size,
            "quantized_layers": {layer: entry["bits"] for layer, entry in sizes["layers"].items()}}


def build_augment(spec: AugmentSpec | None):
    if spec is None:
        return None
    if spec.name == "shift":
        return RandomShift(spec.max_shift)
    return RandomCropFlip(padding=spec.padding, flip=spec.flip)


def load_data(recipe: Recipe):
    """The recipe's (train, test) ArrayDatasets, the training set cut to ``data.train_subset``."""
    data = recipe.data
    try:
        train_set = build_dataset(data.name, "train", root=data.root, **data.params)
        test_set = build_dataset(data.name, "test", root=data.root, **data.params)
    except TypeError as exc:  # a user builder's own complaint about its arguments
        raise RecipeError(f"field 'data.params': {exc}") from None
    if data.train_subset is not None:
        train_set = train_set.subset(data.train_subset, seed=recipe.seed)
    return train_set, test_set


def build_teacher(recipe: Recipe, input_shape: tuple[int, ...], num_classes: int) -> nn.Module | None:
    """The recipe's trained teacher (None without one); an ``ensemble`` gives an :class:`EnsembleTeacher`."""
    if recipe.teacher is None:
        return None
    teachers = []
    from distill.models import MODELS

    for role, spec in recipe.teacher.members():
        factory = MODELS.get(spec.model) if spec.model is not None and ":" not in spec.model else None
        pretrained = any(spec.params.get(key) for key in getattr(factory, "weights_in_params", ()))
        if spec.checkpoint is None and not pretrained:
            raise RecipeError(f"field '{role}.checkpoint': a teacher needs trained weights (a .safetensors file)"
                              + (f", or 'params.{getattr(factory, 'weights_in_params')[0]}'"
                                 if getattr(factory, "weights_in_params", ()) else ""))
        teachers.append(build_from_spec(spec, input_shape, num_classes, role)[0])
    if recipe.teacher.ensemble is None:
        return teachers[0]
    from distill.ensemble import EnsembleTeacher

    return EnsembleTeacher(teachers, [member.weight for member in recipe.teacher.ensemble], recipe.teacher.combine)


def teacher_cache(recipe: Recipe, teacher: nn.Module, train_set, *, progress: bool = True, overwrite: bool = False):
    """Open the recipe's teacher-output cache, building it first when it does not exist yet.

    A cache made by another teacher, for other data or with other settings is refused with a
    message naming each difference (``overwrite=True`` rebuilds it instead).
    """
    from distill.data.cache import CacheError, _teacher_device, build_cache
    from distill.training.precision import resolve_precision

    spec = recipe.teacher.cache
    # the teacher's forward as the run's would be: train.mixed_precision on the teacher's device
    resolved = resolve_precision(recipe.train.mixed_precision, _teacher_device(teacher).type)
    precision = {"bf16": "bf16", "fp16": "fp16"}.get(resolved, "fp32")
    if recipe.task == "token":  # per-token top-k + tail of a causal LM (distill.data.token_cache)
        from distill.data.token_cache import build_token_cache

        if spec.k is None:
            raise RecipeError("field 'teacher.cache.k': a token cache stores the top-k logits of every token; set "
                              "k (e.g. 32; a dense (tokens, vocabulary) cache would be vocabulary-sized per token)")
        try:
            return build_token_cache(teacher, train_set, spec.path, k=spec.k, temperature=spec.temperature,
                                     dtype=spec.dtype, shard_size=spec.shard_size, batch_size=recipe.data.eval_batch_size,
                                     mode=spec.mode or "tail", overwrite=overwrite, progress=progress,
                                     precision=precision)
        except (CacheError, ValueError) as exc:
            raise RecipeError(f"field 'teacher.cache': {exc}") from None
    try:
        return build_cache(
            teacher, train_set, spec.path, k=spec.k, temperature=spec.temperature, dtype=spec.dtype,
            shard_size=spec.shard_size, batch_size=recipe.data.eval_batch_size, mode=spec.mode or "renormalized",
            overwrite=overwrite, progress=progress, precision=precision,
        )
    except CacheError as exc:
        raise RecipeError(f"field 'teacher.cache': {exc}") from None


RUN_BOOKKEEPING = (MARKER, LOCK_FILE, LOCK_INFO, "recipe.yaml")  # a folder holding only these holds no run yet


def holds_run(run_dir: Path) -> bool:
    """True when ``run_dir`` holds anything beyond what a run writes before its first step."""
    return run_dir.is_dir() and any(entry.name not in RUN_BOOKKEEPING for entry in run_dir.iterdir())


def remove_crash_leftovers(run_dir: Path) -> list[Path]:
    """Delete the half-written files a killed run leaves (``checkpoints/.tmp-*`` folders and the
    ``.<name>.*.tmp`` files of :func:`distill.artifacts.atomic_write`); returns what was removed."""
    import shutil

    removed = []
    for folder in (run_dir, run_dir / "checkpoints"):
        if not folder.is_dir():
            continue
        for entry in folder.iterdir():
            if entry.is_symlink():
                continue
            if entry.is_dir() and entry.name.startswith(".tmp-") and folder.name == "checkpoints":
                shutil.rmtree(entry)
                removed.append(entry)
            elif entry.is_file() and entry.name.startswith(".") and entry.name.endswith(".tmp"):
                entry.unlink()
                removed.append(entry)
    return removed


def prepare_run_dir(recipe: Recipe, resume: bool, overwrite: bool, main_process: bool = True) -> Path:
    """Check and prepare the run folder (the main process holds its lock already).

    Refuses a folder that holds another run (unless ``resume`` / ``overwrite``), and replaces one
    on ``overwrite`` only when distill made it (its marker file); marks the folder as distill's,
    removes a crashed run's half-written files and writes the resolved ``recipe.yaml``.
    """
    run_dir = Path(recipe.output_dir)
    if resume and latest_checkpoint(run_dir / "checkpoints") is None:  # refuse before touching the folder
        raise RecipeError(
            f"--resume: no complete checkpoint under {run_dir / 'checkpoints'}; run without --resume to start this run"
        )
    if not main_process:  # the main process checks and prepares the folder; the others wait for it
        return run_dir
    if holds_run(run_dir) and not (resume or overwrite):
        raise RecipeError(
            f"field 'output_dir': {run_dir} already holds a run; pass --resume to continue it, "
            f"--overwrite to replace it, or set output_dir=... to another folder"
        )
    # --overwrite replaces only a folder distill made; --resume needs a complete checkpoint (checked above)
    if overwrite and not resume:
        remove_owned(run_dir, "field 'output_dir':", keep=(LOCK_FILE, LOCK_INFO))
    mark_owned(run_dir, "run")
    remove_crash_leftovers(run_dir)
    if not (resume and (run_dir / "recipe.yaml").is_file()):
        # a resumed run keeps the file: the loop refuses a recipe that differs from the checkpoint's
        atomic_write(run_dir / "recipe.yaml", lambda p: Path(p).write_text(recipe.to_yaml()))
    return run_dir


def run_recipe(
    recipe: Recipe,
    *,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    on_step: Callable[[TrainState], None] | None = None,
    measure_latency: bool = True,
    objects: RunObjects | None = None,
) -> RunResult:
    """Train the student a recipe describes and evaluate it; see the module docstring.

    ``objects``: the student, teacher and data as Python objects (:func:`distill.distil`); the
    recipe then supplies only the numbers (losses, optimiser, schedule, training)."""
    import time

    check_files(recipe)
    threads = set_threads(recipe.train.threads)
    # Accelerate keeps its state in process-wide singletons that refuse a second Accelerator with
    # another mixed_precision; each run configures its own (the process group, if any, is kept).
    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()
    device = recipe.train.device
    if device == "cuda" and not torch.cuda.is_available():
        raise RecipeError("field 'train.device': 'cuda' was asked for but torch sees no CUDA device; use 'auto' or 'cpu'")
    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    from distill.training.precision import resolve_precision

    accelerator = Accelerator(
        mixed_precision=resolve_precision(recipe.train.mixed_precision, "cpu" if on_cpu else "cuda"),
        gradient_accumulation_steps=recipe.train.grad_accum, cpu=on_cpu,
    )
    run_dir = check_writable_dir(recipe.output_dir, "field 'output_dir':")
    created = not run_dir.exists()
    with contextlib.ExitStack() as stack:
        if accelerator.is_main_process:  # a second run on this folder is refused while this one lives
            stack.enter_context(run_lock(run_dir, what="field 'output_dir': run folder", say=print))
        try:
            run_dir = prepare_run_dir(recipe, resume, overwrite, accelerator.is_main_process)
            accelerator.wait_for_everyone()
            return _train_and_report(recipe, accelerator, run_dir, threads, resume=resume, progress=progress,
                                     on_step=on_step, measure_latency=measure_latency, objects=objects)
        except BaseException:
            if created and accelerator.is_main_process and not holds_run(run_dir):
                # failed before its first step: leave no folder behind that would block the rerun
                stack.close()
                with contextlib.suppress(OSError, ValueError):  # never hide the error that stopped the run
                    (run_dir / LOCK_FILE).unlink(missing_ok=True)
                    remove_owned(run_dir, "field 'output_dir':")
            raise


@dataclass
class RunObjects:
    """What a run trains, as plain objects: built from a recipe (:func:`build_objects`) or given to
    :func:`distill.distil` from Python.

    ``train`` / ``test``: an ``ArrayDataset``, a ``TensorData``, a torch ``Dataset`` or ``DataLoader``,
    a Hugging Face dataset or an ``(inputs, targets)`` pair (:func:`distill.data.sources.as_batch_source`).
    ``student_spec``: the rebuild spec written into ``model.safetensors`` (None: the file holds the
    weights and the class name; :func:`distill.load_model` then needs the model to load them into).
    ``fingerprint``: what identifies the objects for ``--resume`` beyond the recipe's numbers.
    """

    student: nn.Module
    student_spec: dict[str, Any] | None
    teacher: nn.Module | None
    train: Any
    test: Any | None
    num_classes: int | None = None
    fingerprint: str = ""
    descriptions: dict[str, str] = field(default_factory=dict)
    quantized: bool = False  # the recipe's ``quantize`` is applied already
    teacher_outputs: Any = None  # an opened teacher cache (distill.data.cache): trained from, the teacher not run


def model_input_shape(data: Any) -> tuple[int, ...]:
    """The per-sample input shape a model is built for: (C, H, W) of images, (L,) of token ids
    (the ``input_ids`` of dict inputs, else their first tensor)."""
    shape = data.input_shape
    if isinstance(shape, dict):
        shape = shape.get("input_ids", next(iter(shape.values())))
    return tuple(shape)


def build_objects(recipe: Recipe, accelerator: Accelerator) -> RunObjects:
    """The recipe's data, student and teacher (seeded by the caller: the student's initial weights
    are drawn here)."""
    train_set, test_set = load_data(recipe)
    shape, classes = model_input_shape(train_set), train_set.num_classes
    if recipe.student.checkpoint is not None and is_packed_file(recipe.student.checkpoint):
        raise RecipeError(f"field 'student.checkpoint': {recipe.student.checkpoint} is a packed quantized model, which "
                          "cannot be trained; give the run's model.safetensors (fake-quantized) or a float model")
    student, student_spec = build_from_spec(recipe.student, shape, classes, "student")
    if recipe.quantize is not None and is_quantized(student):
        raise RecipeError(
            f"field 'student.checkpoint': {recipe.student.checkpoint} is already quantized, but 'quantize' starts "
            "from a float model: give the float checkpoint, or remove 'quantize' to train this model as it is"
        )
    if recipe.quantize is not None:  # before the teacher is built, as the random stream has always run
        quantize_student(recipe, student, train_set)
        student_spec = {**student_spec, "quantize": quant_config_dict(recipe.quantize.config())}
    teacher = build_teacher(recipe, shape, classes)
    descriptions = {"teacher": recipe.teacher.describe()} if recipe.teacher is not None else {}
    return RunObjects(student, student_spec, teacher, train_set, test_set, classes, quantized=True,
                      descriptions=descriptions)


def _data_tensors(data: Any, batch_size: int) -> tuple[Any, torch.Tensor | None]:
    """(inputs, targets) of a whole (held-out) data set in memory, in order: a tensor or a mapping of
    tensors (N, ...), and (N,) int64 targets (None without labels)."""
    if hasattr(data, "inputs") and hasattr(data, "targets"):  # ArrayDataset, TensorData
        return data.inputs, data.targets
    from distill.core.io import concat
    from distill.data.sources import eval_batches

    batches = list(eval_batches(data, batch_size))
    if not batches:
        raise ValueError("the evaluation data holds no sample")
    try:
        inputs = concat([batch["input"] for batch in batches])
    except RuntimeError as exc:
        raise ValueError(f"the evaluation batches cannot be stacked into one set ({exc}); pad every sample to one "
                         "length (e.g. a tokenizer's padding='max_length')") from None
    targets = torch.cat([batch["target"] for batch in batches]) if "target" in batches[0] else None
    return inputs, targets


def _first_inputs(data: Any, count: int) -> Any:
    """The first ``count`` inputs of ``data`` (a probe batch for taps and heads)."""
    from distill.core.io import batch_size_of, select

    if hasattr(data, "inputs"):
        return select(data.inputs, slice(0, min(count, batch_size_of(data.inputs))))
    from distill.data.sources import eval_batches

    return next(iter(eval_batches(data, count)))["input"]


def make_loader(data: Any, recipe: Recipe, *, shuffle: bool, drop_last: bool, rank: int = 0, world_size: int = 1,
                augment=None):
    """Training batches of ``data`` (in-memory sets: :class:`InMemoryLoader`; anything else through
    :func:`distill.data.sources.as_batch_source`)."""
    if isinstance(data, ArrayDataset):
        return InMemoryLoader(data, recipe.data.batch_size, shuffle=shuffle, drop_last=drop_last, seed=recipe.seed,
                              augment=augment, rank=rank, world_size=world_size)
    from distill.data.sources import as_batch_source

    return as_batch_source(data, batch_size=recipe.data.batch_size, shuffle=shuffle, drop_last=drop_last,
                           seed=recipe.seed, rank=rank, world_size=world_size, augment=augment)


def build_heads(recipe: Recipe, student: nn.Module, teacher: nn.Module | None, train_set: Any, classes: int | None,
                device) -> tuple[Any, Any]:
    """The recipe's feature terms (:class:`distill.intermediate.FeatureDistillation`) and exits
    (:class:`distill.self_distill.SelfDistillation`) around ``student``, each None when not asked for;
    shapes are probed on the first 16 training inputs. A refused section is a RecipeError naming it."""
    from distill.core.io import to_device

    features = None
    if recipe.features:  # the student trains inside a wrapper that also holds the feature heads
        from distill.intermediate import FeatureDistillation, FeatureTerm

        sample = to_device(_first_inputs(train_set, 16), device)
        try:
            features = FeatureDistillation(
                student, teacher, [FeatureTerm(**spec.model_dump()) for spec in recipe.features], sample, classes)
        except ValueError as exc:
            raise RecipeError(f"field 'features': {exc}") from None
    self_distill = None
    if recipe.self_distill is not None:  # exits on shallow layers, trained beside the student
        from distill.self_distill import SelfDistillation

        spec = recipe.self_distill
        sample = to_device(_first_inputs(train_set, 16), device)
        try:
            self_distill = SelfDistillation(student, spec.layers, sample, classes, weight=spec.weight,
                                            temperature=spec.temperature, label_weight=spec.label_weight, hidden=spec.hidden)
        except ValueError as exc:
            if features is not None:  # no hook outlives a refused recipe
                features.remove()
            raise RecipeError(f"field 'self_distill': {exc}") from None
    return features, self_distill


def count_steps(recipe: Recipe, loader: Any, train_set: Any, processes: int, rtn: bool) -> int:
    """Optimiser steps of the run (``train.steps``, else epochs x batches / accumulation); a run that
    would do none is refused with the numbers that make it zero."""
    data = recipe.data
    if recipe.train.steps is not None:
        total_steps = recipe.train.steps
    else:
        total_steps = recipe.train.epochs * len(loader) // recipe.train.grad_accum
    if not rtn and (total_steps == 0 or len(loader) == 0):
        shares = f" x {processes} processes" if processes > 1 else ""
        length = (f"train.steps {recipe.train.steps}" if recipe.train.steps is not None else
                  f"train.epochs {recipe.train.epochs} x {len(loader)} batches / train.grad_accum "
                  f"{recipe.train.grad_accum} = {total_steps} optimiser steps")
        samples = getattr(loader, "num_samples", None) or (len(train_set) if hasattr(train_set, "__len__") else "?")
        raise RecipeError(
            f"this run would do no optimiser step: {samples} training samples / (data.batch_size "
            f"{data.batch_size}{shares}), incomplete batches dropped = {len(loader)} batches per epoch; {length}. "
            "Lower data.batch_size or train.grad_accum, raise train.epochs, or give more training data"
        )
    return total_steps


def stored_teacher_outputs(recipe: Recipe, teacher: nn.Module, train_set: Any, outputs_of, accelerator: Accelerator,
                           progress: bool):
    """The teacher's outputs on every training sample when the recipe stores them (``precompute``: in
    memory, (N, ...); ``cache``: the on-disk cache, built when missing), else None (a live teacher)."""
    from distill.core.io import to_device

    if recipe.teacher.precompute:  # under the run's autocast, as the live teacher's forward would be; kept fp32
        train_inputs, _ = _data_tensors(train_set, recipe.data.eval_batch_size)
        with accelerator.autocast():
            outputs = outputs_of(teacher, to_device(train_inputs, accelerator.device), "the teacher")
        return outputs.float() if torch.is_tensor(outputs) and outputs.is_floating_point() else outputs
    if recipe.teacher.cache is None:
        return None
    if not isinstance(train_set, ArrayDataset) and recipe.task != "token":
        raise RecipeError("field 'teacher.cache': the teacher-output cache stores one output per sample of an "
                          f"in-memory data set; {type(train_set).__name__} is not one (use precompute)")
    outputs = None
    if accelerator.is_main_process:  # builds it when missing; refuses one that does not match
        outputs = teacher_cache(recipe, teacher, train_set, progress=progress)
    accelerator.wait_for_everyone()
    if not accelerator.is_main_process:
        outputs = teacher_cache(recipe, teacher, train_set, progress=False)
    return outputs


def _train_and_report(recipe: Recipe, accelerator: Accelerator, run_dir: Path, threads: int, *, resume: bool,
                      progress: bool, on_step, measure_latency: bool, objects: RunObjects | None = None) -> RunResult:
    """The body of :func:`run_recipe` (and of :func:`distill.distil`), in a prepared and locked run folder."""
    import time

    from distill.core.io import to_device

    set_seed(recipe.seed)  # the same on every process: identical initial weights
    data = recipe.data
    if objects is None:
        objects = build_objects(recipe, accelerator)
    student, student_spec, teacher = objects.student, objects.student_spec, objects.teacher
    train_set, test_set, classes = objects.train, objects.test, objects.num_classes
    quantize = recipe.quantize
    rtn = quantize is not None and quantize.method == "rtn"
    if quantize is not None and not objects.quantized:
        if is_quantized(student):
            raise RecipeError("quantize: the student is already quantized; give a float model")
        quantize_student(recipe, student, train_set)
        if student_spec is not None:
            student_spec = {**student_spec, "quantize": quant_config_dict(quantize.config())}
    if teacher is not None:
        teacher.to(accelerator.device)
    terms = [LossTerm(t.name, t.weight, t.temperature, t.params, label=t.label, warmup_steps=t.warmup_steps)
             for t in recipe.losses]
    test_inputs, test_target = _data_tensors(test_set, data.eval_batch_size) if test_set is not None else (None, None)
    task = build_task(recipe.task)
    classification = isinstance(task, ClassificationTask)

    def outputs_of(model: nn.Module, inputs, who: str) -> torch.Tensor:
        """The task's outputs of ``model`` for all ``inputs`` (classification: :func:`predict`, as always)."""
        if classification:
            return predict(model, inputs, data.eval_batch_size, what=who)
        return task.predict(model, inputs, data.eval_batch_size, who=who)

    teacher_test_logits = None
    if teacher is not None and test_inputs is not None and accelerator.is_main_process:  # for agreement / KL
        teacher_test_logits = outputs_of(teacher, to_device(test_inputs, accelerator.device), "the teacher").cpu()
    teacher_outputs = None
    if objects.teacher_outputs is not None and any("teacher" in term.needs for term in terms) and not rtn:
        teacher_outputs, teacher = objects.teacher_outputs, None  # an opened cache: the teacher is not run
    elif teacher is not None and any("teacher" in term.needs for term in terms) and not rtn:
        teacher_outputs = stored_teacher_outputs(recipe, teacher, train_set, outputs_of, accelerator, progress)
        if teacher_outputs is not None:
            teacher = None  # its outputs are all the loop needs: free its memory
    features, self_distill = build_heads(recipe, student, teacher, train_set, classes, accelerator.device)
    try:  # with features and/or exits the student trains inside one wrapper holding every head (distiller.heads)
        distiller = Distiller(student, teacher, terms, teacher_outputs=teacher_outputs, features=features,
                              self_distill=self_distill, task=task)
    finally:  # the Distiller puts the hooks back on at its first step, and the loop's end takes them off:
        for part in (features, self_distill):  # none stay on the user's models after an error before it
            if part is not None:
                part.remove()
    wrapper = distiller.heads  # None without heads
    if accelerator.num_processes > 1:  # dropout etc. draw from one stream per process
        torch.manual_seed(recipe.seed * 1_000_003 + accelerator.process_index)

    try:
        loader = make_loader(train_set, recipe, shuffle=True, drop_last=True, augment=build_augment(data.augment),
                             rank=accelerator.process_index, world_size=accelerator.num_processes)
    except ValueError as exc:
        raise RecipeError(f"field 'data.batch_size': {exc}") from None
    if teacher_outputs is not None and not getattr(loader, "has_index", True):
        raise RecipeError("field 'teacher.precompute': stored teacher outputs are looked up by sample id, but "
                          f"{type(train_set).__name__} batches carry none; give a Dataset instead of a DataLoader")
    fsdp = recipe.train.strategy == "fsdp" and accelerator.num_processes > 1  # one process: nothing to shard
    from distill.training.precision import release_model, resolve_channels_last, set_layout

    try:
        channels_last = not rtn and resolve_channels_last(recipe.train.channels_last, distiller.student, sharded=fsdp)
    except ValueError as exc:
        raise RecipeError(f"field 'train.channels_last': {exc}") from None
    total_steps = count_steps(recipe, loader, train_set, accelerator.num_processes, rtn)
    plain_copy: list[nn.Module] = []  # fsdp: the one unsharded student the gathered weights go into
    if fsdp:
        import copy

        plain_copy.append(copy.deepcopy(student))  # before sharding: a plain module of the same architecture
    if rtn:  # post-training rounding: no optimiser, no loop
        student.to(accelerator.device)
    else:  # the quantizers' steps and zero points are kept out of weight decay
        trainable = distiller.student  # the student, or the student with its feature heads
        if fsdp:  # shard before the optimiser is built: its parameters become the shards
            trainable.to(accelerator.device)
            shard(trainable, shard_units(trainable, wrapped=wrapper is not None))
        optimizer = build_optimizer(recipe.optimizer, trainable.parameters(), no_weight_decay=quant_parameters(student),
                                    no_weight_decay_lr_scale=quantize.step_lr_scale if quantize is not None else 1.0)
        scheduler = build_scheduler(recipe.schedule, optimizer, total_steps)
        if fsdp:  # FSDP2 synchronises gradients itself: Accelerate must not wrap the student in DDP
            student, optimizer = trainable, accelerator.prepare(optimizer)
        else:
            student, optimizer = accelerator.prepare(trainable, optimizer)
    distiller.student = student

    def current_model() -> nn.Module | None:
        """The trained model to evaluate; under fsdp its full weights gathered (a collective) into a
        plain copy of the bare student on the main process (None on the others)."""
        if not fsdp:
            return accelerator.unwrap_model(student)
        full = full_model_state(student)
        if not accelerator.is_main_process:
            return None
        plain_copy[0].to(accelerator.device)
        prefix = "student." if wrapper is not None else ""
        plain_copy[0].load_state_dict({key[len(prefix):]: value for key, value in full.items() if key.startswith(prefix)})
        return plain_copy[0]

    def evaluate_epoch(epoch: int) -> dict[str, Any]:
        model = current_model()
        if not accelerator.is_main_process or test_inputs is None:
            return {}
        if not classification:
            outputs = outputs_of(model, to_device(test_inputs, accelerator.device), "the student").cpu()
            return task.metrics(outputs, teacher_test_logits, test_target, inputs=test_inputs)
        logits = predict(model, to_device(test_inputs, accelerator.device), data.eval_batch_size).cpu()
        record = {}
        if test_target is not None:
            record["accuracy"] = float((logits.argmax(-1) == test_target).float().mean())
        if teacher_test_logits is not None:
            record["agreement"] = float((logits.argmax(-1) == teacher_test_logits.argmax(-1)).float().mean())
        return record

    prepare_batches = None
    if recipe.on_policy is not None:  # GKD: a fraction of the batches sampled from the student
        from distill.llm.onpolicy import OnPolicy

        if teacher_outputs is not None or distiller.teacher is None:
            raise RecipeError("field 'on_policy': the teacher must score the student's samples live, but its "
                              "outputs were stored ahead (a teacher cache): give the teacher model itself")
        sampler = OnPolicy(**recipe.on_policy.model_dump(), seed=recipe.seed)
        try:  # no EOS id: refused before the first step
            sampler.eos_ids(accelerator.unwrap_model(student))
        except ValueError as exc:
            raise RecipeError(f"field 'on_policy.eos_token_id': {exc}") from None

        def prepare_batches(batches, first_micro: int):
            return sampler.batches(batches, accelerator.unwrap_model(student), first_micro=first_micro,
                                   rank=accelerator.process_index, num_processes=accelerator.num_processes)

    fingerprint = recipe.fingerprint(training_only=True)
    if objects.fingerprint:  # objects given from Python: their identity too
        import hashlib

        fingerprint = hashlib.sha256(f"{fingerprint}|{objects.fingerprint}".encode()).hexdigest()[:12]
    started = time.perf_counter()
    if rtn:
        state, train_seconds = TrainState(), 0.0
        MetricsLog(run_dir / "metrics.jsonl", enabled=accelerator.is_main_process).write(
            {"step": 0, "epoch": 0, "split": "test", **(evaluate_epoch(0) if accelerator.is_main_process else {})})
    else:
        laid_out = [accelerator.unwrap_model(student), teacher] if channels_last else []
        try:
            set_layout(laid_out, channels_last=True)  # convolutions in NHWC (train.channels_last)
            state = train(
                distiller, loader, optimizer, scheduler, recipe.train,
                accelerator=accelerator, run_dir=run_dir, total_steps=total_steps, resume=resume,
                fingerprint=fingerprint, evaluate_epoch=evaluate_epoch, on_step=on_step, progress=progress,
                prepare_batches=prepare_batches,
            )
        finally:
            distiller.remove_hooks()  # never leave hooks on the user's models, even when interrupted
            set_layout(laid_out, channels_last=False)  # the user's models back in the standard layout
            if not fsdp:  # nor Accelerate's autocast wrapper on its forward: the trained model runs (and is
                release_model(accelerator, student)  # evaluated, exported) in fp32
        train_seconds = time.perf_counter() - started

    exit_accuracy = None
    if self_distill is not None and test_target is not None and (accelerator.is_main_process or fsdp):
        # a sharded forward is collective; the exits' taps are on for these forwards only
        exit_accuracy = self_distill.exit_accuracy(to_device(test_inputs, accelerator.device),
                                                   test_target.to(accelerator.device), data.eval_batch_size)
    model = current_model()
    if model is not None:
        model.eval()
        if wrapper is not None and not fsdp:  # the exported student leaves the feature heads and exits behind
            model = model.student
    model_path = run_dir / MODEL_FILE
    metrics: dict[str, Any] = {}
    if accelerator.is_main_process:
        write_student(model, model_path, student_spec)
        if classification and test_inputs is not None and test_target is not None:
            metrics = evaluate(
                model.cpu(), test_inputs, test_target, teacher_logits=teacher_test_logits, file=model_path,
                latency=measure_latency, batch_size=data.eval_batch_size,
            )
        elif test_inputs is not None:  # other tasks, or unlabelled held-out data: the task's own metrics
            from distill.evaluation import evaluate_task

            metrics = evaluate_task(task, model.cpu(), test_inputs, test_target, teacher_outputs=teacher_test_logits,
                                    file=model_path, latency=measure_latency, batch_size=data.eval_batch_size)
        if teacher_test_logits is not None and objects.teacher is not None:  # the report's teacher row
            from distill.models import count_parameters

            metrics["teacher_metrics"] = {
                **task.metrics(teacher_test_logits, None, test_target, inputs=test_inputs),
                "parameters": count_parameters(objects.teacher),
                "description": objects.descriptions.get("teacher") or type(objects.teacher).__name__}
        if is_quantized(model) and student_spec is not None and test_target is not None:
            # the real low-bit artifact, verified against the fake-quantized model
            metrics.update(write_packed(model, run_dir / PACKED_FILE, student_spec, test_inputs, test_target,
                                        fake_quant_accuracy=metrics["accuracy"], batch_size=data.eval_batch_size))
        if quantize is not None:
            metrics["quantize_method"] = quantize.method
        if exit_accuracy is not None:
            metrics["exit_accuracy"] = exit_accuracy
        metrics.update(
            {"train_steps": state.step, "train_samples": state.samples, "train_seconds": train_seconds,
             "samples_per_s": state.samples / train_seconds if train_seconds > 0 and not resume else None,
             "threads": threads, "seed": recipe.seed, "name": recipe.name,
             "mixed_precision": str(accelerator.mixed_precision), "channels_last": bool(channels_last)}
        )
        atomic_write(run_dir / "eval.json", lambda p: Path(p).write_text(json.dumps(metrics, indent=2)))
        write_generations(run_dir, task, test_set, {"teacher": objects.teacher, "student": model})
        from distill.report.markdown import write_run_report

        write_run_report(run_dir, recipe, metrics)
    accelerator.wait_for_everyone()
    return RunResult(run_dir, model_path, metrics, state, train_seconds,
                     model.cpu() if accelerator.is_main_process and model is not None else None)


GENERATIONS_FILE = "generations.json"


def write_generations(run_dir: Path, task, test_set, models: dict[str, nn.Module | None]) -> Path | None:
    """A token run's sample generations (``generations.json``: greedy continuations of the first held-out
    prompts by the teacher and the student, beside the data's own text) when its held-out data carries
    the tokenizer (:func:`distill.llm.prompt_response_data` and :func:`distill.llm.packed_text_data`
    attach it); None otherwise. The report shows them."""
    from distill.tasks.token import TokenTask

    tokenizer = getattr(test_set, "tokenizer", None)
    if not isinstance(task, TokenTask) or tokenizer is None or not hasattr(tokenizer, "decode"):
        return None
    from distill.llm.generate import sample_generations

    samples = sample_generations(models, tokenizer, test_set)
    if not samples["generations"]:
        return None
    path = run_dir / GENERATIONS_FILE
    atomic_write(path, lambda p: Path(p).write_text(json.dumps(samples, indent=2, ensure_ascii=False), encoding="utf-8"))
    return path


def write_student(model: nn.Module, path: Path, spec: dict[str, Any] | None) -> Path:
    """Write the trained student: with its rebuild spec, or (a module distill cannot rebuild) its weights
    and class name (see :func:`distill.api.save_model`)."""
    if spec is not None:
        return save_model(model, path, spec)
    from distill.api import save_model as save_any

    return save_any(model, path)
