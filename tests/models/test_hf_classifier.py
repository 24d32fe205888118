"""A classifier on a sentence encoder: logits of the right shape, a loss that falls when fine-tuned
through distill.distil, and a layer-dropped student distilled from it."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiny_text import tiny_folder  # noqa: E402

import distill  # noqa: E402
from distill.data.sources import TensorData  # noqa: E402
from distill.models.hf import SentenceEncoder  # noqa: E402
from distill.models.hf_classifier import SentenceClassifier  # noqa: E402
from distill.models.layer_drop import drop_layers  # noqa: E402


def toy_data(tokenizer, count: int = 192, seed: int = 0) -> TensorData:
    """Class 1 when 'dog' is in the sentence, else 0."""
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "mat", "a"]
    texts, labels = [], []
    for index in range(count):
        sentence = list(rng.choice(words, size=4))
        if index % 2:
            sentence[rng.integers(0, 4)] = "dog"
        texts.append(" ".join(sentence))
        labels.append(index % 2)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    return TensorData({"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}, torch.tensor(labels))


def test_fine_tuned_classifier_learns_and_a_layer_dropped_student_distils_from_it(tmp_path):
    encoder, tokenizer = SentenceEncoder.from_folder(tiny_folder(tmp_path))
    torch.manual_seed(0)
    classifier = SentenceClassifier(encoder, 2)
    train, test = toy_data(tokenizer), toy_data(tokenizer, 64, seed=1)
    assert classifier(**{k: v[:3] for k, v in train.inputs.items()}).shape == (3, 2)
    assert encoder.normalize  # the original encoder is not changed
    run = distill.distil(None, classifier, train, eval=test, epochs=6, lr=3e-3, batch_size=32,
                         output_dir=tmp_path / "teacher", progress=False, measure_latency=False)
    with torch.no_grad():
        untrained = SentenceClassifier(encoder, 2).eval()(**test.inputs).argmax(1).eq(test.targets).float().mean()
    assert run.metrics["accuracy"] >= max(0.9, float(untrained) + 0.1)  # learned the rule
    student = drop_layers(classifier, [1], path="encoder.model.encoder.layer")
    assert len(student.encoder.model.encoder.layer) == 1
    result = distill.distil(classifier, student, train, eval=test, epochs=4, lr=3e-3, batch_size=32,
                            output_dir=tmp_path / "student", progress=False, measure_latency=False)
    assert result.metrics["agreement"] >= 0.85
