"""Fake quantizers: round-to-grid in the forward pass, straight-through gradients in the backward.

Learned step size quantization (LSQ; Esser et al. 2020, "Learned Step Size Quantization",
arXiv:1902.08153). With step ``s``, integer zero point ``z`` and integer range ``[qmin, qmax]``::

    v    = x / s
    code = clamp(round(v) + z, qmin, qmax)             # the integer that is stored
    out  = (code - z) * s                              # what the float graph sees

Gradients (straight-through estimator for ``round``, LSQ eq. 3 for the step)::

    d out / d x = 1                    if qmin <= round(v) + z <= qmax, else 0
    d out / d s = round(v) - v         inside;  (qmin - z) below;  (qmax - z) above
    d out / d z = 0                    inside;  -s outside

and the step and zero-point gradients are multiplied by LSQ's gradient scale
``g = 1 / sqrt(N * Q_P)`` (sec. 2.2), ``N`` the number of values that share one step and
``Q_P`` the largest positive code magnitude (``qmax - z`` for the symmetric signed grid,
``2**bits - 1`` for the unsigned one).

Integer grids (documented choices):

- **symmetric**: signed full range ``[-2**(b-1), 2**(b-1) - 1]`` with ``z = 0`` (2 bits:
  ``{-2, -1, 0, 1}``). Not the restricted range: at 2 bits that would waste a level (ternary).
  ONNX Runtime's ``MatMulNBits`` stores such codes unsigned as ``code + 2**(b-1)`` with its
  default zero point ``2**(b-1)`` (see :mod:`distill.quant.pack`).
- **asymmetric**: unsigned ``[0, 2**b - 1]`` with a learned zero point, kept integer in the
  forward pass by rounding it with a straight-through estimator (so the exported uint8 zero
  point is exactly what training saw).

Rounding is ``torch.round`` (half to even) everywhere, in training and in :func:`convert`.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

WEIGHT_BITS = (2, 3, 4, 8)
GROUP_SIZES = (16, 32, 64, 128, 256)
WEIGHT_GRANULARITIES = ("per_channel", "per_group")
WEIGHT_INITS = ("mse", "minmax", "lsq")
SCALE_DTYPES = ("float32", "float16")
ACTIVATION_GRANULARITIES = ("per_tensor", "per_token")
ACTIVATION_MODES = ("dynamic", "learned")

_MSE_GRID = 40  # clipping ratios tried by the "mse" init, evenly spaced in [0.1, 1.0]


def integer_range(bits: int, symmetric: bool) -> tuple[int, int]:
    """(qmin, qmax): signed full range when symmetric, unsigned ``[0, 2**bits - 1]`` otherwise."""
    if symmetric:
        return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def lsq_grad_scale(num_values: int, bits: int, symmetric: bool) -> float:
    """LSQ's ``g = 1 / sqrt(N * Q_P)`` for ``N`` values sharing one step."""
    q_positive = integer_range(bits, symmetric)[1]
    return 1.0 / math.sqrt(max(num_values, 1) * max(q_positive, 1))


class LSQFakeQuantize(torch.autograd.Function):
    """``(clamp(round(x / s) + z, qmin, qmax) - z) * s`` with the LSQ / STE backward written out.

    ``step`` and ``zero_point`` broadcast against ``x`` (per-tensor, per-channel or per-group
    shapes); their gradients are summed back to their own shapes and multiplied by
    ``grad_scale``. ``zero_point`` may be None (symmetric grids).

    ``round_offset`` (tests only): when given, ``round(x / s)`` is replaced by
    ``x / s + round_offset`` with the offset held constant. That *is* the straight-through
    estimator's surrogate, so finite differences of this forward match the backward and
    ``torch.autograd.gradcheck`` can verify the LSQ formulas in float64.
    """

    @staticmethod
    def forward(ctx, x: Tensor, step: Tensor, zero_point: Tensor | None, qmin: int, qmax: int,
                grad_scale: float = 1.0, round_offset: Tensor | None = None) -> Tensor:
        v = x / step
        rounded = torch.round(v) if round_offset is None else v + round_offset
        shifted = rounded if zero_point is None else rounded + zero_point
        code = torch.clamp(shifted, qmin, qmax)
        ctx.save_for_backward(x, step, zero_point if zero_point is not None else torch.empty(0), rounded, shifted)
        ctx.has_zero_point = zero_point is not None
        ctx.qmin, ctx.qmax, ctx.grad_scale = qmin, qmax, grad_scale
        return (code if zero_point is None else code - zero_point) * step

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        x, step, zero_point, rounded, shifted = ctx.saved_tensors
        zp = zero_point if ctx.has_zero_point else torch.zeros((), dtype=x.dtype, device=x.device)
        below, above = shifted < ctx.qmin, shifted > ctx.qmax
        inside = ~(below | above)
        grad_x = grad_step = grad_zp = None
        if ctx.needs_input_grad[0]:
            grad_x = (grad_out * inside).sum_to_size(x.shape)
        if ctx.needs_input_grad[1]:
            v = x / step
            d_step = torch.where(inside, rounded - v, torch.where(below, ctx.qmin - zp, ctx.qmax - zp))
            grad_step = (grad_out * d_step).sum_to_size(step.shape) * ctx.grad_scale
        if ctx.has_zero_point and ctx.needs_input_grad[2]:
            d_zp = torch.where(inside, torch.zeros_like(shifted), -step.expand_as(shifted))
            grad_zp = (grad_out * d_zp).sum_to_size(zero_point.shape) * ctx.grad_scale
        return grad_x, grad_step, grad_zp, None, None, None, None


