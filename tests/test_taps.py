"""Taps: capture by module path, no hook left on the model, loud errors for wrong or silent taps."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from distill.models import build_model
from distill.taps import Taps, first_tensor, list_paths, probe, resolve_path


def tiny_cnn() -> nn.Module:
    torch.manual_seed(0)
    return build_model("cnn", input_shape=(1, 8, 8), num_classes=3, channels=(4, 6))


def images(batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 1, 8, 8, generator=torch.Generator().manual_seed(1))


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


class Branchy(nn.Module):
    """``skipped`` runs only when ``use_skipped``; ``pair`` returns a tuple; ``hf`` a ModelOutput-like dict."""

    def __init__(self):
        super().__init__()
        self.used = nn.Linear(3, 3)
        self.skipped = nn.Linear(3, 3)
        self.use_skipped = False

    def forward(self, x):
        return self.skipped(x) if self.use_skipped else self.used(x)


class Pair(nn.Module):
    def forward(self, x):
        return None, (x * 2, x * 3)


class HFLike(nn.Module):
    def forward(self, x):
        return OrderedDict(logits=x + 1, last_hidden_state=x * 5)


def test_values_captured_by_path_match_the_modules_outputs():
    model, x = tiny_cnn(), images()
    model.eval()
    with Taps(model, ["stages.0", "stages.1"]) as taps:
        logits = model(x)
        values = taps.require_all()
        assert taps.calls == {"stages.0": 1, "stages.1": 1}
        expected0 = model.stages[0](x)
        torch.testing.assert_close(values["stages.0"], expected0)
        torch.testing.assert_close(values["stages.1"], model.stages[1](expected0))
        torch.testing.assert_close(logits, model.head(values["stages.1"].mean(dim=(2, 3))))
        assert taps.calls == {"stages.0": 2, "stages.1": 2}  # direct submodule calls count, and do not clear


def test_named_taps_and_gradient_flows_through_captured_values():
    model, x = tiny_cnn(), images()
    with Taps(model, {"early": "stages.0"}) as taps:
        model(x)
        taps.values["early"].square().mean().backward()
    assert model.stages[0][0].weight.grad is not None
    assert model.head.weight.grad is None  # the head is after the tap


def test_hooks_removed_after_with_and_after_an_exception():
    model = tiny_cnn()
    before = hook_count(model)
    with Taps(model, ["stages.0", "head"]) as taps:
        assert hook_count(model) == before + 3  # two taps + the clearing pre-hook on the root
        model(images())
    assert hook_count(model) == before == 0 and taps.values == {}
    assert all(not m._forward_hooks for m in model.modules())
    with pytest.raises(RuntimeError, match="boom"):
        with Taps(model, ["stages.0"]):
            raise RuntimeError("boom")
    assert hook_count(model) == 0
    taps = Taps(model, ["stages.1"])  # plain object use
    taps.remove()
    taps.remove()  # idempotent
    assert hook_count(model) == 0 and not taps.attached


def test_an_error_inside_forward_also_leaves_no_hook():
    model = tiny_cnn()
    with pytest.raises(RuntimeError):
        with Taps(model, ["stages.0"]):
            model(torch.randn(2, 3, 8, 8))  # wrong channel count
    assert hook_count(model) == 0


def test_wrong_path_names_the_closest_real_paths():
    model = tiny_cnn()
    with pytest.raises(ValueError, match=r"'stage.1'.*closest paths: stages\.1") as info:
        Taps(model, ["stages.0", "stage.1"])
    assert hook_count(model) == 0  # nothing registered when a path is wrong
    with pytest.raises(ValueError, match="top-level modules: stages"):
        resolve_path(model, "zzzzzzzzzzzz")
    with pytest.raises(ValueError, match="no module at path 'stages.7'"):
        probe(model, images(), ["stages.7"])
    assert resolve_path(model, "stages.1") is model.stages[1]
    assert resolve_path(model, "") is model


def test_a_tap_that_never_fires_is_an_error():
    model, x = Branchy(), torch.randn(2, 3)
    with Taps(model, ["used", "skipped"]) as taps:
        model(x)
        with pytest.raises(ValueError, match=r"'skipped'.*never called in forward"):
            taps.require_all()
        model.use_skipped = True  # each forward clears: now 'used' is the missing one
        model(x)
        with pytest.raises(ValueError, match=r"'used'"):
            taps.require_all()
    model.use_skipped = False
    with pytest.raises(ValueError, match="module 'skipped' is never called in forward"):
        probe(model, x, ["skipped"])
    assert hook_count(model) == 0


def test_input_versus_output_capture():
    model, x = tiny_cnn(), images()
    model.eval()
    with Taps(model, ["head"], capture="input") as inputs, Taps(model, ["head"]) as outputs:
        logits = model(x)
        pooled = model.stages[1](model.stages[0](x)).mean(dim=(2, 3))
        torch.testing.assert_close(inputs.values["head"], pooled)
        torch.testing.assert_close(outputs.values["head"], logits)
    with pytest.raises(ValueError, match="capture"):
        Taps(model, ["head"], capture="both")


def test_tuple_and_model_output_values():
    assert first_tensor((None, [torch.ones(1), torch.zeros(1)])).item() == 1
    model = nn.ModuleDict({"pair": Pair(), "hf": HFLike()})
    x = torch.ones(2, 3)
    with Taps(model, ["pair", "hf"]) as taps:
        model["pair"](x)
        model["hf"](x)
        torch.testing.assert_close(taps.values["pair"], x * 2)
        torch.testing.assert_close(taps.values["hf"], x * 5)


def test_probe_shapes_in_eval_and_restores_modes():
    model = tiny_cnn()
    model.train()
    model.stages[0].eval()  # a mixed state must come back as it was
    shapes = probe(model, images(batch=5), {"s0": "stages.0", "s1": "stages.1", "pooled": "head"})
    assert shapes == {"s0": torch.Size([5, 4, 4, 4]), "s1": torch.Size([5, 6, 2, 2]), "pooled": torch.Size([5, 3])}
    assert model.training and not model.stages[0].training and model.stages[1].training
    assert hook_count(model) == 0


def test_probe_takes_keyword_inputs():
    class Keywords(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(3, 4)

        def forward(self, input_ids, scale=1.0):
            return self.proj(input_ids) * scale

    assert probe(Keywords(), {"input_ids": torch.ones(2, 5, 3), "scale": 2.0}, ["proj"]) == {"proj": (2, 5, 4)}


def test_list_paths_lists_stages_with_shapes():
    model = tiny_cnn()
    entries = list_paths(model, images())
    by_path = {path: (kind, shape) for path, kind, shape in entries}
    assert by_path["stages.0"] == ("Sequential", (2, 4, 4, 4))
    assert by_path["stages.0.0"] == ("Conv2d", (2, 4, 8, 8))
    assert by_path["head"] == ("Linear", (2, 3))
    assert by_path["dropout"] == ("Dropout", (2, 6))
    assert "" not in by_path
    top = list_paths(model, images(), max_depth=1)
    assert [path for path, _, _ in top] == ["stages", "dropout", "head"]
    assert top[0][2] is None  # a ModuleList is never called itself
    assert hook_count(model) == 0


def test_list_paths_on_a_vit_shows_tokens():
    model = build_model("vit", input_shape=(1, 8, 8), num_classes=3, patch_size=4, dim=8, depth=1, heads=2)
    by_path = {path: shape for path, _, shape in list_paths(model, torch.randn(2, 1, 8, 8))}
    assert by_path["patch_embed"] == (2, 8, 2, 2)
    assert by_path["blocks.0"] == (2, 5, 8) and by_path["blocks.0.attn"] == (2, 5, 8)
