"""LSQ fake quantizers: gradcheck of the straight-through / step-size backward, inits, activation ranges."""
from __future__ import annotations

import math

import pytest
import torch

from distill.quant.fake import (
    ActivationQuantizer,
    LSQFakeQuantize,
    WeightQuantizer,
    fake_quantize,
    integer_range,
    lsq_grad_scale,
)


def _inputs_off_the_kinks(step: torch.Tensor, zero: torch.Tensor | None, qmin: int, qmax: int, size: int):
    """x whose codes avoid every point where the gradcheck surrogate is not differentiable.

    gradcheck needs a forward that is differentiable where it probes it. The real forward is
    piecewise constant in x (round), so the test checks the straight-through *surrogate*:
    ``round(v)`` replaced by ``v + offset`` with ``offset = round(v) - v`` held constant (that is
    the STE's definition). The surrogate still has kinks where the clamp switches on, i.e. where
    the code ``round(v) + z`` is exactly ``qmin`` or ``qmax``; so codes are drawn from
    ``[qmin - 2, qmax + 2]`` minus ``{qmin, qmax}`` (some clamped below, some above, most inside),
    and ``v`` sits 0.15..0.35 away from its integer, far from the .5 rounding ties, so
    ``offset`` is the same whether computed from x or x +- eps.
    """
    allowed = torch.tensor([c for c in range(qmin - 2, qmax + 3) if c not in (qmin, qmax)], dtype=torch.float64)
    shape = (*step.shape[:-1], size)
    codes = allowed[torch.randint(len(allowed), shape)]
    frac = (torch.rand(shape, dtype=torch.float64) * 0.2 + 0.15) * (torch.randint(0, 2, shape) * 2 - 1)
    rounded = codes - (0 if zero is None else zero)
    return ((rounded + frac) * step).detach()


@pytest.mark.parametrize("symmetric", [True, False])
def test_gradcheck_lsq_function_float64(symmetric):
    """gradcheck of d/dx (STE), d/ds (LSQ) and d/dz, float64, per-group broadcasting (4, 2, 1) steps."""
    torch.manual_seed(0)
    bits = 3
    qmin, qmax = integer_range(bits, symmetric)
    step = (torch.rand(4, 2, 1, dtype=torch.float64) * 0.2 + 0.1).requires_grad_()
    zero = None if symmetric else torch.tensor([3.0, 2.0, 5.0, 4.0], dtype=torch.float64).view(4, 1, 1).repeat(1, 2, 1)
    x = _inputs_off_the_kinks(step.detach(), zero, qmin, qmax, 12).requires_grad_()
    if zero is not None:
        zero.requires_grad_()
    offset = (torch.round(x / step) - x / step).detach()
    codes = torch.round(x / step) + (0 if zero is None else zero)
    assert (codes < qmin).any() and (codes > qmax).any() and ((codes > qmin) & (codes < qmax)).any()
    assert not ((codes == qmin) | (codes == qmax)).any()

    def fn(x, step, *zp):
        return LSQFakeQuantize.apply(x, step, zp[0] if zp else None, qmin, qmax, 1.0, offset)

    inputs = (x, step) if zero is None else (x, step, zero)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8)


def test_surrogate_forward_equals_real_forward():
    torch.manual_seed(1)
    x, step = torch.randn(3, 40, dtype=torch.float64), torch.tensor(0.21, dtype=torch.float64)
    offset = torch.round(x / step) - x / step
    real = LSQFakeQuantize.apply(x, step, None, -4, 3, 1.0, None)
    surrogate = LSQFakeQuantize.apply(x, step, None, -4, 3, 1.0, offset)
    assert torch.equal(real, surrogate)


def test_backward_matches_detach_reference_and_grad_scale():
    """The hand-written backward equals autograd through the detach-trick formulation, times g."""
    torch.manual_seed(2)
    x = torch.randn(6, 2, 16) * 0.7
    step = torch.full((6, 2, 1), 0.15, requires_grad=True)
    zero = torch.full((6, 2, 1), 7.0, requires_grad=True)
    x1 = x.clone().requires_grad_()
    g = lsq_grad_scale(16, 4, symmetric=False)
    out = fake_quantize(x1, step, zero, 0, 15, g)
    weights = torch.randn_like(out)
    (out * weights).sum().backward()

    x2, step2, zero2 = x.clone().requires_grad_(), step.detach().clone().requires_grad_(), zero.detach().clone().requires_grad_()
    step_g = step2 * g + (step2 - step2 * g).detach()  # value unchanged, gradient scaled by g
    zero_g = zero2 * g + (zero2 - zero2 * g).detach()
    v = x2 / step_g
    v = v + (torch.round(v) - v).detach()
    ref = (torch.clamp(v + zero_g, 0, 15) - zero_g) * step_g
    (ref * weights).sum().backward()
    assert torch.allclose(out, ref)
    assert torch.allclose(x1.grad, x2.grad)
    assert torch.allclose(step.grad, step2.grad, rtol=1e-5, atol=1e-7)
    assert torch.allclose(zero.grad, zero2.grad, rtol=1e-5, atol=1e-7)
    assert g == pytest.approx(1 / math.sqrt(16 * 15))


