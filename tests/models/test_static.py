"""The static (Model2Vec-style) student: built from the teacher's token vectors, the fast path equals the
padded one, saved folders round-trip, fine-tuning against the teacher lowers the distance."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_text import tiny_folder  # noqa: E402

from distill.models.hf import SentenceEncoder, encode  # noqa: E402
from distill.models.static import (  # noqa: E402
    StaticEmbedding, distill_static, embed_texts, load_static, pca, save_static, token_vectors)

SENTENCES = ["the cat sat on the mat .", "a dog sat", "the dog", "cat cat cat", "mat on a mat", "", "the " * 40]


@pytest.fixture()
def teacher(tmp_path):
    return SentenceEncoder.from_folder(tiny_folder(tmp_path))


def test_with_the_full_width_a_lone_token_maps_back_to_the_teachers_vector(teacher):
    encoder, tokenizer = teacher
    student = distill_static(encoder, tokenizer, dim=12, progress=False)  # 13 centred vectors span <= 12 dims: exact
    vectors = token_vectors(encoder, tokenizer, progress=False)  # the teacher's pooled [CLS] t [SEP], unnormalised
    student.normalize = False
    with torch.no_grad():
        batch = tokenizer(["cat", "dog"], return_tensors="pt")
        got = student(batch["input_ids"], batch["attention_mask"])
    cat, dog = tokenizer.convert_tokens_to_ids(["cat", "dog"])
    torch.testing.assert_close(got, torch.from_numpy(vectors[[cat, dog]]), atol=1e-4, rtol=1e-4)
    assert student.token_weights[tokenizer.all_special_ids].eq(0).all()  # [CLS] [SEP] [PAD] ... never pooled
    reduced, components, mean = pca(vectors, 4)
    assert reduced.shape == (len(tokenizer), 4) and np.allclose(components @ components.T, np.eye(4), atol=1e-5)


def test_the_fast_path_equals_the_padded_forward(teacher):
    encoder, tokenizer = teacher
    corpus = ["the cat sat on the mat", "the dog sat", "the the the"]
    student = distill_static(encoder, tokenizer, dim=8, corpus=corpus, max_length=16, progress=False)
    batch = tokenizer(SENTENCES, padding=True, truncation=True, max_length=16, return_tensors="pt")
    with torch.no_grad():
        padded = student(batch["input_ids"], batch["attention_mask"]).numpy()
    np.testing.assert_allclose(embed_texts(student, tokenizer, SENTENCES, batch_size=3), padded, atol=1e-6)
    the, cat = tokenizer.convert_tokens_to_ids(["the", "cat"])
    assert student.token_weights[the] < student.token_weights[cat]  # SIF: the frequent token weighs less


def test_a_saved_folder_round_trips_and_a_foreign_tokenizer_is_refused(teacher, tmp_path):
    encoder, tokenizer = teacher
    student = distill_static(encoder, tokenizer, dim=8, progress=False)
    folder = save_static(student, tokenizer, tmp_path / "static")
    loaded, loaded_tokenizer = load_static(folder)
    assert isinstance(loaded, StaticEmbedding) and loaded.config == student.config
    np.testing.assert_allclose(encode(loaded, loaded_tokenizer, SENTENCES, progress=False),
                               encode(student, tokenizer, SENTENCES, progress=False), atol=1e-6)
    (folder / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "x"]) + "\n")
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match="the tokenizer has 6 tokens but the table 13 rows"):
        load_static(folder)


def test_fine_tuning_on_the_teachers_embeddings_lowers_the_distance(teacher, tmp_path):
    import distill
    from distill.data import sentence_data

    encoder, tokenizer = teacher
    student = distill_static(encoder, tokenizer, dim=4, progress=False)
    words = ["the", "cat", "sat", "on", "mat", "a", "dog"]
    rng = np.random.default_rng(0)
    sentences = [" ".join(rng.choice(words, size=rng.integers(2, 7))) for _ in range(256)]
    data = sentence_data(sentences, tokenizer, max_length=16)
    data.inputs.pop("token_type_ids", None)
    target = encode(encoder, tokenizer, sentences, progress=False)

    def distance() -> float:
        return float(1 - (encode(student, tokenizer, sentences, progress=False) * target).sum(1).mean())

    before = distance()
    distill.distil(encoder, student, data, task="embedding", losses=[{"name": "cosine_distance"}], epochs=4, lr=1e-2,
                   batch_size=32, output_dir=tmp_path / "run", progress=False, measure_latency=False)
    assert distance() < 0.7 * before


def test_distill_embed_writes_the_embeddings_and_names_bad_lines(teacher, tmp_path):
    from distill.cli import app

    encoder, tokenizer = teacher
    folder = save_static(distill_static(encoder, tokenizer, dim=8, progress=False), tokenizer, tmp_path / "static")
    text = tmp_path / "sentences.txt"
    text.write_text("the cat sat\n\na dog\n")
    runner = CliRunner()
    done = runner.invoke(app, ["embed", str(folder), str(text), "-o", str(tmp_path / "out.npy"), "--no-progress"])
    assert done.exit_code == 0, done.output
    assert "2 sentences" in done.output and "1 empty line skipped" in done.output
    vectors = np.load(tmp_path / "out.npy")
    np.testing.assert_allclose(vectors, embed_texts(load_static(folder)[0], tokenizer, ["the cat sat", "a dog"]),
                               atol=1e-6)
    st_folder = tiny_folder(tmp_path / "st")  # a sentence-transformers folder embeds the same way
    done = runner.invoke(app, ["embed", str(st_folder), str(text), "-o", str(tmp_path / "st.npy"), "--no-progress"])
    assert done.exit_code == 0 and np.load(tmp_path / "st.npy").shape == (2, 16)
    text.write_bytes(b"fine\n\xff\xfe broken\n")
    done = runner.invoke(app, ["embed", str(folder), str(text), "-o", str(tmp_path / "bad.npy")])
    assert done.exit_code == 2 and "sentences.txt:2: not UTF-8" in done.output
    assert not (tmp_path / "bad.npy").exists()
