"""Reference models: shapes, golden parameter counts, errors (non-positive sizes named), user builders,
dropout, gradients."""
from __future__ import annotations

import re

import pytest
import torch
from torch import nn

from distill.models import MODELS, build_model, count_parameters, describe, model_bytes
from distill.models.unet import TimeMLP, TinyUNet, build_denoiser_net
from distill.registry import UnknownNameError

SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32)]
SMALL = {  # small configs so that the whole file runs in a few seconds
    "mlp": dict(hidden=(16, 16)),
    "cnn": dict(channels=(4, 8, 8)),
    "resnet": dict(depth=8, width=0.25),
    "vit": dict(patch_size=4, dim=16, depth=2, heads=2),
}


def tiny_builder(*, input_shape, num_classes, width=3):
    """A user builder, reached as 'module:tiny_builder'."""
    return nn.Sequential(nn.Flatten(), nn.Linear(input_shape[0] * input_shape[1] * input_shape[2], width),
                         nn.ReLU(), nn.Linear(width, num_classes))


def linear(fan_in: int, fan_out: int, bias: bool = True) -> int:
    return fan_in * fan_out + (fan_out if bias else 0)


def conv(c_in: int, c_out: int, k: int, bias: bool = False) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("shape", SHAPES)
def test_output_shapes(name, shape):
    model = build_model(name, input_shape=shape, num_classes=7, **SMALL[name]).eval()
    logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, 7) and logits.dtype == torch.float32
    rebuilt = type(model)(**model.config)  # the config round-trips
    assert count_parameters(rebuilt) == count_parameters(model)
    assert list(rebuilt.state_dict()) == list(model.state_dict())


def test_vit_rejects_size_not_divisible_by_patch():
    with pytest.raises(ValueError, match="patch_size=8"):
        build_model("vit", input_shape=(1, 28, 28), num_classes=10, patch_size=8)
    assert build_model("vit", input_shape=(1, 28, 28), num_classes=10, patch_size=7, dim=16).head.out_features == 10


def test_mlp_parameter_counts():
    student = build_model("mlp", input_shape=(1, 28, 28), num_classes=10, hidden=[800, 800])
    teacher = build_model("mlp", input_shape=(1, 28, 28), num_classes=10, dropout=0.5, input_dropout=0.2)
    assert count_parameters(student) == 784 * 800 + 800 + 800 * 800 + 800 + 800 * 10 + 10 == 1_276_810
    assert count_parameters(teacher) == 784 * 1200 + 1200 + 1200 * 1200 + 1200 + 1200 * 10 + 10 == 2_395_210
    assert model_bytes(teacher) == 4 * 2_395_210
    digits = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=(32,))
    assert count_parameters(digits) == linear(64, 32) + linear(32, 10) == 2_410


def test_cnn_parameter_count():
    for shape in [(1, 28, 28), (1, 8, 8)]:  # the count does not depend on the spatial size
        model = build_model("cnn", input_shape=shape, num_classes=10)
        assert count_parameters(model) == conv(1, 32, 3) + 2 * 32 + conv(32, 64, 3) + 2 * 64 + linear(64, 10) == 19_562
    two = build_model("cnn", input_shape=(3, 32, 32), num_classes=10, convs_per_stage=2, hidden=50)
    expected = (conv(3, 32, 3) + conv(32, 32, 3) + 4 * 32 + conv(32, 64, 3) + conv(64, 64, 3) + 4 * 64
                + linear(64, 50) + linear(50, 10))
    assert count_parameters(two) == expected


def test_cnn_never_pools_below_one_pixel():
    model = build_model("cnn", input_shape=(1, 8, 8), num_classes=10, channels=(4, 4, 4, 4, 4)).eval()
    pools = [m for m in model.modules() if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3  # 8 -> 4 -> 2 -> 1, then no more
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def resnet_count(n: int, channels=(16, 32, 64), in_channels=3, num_classes=10) -> int:
    """Independent formula: stem + 3 stages of n BasicBlocks + 2 projections + head."""
    c1, c2, c3 = channels
    bn = lambda c: 2 * c  # noqa: E731
    block = lambda c_in, c_out: conv(c_in, c_out, 3) + bn(c_out) + conv(c_out, c_out, 3) + bn(c_out)  # noqa: E731
    total = conv(in_channels, c1, 3) + bn(c1)
    total += n * block(c1, c1)
    total += block(c1, c2) + conv(c1, c2, 1) + bn(c2) + (n - 1) * block(c2, c2)
    total += block(c2, c3) + conv(c2, c3, 1) + bn(c3) + (n - 1) * block(c3, c3)
    return total + linear(c3, num_classes)


def test_resnet_parameter_counts():
    resnet20 = build_model("resnet", input_shape=(3, 32, 32), num_classes=10, depth=20)
    assert count_parameters(resnet20) == resnet_count(3) == 272_474  # 269,722 with option-A shortcuts + 2,752
    resnet8 = build_model("resnet", input_shape=(1, 28, 28), num_classes=10, depth=8, width=0.5)
    assert count_parameters(resnet8) == resnet_count(1, (8, 16, 32), in_channels=1)


def test_resnet_invalid_depth():
    with pytest.raises(ValueError, match=r"8, 14, 20, 32, 44, 56.*got 18"):
        build_model("resnet", input_shape=(3, 32, 32), num_classes=10, depth=18)


def test_vit_parameter_count_and_module_paths():
    model = build_model("vit", input_shape=(3, 32, 32), num_classes=10)
    dim, hidden, tokens = 128, 256, 1 + 64
    block = 2 * dim + linear(dim, 3 * dim) + linear(dim, dim) + 2 * dim + linear(dim, hidden) + linear(hidden, dim)
    expected = conv(3, dim, 4, bias=True) + dim + tokens * dim + 4 * block + 2 * dim + linear(dim, 10)
    assert count_parameters(model) == expected == 546_186
    names = dict(model.named_modules())
    assert {"blocks.0.attn", "blocks.0.mlp", "blocks.3", "norm", "head", "patch_embed"} <= set(names)


def test_unknown_param_names_valid_params():
    with pytest.raises(ValueError) as info:
        build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hiden=[3])
    message = str(info.value)
    assert "'mlp'" in message and "'hiden'" in message and "did you mean 'hidden'" in message
    for name in ["hidden", "activation", "dropout", "input_dropout"]:
        assert name in message
    with pytest.raises(ValueError, match="activation"):
        build_model("mlp", input_shape=(1, 8, 8), num_classes=10, activation="swish")


