"""``prepare`` / ``convert``: from a float model to a fake-quantized one, and from that to packed integers.

>>> config = QuantConfig(weight_bits=4, group_size=32, overrides={"<first>": {"weight_bits": 8}, "<last>": {"weight_bits": 8}})
>>> prepare(model, config)             # in place: Linear/Conv2d -> QuantLinear/QuantConv2d; returns model
>>> ...train (QAT / QAD)...
>>> packed = convert(model)            # a copy whose quantized layers hold packed codes (PackedLinear/PackedConv2d)
>>> size_report(packed)["total_bytes"]; save_packed(packed, "model.q.safetensors")

Layer selection, by module path (``model.named_modules()`` names such as ``layers.0.0``,
``stages.1.0``, ``blocks.2.attn.qkv``, ``head``):

- only modules whose type is exactly ``nn.Linear`` or ``nn.Conv2d`` are candidates (subclasses
  such as ``nn.MultiheadAttention``'s ``out_proj``, whose weight the parent reads directly,
  are left alone);
- a pattern is an ``fnmatch`` glob (``*`` also crosses dots); it matches a layer when it
  matches the layer's path or the path of a module containing it (``blocks.0`` selects
  everything inside ``blocks.0``). ``<first>`` and ``<last>`` name the first and last candidate
  in registration order (the input and output layers of the models here; YAML takes them
  unquoted, unlike a leading ``@``);
- a layer is quantized when some ``include`` pattern matches and no ``exclude`` pattern does;
  ``overrides`` (pattern -> the per-layer fields to change) apply in order, later ones win;
- a pattern that matches no candidate at all is an error (a typo would otherwise silently
  quantize, or keep, the wrong layers).
"""
from __future__ import annotations

import copy
import json
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from distill.quant.fake import ActivationQuantizer, WeightQuantizer
from distill.quant.fold import fold_batchnorm
from distill.quant.modules import (
    PACKED_MODULES,
    QUANT_MODULES,
    QuantConv2d,
    QuantLinear,
    _PackedBase,
    _QuantMixin,
)
from distill.quant.pack import PackedLayer, block_size_for

FORMAT = "distill.quant.packed"
FORMAT_VERSION = "1"
ALIASES = ("<first>", "<last>")

WeightBits = Literal[2, 3, 4, 8]
Granularity = Literal["per_channel", "per_group"]
GroupSize = Literal[16, 32, 64, 128, 256]
ScaleDtype = Literal["float32", "float16"]
WeightInit = Literal["mse", "minmax", "lsq"]
ActGranularity = Literal["per_tensor", "per_token"]
ActMode = Literal["dynamic", "learned"]

LAYER_FIELDS = ("weight_bits", "symmetric", "granularity", "group_size", "scale_dtype", "weight_init",
                "activation_bits", "activation_granularity", "activation_mode", "activation_symmetric",
                "calibration_batches")


def _check_activation_bits(value: int | None) -> int | None:
    if value is not None and not 2 <= value <= 8:
        raise ValueError(f"activation_bits must be None (off) or in 2..8, got {value}")
    return value


class LayerOverride(BaseModel):
    """Per-layer settings for an ``overrides`` entry; only the fields written are applied
    (``activation_bits: null`` written explicitly turns input quantization off for the layer)."""

    model_config = ConfigDict(extra="forbid")
    weight_bits: WeightBits | None = None
    symmetric: bool | None = None
    granularity: Granularity | None = None
    group_size: GroupSize | None = None
    scale_dtype: ScaleDtype | None = None
    weight_init: WeightInit | None = None
    activation_bits: int | None = None
    activation_granularity: ActGranularity | None = None
    activation_mode: ActMode | None = None
    activation_symmetric: bool | None = None
    calibration_batches: int | None = Field(default=None, ge=1)

    @field_validator("activation_bits")
    @classmethod
    def _check_bits(cls, value: int | None) -> int | None:
        return _check_activation_bits(value)


