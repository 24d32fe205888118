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


def test_a_term_warm_up_ramps_its_weight_linearly_over_the_first_steps():
    """warmup_steps=4: weight x 1/4, 2/4, 3/4 at steps 0-2, the full weight from step 3; the other terms
    keep theirs. A bad warm-up is refused when the term is made."""
    term = LossTerm("kl", 2.0, 4.0, warmup_steps=4)
    assert [term.weight_at(step) for step in (0, 1, 2, 3, 10)] == [0.5, 1.0, 1.5, 2.0, 2.0]
    assert LossTerm("kl", 2.0).weight_at(0) == 2.0
    student, teacher = models()
    data = batch()
    distiller = Distiller(student, teacher, [term, LossTerm("cross_entropy", 0.1)])
    for step, fraction in ((0, 0.25), (2, 0.75), (7, 1.0)):
        distiller.step = step
        out = distiller(data)
        torch.testing.assert_close(out["loss"], 2.0 * fraction * out["kl"] + 0.1 * out["cross_entropy"],
                                   rtol=1e-6, atol=1e-7)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="warmup_steps"):
            LossTerm("kl", warmup_steps=bad)


def test_the_training_loop_tells_the_distiller_its_step(tmp_path):
    """A run with a warm-up of 4 steps logs loss = (step / 4) x the term at optimiser steps 1-3 (the
    loop sets Distiller.step before each forward); a recipe's loss takes warmup_steps too."""
    import json

    from distill.recipe import load_recipe

    recipe = load_recipe({"student": {"model": "mlp"}, "teacher": {"model": "mlp"},
                          "losses": [{"name": "dkd", "warmup_steps": 40, "beta": 8.0}]})
    assert recipe.losses[0].warmup_steps == 40 and recipe.losses[0].params == {"beta": 8.0}
    from distill.runner import run_recipe

    run_recipe(load_recipe({"student": {"model": "mlp", "params": {"hidden": [16]}}, "data": {"name": "digits", "batch_size": 16},
                            "losses": [{"name": "cross_entropy", "warmup_steps": 4}], "output_dir": str(tmp_path / "run"),
                            "train": {"steps": 3, "log_every": 1, "mixed_precision": "no"}}),
               progress=False, measure_latency=False)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    rows = [row for row in rows if row.get("split") == "train"]
    assert [row["step"] for row in rows] == [1, 2, 3]
    for row in rows:
        assert row["loss"] == pytest.approx(row["step"] / 4 * row["cross_entropy"], rel=1e-5)


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


# ----------------------------------------------------------------------------- features + self-distillation
def mlps(seed: int = 0) -> tuple[nn.Module, nn.Module]:
    from distill.models import build_model

    torch.manual_seed(seed)
    student = build_model("mlp", input_shape=(12,), num_classes=5, hidden=[8, 6])
    teacher = build_model("mlp", input_shape=(12,), num_classes=5, hidden=[16, 10])
    return student, teacher


def both_parts(student, teacher, sample):
    from distill.intermediate import FeatureDistillation, FeatureTerm
    from distill.self_distill import SelfDistillation

    features = FeatureDistillation(student, teacher, [FeatureTerm("hint", weight=0.5),
                                                      FeatureTerm("similarity_preserving", weight=2.0)], sample, 5)
    self_distill = SelfDistillation(student, "auto", sample, 5, weight=0.8, temperature=2.0, label_weight=0.4)
    return features, self_distill


def test_features_and_self_distillation_together_total_the_weighted_sum_of_every_term():
    import torch.nn.functional as F

    from distill.intermediate import StudentWithHeads

    student, teacher = mlps()
    generator = torch.Generator().manual_seed(3)
    inputs, target = torch.randn(8, 12, generator=generator), torch.randint(0, 5, (8,), generator=generator)
    features, self_distill = both_parts(student, teacher, inputs[:4])
    terms = [LossTerm("kl", 0.7, 4.0), LossTerm("cross_entropy", 0.1)]
    distiller = Distiller(student, teacher, terms, features=features, self_distill=self_distill)
    heads = distiller.heads
    # one wrapper around the student holds every head, behind one set of taps; it is what trains
    assert isinstance(heads, StudentWithHeads) and distiller.student is heads
    assert features.module is heads and self_distill.module is heads and heads.student is student
    assert set(heads.taps.named_paths.values()) == {"layers.0", "layers.1"} and len(heads.taps.named_paths) == 5
    out = distiller({"input": inputs, "target": target})
    assert set(out) == {"loss", "kl", "cross_entropy", "feature/hint", "feature/similarity_preserving", "self/kl", "self/ce"}

    with torch.no_grad():  # every term again, from the models and heads by hand
        s0 = student.layers[0](inputs)
        s1 = student.layers[1](s0)
        logits = student.head(s1)
        t0 = teacher.layers[0](inputs)
        t1 = teacher.layers[1](t0)
        teacher_logits = teacher.head(t1)
        projectors = heads.projectors["student"]
        names = list(features.pairs)  # hint: layers.0, layers.1; similarity_preserving: layers.0, layers.1
        hint = torch.stack([F.mse_loss(projectors[names[0]](s0), t0), F.mse_loss(projectors[names[1]](s1), t1)]).mean()

        def gram(x):
            g = x.flatten(1) @ x.flatten(1).T
            return F.normalize(g, dim=1)

        sp = torch.stack([(gram(s) - gram(t)).square().sum() / len(inputs) ** 2 for s, t in ((s0, t0), (s1, t1))]).mean()
        exit_logits = heads.exits["exit0"](s0)
        p = F.softmax(logits / 2.0, -1)
        self_kl = 4.0 * (p * (p.log() - F.log_softmax(exit_logits / 2.0, -1))).sum(-1).mean()
        self_ce = F.cross_entropy(exit_logits, target)
        p_teacher = F.softmax(teacher_logits / 4.0, -1)
        logit_kl = 16.0 * (p_teacher * (p_teacher.log() - F.log_softmax(logits / 4.0, -1))).sum(-1).mean()
        ce = F.cross_entropy(logits, target)
    expected = {"kl": logit_kl, "cross_entropy": ce, "feature/hint": hint, "feature/similarity_preserving": sp,
                "self/kl": self_kl, "self/ce": self_ce}
    for key, value in expected.items():
        torch.testing.assert_close(out[key], value, rtol=1e-5, atol=1e-6, msg=key)
        assert not out[key].requires_grad
    weights = {"kl": 0.7, "cross_entropy": 0.1, "feature/hint": 0.5, "feature/similarity_preserving": 2.0,
               "self/kl": 0.8, "self/ce": 0.4}
    torch.testing.assert_close(out["loss"], sum(weights[key] * expected[key] for key in weights), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["loss"], sum(weights[key] * out[key] for key in weights), rtol=1e-6, atol=1e-7)

    out["loss"].backward()  # the student, its feature projectors and its exits learn; the teacher does not
    for name, param in heads.named_parameters():
        if not name.startswith("student.head."):  # the final classifier: from the logit terms
            assert param.grad is not None and param.grad.abs().sum() > 0, name
    assert all(param.grad is None for param in teacher.parameters())
    distiller.remove_hooks()
    assert not any(module._forward_hooks or module._forward_pre_hooks for module in [*student.modules(), *teacher.modules()])