def test_unknown_model_suggests_closest():
    with pytest.raises(UnknownNameError, match="did you mean 'resnet'"):
        build_model("resnt", input_shape=(3, 32, 32), num_classes=10)
    assert {"mlp", "cnn", "resnet", "vit"} <= set(MODELS.names())


def test_user_builder_by_import_path():
    model = build_model(f"{__name__}:tiny_builder", input_shape=(1, 8, 8), num_classes=4, width=5)
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 4)
    with pytest.raises(ValueError, match="valid parameters: width"):
        build_model(f"{__name__}:tiny_builder", input_shape=(1, 8, 8), num_classes=4, depth=2)


@pytest.mark.parametrize("name,params", [
    ("mlp", dict(hidden=(16,), dropout=0.5, input_dropout=0.2)),
    ("cnn", dict(channels=(4,), hidden=8, dropout=0.5)),
    ("vit", dict(dim=16, depth=1, heads=2, dropout=0.5)),
])
def test_dropout_inactive_in_eval(name, params):
    torch.manual_seed(0)
    model = build_model(name, input_shape=(1, 8, 8), num_classes=3, **params)
    x = torch.randn(4, 1, 8, 8)
    assert not torch.equal(model.train()(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("name", sorted(SMALL))
def test_every_parameter_gets_a_gradient(name):
    torch.manual_seed(0)
    model = build_model(name, input_shape=(3, 32, 32), num_classes=5, **SMALL[name])
    model(torch.randn(2, 3, 32, 32)).logsumexp(-1).sum().backward()
    for param_name, param in model.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, param_name


def test_describe_and_bytes():
    model = build_model("resnet", input_shape=(1, 28, 28), num_classes=10, depth=8)
    text = describe(model)
    assert "ResNet" in text and f"{count_parameters(model):,}" in text and "layer3" in text
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())  # BN running stats + counters
    assert model_bytes(model) == 4 * count_parameters(model) + buffers
    assert model_bytes(model.half()) == 2 * count_parameters(model) + buffers - sum(
        b.numel() * 2 for b in model.buffers() if b.is_floating_point())


@pytest.mark.parametrize("name,params,expected", [
    ("mlp", dict(hidden=[0]), "hidden[0] is 0; every hidden width must be an integer >= 1"),
    ("mlp", dict(hidden=[16, -4]), "hidden[1] is -4;"),
    ("mlp", dict(hidden=1.5), "hidden must be a list of sizes"),
    ("mlp", dict(hidden=[2.5]), "hidden[0] is 2.5;"),
    ("cnn", dict(channels=[8, 0]), "channels[1] is 0; every stage's channel count must be an integer >= 1"),
    ("cnn", dict(hidden=0), "hidden is 0; give the hidden FC width as an integer >= 1, or null"),
    ("cnn", dict(hidden=-8), "hidden is -8;"),
    ("resnet", dict(depth=8, width=0), "width is 0; it multiplies the (16, 32, 64) channels and must be a finite"),
    ("resnet", dict(depth=8, width=-0.5), "width is -0.5;"),
    ("resnet", dict(depth=-4), "depth must be 6n+2, one of 8, 14, 20, 32, 44, 56; got -4"),
    ("vit", dict(patch_size=0), "patch_size is 0; the patch side must be an integer >= 1"),
    ("vit", dict(dim=0, heads=1), "dim is 0; the token width must be an integer >= 1"),
    ("vit", dict(heads=0), "heads is 0; the number of attention heads must be an integer >= 1"),
    ("vit", dict(depth=0), "depth is 0; a ViT needs at least 1 transformer block"),
    ("vit", dict(dim=16, heads=2, mlp_ratio=0.0), "mlp_ratio is 0.0; the MLP width int(dim * mlp_ratio) must be >= 1"),
])
def test_builders_refuse_non_positive_sizes_naming_the_parameter(name, params, expected):
    # before: hidden [0] / channels 0 / width 0 built empty layers or were clamped to 1 silently,
    # and patch_size 0 / heads 0 died in a ZeroDivisionError traceback
    with pytest.raises(ValueError, match=f"^model '{name}': " + re.escape(expected)):
        build_model(name, input_shape=(1, 8, 8), num_classes=10, **params)


@pytest.mark.parametrize("name", sorted(SMALL))
def test_builders_refuse_empty_inputs_and_no_classes(name):
    with pytest.raises(ValueError, match=re.escape("num_classes is 0; a classifier needs at least 1 class")):
        build_model(name, input_shape=(1, 8, 8), num_classes=0, **SMALL[name])
    with pytest.raises(ValueError, match=re.escape("input_shape[2] is 0; every input dimension must be an integer")):
        build_model(name, input_shape=(1, 8, 0), num_classes=10, **SMALL[name])


def test_an_empty_hidden_list_is_still_a_linear_classifier():
    model = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, hidden=[])
    assert count_parameters(model) == linear(64, 10)


