"""The Distiller: a managed (frozen, eval-mode) teacher, gradients to the student only, and a
total objective that is exactly the weighted sum of its terms."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.distiller import Distiller, LossTerm
from distill.losses import cross_entropy, jsd, kl


def models(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    student = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 5))
    teacher = nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Dropout(0.5), nn.Linear(16, 5))
    return student, teacher


def batch(size: int = 6, seed: int = 1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {
        "input": torch.randn(size, 1, 3, 4, generator=generator),
        "target": torch.randint(0, 5, (size,), generator=generator),
        "index": torch.arange(size),
    }


TERMS = [LossTerm("kl", 0.7, 4.0), LossTerm("jsd", 0.2, 2.0, {"beta": 0.3}), LossTerm("cross_entropy", 0.1)]


def test_teacher_is_put_in_eval_mode_and_frozen():
    student, teacher = models()
    teacher.train()
    distiller = Distiller(student, teacher, TERMS)
    assert distiller.teacher is teacher and not teacher.training
    assert all(not p.requires_grad for p in teacher.parameters())
    assert all(p.requires_grad for p in student.parameters())
    # someone calls .train() on it later: its forward still runs without dropout
    teacher.train()
    inputs = batch()["input"]
    first, second = distiller.teacher_logits(inputs), distiller.teacher_logits(inputs)
    assert torch.equal(first, second) and not teacher.training
    assert not first.requires_grad and not first.is_inference()


def test_gradients_reach_every_student_parameter_and_no_teacher_parameter():
    student, teacher = models()
    distiller = Distiller(student, teacher, TERMS)
    out = distiller(batch())
    out["loss"].backward()
    for name, param in student.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    for name, param in teacher.named_parameters():
        assert param.grad is None, name


def test_total_is_the_weighted_sum_of_independently_computed_terms():
    student, teacher = models()
    data = batch()
    out = Distiller(student, teacher, TERMS)(data)
    assert set(out) == {"loss", "kl", "jsd", "cross_entropy"}
    with torch.no_grad():
        student_logits = student(data["input"])
        teacher_logits = teacher.eval()(data["input"])
    expected = {
        "kl": kl(student_logits, teacher_logits, temperature=4.0),
        "jsd": jsd(student_logits, teacher_logits, temperature=2.0, beta=0.3),
        "cross_entropy": cross_entropy(student_logits, None, data["target"]),
    }
    for name, value in expected.items():
        torch.testing.assert_close(out[name], value, rtol=1e-6, atol=1e-7)
        assert not out[name].requires_grad  # parts are reported detached
    total = 0.7 * expected["kl"] + 0.2 * expected["jsd"] + 0.1 * expected["cross_entropy"]
    torch.testing.assert_close(out["loss"], total, rtol=1e-6, atol=1e-7)
    assert out["loss"].requires_grad and out["loss"].dtype == torch.float32


def test_precomputed_teacher_outputs_give_the_live_teacher_loss():
    student, teacher = models()
    data = batch(6)
    dataset_inputs = torch.randn(10, 1, 3, 4, generator=torch.Generator().manual_seed(5))
    # the batch holds samples 7, 2, 9, 0, 4, 4 of the data set (ids in batch["index"])
    ids = torch.tensor([7, 2, 9, 0, 4, 4])
    data = {"input": dataset_inputs[ids], "target": data["target"], "index": ids}
    with torch.no_grad():
        cache = teacher.eval()(dataset_inputs)
    live = Distiller(student, teacher, TERMS)(data)
    cached = Distiller(student, None, TERMS, teacher_outputs=cache)(data)
    for key in live:
        torch.testing.assert_close(cached[key], live[key], rtol=1e-6, atol=1e-7)
    # a cache used with the wrong ids gives a different loss: the lookup is by sample id
    shuffled = {**data, "index": ids.flip(0)}
    assert not torch.allclose(Distiller(student, None, TERMS, teacher_outputs=cache)(shuffled)["kl"], live["kl"])


def test_student_only_training_needs_no_teacher():
    student, _ = models()
    distiller = Distiller(student, None, [LossTerm("cross_entropy")])
    assert not distiller.needs_teacher
    out = distiller(batch())
    torch.testing.assert_close(out["loss"], out["cross_entropy"])


def test_teacher_terms_without_teacher_are_refused():
    student, _ = models()
    with pytest.raises(ValueError, match=r"\['kl'\] need a teacher"):
        Distiller(student, None, [LossTerm("kl"), LossTerm("cross_entropy")])


def test_no_terms_and_duplicate_terms_are_refused():
    student, teacher = models()
    with pytest.raises(ValueError, match="at least one"):
        Distiller(student, teacher, [])
    with pytest.raises(ValueError, match="once"):
        Distiller(student, teacher, [LossTerm("kl"), LossTerm("kl", 0.5)])


def test_unknown_loss_name():
    from distill.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean 'kl'"):
        LossTerm("kll")


def test_a_params_typo_is_refused_when_the_term_is_made_not_at_the_first_step():
    # before: LossTerm("jsd", params={"bta": ...}) was accepted and Distiller(...)(batch) raised
    # "TypeError: jsd() got an unexpected keyword argument 'bta'"
    with pytest.raises(ValueError, match=r"loss 'jsd' has no parameter 'bta' \(did you mean 'beta'\?\); valid "
                                         r"parameters: reduction, beta"):
        LossTerm("jsd", 0.2, 2.0, {"bta": 0.3})
    with pytest.raises(ValueError, match="'temperature' is set on the term itself"):
        LossTerm("kl", params={"temperature": 4.0})


@pytest.mark.parametrize("kwargs,expected", [
    (dict(temperature=0.0), "temperature is 0.0; it must be a finite number > 0"),
    (dict(temperature=float("inf")), "temperature is inf"),
    (dict(weight=float("nan")), "weight is nan; it must be a finite number"),
    (dict(params={"reduction": "none"}), "reduction 'none' returns one value per sample"),
])
def test_term_values_the_distiller_cannot_use_are_refused_when_made(kwargs, expected):
    with pytest.raises(ValueError, match=rf"^loss 'kl': {expected}"):
        LossTerm("kl", **kwargs)
    assert LossTerm("kl", params={"reduction": "sum"}).params == {"reduction": "sum"}
