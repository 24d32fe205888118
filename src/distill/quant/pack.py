"""Bit packing and the packed form of one quantized layer, in ONNX Runtime's ``MatMulNBits`` layout.

Layout (com.microsoft ``MatMulNBits``, ONNX Runtime ``docs/ContribOperators.md`` and its
``matmul_nbits_quantizer.py``), for a weight used as ``y = x @ W.T`` with ``W`` of shape
``(N, K)`` (torch's ``(out_features, in_features)``; Conv2d: ``(out, in/groups * kh * kw)``):

- ``k_blocks = ceil(K / block_size)``, ``blob_size = block_size * bits / 8``.
- ``B``: uint8 ``(N, k_blocks, blob_size)``. Row ``n`` of ``W`` is cut into blocks of
  ``block_size`` consecutive inputs (the last one padded); inside a block the codes are
  packed *low bits first*: element ``i`` of the block sits in byte ``i // (8 / bits)`` at
  bit offset ``bits * (i % (8 / bits))``. 4 bits: element 0 in the low nibble, element 1 in
  the high nibble; 2 bits: elements 0..3 at bits 0-1, 2-3, 4-5, 6-7; 8 bits: one per byte.
- ``scales``: ``(N, k_blocks)`` (ONNX Runtime's quantizer writes it flattened,
  ``[N * k_blocks]``, the same bytes; :meth:`PackedLayer.matmulnbits` does that).
- ``zero_points``: uint8 ``(N, ceil(k_blocks * bits / 8))``, packed per row of ``N`` like
  ``B`` (flattened for the operator). Omitted for symmetric weights: the operator's default
  zero point is ``2**(bits-1)``, so signed codes ``q`` are stored as ``q + 2**(bits-1)``.
- dequantized ``W[n, k] = (code[n, k] - zero_point[n, k // block_size]) * scale[n, k // block_size]``.

Padding codes (``K`` not a multiple of ``block_size``) equal the block's zero point, i.e.
dequantize to 0. The operator requires power-of-two blocks >= 16 (and ONNX Runtime 1.32's CPU
kernel at most 256 for 2 bits): per-group weights with ``K < group_size`` become one block of
the smallest power of two >= max(K, 16); per-channel weights use that block size capped at
128, every block of a row repeating the channel's scale and zero point (exact; costs a few
scale bytes). Padding bytes and repeated scales are counted in the size. 3-bit codes: ``MatMulNBits`` has no 3-bit
kernel, so they are stored *unpacked*, one code per uint8 (blob_size = block_size; zero
points ``(N, k_blocks)``), and :meth:`PackedLayer.matmulnbits` refuses them.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

PACKED_BITS = (2, 4, 8)
STORED_BITS = (2, 3, 4, 8)


def codes_per_byte(bits: int) -> int:
    """8 / bits for 2, 4 and 8 bits; 1 for 3 bits (stored unpacked)."""
    if bits not in STORED_BITS:
        raise ValueError(f"bits must be one of {list(STORED_BITS)}, got {bits}")
    return 1 if bits == 3 else 8 // bits


def packed_length(length: int, bits: int) -> int:
    """Bytes holding ``length`` codes of ``bits`` bits."""
    return -(-length // codes_per_byte(bits))


def pack(codes: Tensor, bits: int) -> Tensor:
    """Pack unsigned codes along the last dimension, low bits first: (..., L) -> uint8 (..., ceil(L * bits / 8)).

    A last byte that is not full is padded with zero bits. 3 bits: returned unpacked (a uint8 copy).
    """
    per_byte = codes_per_byte(bits)
    codes = torch.as_tensor(codes)
    if codes.is_floating_point():
        if not torch.equal(codes, torch.round(codes)):
            raise ValueError("pack() takes integer codes; got non-integer floats")
    if codes.numel() and (int(codes.min()) < 0 or int(codes.max()) >= 2**bits):
        raise ValueError(f"{bits}-bit codes must lie in [0, {2**bits - 1}], got [{int(codes.min())}, {int(codes.max())}]")
    codes = codes.to(torch.uint8)
    if per_byte == 1:
        return codes.clone().contiguous()
    length = codes.shape[-1]
    pad = packed_length(length, bits) * per_byte - length
    if pad:
        codes = torch.nn.functional.pad(codes, (0, pad))
    codes = codes.reshape(*codes.shape[:-1], -1, per_byte)
    packed = torch.zeros(codes.shape[:-1], dtype=torch.uint8, device=codes.device)
    for j in range(per_byte):
        packed |= codes[..., j] << (bits * j)
    return packed.contiguous()


def unpack(packed: Tensor, bits: int, length: int) -> Tensor:
    """Inverse of :func:`pack`: uint8 (..., ceil(length * bits / 8)) -> uint8 (..., length)."""
    per_byte = codes_per_byte(bits)
    if packed.dtype != torch.uint8:
        raise ValueError(f"packed codes must be uint8, got {packed.dtype}")
    if packed.shape[-1] != packed_length(length, bits):
        raise ValueError(f"{length} codes of {bits} bits take {packed_length(length, bits)} bytes, "
                         f"got {packed.shape[-1]}")
    if per_byte == 1:
        return packed[..., :length].clone()
    mask = 2**bits - 1
    parts = [(packed >> (bits * j)) & mask for j in range(per_byte)]
    return torch.stack(parts, dim=-1).reshape(*packed.shape[:-1], -1)[..., :length].contiguous()


MAX_CHANNEL_BLOCK = 128  # per-channel rows longer than this are cut into blocks that repeat the scale


def block_size_for(granularity: str, group_size: int, in_features: int) -> int:
    """The ``MatMulNBits`` block size of a layer.

    Per group: ``group_size``, or for a single group (``K < group_size``) the smallest power of
    two >= max(K, 16). Per channel: that same power of two, capped at 128; longer rows are cut
    into 128-blocks that all carry the channel's scale (and zero point), since the operator
    needs power-of-two blocks and ONNX Runtime 1.32 refuses 2-bit blocks over 256.
    """
    whole_row = max(16, 1 << max(in_features - 1, 1).bit_length())
    if granularity == "per_group":
        return min(group_size, whole_row)
    return min(whole_row, MAX_CHANNEL_BLOCK)


@dataclass
class PackedLayer:
    """One quantized weight in ``MatMulNBits`` layout (see the module docstring).

    ``kind`` is ``"linear"`` or ``"conv2d"``; ``weight_shape`` the float weight's shape;
    ``conv`` the Conv2d arguments (stride, padding, dilation, groups, padding_mode);
    ``activation`` the input quantizer's settings (and, learned, its ``scale`` and
    ``zero_point``) or None; ``bias`` float or None.
    """

    kind: str
    bits: int
    block_size: int
    in_features: int  # K
    out_features: int  # N
    symmetric: bool
    qweight: Tensor  # uint8 (N, k_blocks, blob_size)
    scales: Tensor  # float32 / float16 (N, k_blocks)
    zero_points: Tensor | None  # uint8 (N, ceil(k_blocks * bits / 8)) packed; 3 bits (N, k_blocks); None symmetric
    weight_shape: tuple[int, ...]
    granularity: str = "per_group"
    group_size: int = 32
    bias: Tensor | None = None
    conv: dict[str, Any] | None = None
    activation: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    # -- construction ------------------------------------------------------------------------------
    @classmethod
    def from_codes(cls, codes: Tensor, scales: Tensor, zero_points: Tensor | None, *, bits: int, block_size: int,
                   symmetric: bool, kind: str = "linear", weight_shape: tuple[int, ...] | None = None,
                   **fields) -> "PackedLayer":
        """From unsigned codes (N, K), scales (N, k_blocks) and unpacked zero points (N, k_blocks) or None.

        Symmetric: ``codes`` are already offset by ``2**(bits-1)`` and ``zero_points`` is None.
        """
        out_features, in_features = codes.shape
        k_blocks = -(-in_features // block_size)
        if tuple(scales.shape) != (out_features, k_blocks):
            raise ValueError(f"scales must be ({out_features}, {k_blocks}), got {tuple(scales.shape)}")
        if symmetric != (zero_points is None):
            raise ValueError("zero_points must be None exactly when symmetric")
        if zero_points is not None and tuple(zero_points.shape) != (out_features, k_blocks):
            raise ValueError(f"zero_points must be ({out_features}, {k_blocks}), got {tuple(zero_points.shape)}")
        pad_code = (torch.full((out_features, k_blocks), 2 ** (bits - 1), dtype=torch.uint8, device=codes.device)
                    if zero_points is None else zero_points.to(torch.uint8))
        full = pad_code.repeat_interleave(block_size, dim=1).clone()  # (N, k_blocks * block_size)
        full[:, :in_features] = codes.to(torch.uint8)
        qweight = pack(full.view(out_features, k_blocks, block_size), bits)
        packed_zp = None if zero_points is None else pack(zero_points, bits)
        return cls(kind=kind, bits=bits, block_size=block_size, in_features=in_features, out_features=out_features,
                   symmetric=symmetric, qweight=qweight, scales=scales.contiguous(), zero_points=packed_zp,
                   weight_shape=tuple(weight_shape or (out_features, in_features)), **fields)

    # -- views --------------------------------------------------------------------------------------
    @property
    def k_blocks(self) -> int:
        return -(-self.in_features // self.block_size)

    @property
    def blob_size(self) -> int:
        return packed_length(self.block_size, self.bits)

    def codes(self) -> Tensor:
        """Unsigned codes, uint8 (N, K) (symmetric: signed code + 2**(bits-1))."""
        full = unpack(self.qweight, self.bits, self.block_size)  # (N, k_blocks, block_size)
        return full.reshape(self.out_features, -1)[:, : self.in_features]

    def zero_points_unpacked(self) -> Tensor:
        """uint8 (N, k_blocks); the operator's default 2**(bits-1) when symmetric."""
        if self.zero_points is None:
            return torch.full((self.out_features, self.k_blocks), 2 ** (self.bits - 1), dtype=torch.uint8,
                              device=self.qweight.device)
        return unpack(self.zero_points, self.bits, self.k_blocks)

    def dequantize(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """``(code - zero_point) * scale`` in ``weight_shape``."""
        full = unpack(self.qweight, self.bits, self.block_size).to(torch.float32)  # (N, k_blocks, block_size)
        zero = self.zero_points_unpacked().to(torch.float32).unsqueeze(-1)
        weight = (full - zero) * self.scales.to(torch.float32).unsqueeze(-1)
        weight = weight.reshape(self.out_features, -1)[:, : self.in_features]
        return weight.reshape(self.weight_shape).to(dtype)

    def matmulnbits(self) -> dict[str, Any]:
        """The ``com.microsoft.MatMulNBits`` inputs and attributes, exactly as the operator takes them.

        ``{"B": uint8 (N, k_blocks, blob_size), "scales": (N * k_blocks,), "zero_points": uint8
        (N * ceil(k_blocks * bits / 8),) or absent, "bias": (N,) or absent, "attributes": {K, N,
        bits, block_size}}``. Scales keep their stored dtype; the operator wants the dtype of
        its input ``A`` (cast them for an fp16 graph). Conv2d weights are returned as their
        (out, in/groups * kh * kw) matrix; an exporter must im2col the input to use them.
        """
        if self.bits not in PACKED_BITS:
            raise ValueError(f"MatMulNBits has no {self.bits}-bit kernel (supported: {list(PACKED_BITS)})")
        inputs: dict[str, Any] = {"B": self.qweight, "scales": self.scales.reshape(-1)}
        if self.zero_points is not None:
            inputs["zero_points"] = self.zero_points.reshape(-1)
        if self.bias is not None:
            inputs["bias"] = self.bias
        inputs["attributes"] = {"K": self.in_features, "N": self.out_features, "bits": self.bits,
                                "block_size": self.block_size}
        return inputs

    # -- size and serialisation ----------------------------------------------------------------------
    @property
    def nbytes(self) -> int:
        """Bytes of packed codes + scales + zero points (the bias is counted with the float tensors)."""
        tensors = [self.qweight, self.scales] + ([self.zero_points] if self.zero_points is not None else [])
        return sum(t.numel() * t.element_size() for t in tensors)

    def metadata(self) -> dict[str, Any]:
        return {"kind": self.kind, "bits": self.bits, "block_size": self.block_size, "in_features": self.in_features,
                "out_features": self.out_features, "symmetric": self.symmetric,
                "weight_shape": list(self.weight_shape), "granularity": self.granularity,
                "group_size": self.group_size, "scale_dtype": str(self.scales.dtype).removeprefix("torch."),
                "has_bias": self.bias is not None, "conv": self.conv, "activation": self.activation, **self.extra}

    def tensors(self) -> dict[str, Tensor]:
        out = {"qweight": self.qweight, "scales": self.scales}
        if self.zero_points is not None:
            out["zero_points"] = self.zero_points
        if self.bias is not None:
            out["bias"] = self.bias
        return out

    def __repr__(self) -> str:
        return (f"PackedLayer({self.kind}, N={self.out_features}, K={self.in_features}, bits={self.bits}, "
                f"block_size={self.block_size}, symmetric={self.symmetric}, nbytes={self.nbytes})")


def fp32_nbytes(layer: PackedLayer) -> int:
    """What the weight would take in float32."""
    return 4 * math.prod(layer.weight_shape)
