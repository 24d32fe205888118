"""BatchNorm folding: the folded model computes the same function; quantized models carry it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.artifacts import load_model, save_model
from distill.models import build_model
from distill.quant import QuantConfig, conv_bn_pairs, convert, fold_batchnorm, load_packed, prepare, save_packed


def with_statistics(model: nn.Module) -> nn.Module:
    """Random BatchNorm statistics and affine parameters, so folding has something to fold."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            size = module.num_features
            module.running_mean.copy_(torch.randn(size, generator=generator))
            module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
            module.weight.data.copy_(torch.randn(size, generator=generator))
            module.bias.data.copy_(torch.randn(size, generator=generator))
    return model.eval()


@pytest.mark.parametrize("name, params", [("cnn", {"channels": [8, 16]}), ("resnet", {"depth": 8, "width": 0.5})])
def test_folding_keeps_the_function_and_the_paths(name, params):
    torch.manual_seed(0)
    model = with_statistics(build_model(name, input_shape=(3, 16, 16), num_classes=10, **params))
    inputs = torch.randn(4, 3, 16, 16)
    expected = model(inputs)
    paths = {path for path, _ in model.named_modules()}
    pairs = fold_batchnorm(model)
    batchnorms = [p for p, m in build_model(name, input_shape=(3, 16, 16), num_classes=10, **params).named_modules()
                  if isinstance(m, nn.BatchNorm2d)]
    assert sorted(bn for _, bn in pairs) == sorted(batchnorms)  # every BatchNorm follows a convolution here
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert {path for path, _ in model.named_modules()} == paths
    torch.testing.assert_close(model(inputs), expected, rtol=1e-4, atol=1e-5)


def test_fold_against_the_formula():
    conv, bn = nn.Conv2d(2, 3, 1, bias=True), nn.BatchNorm2d(3)
    with_statistics(nn.Sequential(conv, bn))
    w, b = conv.weight.clone(), conv.bias.clone()
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    model = nn.Sequential(conv, bn)
    assert fold_batchnorm(model) == [("0", "1")] and isinstance(model[1], nn.Identity)
    torch.testing.assert_close(conv.weight, w * scale[:, None, None, None])
    torch.testing.assert_close(conv.bias, (b - bn.running_mean) * scale + bn.bias)


def test_only_a_convolution_feeding_the_batchnorm_alone_is_folded():
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.bn, self.other = nn.Conv2d(2, 2, 1), nn.BatchNorm2d(2), nn.BatchNorm2d(2)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y, self.other(x)  # conv output used twice; other follows no conv

    assert conv_bn_pairs(Branchy()) == []

    class Dynamic(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="cannot trace Dynamic"):
        conv_bn_pairs(Dynamic())


def test_quantized_model_with_folding_saves_and_loads_back(tmp_path):
    torch.manual_seed(0)
    spec = {"model": "cnn", "params": {"channels": [8, 16]}, "input_shape": [1, 8, 8], "num_classes": 10}
    model = with_statistics(build_model("cnn", input_shape=(1, 8, 8), num_classes=10, channels=[8, 16]))
    config = QuantConfig(weight_bits=4, group_size=16, fold_batchnorm=True)
    prepare(model, config)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    inputs = torch.randn(5, 1, 8, 8)
    fake = model.eval()(inputs)
    from distill.artifacts import quant_config_dict

    loaded, _ = load_model(save_model(model, tmp_path / "q.safetensors", {**spec, "quantize": quant_config_dict(config)}))
    torch.testing.assert_close(loaded(inputs), fake)
    packed_path = save_packed(convert(model), tmp_path / "q.packed.safetensors")
    packed = load_packed(packed_path, build_model("cnn", input_shape=(1, 8, 8), num_classes=10, channels=[8, 16]))
    torch.testing.assert_close(packed.eval()(inputs), fake, rtol=1e-5, atol=1e-5)
