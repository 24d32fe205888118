"""Sentence encoders from sentence-transformers folders: exactly sentence-transformers' embeddings,
pooling by hand-computed values, and clear errors for folders it cannot load as they are."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared_data import minilm_folder, require_module, require_shared  # noqa: E402
from tiny_text import tiny_folder  # noqa: E402

from distill.models.hf import EncoderFolderError, SentenceEncoder, encode, pool, read_sts, token_lengths  # noqa: E402

SENTENCES = ["A girl is styling her hair.", "Un café, s'il vous plaît!", "The cat sat on the mat.",
             "naïve résumé — déjà vu", "1234 5678", "Hello", "word " * 400, "A man is playing a guitar."]


@pytest.fixture(scope="module")
def minilm():
    require_module("transformers", "Hugging Face encoders need the text extra")
    return SentenceEncoder.from_folder(minilm_folder())


def test_minilm_embeddings_equal_sentence_transformers(minilm):
    st = require_module("sentence_transformers", "the reference embeddings come from sentence-transformers")
    encoder, tokenizer = minilm
    ours = encode(encoder, tokenizer, SENTENCES, batch_size=3, progress=False)
    reference = st.SentenceTransformer(str(minilm_folder()), device="cpu").encode(SENTENCES, batch_size=3)
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)  # the Normalize module


def test_over_long_text_is_truncated_at_the_models_limit_and_counted(minilm):
    encoder, tokenizer = minilm
    assert encoder.max_length == 256  # sentence_bert_config.json's max_seq_length
    lengths = token_lengths(encoder, tokenizer, SENTENCES)
    assert lengths[6] == 402 and (lengths > encoder.max_length).sum() == 1  # 400 words + [CLS] + [SEP]
    assert encode(encoder, tokenizer, [], progress=False).shape == (0, 384)
    with pytest.raises(TypeError, match="sentence 1 is a int"):
        encode(encoder, tokenizer, ["fine", 3], progress=False)


def test_pooling_golden_values():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]]])  # (1, 3, 2); the last token is padding
    mask = torch.tensor([[1, 1, 0]])
    assert pool(hidden, mask, "mean").tolist() == [[2.0, 4.0]]
    assert pool(hidden, mask, "max").tolist() == [[3.0, 6.0]]
    assert pool(hidden, mask, "cls").tolist() == [[1.0, 2.0]]
    torch.testing.assert_close(pool(hidden, mask, "mean_sqrt_len_tokens"), torch.tensor([[4.0, 8.0]]) / 2 ** 0.5)
    with pytest.raises(ValueError, match="unknown pooling mode 'sum'"):
        pool(hidden, mask, "sum")


def test_a_tiny_folder_loads_and_pools_by_its_modules(tmp_path):
    encoder, tokenizer = SentenceEncoder.from_folder(tiny_folder(tmp_path))
    assert encoder.pooling == "mean" and encoder.normalize and encoder.max_length == 16
    batch = tokenizer(["the cat sat", "a dog"], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**batch).last_hidden_state
        expected = torch.nn.functional.normalize(pool(hidden, batch["attention_mask"], "mean"), dim=-1)
        torch.testing.assert_close(encoder(**batch), expected)


def test_columns_of_padding_alone_are_trimmed_and_change_nothing(tmp_path):
    encoder, tokenizer = SentenceEncoder.from_folder(tiny_folder(tmp_path))
    tight = tokenizer(["the cat sat", "a dog"], padding=True, return_tensors="pt")
    wide = tokenizer(["the cat sat", "a dog"], padding="max_length", max_length=16, return_tensors="pt")
    assert wide["input_ids"].shape[1] == 16 > tight["input_ids"].shape[1]
    seen = []
    hook = encoder.model.register_forward_pre_hook(lambda module, args, kwargs: seen.append(kwargs["input_ids"].shape),
                                                   with_kwargs=True)
    with torch.no_grad():
        torch.testing.assert_close(encoder(**wide), encoder(**tight), rtol=0, atol=0)
    hook.remove()
    assert seen[0] == seen[1] == tight["input_ids"].shape  # the transformer ran on the tight batch both times


def test_folders_it_cannot_load_as_they_are_get_one_clear_error(tmp_path):
    plain = tiny_folder(tmp_path, modules=False)
    with pytest.raises(EncoderFolderError, match="no modules.json.*pooling='mean'"):
        SentenceEncoder.from_folder(plain)
    assert SentenceEncoder.from_folder(plain, pooling="cls")[0].pooling == "cls"
    folder = tiny_folder(tmp_path / "b")
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "modules.json").write_text(json.dumps(modules + [{"idx": 3, "path": "3_Dense",
                                                                  "type": "sentence_transformers.models.Dense"}]))
    with pytest.raises(EncoderFolderError, match="Dense.*will not skip a module"):
        SentenceEncoder.from_folder(folder)
    (folder / "modules.json").write_text(json.dumps(modules))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "auto_map": {"AutoModel": "modeling.MyModel"}}))
    with pytest.raises(EncoderFolderError, match="auto_map"):
        SentenceEncoder.from_folder(folder)
    (folder / "config.json").write_text(json.dumps(config))
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(EncoderFolderError, match="pickle weights, which distill does not load"):
        SentenceEncoder.from_folder(folder)
    with pytest.raises(FileNotFoundError, match="no such model folder"):
        SentenceEncoder.from_folder(tmp_path / "nowhere")


def test_a_tokenizer_larger_than_the_embedding_table_is_refused(tmp_path):
    transformers = require_module("transformers", "Hugging Face encoders need the text extra")
    folder = tiny_folder(tmp_path)  # 13 tokens, 13 embedding rows
    bigger = tmp_path / "vocab.txt"
    bigger.write_text((folder / "vocab.txt").read_text() + "".join(f"word{i}\n" for i in range(7)))
    transformers.BertTokenizerFast(vocab=str(bigger)).save_pretrained(str(folder))
    with pytest.raises(EncoderFolderError, match="tokenizer has 20 tokens but the model's embedding table has 13 rows"):
        SentenceEncoder.from_folder(folder)


def test_read_sts_reads_the_benchmark_and_names_a_bad_line(tmp_path):
    first, second, scores = read_sts(require_shared("stsb", "sts-test.csv"))
    assert len(first) == len(second) == len(scores) == 1379 and 0 <= scores.min() and scores.max() <= 5
    bad = tmp_path / "bad.csv"
    bad.write_text("main-captions\tMSRvid\t2012test\t0001\t5.000\tA man.\tA man.\nmain\tx\ty\t2\tfive\ta\tb\n")
    with pytest.raises(ValueError, match=r"bad.csv:2: field 5 is 'five'"):
        read_sts(bad)
