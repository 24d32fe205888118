"""Students over token ids: the BiGRU ignores padding, every text student round-trips through
save_model / load_model by its registered name, the static classifier starts from a distilled table,
teacher token tables load, and a tiny BERT classifier distils into token_gru through distill.distil."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_hf_classifier import toy_data  # noqa: E402
from tiny_text import tiny_folder  # noqa: E402

import distill  # noqa: E402
from distill.models import build_model  # noqa: E402
from distill.models.hf import SentenceEncoder  # noqa: E402
from distill.models.hf_classifier import SentenceClassifier, predict_logits  # noqa: E402
from distill.models.static import distill_static  # noqa: E402
from distill.models.text import StaticClassifier, TokenGRU, load_token_table, teacher_token_table  # noqa: E402


def batch_with_padding(vocab_size: int = 50):
    torch.manual_seed(0)
    ids = torch.randint(1, vocab_size, (4, 9))
    mask = torch.ones_like(ids)
    ids[1, 5:], mask[1, 5:] = 0, 0
    ids[3, 1:], mask[3, 1:] = 0, 0
    return ids, mask


@pytest.mark.parametrize("name, params", [("token_gru", {"embed_dim": 8, "hidden": 6}),
                                          ("token_gru", {"embed_dim": 8, "hidden": 6, "layers": 2}),
                                          ("token_cnn", {"embed_dim": 8, "channels": 6}),
                                          ("static_classifier", {"dim": 8, "ignore_ids": [0]})])
def test_outputs_ignore_extra_padding_and_every_parameter_learns(name, params):
    model = build_model(name, input_shape=(16,), num_classes=3, vocab_size=50, **params).eval()
    ids, mask = batch_with_padding()
    logits = model(input_ids=ids, attention_mask=mask)
    assert logits.shape == (4, 3)
    padded = model(input_ids=torch.nn.functional.pad(ids, (0, 5)), attention_mask=torch.nn.functional.pad(mask, (0, 5)))
    torch.testing.assert_close(padded, logits, atol=1e-6, rtol=1e-6)  # padding never enters the result
    model.train()
    torch.nn.functional.cross_entropy(model(input_ids=ids, attention_mask=mask), torch.tensor([0, 1, 2, 0])).backward()
    without = [n for n, p in model.named_parameters() if p.requires_grad and (p.grad is None or not p.grad.abs().sum())]
    assert without == []


def test_the_gru_reads_only_valid_tokens_and_refuses_foreign_ids():
    model = TokenGRU((16,), 2, vocab_size=20, embed_dim=4, hidden=3).eval()
    ids, mask = torch.tensor([[5, 6, 7, 0, 0]]), torch.tensor([[1, 1, 1, 0, 0]])
    torch.testing.assert_close(model(ids, mask), model(ids[:, :3]))  # no mask = every token valid
    different_padding = torch.tensor([[5, 6, 7, 9, 9]])  # what sits under a zero mask is never read
    torch.testing.assert_close(model(different_padding, mask), model(ids, mask))
    with pytest.raises(ValueError, match="vocab_size 20"):
        model(torch.tensor([[25, 1]]))


@pytest.mark.parametrize("name, params", [("token_gru", {"embed_dim": 8, "hidden": 6}),
                                          ("static_classifier", {"dim": 8, "ignore_ids": [0, 1]})])
def test_save_model_and_load_model_rebuild_the_student_by_name(tmp_path, name, params):
    model = build_model(name, input_shape=(16,), num_classes=3, vocab_size=50, **params).eval()
    path = distill.save_model(model, tmp_path / "student.safetensors")
    loaded = distill.load_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    ids, mask = batch_with_padding()
    torch.testing.assert_close(loaded(input_ids=ids, attention_mask=mask), model(input_ids=ids, attention_mask=mask))


def test_the_static_classifier_starts_from_a_distilled_table_and_a_teacher_table_loads(tmp_path):
    encoder, tokenizer = SentenceEncoder.from_folder(tiny_folder(tmp_path))
    static = distill_static(encoder, tokenizer, dim=6, progress=False)
    classifier = StaticClassifier.from_static(static, 2)
    batch = tokenizer(["the cat sat", "a dog"], padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    weights = static.token_weights[ids] * mask  # (B, L): special tokens and padding weigh 0
    by_hand = (static.embed.weight[ids] * weights[..., None]).sum(1) / weights.sum(1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(classifier.static(ids, mask), by_hand)
    assert classifier(**batch).shape == (2, 2)
    table = teacher_token_table(encoder, tokenizer, 5)
    assert table.shape == (len(tokenizer), 5) and torch.isclose(table.norm(dim=1).mean(), torch.tensor(1.0))
    gru = load_token_table(TokenGRU((16,), 2, vocab_size=len(tokenizer), embed_dim=5, hidden=3), table)
    torch.testing.assert_close(gru.embed.weight, table)
    with pytest.raises(ValueError, match="embedding is \\(13, 4\\)"):
        load_token_table(TokenGRU((16,), 2, vocab_size=len(tokenizer), embed_dim=4, hidden=3), table)


def test_a_tiny_bert_classifier_distils_into_token_gru(tmp_path):
    encoder, tokenizer = SentenceEncoder.from_folder(tiny_folder(tmp_path))
    torch.manual_seed(0)
    teacher = SentenceClassifier(encoder, 2)
    train, test = toy_data(tokenizer), toy_data(tokenizer, 64, seed=1)
    distill.distil(None, teacher, train, epochs=6, lr=3e-3, batch_size=32, output_dir=tmp_path / "teacher",
                   progress=False, measure_latency=False)
    teacher_accuracy = float(predict_logits(teacher, test).argmax(1).eq(test.targets).float().mean())
    assert teacher_accuracy >= 0.9
    torch.manual_seed(0)
    student = TokenGRU((8,), 2, vocab_size=len(tokenizer), embed_dim=8, hidden=8)
    untrained = float(predict_logits(student, test).argmax(1).eq(test.targets).float().mean())
    result = distill.distil(teacher, student, train, eval=test, epochs=8, lr=1e-2, batch_size=32,
                            losses=[{"name": "kl", "temperature": 2.0}], output_dir=tmp_path / "student",
                            progress=False, measure_latency=False)
    assert result.metrics["agreement"] >= 0.85 and result.metrics["accuracy"] >= max(0.8, untrained + 0.2)