class QuantConfig(BaseModel):
    """What to quantize and how (the recipe's ``quantize:`` section).

    Weights: ``weight_bits`` (2/3/4/8), ``symmetric`` (signed grid, no zero point; else
    unsigned with a learned integer zero point), ``granularity`` (``per_channel`` or
    ``per_group`` with ``group_size`` inputs per step, the ``MatMulNBits`` block size),
    ``scale_dtype`` the exported scale dtype (float16 is also what training sees),
    ``weight_init`` (``mse`` clipping search, ``minmax``, ``lsq``).
    Activations (layer inputs): ``activation_bits`` (None: off), ``activation_granularity``,
    ``activation_mode`` (``dynamic`` min/max at run time, or ``learned`` LSQ range calibrated
    on the first ``calibration_batches`` forward calls), ``activation_symmetric``.
    Selection: ``include``, ``exclude``, ``overrides`` (see :mod:`distill.quant.api`).
    ``fold_batchnorm``: fold each BatchNorm2d into the Conv2d before it (running statistics)
    before quantizing, so the integer convolution carries it (:mod:`distill.quant.fold`).
    """

    model_config = ConfigDict(extra="forbid")
    weight_bits: WeightBits = 4
    symmetric: bool = True
    granularity: Granularity = "per_group"
    group_size: GroupSize = 32
    scale_dtype: ScaleDtype = "float32"
    weight_init: WeightInit = "mse"
    activation_bits: int | None = None
    activation_granularity: ActGranularity = "per_tensor"
    activation_mode: ActMode = "dynamic"
    activation_symmetric: bool = False
    calibration_batches: int = Field(default=1, ge=1)
    include: list[str] = Field(default_factory=lambda: ["*"])
    exclude: list[str] = Field(default_factory=list)
    overrides: dict[str, LayerOverride] = Field(default_factory=dict)
    fold_batchnorm: bool = False

    @field_validator("activation_bits")
    @classmethod
    def _check_bits(cls, value: int | None) -> int | None:
        return _check_activation_bits(value)

    @model_validator(mode="after")
    def _check_activation_combination(self) -> "QuantConfig":
        if self.activation_bits is not None and self.activation_mode == "learned" \
                and self.activation_granularity == "per_token":
            raise ValueError("activation_mode 'learned' is per_tensor; per_token ranges are 'dynamic'")
        return self

    @classmethod
    def coerce(cls, config: "QuantConfig | dict[str, Any]") -> "QuantConfig":
        return config if isinstance(config, cls) else cls.model_validate(config)

    def layer_settings(self, overrides: list[LayerOverride] = ()) -> dict[str, Any]:
        """The per-layer fields with ``overrides`` applied in order."""
        settings = {name: getattr(self, name) for name in LAYER_FIELDS}
        for override in overrides:
            settings.update({name: getattr(override, name) for name in override.model_fields_set})
        return settings


