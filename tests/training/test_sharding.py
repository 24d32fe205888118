"""FSDP helpers that need no process group: optimiser state by index <-> by name; refusals."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distill.recipe import RecipeError, load_recipe
from distill.training.sharding import is_sharded, optimizer_state_for


def trained_adam():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    optimizer = torch.optim.Adam([{"params": [model[0].weight, model[2].weight]},
                                  {"params": [model[0].bias, model[2].bias], "weight_decay": 0.0}], lr=0.1)
    model(torch.randn(5, 3)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_optimizer_state_converts_between_indices_and_names_and_back():
    model, optimizer = trained_adam()
    by_index = optimizer.state_dict()
    by_name = optimizer_state_for(by_index, model, optimizer, by_name=True)
    assert by_name["param_groups"][0]["params"] == ["0.weight", "2.weight"]
    assert by_name["param_groups"][1]["params"] == ["0.bias", "2.bias"]
    torch.testing.assert_close(by_name["state"]["2.bias"]["exp_avg"], optimizer.state[model[2].bias]["exp_avg"])
    assert optimizer_state_for(by_name, model, optimizer, by_name=True) is by_name  # already in that form
    back = optimizer_state_for(by_name, model, optimizer, by_name=False)
    assert back["param_groups"] == by_index["param_groups"]
    fresh_model, fresh = trained_adam()
    fresh.load_state_dict(back)
    for index, state in by_index["state"].items():
        torch.testing.assert_close(fresh.state_dict()["state"][index]["exp_avg_sq"], state["exp_avg_sq"])
    assert not is_sharded(model)


def test_a_state_naming_unknown_parameters_is_refused():
    model, optimizer = trained_adam()
    by_name = optimizer_state_for(optimizer.state_dict(), model, optimizer, by_name=True)
    by_name["param_groups"][0]["params"][0] = "encoder.weight"
    with pytest.raises(ValueError, match="encoder.weight"):
        optimizer_state_for(by_name, model, optimizer, by_name=False)


def test_fsdp_refuses_quantized_students():
    tree = {"student": {"model": "mlp"}, "quantize": {"weight_bits": 4}, "train": {"strategy": "fsdp"}}
    with pytest.raises(RecipeError, match="train.strategy 'fsdp' does not shard quantized students"):
        load_recipe(tree)
    assert load_recipe({**tree, "quantize": None}).fingerprint(training_only=True) == \
        load_recipe({**tree, "quantize": None, "train": {}}).fingerprint(training_only=True)  # resumable across strategies
