"""MiniLMv2-style distillation through taps: a 1-block BERT student matches the query-query, key-key and
value-value relations of a 2-block teacher's last layer (attention_relation, padding masked), beside the
sentence embedding, through distill.distil(task="embedding", features=...)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from shared_data import require_module  # noqa: E402

transformers = require_module("transformers", "Hugging Face encoders need the text extra")

import distill  # noqa: E402
from distill.data.sources import TensorData  # noqa: E402
from distill.losses import attention_relation  # noqa: E402
from distill.taps import Taps  # noqa: E402

PROJECTIONS = ("query", "key", "value")


def bert(layers: int, seed: int, init: float = 0.02) -> torch.nn.Module:
    """A BERT; ``init`` (the weights' std) 0.3 gives peaked attention relations, 0.02 (the default) nearly flat."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(initializer_range=init, vocab_size=40, hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    return transformers.BertModel(config, add_pooling_layer=False)


def sentences(count: int, seed: int) -> TensorData:
    """Token ids (5..39) of lengths 4..12, padded to 12 with a mask."""
    rng = np.random.default_rng(seed)
    ids, mask = np.zeros((count, 12), dtype=np.int64), np.zeros((count, 12), dtype=np.int64)
    for row, length in enumerate(rng.integers(4, 13, size=count)):
        ids[row, :length], mask[row, :length] = rng.integers(5, 40, size=length), 1
    return TensorData({"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}, None)


def relation_loss(student, teacher, data: TensorData) -> float:
    """Mean MiniLMv2 relation KL of the student's block 0 to the teacher's block 1, Q, K and V."""
    paths = {name: f"encoder.layer.{{}}.attention.self.{name}" for name in PROJECTIONS}
    taps_s = Taps(student, {n: p.format(0) for n, p in paths.items()})
    taps_t = Taps(teacher, {n: p.format(1) for n, p in paths.items()})
    inputs = data.inputs
    with torch.no_grad():  # the taps are attached from construction
        student(**inputs), teacher(**inputs)
        got_s, got_t = dict(taps_s.require_all()), dict(taps_t.require_all())
    taps_s.remove(), taps_t.remove()
    return float(np.mean([attention_relation(got_s[n], got_t[n], heads=4, mask=inputs["attention_mask"]).item()
                          for n in PROJECTIONS]))


def test_relation_terms_bring_the_students_attention_relations_to_the_teachers(tmp_path):
    teacher = bert(2, seed=1, init=0.3)
    data, held_out = sentences(256, seed=3), sentences(64, seed=4)
    features = [{"loss": "attention_relation", "weight": 1.0, "params": {"heads": 4},
                 "pairs": [[f"encoder.layer.0.attention.self.{n}", f"encoder.layer.1.attention.self.{n}"]]}
                for n in PROJECTIONS]
    run = {"task": "embedding", "batch_size": 32, "progress": False, "measure_latency": False, "threads": 1}
    start = relation_loss(bert(1, seed=2), teacher, held_out)
    plain = bert(1, seed=2)
    plain_metrics = distill.distil(teacher, plain, data, eval=held_out, epochs=4, lr=1e-2, output_dir=tmp_path / "plain",
                                   **run).metrics
    with_relations = bert(1, seed=2)
    result = distill.distil(teacher, with_relations, data, eval=held_out, epochs=4, lr=1e-2, features=features,
                            output_dir=tmp_path / "relations", **run)
    logged = [row for row in map(json.loads, (tmp_path / "relations" / "metrics.jsonl").open())
              if row.get("split") == "train" and "feature/attention_relation/0" in row]
    assert logged, "the relation terms are logged per term"
    after, after_plain = relation_loss(with_relations, teacher, held_out), relation_loss(plain, teacher, held_out)
    # measured: start 0.731, embedding alone 0.739, with the relation terms 0.540
    assert after < 0.8 * start and after < 0.8 * after_plain  # the relations come from the terms, not the embedding
    # and the sentence embedding is learnt as well beside them (0.854 vs 0.855)
    assert result.metrics["cosine_to_teacher"] > max(0.8, plain_metrics["cosine_to_teacher"] - 0.02)
