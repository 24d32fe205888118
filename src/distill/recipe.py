"""The recipe: one validated tree that says what to distil, into what, on which data, how.

A recipe is YAML (or a dict) checked by pydantic; unknown keys are refused with the
closest valid name, names of models / datasets / losses are checked against the
registries, and files that must exist are checked before any work starts.

``key=value`` overrides address the tree by dotted path (``train.epochs=3``,
``losses.0.weight=0.5``); values are parsed as YAML scalars.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_serializer, field_validator, model_validator

from distill.quant.api import QuantConfig
from distill.registry import UnknownNameError, closest


class RecipeError(ValueError):
    """A recipe that cannot run; the message names the field and what would be right."""


def _lookup(registry, name: str) -> None:
    """Registry lookup whose error pydantic reports at the field (it catches ValueError)."""
    try:
        registry.get(name)
    except UnknownNameError as exc:
        raise ValueError(str(exc)) from None


def _known_name(name: str, valid, kind: str, plural: str) -> str:
    """``name`` if it is among ``valid``; else ValueError with the closest spelling and the list."""
    if name not in valid:
        hint = closest(name, list(valid))
        raise ValueError(f"unknown {kind} {name!r}" + (f"; did you mean {hint!r}?" if hint else ".")
                         + f" Valid {plural}: {', '.join(sorted(valid))}")
    return name


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


def nonfinite_fields(tree: Any, prefix: str = "") -> list[str]:
    """Dotted paths of every NaN / infinite float in a nested dict / list tree."""
    if isinstance(tree, float):
        return [] if math.isfinite(tree) else [prefix or "(top level)"]
    if isinstance(tree, dict):
        return [path for key, value in tree.items() for path in nonfinite_fields(value, f"{prefix}.{key}" if prefix else str(key))]
    if isinstance(tree, (list, tuple)):
        return [path for index, value in enumerate(tree) for path in nonfinite_fields(value, f"{prefix}.{index}" if prefix else str(index))]
    return []


class _SafeLoader(yaml.SafeLoader):
    """yaml's SafeLoader, except that a key given twice in one mapping is an error (not last-wins)."""


def _construct_mapping(loader: _SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: dict[Any, Any] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                "while reading a mapping", node.start_mark,
                f"key {key!r} is given twice (first at line {seen[key].line + 1}); remove one", key_node.start_mark)
        seen[key] = key_node.start_mark
    return loader.construct_mapping(node, deep=deep)


_SafeLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(text: str) -> Any:
    """Parse YAML safely (no objects), refusing duplicate keys."""
    return yaml.load(text, Loader=_SafeLoader)  # noqa: S506 - a SafeLoader subclass


class ModelSpec(_Strict):
    """A model: a registered name (or ``package.module:callable``) with its parameters,
    and/or a checkpoint (``.safetensors`` written by distill, which records its model)."""

    model: Optional[str] = None
    params: dict[str, Any] = Field(default_factory=dict)
    checkpoint: Optional[str] = None
    trust_code: bool = Field(False, description="let 'checkpoint' name user code (package.module:callable) as its "
                             "architecture; that code is imported and run, so only for files you trust")

    @model_validator(mode="after")
    def _model_or_checkpoint(self) -> "ModelSpec":
        if self.model is None and self.checkpoint is None:
            raise ValueError("give 'model' (a registered name or 'package.module:callable') or 'checkpoint'")
        return self

    @field_validator("model")
    @classmethod
    def _known_model(cls, name: Optional[str]) -> Optional[str]:
        if name is not None and ":" not in name:
            from distill.models import MODELS

            _lookup(MODELS, name)
        return name


class CacheSpec(_Strict):
    """A teacher-output cache on disk (see ``distill.data.cache``): built on first use (or by
    ``distill cache RECIPE``), refused when it does not match the teacher, data or settings."""

    path: str
    k: Optional[int] = Field(None, ge=1, description="top-k logits; null stores dense logits")
    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    temperature: float = Field(1.0, gt=0, description="temperature of the stored tail mass (top-k)")
    mode: Optional[Literal["renormalized", "tail"]] = Field(None, description="how the top-k are read back: "
                                                            "null = renormalized (classification), tail (task token)")
    shard_size: int = Field(16384, ge=1)


