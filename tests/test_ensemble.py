"""Ensemble teachers: each combination rule against an independent formula, and refusals."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from distill.data.cache import weights_fingerprint
from distill.ensemble import EnsembleTeacher, combine_logits


def np_softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


@pytest.fixture
def logits() -> torch.Tensor:
    return torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(0)) * 3  # (members, batch, classes)


def test_mean_is_the_weighted_mixture_of_probabilities(logits):
    weights = np.array([1.0, 2.0, 5.0])
    combined = combine_logits(logits, torch.tensor(weights), "mean")
    expected = np.einsum("m,mbk->bk", weights / weights.sum(), np_softmax(logits.double().numpy()))
    np.testing.assert_allclose(torch.softmax(combined, -1).numpy(), expected, rtol=1e-5, atol=1e-7)
    # and they are log-probabilities: the mixture itself, not only up to a constant
    np.testing.assert_allclose(combined.exp().sum(-1).numpy(), 1.0, rtol=1e-5)


def test_logit_mean_is_the_weighted_mean_of_logits(logits):
    combined = combine_logits(logits, torch.tensor([1.0, 1.0, 2.0]), "logit_mean")
    expected = (logits[0] + logits[1] + 2 * logits[2]).numpy() / 4
    np.testing.assert_allclose(combined.numpy(), expected, rtol=1e-6, atol=1e-6)


def test_confident_takes_each_samples_most_certain_member():
    sure_of_0 = torch.tensor([[9.0, 0.0, 0.0], [0.1, 0.0, 0.0]])   # member 0: sure on sample 0 only
    sure_of_1 = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 9.0]])   # member 1: sure on sample 1
    combined = combine_logits(torch.stack([sure_of_0, sure_of_1]), combine="confident")
    torch.testing.assert_close(combined, torch.stack([sure_of_0[0], sure_of_1[1]]))
    tied = combine_logits(torch.stack([sure_of_0, sure_of_0 + 1.0]), combine="confident")  # same softmax
    torch.testing.assert_close(tied, sure_of_0)  # ties go to the first member


def test_equal_members_give_the_members_distribution(logits):
    same = logits[:1].expand(3, -1, -1)
    for rule in ("mean", "logit_mean", "confident"):
        torch.testing.assert_close(torch.softmax(combine_logits(same, combine=rule), -1), torch.softmax(logits[0], -1))


def test_ensemble_module_combines_its_members_and_fingerprints_its_rule():
    torch.manual_seed(0)
    members = [nn.Linear(4, 3), nn.Linear(4, 3)]
    inputs = torch.randn(6, 4)
    ensemble = EnsembleTeacher(members, weights=[1.0, 3.0], combine="mean")
    expected = combine_logits(torch.stack([m(inputs) for m in members]), torch.tensor([1.0, 3.0]), "mean")
    torch.testing.assert_close(ensemble(inputs), expected)
    fingerprints = {weights_fingerprint(ensemble), weights_fingerprint(EnsembleTeacher(members, combine="mean")),
                    weights_fingerprint(EnsembleTeacher(members, combine="confident"))}
    assert len(fingerprints) == 3  # another rule or other weights: another teacher for the cache


@pytest.mark.parametrize("kwargs, message", [
    ({"teachers": [nn.Linear(4, 3)]}, "at least 2 teachers"),
    ({"combine": "vote"}, "not one of"),
    ({"weights": [1.0]}, "1 weights for 2 teachers"),
    ({"weights": [1.0, 2.0], "combine": "confident"}, "uses no weights"),
])
def test_bad_ensembles_are_refused(kwargs, message):
    kwargs = {"teachers": [nn.Linear(4, 3), nn.Linear(4, 3)], **kwargs}
    with pytest.raises(ValueError, match=message):
        EnsembleTeacher(**kwargs)


def test_members_with_other_outputs_are_refused():
    with pytest.raises(ValueError, match="disagree on their output shape"):
        EnsembleTeacher([nn.Linear(4, 3), nn.Linear(4, 5)])(torch.randn(2, 4))
    with pytest.raises(ValueError, match="positive"):
        combine_logits(torch.randn(2, 3, 4), torch.tensor([1.0, -1.0]))
