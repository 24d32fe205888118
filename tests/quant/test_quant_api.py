"""prepare / convert / size / save-load, and post-training rounding, on tiny models."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.models import build_model
from distill.quant import (
    PackedConv2d,
    PackedLinear,
    QuantConfig,
    QuantConv2d,
    QuantLinear,
    calibrate,
    convert,
    load_packed,
    packed_layers,
    prepare,
    quant_parameters,
    quantization_plan,
    quantize_rtn,
    read_packed,
    save_packed,
    size_report,
)


def tiny_mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(48, 40))


def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("cnn", input_shape=(3, 8, 8), num_classes=10, channels=(8, 16), hidden=24)


def test_prepare_swaps_in_place_and_leaves_excluded_layers_untouched():
    model = tiny_mlp()
    first, middle, head = model.layers[0][0], model.layers[1][0], model.head
    middle_weight = middle.weight
    returned = prepare(model, QuantConfig(weight_bits=4, exclude=["head", "<first>"]))
    assert returned is model
    assert model.layers[0][0] is first and type(first) is nn.Linear  # excluded: same object, same class
    assert model.head is head and type(head) is nn.Linear
    assert isinstance(model.layers[1][0], QuantLinear)
    assert model.layers[1][0].weight is middle_weight  # the float Parameter is kept
    assert model.quant_config.weight_bits == 4
    assert model.quant_plan["head"] is None and model.quant_plan["layers.1.0"]["weight_bits"] == 4
    with pytest.raises(ValueError, match="already"):
        prepare(model, QuantConfig())


def test_include_exclude_and_overrides_keep_first_and_last_at_8_bits():
    model = tiny_cnn()
    config = QuantConfig(weight_bits=2, symmetric=False,
                         overrides={"<first>": {"weight_bits": 8}, "head": {"weight_bits": 8, "symmetric": True},
                                    "fc": {"activation_bits": 8}})
    plan = quantization_plan(model, config)
    assert list(plan) == ["stages.0.0", "stages.1.0", "fc.0", "head"]
    prepare(model, config)
    bits = {path: m.weight_quantizer.bits for path, m in model.named_modules() if hasattr(m, "weight_quantizer")}
    assert bits == {"stages.0.0": 8, "stages.1.0": 2, "fc.0": 2, "head": 8}
    assert model.head.weight_quantizer.symmetric and not model.stages[1][0].weight_quantizer.symmetric
    assert model.fc[0].input_quantizer is not None and model.head.input_quantizer is None  # "fc" covers fc.0
    assert isinstance(model.stages[0][0], QuantConv2d)

    only_convs = prepare(tiny_cnn(), QuantConfig(include=["stages.*"]))
    assert type(only_convs.head) is nn.Linear and isinstance(only_convs.stages[1][0], QuantConv2d)


def test_recipe_yaml_section_validates():
    import yaml

    section = yaml.safe_load("""
weight_bits: 2
group_size: 64
activation_bits: 8
exclude: [fc]
overrides:
  <first>: {weight_bits: 8}
  <last>: {weight_bits: 8, activation_bits: null}