class EnsembleMemberSpec(ModelSpec):
    """One teacher of an ensemble: a model spec and its weight in ``mean`` / ``logit_mean``."""

    weight: float = Field(1.0, gt=0)


class TeacherSpec(ModelSpec):
    """The teacher: like a model spec, plus where its outputs come from during training:
    ``precompute`` runs it once over the training set and keeps its logits in memory; ``cache``
    stores them on disk for many runs. Both need data without random augmentation.

    Several teachers: ``ensemble`` lists them (instead of ``model`` / ``checkpoint``) and
    ``combine`` says how their logits become one teacher's, per sample: ``mean`` (the weighted
    mixture of their probabilities), ``logit_mean`` (weighted mean of logits) or ``confident``
    (the member most sure of its top-1 class); see :mod:`distill.ensemble`."""

    precompute: bool = False
    cache: Optional[CacheSpec] = None
    ensemble: Optional[list[EnsembleMemberSpec]] = Field(None, description="two or more teachers, combined")
    combine: Literal["mean", "logit_mean", "confident"] = "mean"

    @model_validator(mode="after")
    def _model_or_checkpoint(self) -> "TeacherSpec":  # replaces ModelSpec's: an ensemble needs neither
        if self.ensemble is None:
            if self.model is None and self.checkpoint is None:
                raise ValueError("give 'model' and/or 'checkpoint' (the teacher's trained weights), or 'ensemble' "
                                 "(a list of teachers)")
            return self
        if self.model is not None or self.checkpoint is not None or self.params:
            raise ValueError("give either one teacher ('model' / 'checkpoint' / 'params') or 'ensemble', not both")
        if len(self.ensemble) < 2:
            raise ValueError(f"'ensemble' lists {len(self.ensemble)} teacher; give two or more (or one teacher "
                             "as 'checkpoint')")
        if self.combine == "confident" and len({member.weight for member in self.ensemble}) > 1:
            raise ValueError("combine 'confident' picks one teacher per sample and uses no weights: drop the "
                             "members' 'weight' or use combine 'mean' / 'logit_mean'")
        return self

    def members(self) -> list[tuple[str, ModelSpec]]:
        """``(field name, spec)`` of each teacher: ``[("teacher", self)]`` or the ensemble's members."""
        if self.ensemble is None:
            return [("teacher", self)]
        return [(f"teacher.ensemble.{index}", member) for index, member in enumerate(self.ensemble)]

    def describe(self) -> str:
        """One line for reports: the model and checkpoint of each teacher."""
        parts = [" from ".join(part for part in (spec.model, spec.checkpoint) if part) for _, spec in self.members()]
        if self.ensemble is None:
            return parts[0]
        weights = [member.weight for member in self.ensemble]
        return f"ensemble ({self.combine}, weights {weights}) of " + "; ".join(parts)


class AugmentSpec(_Strict):
    name: Literal["shift", "crop_flip"]
    max_shift: int = 2
    padding: int = 4
    flip: bool = True


class DataSpec(_Strict):
    name: str = "digits"
    root: Optional[str] = None
    batch_size: int = Field(64, ge=1)
    eval_batch_size: int = Field(512, ge=1)
    train_subset: Optional[int] = Field(None, ge=1, description="use this many training samples")
    augment: Optional[AugmentSpec] = None
    params: dict[str, Any] = Field(default_factory=dict, description="the data set's own parameters "
                                   "(e.g. image_folder: {size: 64, resize: center_crop})")

    @field_validator("name")
    @classmethod
    def _known_dataset(cls, name: str) -> str:
        if ":" not in name:
            from distill.data import DATASETS

            _lookup(DATASETS, name)
        return name


