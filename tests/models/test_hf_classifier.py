"""A classifier on a sentence encoder: logits of the right shape, a loss that falls when fine-tuned
through distill.distil, a layer-dropped student distilled from it, the packaged MiniLM's pooled
features equal to sentence-transformers', folders and model files that round-trip, and trimmed
batches that give the padded batches' outputs."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared_data import minilm_folder, require_module  # noqa: E402
from tiny_text import tiny_folder  # noqa: E402

import distill  # noqa: E402
from distill.data.sources import TensorData  # noqa: E402
from distill.models.hf import SentenceEncoder  # noqa: E402
from distill.models.hf_classifier import (SentenceClassifier, fine_tune, layer_dropped, predict_logits,  # noqa: E402
                                          save_classifier, trimmed_loader)


def toy_data(tokenizer, count: int = 192, seed: int = 0, words_per_text: tuple[int, int] = (4, 4)) -> TensorData:
    """Class 1 when 'dog' is in the sentence, else 0; ``words_per_text`` (fewest, most) words."""
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "mat", "a"]
    texts, labels = [], []
    for index in range(count):
        sentence = list(rng.choice(words, size=int(rng.integers(words_per_text[0], words_per_text[1] + 1))))
        if index % 2:
            sentence[rng.integers(0, len(sentence))] = "dog"
        texts.append(" ".join(sentence))
        labels.append(index % 2)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    return TensorData({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, torch.tensor(labels))


def cross_entropy(model, data) -> float:
    return float(torch.nn.functional.cross_entropy(predict_logits(model, data), data.targets))


def accuracy(model, data) -> float:
    return float(predict_logits(model, data).argmax(1).eq(data.targets).float().mean())


def test_fine_tuned_classifier_learns_and_a_layer_dropped_student_distils_from_it(tmp_path):
    encoder, tokenizer = SentenceEncoder.from_folder(tiny_folder(tmp_path))
    torch.manual_seed(0)
    classifier = SentenceClassifier(encoder, 2)
    train, test = toy_data(tokenizer), toy_data(tokenizer, 64, seed=1)
    assert classifier(**{k: v[:3] for k, v in train.inputs.items()}).shape == (3, 2)
    assert encoder.normalize  # the original encoder is not changed
    untrained = accuracy(classifier, test)
    run = distill.distil(None, classifier, train, eval=test, epochs=6, lr=3e-3, batch_size=32,
                         output_dir=tmp_path / "teacher", progress=False, measure_latency=False)
    assert run.metrics["accuracy"] >= max(0.9, untrained + 0.1)  # learned the rule
    student = layer_dropped(classifier, [1])
    assert len(student.encoder.model.encoder.layer) == 1 and len(classifier.encoder.model.encoder.layer) == 2
    assert student.encoder.model.config.num_hidden_layers == 1
    result = distill.distil(classifier, student, train, eval=test, epochs=4, lr=3e-3, batch_size=32,
                            output_dir=tmp_path / "student", progress=False, measure_latency=False)
    assert result.metrics["agreement"] >= 0.85


def test_fine_tune_lowers_the_loss_on_trimmed_batches_and_keeps_the_word_table(tmp_path):
    classifier, tokenizer = SentenceClassifier.from_folder(tiny_folder(tmp_path), num_classes=2)
    train = toy_data(tokenizer)
    table = classifier.encoder.model.get_input_embeddings().weight.detach().clone()
    before = cross_entropy(classifier, train)
    torch.manual_seed(0)
    run = fine_tune(classifier.train(), train, epochs=8, lr=3e-3, batch_size=32, warmup=0.1,
                    output_dir=tmp_path / "run", progress=False)
    assert run.state.step == 8 * (192 // 32)
    after = cross_entropy(classifier, train)  # 0.69 -> 0.45 here (the tiny random word table stays frozen)
    assert after < 0.75 * before, (before, after)
    torch.testing.assert_close(classifier.encoder.model.get_input_embeddings().weight, table)  # frozen


def test_trimmed_batches_and_length_sorted_inference_equal_the_padded_forward(tmp_path):
    classifier, tokenizer = SentenceClassifier.from_folder(tiny_folder(tmp_path), num_classes=3)
    data = toy_data(tokenizer, 40, words_per_text=(1, 7))  # padding varies
    with torch.no_grad():
        padded = classifier(**data.inputs)
    torch.testing.assert_close(predict_logits(classifier, data, batch_size=7), padded, atol=1e-5, rtol=1e-5)
    ids = data.inputs["input_ids"]
    first_copy = [int(torch.nonzero((ids == row).all(1))[0]) for row in ids]  # equal texts share a row number
    seen = []
    for batch in trimmed_loader(data, 8, shuffle=True, seed=3):
        mask = batch["input"]["attention_mask"]
        assert mask[:, -1].any() and mask.shape[1] <= ids.shape[1]  # cut to the batch's longest row
        width = mask.shape[1]
        rows = [int(torch.nonzero((ids[:, :width] == row).all(1) & (data.inputs["attention_mask"][:, width:] == 0).all(1))[0])
                for row in batch["input"]["input_ids"]]
        assert batch["target"].tolist() == data.targets[rows].tolist()
        with torch.no_grad():
            torch.testing.assert_close(classifier(**batch["input"]), padded[rows], atol=1e-5, rtol=1e-5)
        seen += rows
    assert sorted(seen) == sorted(first_copy)  # every row once, in batches of similar length
    again = [b["input"]["input_ids"].tolist() for b in trimmed_loader(data, 8, seed=3)]
    first = [b["input"]["input_ids"].tolist() for b in trimmed_loader(data, 8, seed=3)]
    assert again == first  # the same seed, the same batches


def test_saved_folders_and_model_files_round_trip(tmp_path):
    classifier, tokenizer = SentenceClassifier.from_folder(tiny_folder(tmp_path), num_classes=4)
    torch.nn.init.normal_(classifier.head.weight)
    batch = toy_data(tokenizer, 6).inputs
    with torch.no_grad():
        expected = classifier.eval()(**batch)
    folder = save_classifier(classifier, tokenizer, tmp_path / "saved", classes=["a", "b", "c", "d"])
    loaded, loaded_tokenizer = SentenceClassifier.from_folder(folder)
    assert loaded.num_classes == 4 and len(loaded_tokenizer) == len(tokenizer)
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch), expected)
    with pytest.raises(ValueError, match="holds a 4-class classifier"):
        SentenceClassifier.from_folder(folder, num_classes=3)
    path = distill.save_model(classifier, tmp_path / "model.safetensors")  # weights + class name
    fresh = SentenceClassifier.from_folder(tiny_folder(tmp_path / "other"), num_classes=4)[0]
    with torch.no_grad():
        torch.testing.assert_close(distill.load_model(path, model=fresh)(**batch), expected)


def test_a_plain_hugging_face_folder_pools_by_mean_and_needs_a_class_count(tmp_path):
    folder = tiny_folder(tmp_path, modules=False)
    with pytest.raises(ValueError, match="give num_classes"):
        SentenceClassifier.from_folder(folder)
    classifier, tokenizer = SentenceClassifier.from_folder(folder, num_classes=2)
    assert classifier.encoder.pooling == "mean" and not classifier.encoder.normalize
    batch = toy_data(tokenizer, 4).inputs
    assert classifier(**batch).shape == (4, 2)


def test_the_packaged_minilm_classifier_pools_exactly_as_sentence_transformers():
    st = require_module("sentence_transformers", "the reference embeddings come from sentence-transformers")
    folder = minilm_folder()
    classifier, tokenizer = SentenceClassifier.from_folder(folder, num_classes=4)
    sentences = ["Wall St. Bears Claw Back Into the Black (Reuters)", "Oil prices hit a record high.",
                 "The Red Sox win the World Series", "New chip doubles laptop battery life " * 3]
    reference = st.SentenceTransformer(str(folder), device="cpu")
    pooled_only = st.SentenceTransformer(modules=[reference[0], reference[1]], device="cpu")  # before Normalize
    expected = pooled_only.encode(sentences, convert_to_numpy=True)
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=classifier.max_length, return_tensors="pt")
    with torch.no_grad():
        features = classifier.features(**batch).numpy()
        logits = classifier(**batch)
    assert features.shape == (4, 384) and logits.shape == (4, 4)
    np.testing.assert_allclose(features, expected, atol=1e-5)
    np.testing.assert_allclose(features / np.linalg.norm(features, axis=1, keepdims=True),
                               reference.encode(sentences), atol=1e-5)
