"""transformer_student: a layer-dropped, FFN-narrowed student of a teacher folder, built by name."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_text import VOCAB, tiny_folder  # noqa: E402

from distill.models import build_model  # noqa: E402
from distill.models.transformer import spread_layers  # noqa: E402


def batch():
    ids = torch.tensor([[2, 5, 6, 7, 8, 5, 9, 3], [2, 10, 11, 12, 3, 0, 0, 0]])
    return ids, (ids != 0).long()


def test_spread_layers_keeps_the_first_and_the_last_block():
    assert spread_layers(2, 6) == [0, 5] and spread_layers(3, 6) == [0, 2, 5]  # round(2.5) == 2
    assert spread_layers(1, 6) == [0] and spread_layers(6, 6) == list(range(6))


def test_all_blocks_reproduce_the_folder_encoder_and_sizes_follow_the_params(tmp_path):
    from distill.models.hf import SentenceEncoder

    folder = tiny_folder(tmp_path)
    ids, mask = batch()
    teacher, _ = SentenceEncoder.from_folder(folder)
    teacher.normalize = False
    full = build_model("transformer_student", input_shape=(8,), num_classes=None, folder=str(folder),
                       vocab_size=len(VOCAB)).eval()
    full.encoder.normalize = False
    with torch.no_grad():
        torch.testing.assert_close(full(ids, mask), teacher(ids, mask))  # (B, 16), the teacher's weights
    small = build_model("transformer_student", input_shape=(8,), num_classes=3, folder=str(folder),
                        vocab_size=len(VOCAB), layers=1, ffn_width=8)
    assert len(small.encoder.model.encoder.layer) == 1 and small.encoder.model.config.num_hidden_layers == 1
    assert small.encoder.model.encoder.layer[0].intermediate.dense.out_features == 8
    torch.testing.assert_close(small.encoder.model.encoder.layer[0].attention.self.query.weight,
                               teacher.model.encoder.layer[0].attention.self.query.weight)  # block 0 copied
    assert small(ids, mask).shape == (2, 3)
    narrow = build_model("transformer_student", input_shape=(8,), num_classes=3, folder=str(folder),
                         vocab_size=len(VOCAB), layers=[1], hidden_size=8)  # fresh weights at width 8
    assert narrow.encoder.model.config.hidden_size == 8 and narrow.head.in_features == 8
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in small.parameters())


def test_bad_params_name_the_field_and_what_would_be_right(tmp_path):
    folder = tiny_folder(tmp_path)
    common = dict(input_shape=(8,), num_classes=3, folder=str(folder))
    with pytest.raises(ValueError, match=f"vocab_size is 99 .* give vocab_size: {len(VOCAB)}"):
        build_model("transformer_student", vocab_size=99, **common)
    with pytest.raises(ValueError, match=r"layers is 3; the folder has 2 blocks: give 1\.\.2"):
        build_model("transformer_student", vocab_size=len(VOCAB), layers=3, **common)
    with pytest.raises(ValueError, match=r"hidden_size is 7; it must be a multiple of num_attention_heads=2"):
        build_model("transformer_student", vocab_size=len(VOCAB), hidden_size=7, **common)
    with pytest.raises(ValueError, match="no such model folder"):
        build_model("transformer_student", vocab_size=len(VOCAB), **{**common, "folder": str(tmp_path / "nope")})