class LossSpec(_Strict):
    """One weighted loss term. Extra parameters (``beta``, ``alpha`` ...) go to the loss."""

    model_config = ConfigDict(extra="allow", validate_assignment=True, allow_inf_nan=False)
    name: str = Field(description="a registered loss, or 'package.module:callable' (your own loss function, "
                      "called as fn(student_logits, teacher_logits, target, temperature=..., **params))")
    weight: float = 1.0
    temperature: float = Field(1.0, gt=0)
    label: Optional[str] = Field(None, description="the term's name in metrics (default: name); the same loss "
                                 "twice needs two labels")
    warmup_steps: int = Field(0, ge=0, description="ramp the weight linearly from 0 over this many optimiser steps "
                              "(DKD's paper warms its loss up over the first 20 of 240 epochs)")

    @field_validator("name")
    @classmethod
    def _known_loss(cls, name: str) -> str:
        from distill.losses import LOGIT_LOSSES

        if ":" in name:  # the user's own loss: imported (their code, named in their recipe)
            from distill.distiller import LOSSES

            _lookup(LOSSES, name)
            return name
        return _known_name(name, LOGIT_LOSSES, "loss", "losses")

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    @model_validator(mode="after")
    def _known_params(self) -> "LossSpec":
        from distill.losses import check_loss_params

        check_loss_params(self.name, self.params)
        return self


class FeatureSpec(_Strict):
    """One intermediate-layer term: ``weight * mean over pairs of loss(student feature, teacher feature)``.

    ``pairs``: ``auto`` (the student's stages spread uniformly over the teacher's) or a list of
    ``[student module path, teacher module path]`` (see ``distill inspect``). ``projector``:
    how a student feature is mapped to the teacher's shape where the loss needs it.
    """

    loss: str
    weight: float = 1.0
    pairs: Union[Literal["auto"], list[tuple[str, str]]] = "auto"
    projector: Literal["auto", "linear", "mlp"] = "auto"
    hidden: Optional[int] = Field(None, ge=1, description="hidden width of mlp projectors and heads")
    embedding_dim: int = Field(128, ge=1, description="crd: shared embedding size")
    params: dict[str, Any] = Field(default_factory=dict, description="the loss's own parameters")

    @field_validator("loss")
    @classmethod
    def _known_feature_loss(cls, name: str) -> str:
        from distill.losses import FEATURE_LOSSES

        return _known_name(name, FEATURE_LOSSES, "feature loss", "feature losses")

    @model_validator(mode="after")
    def _known_params(self) -> "FeatureSpec":
        from distill.losses import check_feature_loss_params

        check_feature_loss_params(self.loss, self.params)
        return self


class SelfDistillSpec(_Strict):
    """Self-distillation (``self_distill:``): exits on the student's shallower ``layers`` learn from
    its final logits, ``weight * T^2 KL + label_weight * CE`` averaged over exits (Zhang et al. 2019,
    see :mod:`distill.self_distill`). Needs no teacher; combines with the recipe's own losses."""

    layers: Union[Literal["auto"], list[str]] = "auto"
    weight: float = Field(1.0, ge=0, description="weight of the exits' KL to the final logits")
    temperature: float = Field(3.0, gt=0)
    label_weight: float = Field(0.3, ge=0, description="weight of the exits' cross-entropy on labels")
    hidden: Optional[int] = Field(None, ge=1, description="hidden width of the exit heads (default: linear)")


class OnPolicySpec(_Strict):
    """On-policy / generalised KD for ``task: token`` (``on_policy:``; Agarwal et al. 2024, GKD): with
    probability ``fraction`` a micro-batch's responses are the student's own samples of its prompts,
    scored by the teacher, the loss taken on the sampled tokens up to the first EOS
    (:mod:`distill.llm.onpolicy`)."""

    fraction: float = Field(0.5, ge=0, le=1, description="λ: the probability that a micro-batch is sampled "
                            "from the student (0: supervised KD exactly)")
    max_new_tokens: int = Field(32, ge=1, description="tokens sampled per prompt at most")
    temperature: float = Field(1.0, ge=0, description="of the student's draws; 0: greedy")
    top_k: Optional[int] = Field(None, ge=1, description="sample among the k largest logits (null: all)")
    prompt_length: Optional[int] = Field(None, ge=1, description="data without a loss_mask (packed text): the "
                                         "first N tokens of each row are the prompt")
    eos_token_id: Optional[Union[int, list[int]]] = Field(None, description="the token(s) ending a completion "
                                                          "(default: the student's config's)")
    pad_token_id: Optional[int] = Field(None, ge=0, description="what fills rows after their EOS (masked)")