def test_each_part_alone_gives_the_same_numbers_as_before_joining():
    from distill.intermediate import FeatureDistillation, FeatureTerm
    from distill.self_distill import SelfDistillation, StudentWithExits

    student, teacher = mlps()
    data = {"input": torch.randn(6, 12, generator=torch.Generator().manual_seed(4)), "target": torch.arange(6) % 5}
    features = FeatureDistillation(student, teacher, [FeatureTerm("hint")], data["input"][:2], 5)
    alone = Distiller(features.module, teacher, [LossTerm("kl")], features=features)
    assert alone.heads is features.module and alone.student is features.module  # nothing rebuilt
    assert not list(features.module.exits.parameters())
    first = alone(data)
    alone.remove_hooks()
    self_distill = SelfDistillation(student, "auto", data["input"][:2], 5)
    assert isinstance(self_distill.module, StudentWithExits)
    assert {key.split(".")[0] for key in self_distill.module.state_dict()} == {"student", "exits"}
    second = Distiller(self_distill.module, None, [LossTerm("cross_entropy")], self_distill=self_distill)(data)
    assert set(first) == {"loss", "kl", "feature/hint"} and set(second) == {"loss", "cross_entropy", "self/kl", "self/ce"}
    torch.testing.assert_close(second["loss"], second["cross_entropy"] + second["self/kl"] + 0.3 * second["self/ce"])
    self_distill.remove()


class DictMLP(nn.Module):
    """A Hugging Face style model: keyword inputs, a mapping with 'logits' out."""

    def __init__(self, hidden: list[int]) -> None:
        super().__init__()
        widths = [12, *hidden]
        self.layers = nn.ModuleList(nn.Sequential(nn.Linear(a, b), nn.ReLU()) for a, b in zip(widths[:-1], widths[1:]))
        self.head = nn.Linear(widths[-1], 5)

    def forward(self, pixel_values: torch.Tensor, scale: torch.Tensor) -> dict[str, torch.Tensor]:
        x = pixel_values.flatten(1) * scale[:, None]
        for layer in self.layers:
            x = layer(x)
        return {"logits": self.head(x)}


def test_the_wrapper_passes_dict_inputs_through():
    from distill.evaluation import predict

    torch.manual_seed(0)
    student, teacher = DictMLP([8, 6]), DictMLP([16, 10])
    inputs = {"pixel_values": torch.randn(8, 1, 12), "scale": torch.rand(8) + 0.5}
    target = torch.randint(0, 5, (8,))
    features, self_distill = both_parts(student, teacher, {key: value[:4] for key, value in inputs.items()})
    distiller = Distiller(student, teacher, [LossTerm("kl", 1.0, 2.0)], features=features, self_distill=self_distill)
    try:
        out = distiller({"input": inputs, "target": target})
        assert {"feature/hint", "self/kl", "self/ce"} <= set(out) and torch.isfinite(out["loss"])
        # the wrapper stands in for the student wherever a model is called (keyword inputs)
        torch.testing.assert_close(predict(distiller.heads, inputs), student(**inputs)["logits"])
        accuracy = self_distill.exit_accuracy(inputs, target, batch_size=3)
        assert set(accuracy) == {"layers.0", "final"}
        assert distiller.heads.taps.attached  # exit_accuracy leaves the taps as it found them
    finally:
        distiller.remove_hooks()
    assert not distiller.heads.taps.attached and not features.teacher_taps.attached
    assert self_distill.exit_accuracy(inputs, target)["final"] == pytest.approx(
        float((student(**inputs)["logits"].argmax(-1) == target).float().mean()))
    assert not distiller.heads.taps.attached