def test_weight_quantizer_4bit_group_error_bound():
    """4-bit per-group (32) quantization of a Gaussian weight: relative RMS error below a uniform-noise bound.

    Uniform rounding noise has RMS step/sqrt(12); with the step of the min/max range (max|w| over a
    group of 32 Gaussians is < 3.5 sigma) that is < 3.5 / 7 / sqrt(12) = 0.144 sigma. The MSE init
    must do at least that well (it clips where that helps) and beat min/max.
    """
    torch.manual_seed(3)
    weight = torch.randn(64, 256)
    errors = {}
    for init in ("mse", "minmax", "lsq"):
        quantizer = WeightQuantizer(bits=4, symmetric=True, granularity="per_group", group_size=32, init=init)
        quantizer.initialize(weight)
        with torch.no_grad():
            errors[init] = ((quantizer(weight) - weight).norm() / weight.norm()).item()
    bound = 3.5 / 7 / math.sqrt(12)
    assert errors["mse"] < bound
    assert errors["mse"] <= errors["minmax"] + 1e-6
    assert errors["lsq"] < 0.2


def test_two_bit_mse_init_beats_minmax():
    torch.manual_seed(4)
    weight = torch.randn(32, 128)
    errors = {}
    for init in ("mse", "minmax"):
        quantizer = WeightQuantizer(bits=2, symmetric=False, granularity="per_group", group_size=64, init=init)
        quantizer.initialize(weight)
        with torch.no_grad():
            errors[init] = ((quantizer(weight) - weight).norm() / weight.norm()).item()
    assert errors["mse"] < 0.9 * errors["minmax"]
    assert errors["mse"] < 0.6


@pytest.mark.parametrize("granularity,group_size,shape", [("per_channel", 32, (5, 24)), ("per_group", 32, (5, 40)),
                                                         ("per_group", 64, (4, 3, 5, 5))])
def test_weight_quantizer_shapes_and_grid(granularity, group_size, shape):
    torch.manual_seed(5)
    weight = torch.randn(shape)
    quantizer = WeightQuantizer(bits=3, symmetric=True, granularity=granularity, group_size=group_size)
    quantizer.initialize(weight)
    in_dim = math.prod(shape[1:])
    groups = 1 if granularity == "per_channel" else -(-in_dim // group_size)
    assert tuple(quantizer.step.shape) == (shape[0], groups, 1)
    out = quantizer(weight)
    assert out.shape == weight.shape
    codes, step, _ = quantizer.codes(weight)
    assert codes.min() >= -4 and codes.max() <= 3 and torch.equal(codes, torch.round(codes))
    grouped = quantizer.grouped(out)
    assert torch.allclose(grouped, codes * step)  # padding positions: code 0 -> 0.0


def test_fp16_scales_are_seen_in_training():
    torch.manual_seed(6)
    weight = torch.randn(8, 64)
    quantizer = WeightQuantizer(bits=4, scale_dtype="float16")
    quantizer.initialize(weight)
    step = quantizer.effective_step()
    assert torch.equal(step, step.half().float())


def test_invalid_arguments_raise():
    with pytest.raises(ValueError, match="weight bits"):
        WeightQuantizer(bits=5)
    with pytest.raises(ValueError, match="group_size"):
        WeightQuantizer(group_size=48)
    with pytest.raises(ValueError, match="per_token"):
        ActivationQuantizer(granularity="per_token", mode="learned")
    with pytest.raises(RuntimeError, match="initialize"):
        WeightQuantizer()(torch.randn(4, 32))


@pytest.mark.parametrize("granularity", ["per_tensor", "per_token"])
def test_dynamic_activation_quantizer(granularity):
    torch.manual_seed(7)
    x = torch.randn(4, 10, 64).relu() * torch.linspace(0.1, 3, 10).view(1, 10, 1)
    quantizer = ActivationQuantizer(bits=8, granularity=granularity, mode="dynamic")
    x_req = x.clone().requires_grad_()
    out = quantizer(x_req)
    top = x.amax(dim=-1) if granularity == "per_token" else x.max()
    assert ((out - x).abs().amax(dim=-1) <= top / 255 * 0.5 + 1e-6).all()  # within half a step
    assert torch.equal(out[x == 0], x[x == 0])  # zero is exact
    out.sum().backward()
    assert torch.equal(x_req.grad, torch.ones_like(x))  # range covers x: straight through everywhere


def test_learned_activation_calibrates_then_learns():
    torch.manual_seed(8)
    quantizer = ActivationQuantizer(bits=8, mode="learned", calibration_batches=2)
    first, second = torch.rand(16, 32) * 2 - 0.5, torch.rand(16, 32) * 4 - 1.0
    quantizer(first)
    quantizer(second)
    assert int(quantizer.observed_batches) == 2
    expected_step = (max(first.max(), second.max()) - min(first.min(), second.min())) / 255
    assert quantizer.step.item() == pytest.approx(expected_step.item(), rel=1e-6)
    before = quantizer.step.detach().clone()
    out = quantizer(torch.randn(16, 32) * 10)  # third call: no more observation
    assert torch.equal(quantizer.step.detach(), before)
    out.pow(2).sum().backward()
    assert quantizer.step.grad is not None and quantizer.step.grad.abs() > 0
    assert quantizer.zero_point.grad is not None