class OptimizerSpec(_Strict):
    name: Literal["sgd", "adam", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, description="sgd only")
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)


class ScheduleSpec(_Strict):
    name: Literal["constant", "cosine", "linear", "step"] = "cosine"
    warmup_steps: int = Field(0, ge=0)
    step_size: int = Field(1000, ge=1, description="step schedule: optimiser steps between decays")
    gamma: float = Field(0.1, gt=0, description="step schedule: decay factor")
    final_lr_fraction: float = Field(0.0, ge=0, le=1, description="cosine/linear: final lr / lr")


class TrainSpec(_Strict):
    epochs: Optional[int] = Field(None, ge=1)
    steps: Optional[int] = Field(None, ge=1, description="optimiser steps; overrides epochs")
    grad_accum: int = Field(1, ge=1)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="auto: bf16 autocast where the device multiplies bf16 natively (CPU AMX / AVX-512 BF16, "
        "CUDA Ampere+), else fp32 (distill.training.precision); no (fp32), bf16 or fp16 force one")
    max_grad_norm: Optional[float] = Field(None, gt=0)
    skip_nonfinite: int = Field(0, ge=0, description="micro-batches with a NaN/inf loss to skip before the run "
                                "stops with an error (0: stop at the first)")
    checkpoint_every: int = Field(0, ge=0, description="optimiser steps between checkpoints; 0 = end only")
    keep_checkpoints: int = Field(2, ge=1)
    log_every: int = Field(50, ge=1)
    eval_every_epoch: bool = True
    tensorboard: bool = Field(False, description="also log metrics to TensorBoard in <output_dir>/tensorboard "
                              "(needs the tensorboard extra: pip install 'distill[tensorboard]')")
    threads: Optional[int] = Field(None, ge=1, description="torch CPU threads (default: cores / local processes, recorded)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: CUDA when available, else CPU (gloo for several processes)")
    channels_last: Union[bool, Literal["auto"]] = Field(
        "auto", description="auto: a model with 2-d convolutions trains in channels_last (NHWC) memory format, "
        "measured faster on CPU in fp32 and more so under bf16 (benchmarks/precision.py); true/false force it. "
        "The models' weights are put back in the standard layout when the run ends")
    strategy: Literal["ddp", "fsdp"] = Field("ddp", description="several processes: ddp replicates the student, fsdp "
                                             "shards its parameters, gradients and optimiser state (FSDP2)")

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _precision_spellings(cls, value: Any) -> Any:
        """The spellings users type: ``no``/``false``/``off``/``fp32``/``none`` (YAML may make some of them
        False or None) mean full precision; ``bfloat16`` / ``float16`` name the halves."""
        if value is False or value is None:
            return "no"
        if isinstance(value, str):
            spelled = value.strip().lower()
            aliases = {"auto": "auto", "no": "no", "false": "no", "off": "no", "fp32": "no", "float32": "no", "none": "no",
                       "bf16": "bf16", "bfloat16": "bf16", "fp16": "fp16", "float16": "fp16", "half": "fp16"}
            return aliases.get(spelled, value)
        return value

    @model_validator(mode="after")
    def _length(self) -> "TrainSpec":
        if self.epochs is None and self.steps is None:
            self.epochs = 1
        return self


