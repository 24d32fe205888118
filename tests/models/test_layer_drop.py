"""Layer dropping: keeping every block changes nothing; keeping some equals running those blocks by hand."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared_data import require_module  # noqa: E402

from distill.models.layer_drop import drop_layers, layer_list_path, narrow_ffn  # noqa: E402


@pytest.fixture(scope="module")
def bert():
    transformers = require_module("transformers", "Hugging Face models need the text extra")
    config = transformers.BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=6, num_attention_heads=2,
                                     intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    return transformers.BertModel(config).eval()


INPUTS = {"input_ids": torch.tensor([[2, 5, 9, 7, 3, 0], [2, 8, 3, 0, 0, 0]]),
          "attention_mask": torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]])}


def test_keeping_every_block_gives_the_teachers_outputs(bert):
    student = drop_layers(bert, list(range(6)))
    with torch.no_grad():
        torch.testing.assert_close(student(**INPUTS).last_hidden_state, bert(**INPUTS).last_hidden_state,
                                   rtol=0, atol=0)


def test_kept_blocks_equal_running_them_by_hand(bert):
    student = drop_layers(bert, [0, 2, 4])
    assert len(student.encoder.layer) == 3 and student.config.num_hidden_layers == 3
    assert len(bert.encoder.layer) == 6 and bert.config.num_hidden_layers == 6  # the teacher is untouched
    with torch.no_grad():
        extended = (1.0 - INPUTS["attention_mask"][:, None, None, :].float()) * torch.finfo(torch.float32).min
        hidden = bert.embeddings(input_ids=INPUTS["input_ids"])
        for index in (0, 2, 4):
            out = bert.encoder.layer[index](hidden, attention_mask=extended)
            hidden = out[0] if isinstance(out, tuple) else out
        torch.testing.assert_close(student(**INPUTS).last_hidden_state, hidden, rtol=1e-5, atol=1e-5)
    # its weights are copies: training the student leaves the teacher as it was
    student.encoder.layer[1].output.dense.weight.data.add_(1.0)
    assert not torch.equal(student.encoder.layer[1].output.dense.weight, bert.encoder.layer[2].output.dense.weight)


def test_gpt2_blocks_and_bad_indices(bert):
    transformers = require_module("transformers", "Hugging Face models need the text extra")
    gpt = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=4, n_head=2,
                                                                n_positions=32))
    assert layer_list_path(gpt) == "transformer.h"
    small = drop_layers(gpt, [0, 3])
    assert small.config.n_layer == 2 and len(small.transformer.h) == 2
    assert small(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, 50)
    for keep, message in (([], "non-empty"), ([0, 6], r"in \[0, 6\)"), ([2, 1], "strictly increasing")):
        with pytest.raises(ValueError, match=message):
            drop_layers(bert, keep)
    with pytest.raises(ValueError, match="no list of transformer blocks"):
        drop_layers(torch.nn.Linear(2, 2), [0])


def test_narrow_ffn_drops_the_units_that_do_nothing_and_keeps_the_outputs(bert):
    teacher = drop_layers(bert, list(range(6)))  # a copy to edit
    dead = [3, 7, 8, 20, 31]  # in every block, units whose output weights are zero contribute nothing
    with torch.no_grad():
        for block in teacher.encoder.layer:
            block.output.dense.weight[:, dead] = 0.0
    for inputs in (INPUTS, None):  # by activations on a batch, and by weight norms alone
        student = narrow_ffn(teacher, 32 - len(dead), inputs)
        assert student.config.intermediate_size == 27 and teacher.config.intermediate_size == 32
        kept = [j for j in range(32) if j not in dead]
        for small, big in zip(student.encoder.layer, teacher.encoder.layer):
            assert small.intermediate.dense.weight.shape == (27, 16) and small.output.dense.weight.shape == (16, 27)
            torch.testing.assert_close(small.intermediate.dense.weight, big.intermediate.dense.weight[kept])
        with torch.no_grad():
            torch.testing.assert_close(student(**INPUTS).last_hidden_state, teacher(**INPUTS).last_hidden_state,
                                       rtol=1e-5, atol=1e-5)
    assert narrow_ffn(teacher, 32, INPUTS).encoder.layer[0].output.dense.in_features == 32


def test_narrow_ffn_refuses_bad_widths_and_other_blocks(bert):
    transformers = require_module("transformers", "Hugging Face models need the text extra")
    for width, message in ((0, "positive int"), (33, "more than the 32")):
        with pytest.raises(ValueError, match=message):
            narrow_ffn(bert, width)
    gpt = transformers.GPT2Model(transformers.GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=32))
    with pytest.raises(ValueError, match="no BERT-style feed-forward layer"):
        narrow_ffn(gpt, 8)