@pytest.mark.parametrize("params,expected", [
    (dict(hidden=0), "hidden is 0;"),
    (dict(depth=-1), "depth is -1; the network needs at least 1 residual block"),
    (dict(time_dim=15), "time_dim is 15; the time embedding width must be even"),
    (dict(time_dim=0), "time_dim is 0;"),
    (dict(input_shape=(0,)), "input_shape[0] is 0;"),
])
def test_time_mlp_refuses_bad_sizes(params, expected):
    with pytest.raises(ValueError, match=re.escape(expected)):
        TimeMLP(**params)


@pytest.mark.parametrize("params,expected", [
    (dict(channels=(0, 16)), "channels[0] is 0; every channel width must be an integer >= 1"),
    (dict(channels=(8, -16)), "channels[1] is -16;"),
    (dict(channels=(4, 12)), "a GroupNorm over c1 = 12 channels cannot split them into 8 groups"),
    (dict(channels=(4, 8)), "a GroupNorm over c1 + c0 = 12 channels"),
    (dict(time_dim=9), "time_dim is 9;"),
])
def test_tiny_unet_refuses_bad_sizes(params, expected):
    # before: (4, 12) and (4, 8) failed inside torch's GroupNorm, naming no parameter; an odd
    # time_dim built and then failed at the first forward with a shape mismatch
    with pytest.raises(ValueError, match=re.escape(expected)):
        TinyUNet(**params)


def test_tiny_unet_widths_that_fit_its_group_norms_build_and_run():
    for channels in [(4, 4), (8, 16), (16, 32)]:
        net = TinyUNet((1, 8, 8), channels=channels, time_dim=8)
        assert net(torch.randn(2, 1, 8, 8), torch.zeros(2)).shape == (2, 1, 8, 8)


def test_denoiser_net_parameter_typo_is_named():
    with pytest.raises(ValueError, match="denoiser network 'time_mlp' has no parameter 'hiden'; valid parameters: "
                                         "input_shape, hidden, depth, time_dim"):
        build_denoiser_net("time_mlp", hiden=8)


def test_vit_attention_under_cpu_bf16_autocast_matches_fp32():
    """Under CPU bf16 autocast the ViT writes attention out (two bf16 matmuls, fp32 softmax) instead of the
    fused kernel, which is slower there; outputs and gradients stay those of the fp32 model to bf16 rounding,
    and fp32 keeps the fused path bit for bit (its output equals a hand-written fp32 attention to 1e-6)."""
    import torch.nn.functional as F

    from distill.models import build_model

    torch.manual_seed(0)
    model = build_model("vit", input_shape=(3, 16, 16), num_classes=5, dim=32, depth=2, heads=4)
    x = torch.randn(6, 3, 16, 16)
    reference = model(x)
    reference.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), reference, rtol=0.05, atol=0.02)
    out.float().square().sum().backward()
    cosines = [F.cosine_similarity(p.grad.flatten(), g.flatten(), dim=0) for p, g in zip(model.parameters(), grads)
               if g.abs().sum() > 0]
    assert min(cosines) > 0.98
    attention = model.blocks[0].attn
    tokens = torch.randn(2, 7, 32)
    with torch.no_grad():
        B, T, D = tokens.shape
        q, k, v = attention.qkv(tokens).view(B, T, 3, 4, D // 4).permute(2, 0, 3, 1, 4)
        by_hand = ((q @ k.transpose(-2, -1)) / (D // 4) ** 0.5).softmax(-1) @ v
        expected = attention.proj(by_hand.transpose(1, 2).reshape(B, T, D))
        torch.testing.assert_close(attention.eval()(tokens), expected, rtol=1e-5, atol=1e-6)
