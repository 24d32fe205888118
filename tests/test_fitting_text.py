"""distill fit for text students: token_cnn / token_gru / static_classifier / transformer_student families,
timed and sized on token ids, the winner exported as a text model (size budgets: deterministic)."""
from __future__ import annotations

import csv
import json
import random
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "models"))
from tiny_text import VOCAB, tiny_folder  # noqa: E402

from distill.fitting import FitError, candidate_tokens, candidates_for, fit, measure  # noqa: E402
from distill.models import build_model  # noqa: E402

WORDS = ["the", "sat", "on", "mat", "a", "."]  # shared by both classes; "cat" / "dog" decide the class


def tiny_texts(folder: Path, train: int = 160, test: int = 40, seed: int = 0) -> Path:
    """train.csv / test.csv of 6-word texts (so every split pads to the same length): label 0 holds "cat",
    label 1 "dog", at a random position among the shared words."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name, count in (("train.csv", train), ("test.csv", test)):
        with open(folder / name, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["label", "text"])
            for row in range(count):
                label = row % 2
                words = [rng.choice(WORDS) for _ in range(5)]
                words.insert(rng.randrange(6), "cat" if label == 0 else "dog")
                writer.writerow([label, " ".join(words)])
    return folder


def text_recipe(tmp_path, student, *, tokenizer=None, epochs=2, teacher=None, losses=None):
    params = {"max_length": 8, **({"tokenizer": str(tokenizer)} if tokenizer else {})}
    tree = {"name": "fit-text", "seed": 0, "output_dir": str(tmp_path / "run"),
            "data": {"name": "text_classification", "root": str(tiny_texts(tmp_path / "texts")), "batch_size": 16,
                     "params": params},
            "student": student, "losses": losses or [{"name": "cross_entropy"}],
            "optimizer": {"name": "adamw", "lr": 0.01}, "train": {"epochs": epochs, "threads": 1}}
    if teacher is not None:
        tree["teacher"] = teacher
    return tree


def test_text_families_vary_the_size_fields_and_keep_the_vocabulary():
    cnn = candidates_for("token_cnn", {"vocab_size": 30, "embed_dim": 16, "channels": 16})
    assert len(cnn) == 12 and all(p["vocab_size"] == 30 for _, p in cnn)
    assert {(p["embed_dim"], p["channels"]) for _, p in cnn} >= {(8, 4), (32, 32)}
    assert cnn[1][0] == "token_cnn-channels=4,embed_dim=8"
    gru = candidates_for("token_gru", {"vocab_size": 30, "hidden": 16})
    assert {p["layers"] for _, p in gru[1:]} == {1, 2} and {p["hidden"] for _, p in gru} == {4, 8, 16, 32}
    static = candidates_for("static_classifier", {"vocab_size": 30, "dim": 64})
    assert [p["dim"] for _, p in static] == [64, 8, 16, 32, 128]
    with pytest.raises(FitError, match=r"field 'student.params.folder'.*teacher's folder"):
        candidates_for("transformer_student", {"vocab_size": 30})
    with pytest.raises(FitError, match=r"sizes .*token_cnn.*transformer_student.*'static_embedding' has no family"):
        candidates_for("static_embedding", {})


def test_transformer_family_spans_blocks_and_feed_forward_widths(tmp_path):
    folder = tiny_folder(tmp_path)  # 2 blocks, intermediate_size 32, hidden 16
    family = candidates_for("transformer_student", {"folder": str(folder), "vocab_size": len(VOCAB)})
    sizes = {(p.get("layers"), p.get("ffn_width")) for _, p in family[1:]}
    assert sizes == {(1, 8), (1, 16), (1, 32), (2, 8), (2, 16), (2, 32)}
    hidden = candidates_for("transformer_student", {"folder": str(folder), "vocab_size": len(VOCAB), "hidden_size": 8})
    assert {p["hidden_size"] for _, p in hidden[1:]} == {4, 8, 16}  # halved, as given, doubled up to the folder's


def test_text_candidates_are_timed_and_sized_on_token_ids():
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) times the cpu target")
    sizes = []
    for dim in (8, 32):
        params = {"vocab_size": 50, "dim": dim}
        model = build_model("static_classifier", input_shape=(12,), num_classes=3, **params)
        tokens = candidate_tokens("static_classifier", params, (12,))
        assert (tokens.vocab_size, tokens.max_length) == (50, 12)
        latency, size = measure(model, (12,), "cpu", "fp32", repeats=5, tokens=tokens)
        weights = 4 * sum(p.numel() for p in model.parameters())
        assert latency > 0 and weights < size < weights + 8192  # the (50, dim) table dominates the file
        sizes.append(size)
    assert sizes[0] < sizes[1]
    with pytest.raises(FitError, match=r"field 'student.params.vocab_size'.*no vocab_size"):
        candidate_tokens("mine", {"dim": 8}, (12,))


def test_fit_sizes_a_token_cnn_within_a_byte_budget_and_exports_it_as_text(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) times the cpu target")
    budget = 15_000  # bytes of the deployed ONNX file
    tree = text_recipe(tmp_path, {"model": "token_cnn", "params": {"vocab_size": 16, "embed_dim": 16, "channels": 16}})
    result = fit(tree, max_bytes=budget, output_dir=tmp_path / "fit", rungs=1, eta=2, max_candidates=2,
                 progress=False, say=lambda _: None)
    record = json.loads((tmp_path / "fit" / "fit.json").read_text())
    candidates = record["candidates"]
    assert all(c["within_budget"] == (c["bytes"] <= budget) for c in candidates)
    assert any(not c["within_budget"] for c in candidates) and any(c["within_budget"] for c in candidates)
    assert [len(r["trained"]) for r in record["rungs"]] == [2]
    assert record["winner"]["within_budget_after_export"] and record["winner"]["bytes"] <= budget
    assert record["winner"]["accuracy"] > 0.7  # "cat" vs "dog" is easy
    card = json.loads((tmp_path / "fit" / "winner" / "export" / f"cpu-{result.winner.precision}" / "card.json").read_text())
    assert card["status"] == "verified" and card["artifact"]["bytes"] == record["winner"]["bytes"]
    assert [i["name"] for i in card["inputs"]] == ["input_ids", "attention_mask"]


def test_fit_sizes_a_layer_dropped_transformer_student_of_a_tiny_bert(tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra (onnx, onnxruntime) times the cpu target")
    import distill

    folder = tiny_folder(tmp_path)
    student = {"model": "transformer_student", "params": {"folder": str(folder), "vocab_size": len(VOCAB)}}
    teacher_model = build_model("transformer_student", input_shape=(8,), num_classes=2, folder=str(folder),
                                vocab_size=len(VOCAB))
    teacher_file = distill.save_model(teacher_model, tmp_path / "teacher.safetensors")
    tree = text_recipe(tmp_path, student, tokenizer=folder, epochs=1, teacher={"checkpoint": str(teacher_file)},
                       losses=[{"name": "cross_entropy", "weight": 0.5}, {"name": "kl", "weight": 0.5}])
    budget = 70_000  # fp32 ONNX: 1 block ~55-59 kB at any width, 2 blocks ~86-92 kB (int8 graphs are larger here)
    # no rungs: the largest candidate within budget is the winner (successive halving: the token_cnn test)
    result = fit(tree, max_bytes=budget, output_dir=tmp_path / "fit", rungs=0, max_candidates=1,
                 progress=False, say=lambda _: None)
    record = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert record["rungs"] == [] and result.winner.params["layers"] == 1 and result.winner.params["ffn_width"] == 32
    by_arch = {}
    for c in record["candidates"]:
        assert c["within_budget"] == (c["bytes"] <= budget)
        by_arch.setdefault((c["params"].get("layers"), c["params"].get("ffn_width")), []).append(c)
    assert any(c["within_budget"] for c in by_arch[(1, 32)]) and not any(c["within_budget"] for c in by_arch[(2, 8)])
    fp32 = {key: next(c["bytes"] for c in rows if c["precision"] == "fp32") for key, rows in by_arch.items()}
    assert fp32[(1, 8)] < fp32[(1, 16)] < fp32[(1, 32)] < fp32[(2, 32)]  # narrower and shallower: smaller files
    assert record["winner"]["bytes"] <= budget and record["winner"]["within_budget_after_export"]
    assert record["teacher"]["bytes"] > budget and record["teacher"]["latency_ms"] > 0  # timed on token ids too
    assert result.winner.params["folder"] == str(folder) and result.run.metrics["accuracy"] >= 0.5