# -- layer selection ----------------------------------------------------------------------------------
def quantizable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Module path -> module for every exact ``nn.Linear`` / ``nn.Conv2d`` (registration order)."""
    return {path: module for path, module in model.named_modules() if type(module) in QUANT_MODULES}


def _matches(pattern: str, path: str, aliases: dict[str, str]) -> bool:
    if pattern in aliases:
        return path == aliases[pattern]
    parts = path.split(".")
    return any(fnmatchcase(".".join(parts[:i]), pattern) for i in range(1, len(parts) + 1))


def quantization_plan(model: nn.Module, config: QuantConfig | dict[str, Any]) -> dict[str, dict[str, Any] | None]:
    """Path -> resolved per-layer settings (None: left in float) for every candidate layer.

    Raises ValueError when the model has no candidate layer, when the root module itself is
    one (it cannot be swapped in place), or when a pattern matches no candidate.
    """
    config = QuantConfig.coerce(config)
    layers = quantizable_layers(model)
    if not layers:
        raise ValueError("the model has no nn.Linear or nn.Conv2d layer to quantize")
    if "" in layers:
        raise ValueError(f"the model is itself a {type(model).__name__}; prepare() swaps layers inside a "
                         "container in place, so wrap it (e.g. nn.Sequential(layer))")
    paths = list(layers)
    aliases = {"<first>": paths[0], "<last>": paths[-1]}
    for where, patterns in (("include", config.include), ("exclude", config.exclude),
                            ("overrides", list(config.overrides))):
        for pattern in patterns:
            if not any(_matches(pattern, path, aliases) for path in paths):
                raise ValueError(f"quantize.{where} pattern {pattern!r} matches no Linear/Conv2d layer; "
                                 f"layer paths: {', '.join(paths)} (and aliases {', '.join(ALIASES)})")
    plan: dict[str, dict[str, Any] | None] = {}
    for path in paths:
        included = any(_matches(p, path, aliases) for p in config.include)
        excluded = any(_matches(p, path, aliases) for p in config.exclude)
        if not included or excluded:
            plan[path] = None
            continue
        overrides = [override for pattern, override in config.overrides.items() if _matches(pattern, path, aliases)]
        plan[path] = config.layer_settings(overrides)
    return plan


def make_quantizers(settings: dict[str, Any]) -> tuple[WeightQuantizer, ActivationQuantizer | None]:
    """The weight (and input) quantizer for one layer's resolved settings."""
    weight = WeightQuantizer(bits=settings["weight_bits"], symmetric=settings["symmetric"],
                             granularity=settings["granularity"], group_size=settings["group_size"],
                             scale_dtype=settings["scale_dtype"], init=settings["weight_init"])
    if settings["activation_bits"] is None:
        return weight, None
    activation = ActivationQuantizer(bits=settings["activation_bits"], granularity=settings["activation_granularity"],
                                     mode=settings["activation_mode"], symmetric=settings["activation_symmetric"],
                                     calibration_batches=settings["calibration_batches"])
    return weight, activation


def _replace(model: nn.Module, replacements: dict[int, nn.Module]) -> None:
    """Swap every occurrence (shared modules included) of the keyed modules."""
    parents = [module for _, module in model.named_modules(remove_duplicate=False)]
    for parent in parents:
        for name, child in list(parent._modules.items()):
            if child is not None and id(child) in replacements:
                parent._modules[name] = replacements[id(child)]


def prepare(model: nn.Module, config: QuantConfig | dict[str, Any]) -> nn.Module:
    """Swap the selected Linear / Conv2d layers for QuantLinear / QuantConv2d, in place; returns ``model``.

    Quantized layers keep their weight and bias Parameter objects; their weight quantizers are
    initialised from the current weights (call ``reset_quantizers(model)`` after loading other
    float weights). Layers left in float are untouched (same object). The config is recorded
    as ``model.quant_config`` and the resolved per-layer settings as ``model.quant_plan``.
    """
    config = QuantConfig.coerce(config)
    if any(isinstance(m, (_QuantMixin, _PackedBase)) for m in model.modules()):
        raise ValueError("the model already has quantized layers; prepare() a float model once")
    if config.fold_batchnorm:
        fold_batchnorm(model)
    plan = quantization_plan(model, config)
    layers = quantizable_layers(model)
    replacements: dict[int, nn.Module] = {}
    for path, settings in plan.items():
        if settings is None:
            continue
        try:
            weight_quantizer, input_quantizer = make_quantizers(settings)
        except ValueError as exc:
            raise ValueError(f"quantize settings for layer {path!r}: {exc}") from exc
        layer = layers[path]
        replacements[id(layer)] = QUANT_MODULES[type(layer)].from_float(layer, weight_quantizer, input_quantizer)
    _replace(model, replacements)
    model.quant_config = config
    model.quant_plan = plan
    return model