def fake_quantize(x: Tensor, step: Tensor, zero_point: Tensor | None, qmin: int, qmax: int,
                  grad_scale: float = 1.0) -> Tensor:
    """Functional LSQ fake quantization (see :class:`LSQFakeQuantize`)."""
    return LSQFakeQuantize.apply(x, step, zero_point, qmin, qmax, grad_scale, None)


def quantize_codes(x: Tensor, step: Tensor, zero_point: Tensor | None, qmin: int, qmax: int) -> Tensor:
    """The integer codes ``clamp(round(x / s) + z, qmin, qmax)`` (float dtype, integer values).

    The same operations, in the same order, as the forward of :class:`LSQFakeQuantize`, so
    ``(codes - z) * s`` is bit-identical to the fake-quantized tensor.
    """
    rounded = torch.round(x / step)
    return torch.clamp(rounded if zero_point is None else rounded + zero_point, qmin, qmax)


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward, identity backward."""
    return x + (torch.round(x) - x).detach()


def _cast_ste(x: Tensor, dtype: torch.dtype) -> Tensor:
    """Round ``x`` through ``dtype`` (e.g. fp16 scales) in the forward; identity backward."""
    if dtype == x.dtype:
        return x
    return x + (x.to(dtype).to(x.dtype) - x).detach()


def _check_choice(name: str, value, valid) -> None:
    if value not in valid:
        raise ValueError(f"{name} must be one of {list(valid)}, got {value!r}")


class WeightQuantizer(nn.Module):
    """Learned-step fake quantizer for a Linear / Conv2d weight.

    Args:
        bits: 2, 3, 4 or 8.
        symmetric: signed grid with zero point 0 (True) or unsigned grid with a learned
            integer zero point (False); see the module docstring.
        granularity: ``"per_channel"`` (one step per output channel) or ``"per_group"`` (one
            step per ``group_size`` consecutive inputs of an output channel).
        group_size: 16, 32, 64, 128 or 256 (ONNX Runtime ``MatMulNBits`` block sizes).
        scale_dtype: ``"float32"`` or ``"float16"``: the dtype the scales are stored in after
            :func:`convert`; with float16 the forward already rounds the step through float16
            (straight-through), so training sees the exported values.
        init: how :meth:`initialize` sets the step (and zero point) from the float weight:
            ``"mse"`` (default) searches a clipping ratio per channel/group minimising the
            squared rounding error (40 ratios in [0.1, 1]); it is what keeps 2 bits usable,
            where min/max wastes most levels on outliers. ``"minmax"``: the full range.
            ``"lsq"``: the paper's ``2 * mean(|w|) / sqrt(Q_P)`` (asymmetric: ``|w - mean(w)|``
            with ``Q_P = (2**b - 1) / 2`` and the zero point putting the mean mid-grid).

    Weight layout: the weight is viewed as ``(out_channels, K)`` with
    ``K = in_features`` (Linear) or ``in_channels/groups * kh * kw`` (Conv2d, torch's flatten
    order), so groups run along the input dimension as ``MatMulNBits`` blocks do. When
    ``group_size`` does not divide ``K`` the last group is padded with zeros (which quantize
    exactly to the zero point, i.e. to 0.0, and are excluded from the init's error).

    Parameters after :meth:`initialize`: ``step`` of shape ``(O, G, 1)`` and, asymmetric,
    ``zero_point`` ``(O, G, 1)`` (float, rounded with an STE in the forward), ``G`` the number
    of groups (1 per channel). Exclude them from weight decay.
    """

    def __init__(self, bits: int = 4, symmetric: bool = True, granularity: str = "per_group", group_size: int = 32,
                 scale_dtype: str = "float32", init: str = "mse"):
        super().__init__()
        _check_choice("weight bits", bits, WEIGHT_BITS)
        _check_choice("granularity", granularity, WEIGHT_GRANULARITIES)
        _check_choice("scale_dtype", scale_dtype, SCALE_DTYPES)
        _check_choice("init", init, WEIGHT_INITS)
        if granularity == "per_group":
            _check_choice("group_size", group_size, GROUP_SIZES)
        self.bits, self.symmetric, self.granularity, self.group_size = bits, symmetric, granularity, group_size
        self.scale_dtype, self.init = scale_dtype, init
        self.qmin, self.qmax = integer_range(bits, symmetric)
        self.step: nn.Parameter | None = None
        self.zero_point: nn.Parameter | None = None
        self.in_dim: int | None = None  # K, known after initialize()

    def extra_repr(self) -> str:
        group = f", group_size={self.group_size}" if self.granularity == "per_group" else ""
        return (f"bits={self.bits}, symmetric={self.symmetric}, granularity={self.granularity!r}{group}, "
                f"scale_dtype={self.scale_dtype!r}, init={self.init!r}")

    # -- shapes -----------------------------------------------------------------------------------
    def group_len(self, in_dim: int) -> int:
        return in_dim if self.granularity == "per_channel" else self.group_size

    def num_groups(self, in_dim: int) -> int:
        return -(-in_dim // self.group_len(in_dim))

    def grouped(self, weight: Tensor) -> Tensor:
        """``weight`` (O, ...) -> (O, G, group_len), zero-padded along the input dimension."""
        flat = weight.reshape(weight.shape[0], -1)
        in_dim = flat.shape[1]
        group_len, groups = self.group_len(in_dim), self.num_groups(in_dim)
        pad = groups * group_len - in_dim
        if pad:
            flat = torch.nn.functional.pad(flat, (0, pad))
        return flat.reshape(weight.shape[0], groups, group_len)

    def _ungroup(self, grouped: Tensor, shape: torch.Size) -> Tensor:
        in_dim = math.prod(shape[1:])
        return grouped.reshape(shape[0], -1)[:, :in_dim].reshape(shape)

    @property
    def storage_dtype(self) -> torch.dtype:
        return torch.float16 if self.scale_dtype == "float16" else torch.float32

    # -- init -------------------------------------------------------------------------------------
    @torch.no_grad()
    def initialize(self, weight: Tensor) -> None:
        """(Re)set ``step`` (and ``zero_point``) from a float weight with the configured init."""
        grouped = self.grouped(weight.detach().float())
        in_dim = math.prod(weight.shape[1:])
        mask = self.grouped(torch.ones_like(weight, dtype=torch.float32))  # 0 on padding
        step, zero = self._search(grouped, mask) if self.init == "mse" else self._range_init(grouped, mask, 1.0)
        if self.init == "lsq":
            count = mask.sum(dim=-1, keepdim=True).clamp_min(1)
            centre = 0.0 if self.symmetric else (grouped * mask).sum(-1, keepdim=True) / count
            mean_abs = ((grouped - centre).abs() * mask).sum(-1, keepdim=True) / count
            step = (2 * mean_abs / math.sqrt(self.qmax if self.symmetric else self.qmax / 2)).clamp_min(1e-8)
            zero = None if self.symmetric else torch.clamp(torch.round(self.qmax / 2 - centre / step), 0, self.qmax)
        step = step.to(self.storage_dtype).float().clamp_min(torch.finfo(self.storage_dtype).tiny)
        dtype, device = weight.dtype if weight.is_floating_point() else torch.float32, weight.device
        self.step = nn.Parameter(step.to(device=device, dtype=dtype))
        self.zero_point = None if zero is None else nn.Parameter(zero.to(device=device, dtype=dtype))
        self.in_dim = in_dim

    def _range_init(self, grouped: Tensor, mask: Tensor, ratio: float | Tensor) -> tuple[Tensor, Tensor | None]:
        """Step (and zero point) covering ``ratio`` times the group's range."""
        big = torch.finfo(grouped.dtype).max
        if self.symmetric:
            base = grouped.abs().amax(dim=-1, keepdim=True)
            step = ratio * base / self.qmax
            step = torch.where(base > 0, step, torch.ones_like(step))
            return step, None
        low = torch.where(mask > 0, grouped, torch.full_like(grouped, big)).amin(-1, keepdim=True).clamp(max=0)
        high = torch.where(mask > 0, grouped, torch.full_like(grouped, -big)).amax(-1, keepdim=True).clamp(min=0)
        low, high = ratio * low, ratio * high
        step = (high - low) / self.qmax
        step = torch.where(step > 0, step, torch.ones_like(step))
        zero = torch.clamp(torch.round(-low / step), 0, self.qmax)
        return step, zero

    def _search(self, grouped: Tensor, mask: Tensor) -> tuple[Tensor, Tensor | None]:
        """Per group, the clipping ratio in [0.1, 1] whose rounding error is smallest."""
        best_step, best_zero = self._range_init(grouped, mask, 1.0)
        best_err = torch.full_like(best_step, float("inf"))
        for ratio in torch.linspace(0.1, 1.0, _MSE_GRID).tolist():
            step, zero = self._range_init(grouped, mask, ratio)
            step = step.to(self.storage_dtype).float().clamp_min(torch.finfo(self.storage_dtype).tiny)
            codes = quantize_codes(grouped, step, zero, self.qmin, self.qmax)
            error = (((codes if zero is None else codes - zero) * step - grouped) ** 2 * mask).sum(-1, keepdim=True)
            better = error < best_err
            best_err = torch.where(better, error, best_err)
            best_step = torch.where(better, step, best_step)
            if zero is not None:
                best_zero = torch.where(better, zero, best_zero)
        return best_step, best_zero

    # -- forward ----------------------------------------------------------------------------------
    def _check_ready(self, weight: Tensor) -> None:
        if self.step is None:
            raise RuntimeError("WeightQuantizer has no step yet: call initialize(weight) (prepare() does)")
        if math.prod(weight.shape[1:]) != self.in_dim or weight.shape[0] != self.step.shape[0]:
            raise ValueError(f"weight of shape {tuple(weight.shape)} does not match this quantizer "
                             f"(initialised for {self.step.shape[0]} x {self.in_dim})")

    def effective_step(self) -> Tensor:
        """The positive step used in the forward (rounded through the scale dtype, STE)."""
        return _cast_ste(self.step.clamp_min(torch.finfo(self.storage_dtype).tiny), self.storage_dtype)

    def effective_zero_point(self) -> Tensor | None:
        if self.zero_point is None:
            return None
        return torch.clamp(round_ste(self.zero_point), 0, self.qmax)

    def forward(self, weight: Tensor) -> Tensor:
        self._check_ready(weight)
        grouped = self.grouped(weight)
        grad_scale = lsq_grad_scale(grouped.shape[-1], self.bits, self.symmetric)
        out = fake_quantize(grouped, self.effective_step(), self.effective_zero_point(), self.qmin, self.qmax, grad_scale)
        return self._ungroup(out, weight.shape)

    @torch.no_grad()
    def codes(self, weight: Tensor) -> tuple[Tensor, Tensor, Tensor | None]:
        """(codes (O, G, group_len) float with integer values, step (O, G, 1), zero point or None).

        Padding positions hold the zero point (0 when symmetric), i.e. they dequantize to 0.
        """
        self._check_ready(weight)
        step, zero = self.effective_step().detach(), self.effective_zero_point()
        zero = None if zero is None else zero.detach()
        return quantize_codes(self.grouped(weight.detach()), step, zero, self.qmin, self.qmax), step, zero


class ActivationQuantizer(nn.Module):
    """Fake quantizer for a layer's input activation.

    Args:
        bits: 2..8 (the issue asks for 8).
        granularity: ``"per_tensor"`` or ``"per_token"`` (one range per row of the last
            dimension for (..., D) inputs; per spatial position over channels for (B, C, H, W)).
        mode: ``"dynamic"``: min/max of the current tensor (per tensor or token) at run time,
            no parameters, straight-through gradient; ``"learned"``: LSQ step (and zero point)
            per tensor, initialised from the min/max seen over the first ``calibration_batches``
            forward calls, then learned. ``per_token`` works with ``dynamic`` only.
        symmetric: signed grid (zero point 0) or unsigned grid with zero point (default; the
            inputs of most layers here follow a ReLU/GELU and are skewed).
        calibration_batches: how many forward calls observe the range in learned mode.

    Ranges always include 0 so that zero (padding, ReLU zeros) is exact.
    """

    def __init__(self, bits: int = 8, granularity: str = "per_tensor", mode: str = "dynamic",
                 symmetric: bool = False, calibration_batches: int = 1):
        super().__init__()
        if not 2 <= bits <= 8:
            raise ValueError(f"activation bits must be in 2..8, got {bits}")
        _check_choice("activation granularity", granularity, ACTIVATION_GRANULARITIES)
        _check_choice("activation mode", mode, ACTIVATION_MODES)
        if mode == "learned" and granularity == "per_token":
            raise ValueError("a learned activation range is per_tensor; use mode='dynamic' for per_token")
        if calibration_batches < 1:
            raise ValueError(f"calibration_batches must be >= 1, got {calibration_batches}")
        self.bits, self.granularity, self.mode, self.symmetric = bits, granularity, mode, symmetric
        self.calibration_batches = calibration_batches
        self.qmin, self.qmax = integer_range(bits, symmetric)
        if mode == "learned":
            self.step = nn.Parameter(torch.ones(()))
            self.zero_point = None if symmetric else nn.Parameter(torch.zeros(()))
            self.register_buffer("observed_batches", torch.zeros((), dtype=torch.long))
            self.register_buffer("observed_min", torch.zeros(()))
            self.register_buffer("observed_max", torch.zeros(()))
        self.observing = False  # forced observation (post-training calibration), see ptq.py

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, granularity={self.granularity!r}, mode={self.mode!r}, "
                f"symmetric={self.symmetric}")

    @property
    def calibrated(self) -> bool:
        return self.mode == "dynamic" or int(self.observed_batches) > 0

    def _params_from_range(self, low: Tensor, high: Tensor) -> tuple[Tensor, Tensor | None]:
        low, high = low.clamp(max=0), high.clamp(min=0)
        if self.symmetric:
            step = torch.maximum(high, -low) / self.qmax
            return torch.where(step > 0, step, torch.ones_like(step)), None
        step = (high - low) / self.qmax
        step = torch.where(step > 0, step, torch.ones_like(step))
        return step, torch.clamp(torch.round(-low / step), 0, self.qmax)

    def _reduce_dims(self, x: Tensor) -> tuple[int, ...] | None:
        if self.granularity == "per_tensor":
            return None
        return (1,) if x.dim() == 4 else (-1,)

    @torch.no_grad()
    def observe(self, x: Tensor) -> None:
        """Widen the observed range with ``x`` and reset step / zero point from it."""
        low, high = x.detach().min().float(), x.detach().max().float()
        if int(self.observed_batches) > 0:
            low, high = torch.minimum(low, self.observed_min), torch.maximum(high, self.observed_max)
        self.observed_min.copy_(low)
        self.observed_max.copy_(high)
        self.observed_batches += 1
        step, zero = self._params_from_range(low, high)
        self.step.copy_(step)
        if self.zero_point is not None:
            self.zero_point.copy_(zero)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "dynamic":
            dims = self._reduce_dims(x)
            with torch.no_grad():
                if dims is None:
                    low, high = x.min(), x.max()
                else:
                    low, high = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
                step, zero = self._params_from_range(low, high)
            return fake_quantize(x, step, zero, self.qmin, self.qmax)  # step, zero are constants
        if self.observing or int(self.observed_batches) < self.calibration_batches:
            self.observe(x)
        step = self.step.clamp_min(1e-8)
        zero = None if self.zero_point is None else torch.clamp(round_ste(self.zero_point), 0, self.qmax)
        grad_scale = lsq_grad_scale(x[0].numel() if x.dim() > 1 else x.numel(), self.bits, self.symmetric)
        return fake_quantize(x, step, zero, self.qmin, self.qmax, grad_scale)