class QuantSpec(QuantConfig):
    """The ``quantize:`` section: ``method`` next to the fields of :class:`distill.quant.QuantConfig`.

    ``qat``: the student (float weights from ``student.checkpoint``, or freshly built) is
    prepared with fake quantizers and trained with every loss term of the recipe (with a
    teacher: quantization-aware distillation; without: QAT on hard labels). ``rtn``:
    post-training round-to-nearest of ``student.checkpoint``, no training (``train`` ignored);
    ``weight_init`` ``mse`` searches the clipping range, ``minmax`` takes the full range.
    ``step_lr_scale``: learning-rate multiplier of the quantizer parameters (Adam moves a
    parameter by about ``lr`` per step whatever its size, so LSQ's gradient scale does not slow
    step sizes of ~1e-2 down there: on digits, AdamW at lr 1e-2 and scale 1 jolts a 4-bit
    student's loss 25x in its second step, scale 0.1 does not).
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    method: Literal["qat", "rtn"] = "qat"
    step_lr_scale: float = Field(1.0, gt=0, description="qat: the quantizers' steps and zero points train at "
                                 "optimizer.lr times this (and without weight decay)")

    @field_serializer("overrides")
    def _written_fields_only(self, overrides: dict[str, Any]) -> dict[str, Any]:
        # an override applies only the fields written in it (an explicit null included), so the
        # resolved recipe keeps exactly those: dumping every field as null would change its meaning
        return {pattern: override.model_dump(mode="json", exclude_unset=True) for pattern, override in overrides.items()}

    def config(self) -> QuantConfig:
        """The :class:`QuantConfig` part (``method`` left out)."""
        return QuantConfig(**{name: getattr(self, name) for name in QuantConfig.model_fields})


NOT_NUMERIC_TRAIN_KEYS = ("threads", "log_every", "checkpoint_every", "keep_checkpoints", "eval_every_epoch", "strategy",
                          "tensorboard", "channels_last")


class Recipe(_Strict):
    """The whole recipe. ``teacher: null`` trains the student on its losses alone."""

    name: str = "run"
    seed: int = 0
    output_dir: str = "runs/run"
    task: str = Field("classification", description="what the outputs are: classification ((B, K) logits), "
                      "embedding ((B, D) vectors) or token ((B, L, V) causal-LM logits; per-token losses)")
    data: DataSpec = Field(default_factory=DataSpec)
    teacher: Optional[TeacherSpec] = None
    student: ModelSpec
    losses: list[LossSpec] = Field(default_factory=lambda: [LossSpec(name="cross_entropy")])
    features: list[FeatureSpec] = Field(default_factory=list, description="intermediate-layer terms (need a teacher)")
    self_distill: Optional[SelfDistillSpec] = Field(None, description="exits on shallow layers taught by the final logits")
    optimizer: OptimizerSpec = Field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = Field(default_factory=ScheduleSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    quantize: Optional[QuantSpec] = None
    on_policy: Optional[OnPolicySpec] = Field(None, description="task token: a fraction of the batches sampled "
                                              "from the student and scored by the teacher (GKD)")

    @field_validator("task")
    @classmethod
    def _known_task(cls, name: str) -> str:
        from distill.tasks import TASKS

        return _known_name(name, TASKS.names(), "task", "tasks")

    @model_validator(mode="before")
    @classmethod
    def _finite_numbers(cls, tree: Any) -> Any:
        bad = nonfinite_fields(tree) if isinstance(tree, dict) else []
        if bad:
            raise ValueError(f"non-finite number (NaN or infinity) in field {', '.join(repr(b) for b in bad)}; "
                             "every number in a recipe must be finite")
        return tree

    @model_validator(mode="after")
    def _quantize_fits(self) -> "Recipe":
        if self.quantize is not None and self.quantize.method == "rtn":
            if self.student.checkpoint is None:
                raise ValueError(
                    "quantize.method 'rtn' rounds a trained model and trains nothing: set 'student.checkpoint' "
                    "to the float model file (or use quantize.method 'qat')"
                )
            if self.quantize.weight_init == "lsq":
                raise ValueError(
                    "quantize.weight_init 'lsq' is a starting point for training; 'rtn' takes 'mse' "
                    "(clipping search) or 'minmax'"
                )
        return self

    @model_validator(mode="after")
    def _strategy_fits(self) -> "Recipe":
        if self.train.strategy == "fsdp" and self.quantize is not None:
            raise ValueError("train.strategy 'fsdp' does not shard quantized students yet (their step sizes are "
                             "scalars): use train.strategy 'ddp' with 'quantize'")
        return self

    @model_validator(mode="after")
    def _on_policy_fits(self) -> "Recipe":
        if self.on_policy is None:
            return self
        if self.task != "token":
            raise ValueError(f"'on_policy' samples completions from a causal-LM student: it needs task 'token', "
                             f"not {self.task!r}")
        if self.teacher is None:
            raise ValueError("'on_policy' has the teacher score the student's samples, but 'teacher' is not set")
        if self.teacher.precompute or self.teacher.cache is not None:
            which = "teacher.precompute" if self.teacher.precompute else "teacher.cache"
            raise ValueError(f"'on_policy' needs the live teacher to score samples drawn during training; {which} "
                             f"stores its outputs on the data's own tokens only: remove {which} or 'on_policy'")
        return self

    @model_validator(mode="after")
    def _losses_fit_teacher(self) -> "Recipe":
        from distill.losses import LOSS_NEEDS as NEEDS

        LOSS_NEEDS = {term.name: NEEDS.get(term.name, frozenset({"teacher"})) for term in self.losses}  # noqa: N806
        keys = [term.label or term.name for term in self.losses]
        twice = sorted({key for key in keys if keys.count(key) > 1})
        if twice:
            raise ValueError(f"losses {twice} appear more than once under the same name; give each its own 'label' "
                             f"(e.g. label: {twice[0]}_2) so that their metrics can be told apart")
        if not self.losses:
            raise ValueError("'losses' is empty: give at least one term, e.g. [{name: cross_entropy}]")
        teacher = self.teacher
        if self.features and teacher is None:
            raise ValueError("'features' compare the student's layers with the teacher's, but 'teacher' is not set")
        if teacher is not None and teacher.ensemble is not None:
            auto = [index for index, spec in enumerate(self.features) if spec.pairs == "auto"]
            if auto:
                raise ValueError(
                    f"features {auto} use pairs 'auto', which cannot choose among an ensemble's teachers: list the "
                    "pairs, the teacher side prefixed by its member, e.g. pairs: [[stages.1, teachers.0.layer2]]"
                )
        if self.features and (teacher.precompute or teacher.cache):
            raise ValueError(
                "'features' read the live teacher's internal layers every step: remove teacher.precompute / "
                "teacher.cache, or remove 'features'"
            )
        if teacher is not None and (teacher.precompute or teacher.cache) and self.data.augment is not None:
            which = "teacher.precompute" if teacher.precompute else "teacher.cache"
            raise ValueError(
                f"{which} stores one teacher output per training sample, but data.augment changes the "
                f"inputs every epoch, so stored outputs would be wrong: remove data.augment or {which}"
            )
        if teacher is not None and teacher.precompute and teacher.cache:
            raise ValueError("give teacher.precompute (in memory) or teacher.cache (on disk), not both")
        if teacher is not None and teacher.cache is not None and teacher.cache.k is not None:
            from distill.losses import SPARSE_TEACHER_LOSSES

            dense_only = [t.name for t in self.losses if "teacher" in LOSS_NEEDS[t.name] and t.name not in SPARSE_TEACHER_LOSSES]
            if dense_only:
                raise ValueError(
                    f"losses {dense_only} need dense teacher logits, but teacher.cache.k={teacher.cache.k} stores "
                    f"the top-k only: set teacher.cache.k: null or use {sorted(SPARSE_TEACHER_LOSSES)}"
                )
            if (teacher.cache.mode or ("tail" if self.task == "token" else "renormalized")) == "tail":
                other = [t.name for t in self.losses if "teacher" in LOSS_NEEDS[t.name] and t.temperature != teacher.cache.temperature]
                if other:
                    raise ValueError(
                        f"teacher.cache.mode 'tail' stores the tail mass at T={teacher.cache.temperature}, but "
                        f"losses {other} use another temperature: make them equal or use mode 'renormalized'"
                    )
        if self.teacher is None:
            needy = [term.name for term in self.losses if "teacher" in LOSS_NEEDS[term.name]]
            if needy:
                raise ValueError(f"losses {needy} need a teacher but 'teacher' is not set")
        return self

    # -- helpers -----------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def fingerprint(self, *, training_only: bool = False) -> str:
        """Short hash of the resolved recipe (stable across key order).

        ``training_only`` leaves out what does not change the numbers a run computes (the
        output folder, threads, logging and checkpoint cadence), so a run may be resumed with
        those changed, and every field left at its default, so that a field added in a later
        version (at a default that keeps the old behaviour) does not make older runs unresumable.
        """
        tree = self.to_dict()
        if training_only:
            tree = self.model_dump(mode="json", exclude_defaults=True)
            tree.pop("output_dir", None)
            for key in NOT_NUMERIC_TRAIN_KEYS:
                tree.get("train", {}).pop(key, None)
            for name in ("optimizer", "schedule", "train"):  # sections whose validators fill fields in
                section = tree.get(name)
                if isinstance(section, dict):
                    default = type(getattr(self, name))().model_dump(mode="json")
                    for key in [k for k, v in section.items() if default.get(k, object()) == v]:
                        section.pop(key)
                    if not section:  # nothing but defaults and non-numeric keys: same as no section
                        tree.pop(name)
        text = json.dumps(tree, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


# -- loading, overrides, error messages ------------------------------------------------

def _fields_at(loc: tuple, model: type[BaseModel] = Recipe) -> list[str]:
    """Valid field names of the (sub)model addressed by ``loc`` (for typo hints)."""
    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            break
        annotation = field.annotation
        current = None
        for candidate in _candidates(annotation):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
    return list(getattr(current, "model_fields", {})) if current is not None else []


def _candidates(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    out = []
    for arg in args:
        out.extend(_candidates(arg))
    return out


def format_validation_error(error: ValidationError, source: str = "recipe") -> str:
    """One readable line per problem: ``source: field a.b: what is wrong (what is right)``."""
    lines = []
    for item in error.errors():
        loc = tuple(item["loc"])
        where = ".".join(str(p) for p in loc) or "(top level)"
        message = item["msg"]
        if message.startswith("Value error, "):
            message = message[len("Value error, "):]
        if item["type"] == "extra_forbidden":
            valid = _fields_at(loc[:-1])
            hint = closest(str(loc[-1]), valid)
            message = "unknown key" + (f"; did you mean {hint!r}?" if hint else ".")
            if valid:
                message += f" Valid keys here: {', '.join(valid)}"
        elif item["type"] == "missing":
            message = "required field is missing"
        elif "input" in item and item["type"] not in {"value_error", "assertion_error"}:
            message += f" (got {item['input']!r})"
        lines.append(f"{source}: field '{where}': {message}")
    return "\n".join(lines)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.0.c=value`` -> (["a", "b", "0", "c"], parsed value)."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise RecipeError(f"override {text!r} is not of the form key=value (e.g. train.epochs=3)")
    try:
        value = load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise RecipeError(f"override {text!r}: the value is not valid YAML: {exc}") from None
    return key.strip().split("."), value


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of ``tree`` with each ``key=value`` set (lists indexed by number)."""
    tree = copy.deepcopy(tree)
    for text in overrides:
        path, value = parse_override(text)
        node: Any = tree
        for depth, part in enumerate(path):
            last = depth == len(path) - 1
            if isinstance(node, list):
                if not part.isdigit() or int(part) >= len(node):
                    raise RecipeError(
                        f"override {text!r}: '{'.'.join(path[:depth + 1])}' needs an index below {len(node)}"
                    )
                if last:
                    node[int(part)] = value
                else:
                    node = node[int(part)]
            elif isinstance(node, dict):
                if last:
                    node[part] = value
                else:
                    if node.get(part) is None:
                        if path[depth + 1].isdigit():
                            raise RecipeError(
                                f"override {text!r}: '{'.'.join(path[:depth + 1])}' is not set in the recipe, so it has "
                                f"no item {path[depth + 1]}; set the whole list instead (e.g. {part}=[...])"
                            )
                        node[part] = {}
                    node = node[part]
            else:
                raise RecipeError(
                    f"override {text!r}: '{'.'.join(path[:depth])}' is {node!r}, not a mapping, so it has no key {part!r}"
                )
    return tree


