"""Chunked token losses: equal to the plain (B, L, V) computation in value and gradient, blind to
ignored positions, and never saving a tensor of all valid tokens x vocabulary for backward."""
from __future__ import annotations

import pytest
import torch

from distill.llm.losses import chunked_token_loss, shared_vocabulary
from distill.losses import LOGIT_LOSSES
from distill.tasks.token import shifted

B, L, H, V = 3, 11, 8, 37
LOSSES = ["kl", "reverse_kl", "jsd", "tvd", "skew_kl", "cross_entropy"]


def setup(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, L, H, generator=generator, dtype=torch.float64, requires_grad=True)
    head = torch.nn.Linear(H, V, dtype=torch.float64)
    teacher = torch.randn(B, L, V, generator=generator, dtype=torch.float64) * 2
    labels = torch.randint(0, V, (B, L), generator=generator)
    labels[0, :4] = -100  # a prompt
    labels[2, 7:] = -100  # padding
    return hidden, head, teacher, labels


def plain(loss_fn, hidden, head, teacher, labels, **params):
    logits, next_labels, valid = shifted(head(hidden), labels)
    return loss_fn(logits, teacher[:, :-1], next_labels, mask=valid, reduction="sum", **params)


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
def test_chunked_equals_plain_in_value_and_gradient(name, chunk_size):
    loss_fn = LOGIT_LOSSES.get(name)
    hidden, head, teacher, labels = setup()
    temperature = 1.0 if name == "cross_entropy" else 2.0
    expected = plain(loss_fn, hidden, head, teacher, labels, temperature=temperature)
    grads = torch.autograd.grad(expected, [hidden, head.weight])
    got = chunked_token_loss(loss_fn, hidden, head, labels, teacher_logits=teacher, temperature=temperature,
                             chunk_size=chunk_size)
    torch.testing.assert_close(got.double(), expected.double(), rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(torch.autograd.grad(got, [hidden, head.weight]), grads):
        torch.testing.assert_close(mine.double(), theirs, rtol=1e-4, atol=1e-6)


def test_teacher_hidden_states_and_head_equal_its_logits():
    hidden, head, _, labels = setup()
    teacher_hidden = torch.randn(B, L, 5, dtype=torch.float64)
    teacher_head = torch.nn.Linear(5, V, dtype=torch.float64)
    with torch.no_grad():
        logits = teacher_head(teacher_hidden)
    kl = LOGIT_LOSSES.get("kl")
    torch.testing.assert_close(
        chunked_token_loss(kl, hidden, head, labels, teacher_hidden=teacher_hidden, teacher_head=teacher_head, chunk_size=3),
        chunked_token_loss(kl, hidden, head, labels, teacher_logits=logits, chunk_size=7))


def test_ignored_positions_do_not_change_the_loss():
    hidden, head, teacher, labels = setup()
    kl = LOGIT_LOSSES.get("kl")
    before = chunked_token_loss(kl, hidden, head, labels, teacher_logits=teacher, chunk_size=5)
    changed_hidden, changed_teacher = hidden.detach().clone(), teacher.clone()
    changed_hidden[0, :3] += 5.0  # positions 0-2 predict ignored prompt labels 1-3
    changed_teacher[2, 6:] = -changed_teacher[2, 6:]  # position 6 on predicts padding
    changed_teacher[:, -1] = 0.0  # the last position predicts nothing
    after = chunked_token_loss(kl, changed_hidden, head, labels, teacher_logits=changed_teacher, chunk_size=5)
    torch.testing.assert_close(after, before.detach())


def test_no_tensor_of_every_valid_token_times_the_vocabulary_is_saved_for_backward():
    hidden, head, teacher, labels = setup()
    valid = int((labels[:, 1:] != -100).sum())
    sizes = []

    def pack(tensor):
        sizes.append(tensor.numel())
        return tensor

    kl = LOGIT_LOSSES.get("kl")
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        chunked_token_loss(kl, hidden, head, labels, teacher_logits=teacher, chunk_size=4).backward()
    assert max(sizes) < valid * V / 2  # the plain path saves (valid, V) logits and probabilities
    sizes.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        plain(kl, hidden, head, teacher, labels).backward()
    assert max(sizes) >= B * (L - 1) * V


def test_vocabularies_padded_apart_are_trimmed_and_other_tokenizers_refused():
    student, teacher = torch.randn(4, 32000), torch.randn(4, 32064)
    a, b = shared_vocabulary(student, teacher)
    assert a.shape == b.shape == (4, 32000) and torch.equal(b, teacher[:, :32000])
    with pytest.raises(ValueError, match="32,000 entries and the teacher's 50,257"):
        shared_vocabulary(student, torch.randn(4, 50257))
    with pytest.raises(ValueError, match="chunk_size"):
        chunked_token_loss(LOGIT_LOSSES.get("kl"), torch.randn(1, 3, 2), torch.nn.Linear(2, 5), torch.zeros(1, 3).long(),
                           teacher_logits=torch.randn(1, 3, 5), chunk_size=0)


@pytest.mark.parametrize("name", LOSSES)
def test_chunked_logits_equal_plain_in_value_and_gradient(name):
    """Logits (B, L, V) in contiguous chunks (views; invalid positions masked inside a chunk)."""
    loss_fn = LOGIT_LOSSES.get(name)
    hidden, head, teacher, labels = setup(1)
    temperature = 1.0 if name == "cross_entropy" else 2.0
    logits = head(hidden)
    expected = plain(loss_fn, hidden, head, teacher, labels, temperature=temperature)
    grads = torch.autograd.grad(expected, [hidden, head.weight])
    for chunk_size in (1, 5, 64):
        got = chunked_token_loss(loss_fn, logits, None, labels, teacher_logits=teacher, temperature=temperature,
                                 chunk_size=chunk_size)
        torch.testing.assert_close(got.double(), expected.double(), rtol=1e-5, atol=1e-6)
        for mine, theirs in zip(torch.autograd.grad(got, [hidden, head.weight], retain_graph=True), grads):
            torch.testing.assert_close(mine.double(), theirs, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["kl", "reverse_kl", "jsd", "tvd", "skew_kl", "cross_entropy", "mse", "dkd", "dist"])
def test_token_task_chunked_equals_all_at_once(name):
    from distill.distiller import LossTerm
    from distill.tasks.token import TokenTask

    hidden, head, teacher, labels = setup(2)
    logits = head(hidden).float()
    params = {"beta": 0.3} if name == "jsd" else {}
    term = LossTerm(name, temperature=1.0 if name == "cross_entropy" else 2.0, params=params)
    batch = {"input": {"input_ids": labels.clamp(min=0)}, "target": labels}
    whole = TokenTask(chunk_size=None).term_value(term, logits, teacher.float(), batch)
    chunked = TokenTask(chunk_size=4).term_value(term, logits, teacher.float(), batch)
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)
    assert repr(TokenTask(chunk_size=4)) == "TokenTask(chunk_size=4)"
    with pytest.raises(ValueError, match="chunk_size"):
        TokenTask(chunk_size=0)