def reset_quantizers(model: nn.Module) -> nn.Module:
    """Re-initialise every weight quantizer from its layer's current weight."""
    for module in model.modules():
        if isinstance(module, _QuantMixin):
            module.reset_quantizers()
    return model


# -- convert -------------------------------------------------------------------------------------------
def _activation_spec(quantizer: ActivationQuantizer | None) -> dict[str, Any] | None:
    if quantizer is None:
        return None
    spec = {"bits": quantizer.bits, "granularity": quantizer.granularity, "mode": quantizer.mode,
            "symmetric": quantizer.symmetric, "calibration_batches": quantizer.calibration_batches}
    if quantizer.mode == "learned":
        spec["scale"] = float(quantizer.step.detach().clamp_min(1e-8))
        spec["zero_point"] = (0.0 if quantizer.zero_point is None
                              else float(torch.clamp(torch.round(quantizer.zero_point.detach()), 0, quantizer.qmax)))
    return spec


@torch.no_grad()
def pack_layer(layer: QuantLinear | QuantConv2d) -> PackedLayer:
    """The packed codes, scales and zero points of one prepared layer (no re-rounding: the
    codes are computed by the same operations as the fake-quantized forward)."""
    quantizer = layer.weight_quantizer
    if isinstance(layer.input_quantizer, ActivationQuantizer) and not layer.input_quantizer.calibrated:
        raise ValueError("a learned input range was never calibrated: run some batches through the prepared model "
                         "(or distill.quant.ptq.calibrate) before convert()")
    codes, step, zero = quantizer.codes(layer.weight)  # (O, G, group_len)
    out_features, in_features = layer.weight.shape[0], quantizer.in_dim
    codes = codes.reshape(out_features, -1)[:, :in_features]
    if quantizer.symmetric:
        codes = codes + 2 ** (quantizer.bits - 1)
    block_size = block_size_for(quantizer.granularity, quantizer.group_size, in_features)
    k_blocks = -(-in_features // block_size)
    scales = step.reshape(out_features, -1).to(quantizer.storage_dtype)
    zero_points = None if zero is None else zero.reshape(out_features, -1).to(torch.uint8)
    if scales.shape[1] != k_blocks:  # per channel cut into several blocks: repeat the channel's scale
        scales = scales.expand(out_features, k_blocks).contiguous()
        zero_points = None if zero_points is None else zero_points.expand(out_features, k_blocks).contiguous()
    conv = None
    if isinstance(layer, nn.Conv2d):
        conv = {"stride": list(layer.stride), "dilation": list(layer.dilation), "groups": layer.groups,
                "padding": layer.padding if isinstance(layer.padding, str) else list(layer.padding),
                "padding_mode": layer.padding_mode,
                "reversed_padding": list(layer._reversed_padding_repeated_twice)}
    return PackedLayer.from_codes(
        codes.to(torch.uint8), scales, zero_points, bits=quantizer.bits, block_size=block_size,
        symmetric=quantizer.symmetric, kind="conv2d" if conv else "linear", weight_shape=tuple(layer.weight.shape),
        granularity=quantizer.granularity, group_size=quantizer.group_size,
        bias=None if layer.bias is None else layer.bias.detach().clone(), conv=conv,
        activation=_activation_spec(layer.input_quantizer))


def convert(model: nn.Module, *, inplace: bool = False) -> nn.Module:
    """Replace every QuantLinear / QuantConv2d by a PackedLinear / PackedConv2d holding packed integers.

    Returns a copy (or ``model`` itself with ``inplace=True``) whose forward equals the
    fake-quantized model's forward (same codes, same scales, same float ops).
    """
    if not any(isinstance(m, _QuantMixin) for m in model.modules()):
        raise ValueError("convert() needs a prepared model (no QuantLinear / QuantConv2d found)")
    model = model if inplace else copy.deepcopy(model)
    replacements: dict[int, nn.Module] = {}
    for _, module in model.named_modules():
        if isinstance(module, _QuantMixin):
            packed = pack_layer(module)
            input_quantizer = copy.deepcopy(module.input_quantizer)
            replacements[id(module)] = PACKED_MODULES[packed.kind](packed, input_quantizer).train(module.training)
    _replace(model, replacements)
    return model


def packed_layers(model: nn.Module) -> dict[str, PackedLayer]:
    """Path -> :class:`PackedLayer` of a converted model (a prepared model is packed on the fly)."""
    out: dict[str, PackedLayer] = {}
    for path, module in model.named_modules():
        if isinstance(module, _PackedBase):
            out[path] = module.packed_layer()
        elif isinstance(module, _QuantMixin):
            out[path] = pack_layer(module)
    return out


# -- size ------------------------------------------------------------------------------------------------
def _nbytes(tensor: torch.Tensor | None) -> int:
    return 0 if tensor is None else tensor.numel() * tensor.element_size()


def size_report(model: nn.Module) -> dict[str, Any]:
    """The true size of a converted model (a prepared one is converted first), in bytes.

    ``packed_bytes`` (codes), ``scale_bytes``, ``zero_point_bytes``, ``float_bytes`` (every
    other parameter and buffer in its stored dtype: biases, norms, float layers, activation
    ranges), ``total_bytes``, ``fp32_bytes`` (the same model with float32 weights) and
    ``compression`` (fp32 / total), plus the same figures per packed layer under ``layers``.
    """
    if any(isinstance(m, _QuantMixin) for m in model.modules()):
        model = convert(model)
    layers: dict[str, dict[str, Any]] = {}
    packed_ids: set[int] = set()
    for path, module in model.named_modules():
        if isinstance(module, _PackedBase):
            layer = module.packed_layer()
            layers[path] = {"bits": layer.bits, "block_size": layer.block_size, "N": layer.out_features,
                            "K": layer.in_features, "packed_bytes": _nbytes(layer.qweight),
                            "scale_bytes": _nbytes(layer.scales), "zero_point_bytes": _nbytes(layer.zero_points),
                            "fp32_bytes": 4 * layer.out_features * layer.in_features}
            packed_ids.update(id(t) for t in (module.qweight, module.scales, module.zero_points) if t is not None)
    seen: set[int] = set()
    float_bytes = 0
    for tensor in list(model.parameters()) + list(model.buffers()):
        if id(tensor) in packed_ids or id(tensor) in seen:
            continue
        seen.add(id(tensor))
        float_bytes += _nbytes(tensor)
    packed = sum(entry["packed_bytes"] for entry in layers.values())
    scales = sum(entry["scale_bytes"] for entry in layers.values())
    zeros = sum(entry["zero_point_bytes"] for entry in layers.values())
    total = packed + scales + zeros + float_bytes
    fp32 = float_bytes + sum(entry["fp32_bytes"] for entry in layers.values())
    return {"packed_bytes": packed, "scale_bytes": scales, "zero_point_bytes": zeros, "float_bytes": float_bytes,
            "total_bytes": total, "fp32_bytes": fp32, "compression": fp32 / total if total else float("nan"),
            "layers": layers}


def packed_nbytes(model: nn.Module) -> int:
    """``size_report(model)["total_bytes"]``."""
    return size_report(model)["total_bytes"]


# -- save / load -------------------------------------------------------------------------------------------
def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return str(value)


def save_packed(model: nn.Module, path: str | Path, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write a converted model (a prepared one is converted first) to one safetensors file.

    Tensors: the converted model's ``state_dict`` (``<layer>.qweight`` uint8, ``<layer>.scales``,
    ``<layer>.zero_points`` uint8, ``<layer>.bias`` and every float tensor left). Metadata
    (``__metadata__``, strings): ``format``, ``format_version``, ``layers`` (JSON: path ->
    :meth:`PackedLayer.metadata`), ``quant_config`` and ``model_config`` (JSON, when known),
    plus ``metadata`` given here (JSON-encoded).
    """
    from safetensors.torch import save_file

    if any(isinstance(m, _QuantMixin) for m in model.modules()):
        model = convert(model)
    layers = packed_layers(model)
    if not layers:
        raise ValueError("save_packed() needs a converted (or prepared) model")
    tensors = {name: tensor.detach().contiguous().clone() for name, tensor in model.state_dict().items()}
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION,
            "layers": json.dumps({p: layer.metadata() for p, layer in layers.items()}, default=_json_default)}
    config = getattr(model, "quant_config", None)
    if isinstance(config, QuantConfig):
        meta["quant_config"] = config.model_dump_json()
    if isinstance(getattr(model, "config", None), dict):
        meta["model_config"] = json.dumps(model.config, default=_json_default)
    for key, value in (metadata or {}).items():
        meta[key] = value if isinstance(value, str) else json.dumps(value, default=_json_default)
    from distill.artifacts import check_finite_state, with_digest

    check_finite_state(tensors, f"packed model file {path}")
    meta = with_digest(tensors, meta)  # verified by read_packed
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=meta)
    return path


def read_packed(path: str | Path) -> tuple[dict[str, PackedLayer], dict[str, torch.Tensor], dict[str, str]]:
    """(path -> PackedLayer, every tensor in the file, the raw metadata) without building a model."""
    from safetensors import safe_open

    from distill.artifacts import load_state

    with safe_open(str(path), framework="pt") as handle:
        meta = handle.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} file (format={meta.get('format')!r})")
    tensors = load_state(path, what="packed model file")  # checks the digest save_packed wrote
    layers: dict[str, PackedLayer] = {}
    for layer_path, info in json.loads(meta["layers"]).items():
        def get(name: str, info=info, layer_path=layer_path):
            return tensors.get(f"{layer_path}.{name}")
        layers[layer_path] = PackedLayer(
            kind=info["kind"], bits=info["bits"], block_size=info["block_size"], in_features=info["in_features"],
            out_features=info["out_features"], symmetric=info["symmetric"], qweight=get("qweight"),
            scales=get("scales"), zero_points=get("zero_points"), weight_shape=tuple(info["weight_shape"]),
            granularity=info["granularity"], group_size=info["group_size"], bias=get("bias"), conv=info["conv"],
            activation=info["activation"])
    return layers, tensors, meta


def load_packed(path: str | Path, model: nn.Module) -> nn.Module:
    """Load a :func:`save_packed` file into ``model``, a float instance of the same architecture.

    The layers named in the file are replaced by PackedLinear / PackedConv2d (in place), then
    the whole state dict is loaded strictly. Returns ``model``.
    """
    layers, tensors, meta = read_packed(path)
    if "quant_config" in meta and QuantConfig.model_validate_json(meta["quant_config"]).fold_batchnorm:
        fold_batchnorm(model)  # the file holds the folded convolutions and no BatchNorm
    modules = dict(model.named_modules())
    replacements: dict[int, nn.Module] = {}
    for layer_path, layer in layers.items():
        module = modules.get(layer_path)
        if type(module) not in QUANT_MODULES:
            raise ValueError(f"{path}: layer {layer_path!r} is {type(module).__name__ if module else 'missing'} in the "
                             "given model, expected nn.Linear / nn.Conv2d")
        if tuple(module.weight.shape) != tuple(layer.weight_shape):
            raise ValueError(f"{path}: layer {layer_path!r} has weight {tuple(module.weight.shape)} in the model but "
                             f"{tuple(layer.weight_shape)} in the file")
        spec = layer.activation
        input_quantizer = None if spec is None else ActivationQuantizer(
            bits=spec["bits"], granularity=spec["granularity"], mode=spec["mode"], symmetric=spec["symmetric"],
            calibration_batches=spec["calibration_batches"])
        replacements[id(module)] = PACKED_MODULES[layer.kind](layer, input_quantizer)
    _replace(model, replacements)
    model.load_state_dict(tensors, strict=True)
    return model