def load_recipe(source: str | Path | dict[str, Any], overrides: list[str] | None = None) -> Recipe:
    """Read and validate a recipe from a YAML file or a dict; raise RecipeError if bad."""
    name = "recipe"
    if isinstance(source, dict):
        tree = source
    else:
        path = Path(source)
        name = str(path)
        if not path.is_file():
            raise RecipeError(f"recipe file {path} does not exist")
        try:
            tree = load_yaml(path.read_text()) or {}
        except UnicodeDecodeError as exc:
            raise RecipeError(f"{path}: not UTF-8 text ({exc})") from None
        except yaml.YAMLError as exc:
            raise RecipeError(f"{path}: not valid YAML: {exc}") from exc
        if not isinstance(tree, dict):
            raise RecipeError(f"{path}: a recipe is a mapping of keys (name, data, student, ...), got {type(tree).__name__}")
    if not isinstance(source, dict):
        import sys

        folder = str(Path(source).resolve().parent)  # the recipe's own modules import as in a script beside it
        if folder not in sys.path:
            sys.path.append(folder)
    tree = apply_overrides(tree, overrides or [])
    try:
        return Recipe.model_validate(tree)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, name)) from None
    except UnknownNameError as exc:  # raised inside validators that look up registries
        raise RecipeError(f"{name}: {exc}") from None


