"""Bit packing: bit-exact round trips and the ONNX Runtime MatMulNBits layout on hand-made examples."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.quant import QuantConfig, convert, packed_layers, prepare
from distill.quant.pack import PackedLayer, block_size_for, pack, packed_length, unpack


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("length", [1, 3, 5, 8, 31, 32, 33, 64, 127, 128, 130])
def test_pack_unpack_round_trip(bits, length):
    generator = torch.Generator().manual_seed(bits * 1000 + length)
    codes = torch.randint(0, 2**bits, (3, 2, length), generator=generator, dtype=torch.uint8)
    packed = pack(codes, bits)
    assert packed.dtype == torch.uint8
    assert packed.shape == (3, 2, packed_length(length, bits))
    assert packed.shape[-1] == (length if bits == 3 else -(-length * bits // 8))
    assert torch.equal(unpack(packed, bits, length), codes)


def test_pack_low_bits_first_by_hand():
    assert pack(torch.tensor([1, 2]), 4).tolist() == [0x21]
    assert pack(torch.tensor([1, 2, 3, 0, 3]), 2).tolist() == [0b00_11_10_01, 0b00_00_00_11]
    assert pack(torch.tensor([7, 200]), 8).tolist() == [7, 200]
    assert pack(torch.tensor([5]), 4).tolist() == [0x05]  # a half-filled last byte


def test_pack_rejects_out_of_range_codes():
    with pytest.raises(ValueError, match=r"\[0, 15\]"):
        pack(torch.tensor([16]), 4)
    with pytest.raises(ValueError, match="bits"):
        pack(torch.tensor([1]), 5)
    with pytest.raises(ValueError, match="bytes"):
        unpack(torch.zeros(3, dtype=torch.uint8), 4, 8)


def ort_reference_dequantize(B: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, *, K: int, N: int,
                             bits: int, block_size: int) -> np.ndarray:
    """MatMulNBits dequantization written from ONNX Runtime's ContribOperators.md, element by element.

    B (N, k_blocks, blob_size) uint8, scales flat (N * k_blocks), zero_points flat uint8 packed per
    row of N with ceil(k_blocks * bits / 8) bytes, default 2**(bits-1). Returns W (N, K) = B^T dequantized.
    """
    k_blocks = -(-K // block_size)
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    zp_row_bytes = -(-k_blocks * bits // 8)
    weight = np.zeros((N, K), dtype=np.float64)
    for n in range(N):
        for k in range(K):
            block, i = divmod(k, block_size)
            byte = int(B[n, block, i // per_byte])
            code = (byte >> (bits * (i % per_byte))) & mask
            if zero_points is None:
                zero = 2 ** (bits - 1)
            else:
                zbyte = int(zero_points[n * zp_row_bytes + block // per_byte])
                zero = (zbyte >> (bits * (block % per_byte))) & mask
            weight[n, k] = (code - zero) * float(scales[n * k_blocks + block])
    return weight


def test_matmulnbits_golden_4bit_nibbles():
    """N=2, K=64, block 32, 4 bits, asymmetric: every byte written out by hand."""
    row0 = torch.arange(64) % 16  # 0, 1, ..., 15, 0, 1, ...
    row1 = 15 - torch.arange(64) % 16  # 15, 14, ..., 0, ...
    codes = torch.stack([row0, row1]).to(torch.uint8)
    scales = torch.tensor([[0.5, 0.25], [1.0, 2.0]])
    zeros = torch.tensor([[3, 12], [8, 1]], dtype=torch.uint8)
    layer = PackedLayer.from_codes(codes, scales, zeros, bits=4, block_size=32, symmetric=False)
    ops = layer.matmulnbits()
    assert ops["attributes"] == {"K": 64, "N": 2, "bits": 4, "block_size": 32}
    assert ops["B"].shape == (2, 2, 16)
    # element 2i in the low nibble, element 2i+1 in the high nibble
    assert ops["B"][0, 0].tolist() == [0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE] * 2
    assert ops["B"][1, 1].tolist() == [0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01] * 2
    # zero points packed per row of N: block 0 low nibble, block 1 high nibble
    assert ops["zero_points"].tolist() == [0xC3, 0x18]
    assert ops["scales"].tolist() == [0.5, 0.25, 1.0, 2.0]
    reference = ort_reference_dequantize(ops["B"].numpy(), ops["scales"].numpy(), ops["zero_points"].numpy(),
                                         K=64, N=2, bits=4, block_size=32)
    assert np.array_equal(layer.dequantize(torch.float64).numpy(), reference)
    assert reference[0, 0] == (0 - 3) * 0.5 and reference[1, 63] == (0 - 1) * 2.0


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("group_size", [32, 64, 128])
@pytest.mark.parametrize("symmetric", [True, False])
def test_prepared_layer_packs_to_ort_layout(bits, group_size, symmetric):
    """A prepared Linear (K not a multiple of the group) packs into MatMulNBits' layout bit-exactly."""
    torch.manual_seed(bits + group_size)
    in_features = group_size * 2 + 24
    model = nn.Sequential(nn.Linear(in_features, 3))
    prepare(model, QuantConfig(weight_bits=bits, group_size=group_size, symmetric=symmetric))
    layer = packed_layers(model)["0"]
    k_blocks = 3
    assert layer.block_size == group_size and layer.k_blocks == k_blocks
    assert layer.qweight.shape == (3, k_blocks, group_size * bits // 8)
    assert (layer.zero_points is None) == symmetric
    if not symmetric:
        assert layer.zero_points.shape == (3, -(-k_blocks * bits // 8))
    ops = layer.matmulnbits()
    reference = ort_reference_dequantize(ops["B"].numpy(), ops["scales"].numpy().astype(np.float64),
                                         None if symmetric else ops["zero_points"].numpy(),
                                         K=in_features, N=3, bits=bits, block_size=group_size)
    with torch.no_grad():
        fake = model[0].quantized_weight().double().numpy()
    assert np.allclose(reference, fake, rtol=0, atol=1e-7)
    # codes round-trip; padding codes sit on the zero point (dequantize to 0)
    codes = layer.codes()
    assert codes.shape == (3, in_features)
    full = unpack(layer.qweight, bits, group_size).reshape(3, -1)
    assert torch.equal(full[:, in_features:], layer.zero_points_unpacked()[:, -1:].expand(3, full.shape[1] - in_features))


def test_three_bits_stored_unpacked_and_refused_by_matmulnbits():
    model = nn.Sequential(nn.Linear(40, 4))
    prepare(model, QuantConfig(weight_bits=3, symmetric=False))
    layer = packed_layers(model)["0"]
    assert layer.qweight.shape == (4, 2, 32)  # one code per byte
    assert layer.zero_points.shape == (4, 2)
    with pytest.raises(ValueError, match="3-bit"):
        layer.matmulnbits()
    converted = convert(model)
    x = torch.randn(2, 40)
    assert torch.equal(converted(x), model(x))


def test_block_size_rules():
    assert block_size_for("per_group", 32, 784) == 32
    assert block_size_for("per_group", 128, 20) == 32  # one block: smallest power of two >= K
    assert block_size_for("per_channel", 32, 784) == 128  # 7 blocks repeating the channel's scale
    assert block_size_for("per_channel", 32, 100) == 128
    assert block_size_for("per_channel", 32, 9) == 16


def test_per_channel_long_rows_repeat_the_scale():
    model = nn.Sequential(nn.Linear(300, 5))
    prepare(model, QuantConfig(weight_bits=2, granularity="per_channel", symmetric=False))
    layer = packed_layers(model)["0"]
    assert layer.block_size == 128 and layer.scales.shape == (5, 3)
    assert torch.equal(layer.scales, layer.scales[:, :1].expand(5, 3))
    assert torch.equal(layer.zero_points_unpacked(), layer.zero_points_unpacked()[:, :1].expand(5, 3))
    with torch.no_grad():
        assert torch.equal(layer.dequantize(), model[0].quantized_weight())