""")
    config = QuantConfig.model_validate(section)
    plan = quantization_plan(tiny_cnn(), config)
    assert plan["fc.0"] is None
    assert plan["stages.0.0"]["weight_bits"] == 8 and plan["stages.1.0"]["weight_bits"] == 2
    assert plan["head"]["weight_bits"] == 8 and plan["head"]["activation_bits"] is None
    assert plan["stages.1.0"]["activation_bits"] == 8


def test_patterns_that_match_nothing_are_errors():
    with pytest.raises(ValueError, match="'hed'.*layer paths: layers.0.0"):
        prepare(tiny_mlp(), QuantConfig(exclude=["hed"]))
    with pytest.raises(ValueError, match="wrap it"):
        prepare(nn.Linear(4, 4), QuantConfig())
    with pytest.raises(ValueError, match="per_token"):
        QuantConfig(activation_bits=8, activation_mode="learned", activation_granularity="per_token")
    with pytest.raises(ValueError):
        QuantConfig(weight_bits=5)
    with pytest.raises(ValueError):
        QuantConfig(overrides={"head": {"bitz": 8}})


@pytest.mark.parametrize("config", [
    dict(weight_bits=4, group_size=32),
    dict(weight_bits=2, symmetric=False, group_size=64, activation_bits=8, activation_mode="learned"),
    dict(weight_bits=3, granularity="per_channel", activation_bits=8, activation_granularity="per_token"),
    dict(weight_bits=8, scale_dtype="float16", group_size=128, activation_bits=8),
])
def test_converted_model_equals_fake_quantized_model(config):
    torch.manual_seed(1)
    for model in (tiny_mlp(), tiny_cnn()):
        prepare(model, QuantConfig(**config))
        x = torch.randn(5, *(model.config["input_shape"]))
        model.train()
        model(x)  # one training-mode call (calibrates learned activation ranges, moves BN statistics)
        model.eval()
        with torch.no_grad():
            expected = model(x)
            converted = convert(model)
            got = converted(x)
        assert any(isinstance(m, (PackedLinear, PackedConv2d)) for m in converted.modules())
        assert not any(isinstance(m, (QuantLinear, QuantConv2d)) for m in converted.modules())
        assert torch.allclose(got, expected, rtol=0, atol=1e-6)


def test_tiny_mlp_trains_one_step_and_every_step_size_gets_a_gradient():
    model = prepare(tiny_mlp(), QuantConfig(weight_bits=4, activation_bits=8, activation_mode="learned"))
    steps = quant_parameters(model)
    assert len(steps) == 3 * 3  # per layer: weight step, input step, input zero point
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    for name, parameter in model.named_parameters():
        assert parameter.grad is not None, name
        if not name.endswith("zero_point"):  # LSQ: a zero point moves only through clamped values,
            assert parameter.grad.abs().sum() > 0, name  # and the calibration batch clamps none
    optimizer.step()
    for (name, after), previous in zip(model.named_parameters(), before):
        assert name.endswith("zero_point") or not torch.equal(previous, after), name


def test_size_report_4bit_linear_is_an_eighth_plus_scales():
    model = nn.Sequential(nn.Linear(256, 64, bias=False))
    prepare(model, QuantConfig(weight_bits=4, group_size=32))
    report = size_report(convert(model))
    fp32 = 256 * 64 * 4
    assert report["packed_bytes"] == fp32 // 8
    assert report["scale_bytes"] == 64 * (256 // 32) * 4 and report["zero_point_bytes"] == 0
    assert report["float_bytes"] == 0 and report["fp32_bytes"] == fp32
    assert report["total_bytes"] == fp32 // 8 + 64 * 8 * 4
    half = size_report(prepare(nn.Sequential(nn.Linear(256, 64, bias=False)),
                               QuantConfig(weight_bits=4, scale_dtype="float16", symmetric=False)))
    assert half["scale_bytes"] == 64 * 8 * 2 and half["zero_point_bytes"] == 64 * 8 // 2


def test_save_and_load_packed_round_trip(tmp_path):
    model = prepare(tiny_cnn(), QuantConfig(weight_bits=4, symmetric=False, activation_bits=8,
                                            activation_mode="learned", overrides={"head": {"weight_bits": 8}}))
    x = torch.randn(4, 3, 8, 8)
    model(x)
    model.eval()
    converted = convert(model)
    path = save_packed(converted, tmp_path / "model.q.safetensors")
    layers, tensors, meta = read_packed(path)
    assert set(layers) == {"stages.0.0", "stages.1.0", "fc.0", "head"}
    assert tensors["head.qweight"].dtype == torch.uint8 and layers["head"].bits == 8
    assert QuantConfig.model_validate_json(meta["quant_config"]).weight_bits == 4
    for name, layer in packed_layers(converted).items():
        assert torch.equal(layers[name].qweight, layer.qweight) and torch.equal(layers[name].scales, layer.scales)
    loaded = load_packed(path, tiny_cnn(seed=5)).eval()
    with torch.no_grad():
        assert torch.equal(loaded(x), converted(x))
    assert sum(t.numel() * t.element_size() for t in tensors.values()) == size_report(converted)["total_bytes"]


def test_quantize_rtn_clip_search_and_calibration():
    torch.manual_seed(2)
    reference = tiny_mlp(seed=3)
    x = torch.randn(32, 1, 8, 8)
    with torch.no_grad():
        target = reference(x)
    errors = {}
    for clip_search in (True, False):
        model = tiny_mlp(seed=3)
        quantize_rtn(model, {"weight_bits": 2, "group_size": 32}, clip_search=clip_search)
        with torch.no_grad():
            errors[clip_search] = (model(x) - target).pow(2).mean().item()
    assert errors[True] < errors[False]

    config = QuantConfig(weight_bits=8, activation_bits=8, activation_mode="learned")
    with pytest.raises(ValueError, match="calibration_batches"):
        quantize_rtn(tiny_mlp(seed=3), config)
    batches = [{"input": x[:16]}, {"input": x[16:] * 3}]
    model = quantize_rtn(tiny_mlp(seed=3), config, batches)
    first = model.layers[0][0].input_quantizer
    assert int(first.observed_batches) == 2
    low = torch.minimum(x[:16].min(), (x[16:] * 3).min())
    high = torch.maximum(x[:16].max(), (x[16:] * 3).max())
    assert first.step.item() == pytest.approx(((high - low) / 255).item(), rel=1e-5)
    assert calibrate(model, [x]) == 1 and int(first.observed_batches) == 1
    with torch.no_grad():
        assert (model(x) - target).abs().max() < 0.1