def recipe_callables(recipe: Recipe) -> list[tuple[str, str, Any]]:
    """``(field, name, registry)`` of every ``package.module:callable`` the recipe names."""
    from distill.data import DATASETS
    from distill.distiller import LOSSES
    from distill.models import MODELS

    named = [("data.name", recipe.data.name, DATASETS)]
    specs = [("student", recipe.student)] + (recipe.teacher.members() if recipe.teacher is not None else [])
    named += [(f"{role}.model", spec.model, MODELS) for role, spec in specs if spec.model is not None]
    named += [(f"losses.{index}.name", term.name, LOSSES) for index, term in enumerate(recipe.losses)]
    return [(field_name, name, registry) for field_name, name, registry in named if ":" in name]


def check_callables(recipe: Recipe) -> list[str]:
    """Import every ``package.module:callable`` the recipe names (the user's own code: importing runs
    it); returns the names, or raises RecipeError naming each field that does not import."""
    from distill.registry import UnknownNameError

    problems, names = [], []
    for field_name, name, registry in recipe_callables(recipe):
        try:
            registry.get(name)
            names.append(name)
        except UnknownNameError as exc:
            problems.append(f"field '{field_name}': {exc}")
    if problems:
        raise RecipeError("\n".join(problems))
    return names


def check_files(recipe: Recipe, base: Path | None = None) -> None:
    """Refuse a recipe whose files are missing, naming the field and the path."""
    problems = []
    specs = [("student", recipe.student)] + (recipe.teacher.members() if recipe.teacher is not None else [])
    for role, spec in specs:
        if spec.checkpoint is not None and not Path(spec.checkpoint).is_file():
            problems.append(f"field '{role}.checkpoint': file {spec.checkpoint} does not exist")
    if recipe.data.root is not None and not Path(recipe.data.root).exists():
        problems.append(f"field 'data.root': folder {recipe.data.root} does not exist")
    if problems:
        raise RecipeError("\n".join(problems))
