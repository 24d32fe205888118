"""Tasks on the one loop: token-level losses normalised by the global count of valid tokens
(accumulation gives one big batch's step), sentence embeddings, and their metrics."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import distill
from distill.tasks import build_task
from distill.tasks.token import IGNORE_INDEX, token_labels

transformers = pytest.importorskip("transformers", reason="the task tests build tiny Hugging Face models (dev extra)")


class Sentences(torch.utils.data.Dataset):
    """Token-id sequences of varying length (padding 0, attention_mask), as a tokenizer gives them."""

    def __init__(self, count: int, seed: int, length: int = 12, vocab: int = 50):
        generator = torch.Generator().manual_seed(seed)
        start = torch.randint(1, vocab, (count, 1), generator=generator)
        steps = torch.randint(1, 4, (count, length), generator=generator)
        self.ids = (start + steps.cumsum(1)) % (vocab - 1) + 1  # a learnable pattern
        lengths = torch.randint(3, length + 1, (count,), generator=generator)
        self.mask = (torch.arange(length)[None] < lengths[:, None]).long()
        self.ids = self.ids * self.mask

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, index):
        return {"input_ids": self.ids[index], "attention_mask": self.mask[index]}


def gpt(layers: int, width: int = 32, seed: int = 0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=50, n_positions=16, n_embd=width, n_layer=layers, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return transformers.GPT2LMHeadModel(config)


def test_token_labels_mask_padding_and_keep_given_labels():
    ids = torch.tensor([[5, 6, 7, 0], [8, 9, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    labels = token_labels({"input": {"input_ids": ids, "attention_mask": mask}})
    assert labels.tolist() == [[5, 6, 7, IGNORE_INDEX], [8, 9, IGNORE_INDEX, IGNORE_INDEX]]
    given = torch.tensor([[IGNORE_INDEX, 6, 7, 1]])  # a prompt masked out by its labels
    assert token_labels({"input": {"input_ids": ids[:1]}, "target": given}) is given
    assert build_task("token").count({"input": {"input_ids": ids, "attention_mask": mask}}) == 3  # 2 + 1 next tokens


def test_masking_invariance_padding_tokens_do_not_change_the_loss():
    from distill.distiller import LossTerm

    task = build_task("token")
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 5, 7), torch.randn(2, 5, 7)
    ids = torch.tensor([[1, 2, 3, 0, 0], [4, 5, 6, 1, 0]])
    mask = (ids != 0).long()
    batch = {"input": {"input_ids": ids, "attention_mask": mask}}
    term = LossTerm("kl", temperature=2.0)
    value = task.term_value(term, student, teacher, batch)
    scrambled_s, scrambled_t = student.clone(), teacher.clone()
    scrambled_s[0, 3:], scrambled_t[1, 4:] = 99.0, -99.0  # logits at padded positions predict nothing
    assert torch.allclose(value, task.term_value(term, scrambled_s, scrambled_t, batch))
    # equals the per-token mean of the core kl over the valid (shifted) positions
    valid = torch.tensor([[True, True, False, False], [True, True, True, False]])
    expected = distill.losses.kl(student[:, :-1][valid], teacher[:, :-1][valid], temperature=2.0)
    torch.testing.assert_close(value, expected)


def run_token(tmp_path, name, *, batch_size, grad_accum, steps=1):
    teacher, student = gpt(2, seed=1), gpt(1, seed=2)
    result = distill.distil(teacher, student, Sentences(64, seed=3), task="token", steps=steps,
                            batch_size=batch_size, grad_accum=grad_accum, optimizer={"name": "sgd", "lr": 0.5,
                                                                                     "momentum": 0.0},
                            schedule="constant", output_dir=tmp_path / name, progress=False, measure_latency=False)
    return result.model.state_dict()


def test_gradient_accumulation_gives_the_big_batch_step(tmp_path):
    """8 sequences of different lengths in one batch, or as 2 x 4 accumulated: the same SGD step, because
    the token losses divide by the step's global count of valid tokens (not each micro-batch's)."""
    one = run_token(tmp_path, "one", batch_size=8, grad_accum=1)
    two = run_token(tmp_path, "two", batch_size=4, grad_accum=2)
    moved = max(float((one[k] - gpt(1, seed=2).state_dict()[k]).abs().max()) for k in one if one[k].is_floating_point())
    assert moved > 1e-3  # the step did something
    for key, tensor in one.items():
        torch.testing.assert_close(two[key], tensor, rtol=1e-4, atol=1e-6)


def test_token_distillation_brings_the_student_to_the_teacher(tmp_path):
    teacher = gpt(2, seed=1)
    data = Sentences(256, seed=3)
    distill.distil(None, teacher, data, task="token", epochs=4, lr=3e-3, batch_size=32,
                   output_dir=tmp_path / "teacher", progress=False, measure_latency=False)  # a trained teacher
    held_out = Sentences(64, seed=4)
    student = gpt(1, seed=2)
    before = distill.distil(teacher, gpt(1, seed=2), data, eval=held_out, task="token", steps=1, lr=1e-9,
                            output_dir=tmp_path / "before", progress=False, measure_latency=False).metrics
    after = distill.distil(teacher, student, data, eval=held_out, task="token", epochs=6, lr=3e-3, batch_size=32,
                           output_dir=tmp_path / "after", progress=False, measure_latency=False).metrics
    assert after["kl_to_teacher"] < 0.5 * before["kl_to_teacher"]
    assert after["agreement"] > before["agreement"] + 0.2
    assert after["perplexity"] < before["perplexity"]


def test_embedding_task_mean_pools_and_brings_cosine_up(tmp_path):
    def bert(layers, seed):
        torch.manual_seed(seed)
        config = transformers.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=layers, num_attention_heads=2,
                                         intermediate_size=64, max_position_embeddings=16, hidden_dropout_prob=0.0,
                                         attention_probs_dropout_prob=0.0)
        return transformers.BertModel(config, add_pooling_layer=False)

    teacher, student = bert(2, seed=1), bert(1, seed=2)
    data, held_out = Sentences(256, seed=3), Sentences(64, seed=4)
    before = distill.distil(teacher, bert(1, seed=2), data, eval=held_out, task="embedding", steps=1, lr=1e-9,
                            output_dir=tmp_path / "before", progress=False, measure_latency=False).metrics
    after = distill.distil(teacher, student, data, eval=held_out, task="embedding", epochs=5, lr=3e-3, batch_size=32,
                           output_dir=tmp_path / "after", progress=False, measure_latency=False).metrics
    assert after["cosine_to_teacher"] > max(0.9, before["cosine_to_teacher"] + 0.1)


def test_mean_pool_matches_sentence_transformers_formula():
    from distill.tasks.embedding import mean_pool

    hidden = torch.arange(24, dtype=torch.float32).view(2, 3, 4)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    expected = torch.stack([hidden[0, :2].mean(0), hidden[1, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), expected)


def test_token_task_refuses_a_vocabulary_mismatch():
    task = build_task("token")
    with pytest.raises(ValueError, match="vocabulary has 50 entries and the student's 40"):
        task.check_pair(torch.zeros(1, 4, 40), torch.zeros(1, 4, 50))
