"""The public Python API: ``distill.distil``, ``distill.save_model``, ``distill.load_model``.

``distil(teacher, student, train, eval=..., ...)`` takes plain objects (any ``nn.Module``, a torch
``Dataset`` / ``DataLoader``, a Hugging Face dataset, an ``(inputs, targets)`` pair) and writes the
same run folder as ``distill run`` (``recipe.yaml`` with the numbers, ``metrics.jsonl``,
checkpoints with exact ``resume=True``, ``model.safetensors``, ``eval.json``, ``report.md``).
``distill run RECIPE`` goes through the same training function (:func:`distill.runner.run_recipe`);
here the recipe's numbers come from keyword arguments, its objects from the caller.

>>> import distill, torch
>>> result = distill.distil(teacher, student, (train_x, train_y), eval=(test_x, test_y),
...                         epochs=5, output_dir="runs/mine")  # doctest: +SKIP
>>> result.metrics["accuracy"], result.model_path  # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import torch
from torch import nn

from distill.artifacts import ArtifactError, read_spec
from distill.artifacts import save_model as _save_with_spec
from distill.registry import PYTHON_OBJECT

__all__ = ["distil", "save_model", "load_model", "open_teacher_cache", "DEFAULT_LOSSES"]

# soft targets at T=4 (Hinton et al. 2015) plus a little of the labels, as the digits recipes use
DEFAULT_LOSSES = [{"name": "kl", "weight": 0.9, "temperature": 4.0}, {"name": "cross_entropy", "weight": 0.1}]


def _class_path(obj: Any) -> str:
    cls = type(obj)
    return f"{cls.__module__}.{cls.__qualname__}"


def _registered_name(model: nn.Module) -> str | None:
    """The registered architecture name whose factory is ``type(model)`` (None if none is)."""
    from distill.models import MODELS

    for name in MODELS.names():
        if MODELS.get(name) is type(model):
            return name
    return None


def infer_spec(model: nn.Module, *, input_shape=None, num_classes: int | None = None) -> dict[str, Any] | None:
    """The rebuild spec of a model distill can rebuild by name (a registered architecture that keeps its
    constructor arguments in ``model.config``), else None."""
    name = _registered_name(model)
    config = getattr(model, "config", None)
    if name is None or not isinstance(config, Mapping):
        return None
    params = {key: list(value) if isinstance(value, tuple) else value for key, value in config.items()
              if key not in ("input_shape", "num_classes")}
    shape = input_shape if input_shape is not None else config.get("input_shape")
    classes = num_classes if num_classes is not None else config.get("num_classes")
    if shape is None or classes is None:
        return None
    return {"model": name, "params": params, "input_shape": list(shape), "num_classes": int(classes)}


def save_model(model: nn.Module, path: str | Path, *, builder: str | None = None, params: dict[str, Any] | None = None,
               input_shape: Iterable[int] | None = None, num_classes: int | None = None,
               spec: dict[str, Any] | None = None) -> Path:
    """Write ``model`` as a distill model file (safetensors weights + the spec that rebuilds it).

    - a registered architecture (``distill.models``: mlp, cnn, resnet, vit) is recorded by name;
    - ``builder="package.module:callable"`` (called as ``builder(input_shape=..., num_classes=...,
      **params)``) records your own builder: ``distill eval / export / bench`` rebuild it with
      ``--trust-code`` (it imports and runs that code);
    - anything else keeps the weights and the class name: load it with ``load_model(path, model=...)``.

    ``input_shape`` (C, H, W) / ``num_classes`` K: what the model takes and gives (needed by the CLI
    to build example inputs; taken from ``model.config`` when there). Returns ``path``.
    """
    shape = list(input_shape) if input_shape is not None else None
    if spec is None and builder is not None:
        if ":" not in builder:
            from distill.models import MODELS

            if builder not in MODELS:
                raise ValueError(f"builder {builder!r} is neither a registered model ({', '.join(MODELS.names())}) nor "
                                 "'package.module:callable'")
        config = getattr(model, "config", None)
        shape = shape or (list(config["input_shape"]) if isinstance(config, Mapping) and "input_shape" in config else None)
        classes = num_classes if num_classes is not None else (config.get("num_classes") if isinstance(config, Mapping) else None)
        spec = {"model": builder, "params": dict(params or {}), "input_shape": shape, "num_classes": classes}
    if spec is None:
        spec = infer_spec(model, input_shape=shape, num_classes=num_classes)
    if spec is None:  # weights only: distill cannot rebuild this class by itself
        spec = {"model": None, "class": _class_path(model), "params": {}, "input_shape": shape,
                "num_classes": num_classes}
    return _save_with_spec(model, path, spec)


def load_model(path: str | Path, *, model: nn.Module | None = None, trust_code: bool = False) -> nn.Module:
    """The model in a distill model file, in eval mode.

    With ``model`` (an instance of the right architecture) the file's weights are loaded into it;
    without, the file's spec rebuilds it: registered architectures always, ``package.module:callable``
    builders only with ``trust_code=True`` (that code is imported and run).
    """
    from distill.artifacts import load_into
    from distill.artifacts import load_model as _load_model

    if model is not None:
        spec = read_spec(path)
        return load_into(model, path, spec).eval()
    spec = read_spec(path)
    if spec.get("model") is None:
        raise ArtifactError(f"{path} holds the weights of a {spec.get('class', 'model')} that distill cannot rebuild by "
                            "itself: load it with distill.load_model(path, model=YourModel(...)), or save it with "
                            "save_model(..., builder='package.module:callable')")
    return _load_model(path, trust_code=trust_code)[0]


# -- distil ---------------------------------------------------------------------------------

def _describe_data(data: Any) -> str:
    if isinstance(data, (tuple, list)):
        return f"tensors{tuple(tuple(t.shape) for t in data if isinstance(t, torch.Tensor))}"
    return type(data).__name__


def _data_fingerprint(data: Any) -> str:
    fingerprint = getattr(data, "fingerprint", None)
    if callable(fingerprint):
        try:
            return str(fingerprint())
        except (TypeError, ValueError, RuntimeError):
            pass
    if isinstance(data, (tuple, list)):
        return "|".join(f"{tuple(t.shape)}:{t.dtype}" for t in data if isinstance(t, torch.Tensor))
    length = len(data) if hasattr(data, "__len__") else "?"
    return f"{type(data).__name__}:{length}"


def _objects_fingerprint(student: nn.Module, teacher: nn.Module | None, train: Any) -> str:
    digest = hashlib.sha256()
    for module in (student, teacher):
        if module is None:
            continue
        digest.update(_class_path(module).encode())
        for name, tensor in module.state_dict().items():
            digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
    digest.update(_data_fingerprint(train).encode())
    return digest.hexdigest()[:12]


def _num_classes(train: Any, student: nn.Module) -> int | None:
    for candidate in (getattr(train, "num_classes", None), getattr(getattr(train, "dataset", None), "num_classes", None)):
        if isinstance(candidate, int):
            return candidate
    config = getattr(student, "config", None)
    if isinstance(config, Mapping) and isinstance(config.get("num_classes"), int):
        return config["num_classes"]
    return getattr(config, "num_labels", None) if config is not None and not isinstance(config, Mapping) else None


def _input_shape(train: Any):
    shape = getattr(train, "input_shape", None)
    if isinstance(shape, (tuple, list)) and all(isinstance(size, int) for size in shape):
        return list(shape)
    if isinstance(train, (tuple, list)) and train and isinstance(train[0], torch.Tensor):
        return list(train[0].shape[1:])
    return None


def _callbacks(callbacks: Iterable[Any]) -> Callable | None:
    hooks = []
    for callback in callbacks:
        hook = getattr(callback, "on_step", callback)
        if not callable(hook):
            raise TypeError(f"callbacks: {callback!r} is neither callable nor has an on_step(state) method")
        hooks.append(hook)
    if not hooks:
        return None

    def on_step(state):
        for hook in hooks:
            hook(state)

    return on_step


def open_teacher_cache(cache: Any, teacher: nn.Module | None, train: Any, *, task: str, batch_size: int = 8,
                       progress: bool = True, precision: str = "fp32"):
    """The teacher cache ``distil(..., cache=...)`` trains from, checked against ``train`` (and ``teacher``).

    ``cache``: an opened cache (:func:`distill.data.open_cache`), the path of a finished one, or a dict
    ``{"path", "k", "temperature", "dtype", "mode", "shard_size", "overwrite", "precision"}`` built with
    ``teacher`` when missing (task "token": :func:`distill.data.token_cache.build_token_cache`, default
    k=32, mode "tail"; else :func:`distill.data.build_cache`), its forward at ``precision`` ("fp32",
    "bf16" or "fp16" autocast; ``distil`` passes the run's) unless the dict says otherwise. A cache of other data, of another teacher, or of the
    other kind (token rows vs one row per sample) is refused naming the difference."""
    from distill.data.cache import CacheError, TeacherCache, build_cache, open_cache, weights_fingerprint
    from distill.data.token_cache import TokenTeacherCache, build_token_cache
    from distill.recipe import RecipeError

    expect: dict[str, Any] = {"num_samples": len(train)}
    try:
        if isinstance(cache, TeacherCache):
            opened = cache
        else:
            spec = dict(cache) if isinstance(cache, Mapping) else {"path": cache}
            unknown = sorted(set(spec) - {"path", "k", "temperature", "dtype", "mode", "shard_size", "overwrite",
                                          "precision"})
            if unknown or "path" not in spec:
                raise RecipeError(f"argument 'cache': unknown keys {unknown} or no 'path'; give a path, an opened "
                                  "cache, or {path, k, temperature, dtype, mode, shard_size, overwrite, precision}")
            spec.setdefault("precision", precision)
            path = Path(spec.pop("path"))
            expect.update({key: spec[key] for key in ("k", "temperature", "dtype") if key in spec})
            if teacher is None or (path.is_dir() and not spec.get("overwrite")):
                if not path.is_dir():
                    raise RecipeError(f"argument 'cache': no teacher cache at {path}, and no teacher was given to "
                                      "build one: pass the teacher, or build the cache first")
                opened = open_cache(path, mode=spec.get("mode"))
            elif task == "token":
                opened = build_token_cache(teacher, train, path, batch_size=batch_size, progress=progress,
                                           report=None, **spec)
            else:
                opened = build_cache(teacher, train, path, batch_size=batch_size, progress=progress, **spec)
    except CacheError as exc:
        raise RecipeError(f"argument 'cache': {exc}") from None
    token = isinstance(opened, TokenTeacherCache)
    if token != (task == "token"):
        raise RecipeError(f"argument 'cache': {opened.path} holds {'per-token' if token else 'per-sample'} teacher "
                          f"outputs, but task {task!r} needs {'per-token (a token cache)' if task == 'token' else 'one row per sample'}")
    fingerprint = getattr(train, "fingerprint", None)
    if callable(fingerprint):
        expect["dataset_fingerprint"] = fingerprint()
    if teacher is not None:
        expect["teacher_fingerprint"] = weights_fingerprint(teacher)
    try:
        return open_cache(opened.path, expect=expect, mode=opened.mode)
    except CacheError as exc:
        raise RecipeError(f"argument 'cache': {exc}") from None


def distil(
    teacher: Any,
    student: nn.Module,
    train: Any,
    *,
    eval: Any = None,  # noqa: A002 - the issue's and users' word for the held-out data
    task: str = "classification",
    losses: list[dict[str, Any]] | None = None,
    features: list[dict[str, Any]] | None = None,
    self_distill: dict[str, Any] | None = None,
    quantize: dict[str, Any] | None = None,
    on_policy: dict[str, Any] | None = None,
    optimizer: str | dict[str, Any] = "adamw",
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    schedule: str | dict[str, Any] = "cosine",
    warmup_steps: int = 0,
    epochs: int | None = None,
    steps: int | None = None,
    batch_size: int = 64,
    eval_batch_size: int = 512,
    grad_accum: int = 1,
    max_grad_norm: float | None = None,
    mixed_precision: str = "auto",
    channels_last: bool | str = "auto",
    skip_nonfinite: int = 0,
    seed: int = 0,
    output_dir: str | Path = "runs/distil",
    name: str = "distil",
    checkpoint_every: int = 0,
    tensorboard: bool = False,
    precompute_teacher: bool = False,
    cache: Any = None,
    threads: int | None = None,
    device: str = "auto",
    student_spec: dict[str, Any] | None = None,
    trust_code: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    callbacks: Iterable[Any] = (),
    progress: bool = True,
    measure_latency: bool = True,
):
    """Distil ``teacher`` into ``student`` on ``train``; returns a :class:`distill.runner.RunResult`
    (``run_dir``, ``model_path``, ``metrics``, ``state``, ``train_seconds``, ``model``: the trained student).

    Args:
        teacher: an ``nn.Module`` (frozen here: eval mode, no gradients, never trained), a path to a
            teacher (a distill model file, a Hugging Face folder, a TorchScript / ExportedProgram
            file), a :func:`distill.load_teacher` result (e.g. a ``.pth`` state dict with its
            ``builder``), or None to train the student on labels alone.
        student: the ``nn.Module`` to train (in place). Inputs are a tensor or a dict of tensors
            (passed as keyword arguments); outputs a tensor (B, K), a tuple or a ``ModelOutput``.
        train / eval: a torch ``Dataset`` (items ``(input, label)`` or dicts with ``label``), a
            ``DataLoader``, a Hugging Face ``datasets.Dataset``, an ``(inputs, targets)`` tensor
            pair or a distill data set. ``eval`` is scored after every epoch and at the end.
        task: ``"classification"`` ((B, K) logits), ``"embedding"`` ((B, D) vectors or a
            ``last_hidden_state`` to mean-pool; default loss ``cosine_distance``) or ``"token"``
            (causal-LM (B, L, V) logits; losses per valid token, default ``kl``); :mod:`distill.tasks`.
        losses: the objective, a list of ``{"name", "weight", "temperature", **params}`` (the
            recipe's ``losses``; default :data:`DEFAULT_LOSSES` with a teacher, cross-entropy without).
        features / self_distill / quantize: the recipe's sections of the same names.
        on_policy: ``task="token"`` only: on-policy / generalised KD (Agarwal et al. 2024), e.g.
            ``{"fraction": 0.5, "max_new_tokens": 32, "temperature": 1.0}``: a fraction of the batches
            is the student's own samples of the data's prompts, scored by the teacher, every token after
            the first EOS masked (:mod:`distill.llm.onpolicy`; fields as the recipe's ``on_policy:``).
        optimizer, lr, weight_decay, schedule, warmup_steps: ``optimizer`` / ``schedule`` may be a
            name or a full dict of the recipe's section.
        epochs / steps: training length (optimiser steps win); default one epoch.
        batch_size, eval_batch_size, grad_accum, max_grad_norm, mixed_precision ("auto": bf16
            autocast where the hardware has bf16 units, else fp32; "no", "bf16", "fp16"), channels_last
            ("auto": NHWC weights for a student with Conv2d layers, put back at the end; True / False),
            skip_nonfinite, seed, threads, device, checkpoint_every: as in ``train:``.
        cache: train from stored teacher outputs instead of running the teacher: a path, an opened cache, or
            a dict that builds one with ``teacher`` when missing (:func:`open_teacher_cache`). For
            ``task="token"`` a token cache (top-k + tail per valid token); ``teacher`` may then be None (the
            teacher is never run; with a teacher it scores the held-out metrics only).
        tensorboard: also write the metrics as TensorBoard scalars to ``<output_dir>/tensorboard``.
        output_dir: the run folder (refused when it holds another run, unless ``resume`` or
            ``overwrite``; ``overwrite`` replaces only a folder distill made).
        student_spec: how ``model.safetensors`` rebuilds the student (default: by name for a
            registered architecture, else weights + class name; see :func:`save_model`).
        callbacks: callables ``fn(state)`` (or objects with ``on_step(state)``) run after every
            optimiser step; raising :class:`distill.training.loop.StopTraining` stops with a checkpoint.

    Raises :class:`distill.recipe.RecipeError` naming the argument for a bad value, before training.
    """
    from distill.recipe import RecipeError, load_recipe
    from distill.runner import RunObjects, run_recipe

    if not isinstance(student, nn.Module):
        raise TypeError(f"student must be an nn.Module, got {type(student).__name__}")
    from distill.core.teacher import TeacherSource, load_teacher

    description = None
    if teacher is not None and not isinstance(teacher, nn.Module):
        source = teacher if isinstance(teacher, TeacherSource) else load_teacher(teacher, trust_code=trust_code)
        teacher, description = source.model, source.description
    stored = None
    if cache is not None:
        from distill.training.precision import resolve_precision

        on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
        resolved = resolve_precision(mixed_precision, "cpu" if on_cpu else "cuda")
        stored = open_teacher_cache(cache, teacher, train, task=task, batch_size=eval_batch_size, progress=progress,
                                    precision={"bf16": "bf16", "fp16": "fp16"}.get(resolved, "fp32"))
    has_teacher = teacher is not None or stored is not None
    if losses is None:
        if task == "embedding":
            losses = [{"name": "cosine_distance"}]
        elif task == "token":
            losses = [{"name": "kl", "temperature": stored.temperature if stored is not None else 1.0}] \
                if has_teacher else [{"name": "cross_entropy"}]
        else:
            losses = DEFAULT_LOSSES if has_teacher else [{"name": "cross_entropy"}]
    teacher_tree = None
    if has_teacher:
        teacher_tree = {"model": f"{PYTHON_OBJECT}:{description or (_class_path(teacher) if teacher is not None else f'cache {stored.path}')}",
                        "precompute": precompute_teacher}
        if stored is not None:
            teacher_tree["cache"] = {"path": str(stored.path), "k": stored.k, "dtype": stored.dtype,
                                     "temperature": stored.temperature, "mode": stored.mode,
                                     "shard_size": stored.shard_size}
    tree: dict[str, Any] = {
        "name": name, "seed": seed, "output_dir": str(output_dir), "task": task,
        "data": {"name": f"{PYTHON_OBJECT}:{_describe_data(train)}", "batch_size": batch_size,
                 "eval_batch_size": eval_batch_size},
        "student": {"model": f"{PYTHON_OBJECT}:{_class_path(student)}"},
        "teacher": teacher_tree,
        "losses": [dict(term) for term in losses],
        "features": [dict(term) for term in features or []],
        "self_distill": self_distill,
        "optimizer": dict(optimizer) if isinstance(optimizer, Mapping) else {"name": optimizer, "lr": lr,
                                                                             "weight_decay": weight_decay},
        "schedule": dict(schedule) if isinstance(schedule, Mapping) else {"name": schedule, "warmup_steps": warmup_steps},
        "train": {"epochs": epochs, "steps": steps, "grad_accum": grad_accum, "max_grad_norm": max_grad_norm,
                  "mixed_precision": mixed_precision, "channels_last": channels_last, "skip_nonfinite": skip_nonfinite,
                  "threads": threads,
                  "device": device, "checkpoint_every": checkpoint_every, "tensorboard": tensorboard},
        "quantize": quantize,
        "on_policy": dict(on_policy) if isinstance(on_policy, Mapping) else on_policy,
    }
    recipe = load_recipe(tree)  # every number validated as a recipe's: errors name the argument's field
    if recipe.quantize is not None and recipe.quantize.method == "rtn":
        raise RecipeError("quantize.method 'rtn' rounds a trained model file: use distill run with a recipe, or "
                          "quantize method 'qat' here")
    classes = _num_classes(train, student) if task == "classification" else None
    if classes is None and task == "classification":  # ask the student: its logits' last dimension
        from distill.core.io import forward_logits
        from distill.runner import _first_inputs

        was_training = student.training
        with torch.no_grad():
            classes = int(forward_logits(student.eval(), _first_inputs(train, 2), who="the student").shape[-1])
        student.train(was_training)
    spec = student_spec if student_spec is not None else infer_spec(student, input_shape=_input_shape(train),
                                                                   num_classes=classes)
    fingerprint = _objects_fingerprint(student, teacher, train)
    if stored is not None:  # resume only from the same stored teacher outputs
        fingerprint = hashlib.sha256(f"{fingerprint}|{stored.manifest['teacher_fingerprint']}|{stored.path}"
                                     .encode()).hexdigest()[:12]
    objects = RunObjects(student=student, student_spec=spec, teacher=teacher, train=train, test=eval,
                         num_classes=classes, fingerprint=fingerprint, teacher_outputs=stored,
                         descriptions={"teacher": description or type(teacher).__name__} if teacher is not None else {})
    return run_recipe(recipe, resume=resume, overwrite=overwrite, progress=progress,
                      on_step=_callbacks(callbacks), measure_latency=measure_latency, objects=objects)