def test_the_head_runs_once_per_chunk_and_frozen_parts_get_no_gradient():
    """The fused path computes each chunk's gradients in the forward pass: the head's matmul is never
    recomputed in backward (checkpointing would run it twice), and the gradients equal the plain ones."""
    hidden, head, teacher, labels = setup()
    calls = []
    head.register_forward_hook(lambda *_: calls.append(1))
    kl = LOGIT_LOSSES.get("kl")
    valid = int((labels[:, 1:] != -100).sum())
    got = chunked_token_loss(kl, hidden, head, labels, teacher_logits=teacher, chunk_size=4)
    got.backward()
    assert len(calls) == -(-valid // 4)
    mine = (hidden.grad.clone(), head.weight.grad.clone(), head.bias.grad.clone())
    hidden.grad = head.weight.grad = head.bias.grad = None
    plain(kl, hidden, head, teacher, labels).backward()
    for a, b in zip(mine, (hidden.grad, head.weight.grad, head.bias.grad)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)  # the chunks compute in fp32
    # a frozen head: only the hidden states get a gradient; frozen hidden states: only the head
    head.requires_grad_(False)
    hidden.grad = None
    chunked_token_loss(kl, hidden, head, labels, teacher_logits=teacher, chunk_size=4).backward()
    torch.testing.assert_close(hidden.grad, mine[0])
    head.requires_grad_(True)
    head.weight.grad = None
    chunked_token_loss(kl, hidden.detach(), head, labels, teacher_logits=teacher, chunk_size=4).backward()
    torch.testing.assert_close(head.weight.grad, mine[1])
