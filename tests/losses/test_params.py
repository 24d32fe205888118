"""Loss parameters: a typo in a term's ``params`` is refused when the term is made (not as a
TypeError at the first training step), naming the closest valid parameter and listing them."""
from __future__ import annotations

import inspect

import pytest
import torch

from distill.distiller import LOSSES, LossTerm
from distill.intermediate import FeatureTerm
from distill.losses import (FEATURE_LOSSES, LOGIT_LOSSES, check_feature_loss_params, check_loss_params,
                            loss_parameters)


def test_a_typo_names_the_closest_parameter_and_the_valid_ones():
    with pytest.raises(ValueError) as info:
        check_loss_params("jsd", {"bta": 0.3})
    assert str(info.value) == ("loss 'jsd' has no parameter 'bta' (did you mean 'beta'?); valid parameters: "
                               "reduction, beta (and temperature, set on the term itself)")
    with pytest.raises(ValueError, match=r"loss 'kl' has no parameter 'temprature' \(did you mean 'temperature'\?\)"):
        check_loss_params("kl", {"temprature": 2.0})
    with pytest.raises(ValueError, match=r"'alpa' \(did you mean 'alpha'\?\), 'gama'"):
        check_loss_params("dkd", {"alpa": 1.0, "gama": 2.0})
    with pytest.raises(ValueError, match=r"feature loss 'crd' has no parameter 'nce_T' \(did you mean 'nce_t'\?\); "
                                         r"valid parameters: reduction, nce_t$"):
        check_feature_loss_params("crd", {"nce_T": 0.1})


def test_what_the_term_supplies_is_not_a_parameter():
    with pytest.raises(ValueError, match="'temperature' is set on the term itself"):
        check_loss_params("kl", {"temperature": 2.0})
    with pytest.raises(ValueError, match="'mask' is a per-batch tensor"):
        check_loss_params("kl", {"mask": [1, 0]})
    check_feature_loss_params("ofa", {"temperature": 2.0})  # a feature term passes no temperature: ofa's own


@pytest.mark.parametrize("kind,table", [("loss", LOGIT_LOSSES), ("feature loss", FEATURE_LOSSES)])
def test_every_registered_loss_accepts_exactly_its_keyword_parameters(kind, table):
    for name, fn in table.items():
        settable, required, takes_any = loss_parameters(name, kind=kind)
        keywords = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
        expected = [key for key in keywords if key != "mask" and not (kind == "loss" and key == "temperature")]
        assert settable == expected and required == [] and not takes_any, name
        defaults = {key: inspect.signature(fn).parameters[key].default for key in settable}
        check_loss_params(name, defaults, kind=kind)  # every valid key passes


def test_a_valid_set_is_what_the_call_accepts():
    # the distiller's call with every accepted key runs; one more key is what the check refuses
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    target = torch.randint(0, 5, (4,))
    for name in LOGIT_LOSSES:
        settable, _, _ = loss_parameters(name)
        params = {key: inspect.signature(LOGIT_LOSSES[name]).parameters[key].default for key in settable}
        LossTerm(name, 1.0, 1.0, params).fn(student, teacher, target, temperature=1.0, **params)
        with pytest.raises(TypeError):
            LOGIT_LOSSES[name](student, teacher, target, temperature=1.0, **params, not_a_parameter=1)


def test_unknown_names_and_kinds():
    with pytest.raises(ValueError, match=r"unknown loss 'klx' \(did you mean 'kl'\?\)"):
        check_loss_params("klx", {})
    with pytest.raises(ValueError, match=r"unknown feature loss 'hnt' \(did you mean 'hint'\?\)"):
        check_feature_loss_params("hnt", {})
    with pytest.raises(ValueError, match="kind must be one of"):
        check_loss_params("kl", {}, kind="logits")
    with pytest.raises(ValueError, match="params must be a mapping"):
        check_loss_params("kl", ["beta"])


def user_loss(student_logits, teacher_logits=None, target=None, *, temperature=1.0, margin):
    """A user's loss with a required parameter, reached as 'module:user_loss'."""
    return (student_logits - teacher_logits).abs().mean() * margin / temperature


def loss_without_temperature(student_logits, teacher_logits=None, target=None):
    return (student_logits - teacher_logits).pow(2).mean()


def test_user_losses_by_import_path():
    name = f"{__name__}:user_loss"
    check_loss_params(name, {"margin": 2.0})
    with pytest.raises(ValueError, match=r"has no parameter 'margn' \(did you mean 'margin'\?\)"):
        check_loss_params(name, {"margn": 2.0})
    with pytest.raises(ValueError, match="needs parameter 'margin'"):
        check_loss_params(name, {})
    with pytest.raises(ValueError, match="does not take the keyword 'temperature', which the term passes"):
        check_loss_params(f"{__name__}:loss_without_temperature", {})


def test_terms_are_checked_when_made():
    # before: LossTerm / FeatureTerm accepted any params and the first step raised a TypeError
    with pytest.raises(ValueError, match=r"loss 'jsd' has no parameter 'bta' \(did you mean 'beta'\?\)"):
        LossTerm("jsd", 1.0, 2.0, {"bta": 0.3})
    with pytest.raises(ValueError, match="'temperature' is set on the term itself"):
        LossTerm("kl", params={"temperature": 4.0})
    with pytest.raises(ValueError, match=r"feature loss 'attention_transfer' has no parameter 'P' \(did you mean 'p'"):
        FeatureTerm("attention_transfer", params={"P": 2.0})
    assert LossTerm("jsd", 1.0, 2.0, {"beta": 0.3}).params == {"beta": 0.3}
    assert FeatureTerm("attention_transfer", params={"p": 2.0}).params == {"p": 2.0}


def test_a_loss_registered_elsewhere_is_checked_against_its_own_signature():
    def margin_loss(student_logits, teacher_logits=None, target=None, *, temperature=1.0, margin=1.0):
        return (student_logits - teacher_logits).clamp(min=-margin, max=margin).abs().mean()

    LOSSES.register("test_margin_loss", margin_loss)
    try:
        assert LossTerm("test_margin_loss", params={"margin": 0.5}).params == {"margin": 0.5}
        with pytest.raises(ValueError, match=r"'margn' \(did you mean 'margin'\?\)"):
            LossTerm("test_margin_loss", params={"margn": 0.5})
    finally:
        LOSSES._entries.pop("test_margin_loss")
