"""The generic Registry: names to factories, typo hints, and ``package.module:callable``."""
from __future__ import annotations

import math

import pytest

from distill.registry import Registry, UnknownNameError, closest, import_callable


def make() -> Registry:
    registry = Registry("widget")

    @registry.register("round_widget")
    def round_widget(**kwargs):
        return ("round", kwargs)

    registry.register("square_widget", lambda **kwargs: ("square", kwargs))
    return registry


def test_register_and_get():
    registry = make()
    assert registry.get("round_widget")(size=2) == ("round", {"size": 2})
    assert registry.get("square_widget")() == ("square", {})
    assert registry.names() == ["round_widget", "square_widget"]
    assert list(registry) == registry.names()
    assert "round_widget" in registry and "hexagon" not in registry
    assert "widget" in repr(registry) and "round_widget" in repr(registry)


def test_register_returns_the_factory_and_is_idempotent_for_the_same_object():
    registry = Registry("widget")

    def build():
        return 1

    assert registry.register("w", build) is build
    registry.register("w", build)  # the same object again (a module imported twice) is fine
    assert registry.get("w") is build


def test_duplicate_registration_is_refused():
    registry = make()
    with pytest.raises(ValueError, match="widget 'round_widget' is already registered"):
        registry.register("round_widget", lambda: None)
    with pytest.raises(ValueError, match="already registered"):

        @registry.register("square_widget")
        def other():
            return None


def test_typo_suggests_the_closest_name():
    registry = make()
    with pytest.raises(UnknownNameError) as info:
        registry.get("round_widgte")
    message = str(info.value)
    assert "unknown widget 'round_widgte'" in message
    assert "did you mean 'round_widget'?" in message
    assert "round_widget, square_widget" in message  # the valid names are listed
    assert "package.module:callable" in message
    assert not message.startswith('"')  # plain text, not KeyError's quoted repr


def test_no_suggestion_when_nothing_is_close():
    with pytest.raises(UnknownNameError) as info:
        make().get("zzz")
    assert "did you mean" not in str(info.value)


def test_unknown_name_error_is_a_key_error():
    with pytest.raises(KeyError):
        make().get("nope")


def test_closest():
    assert closest("epoch", ["epochs", "steps", "seed"]) == "epochs"
    assert closest("qqqq", ["epochs", "steps"]) is None


def test_module_callable_imports_user_code():
    registry = make()
    assert registry.get("math:sqrt") is math.sqrt
    assert registry.get("os.path:join") is __import__("os").path.join
    # dotted attributes after the colon
    assert registry.get("distill.registry:Registry.get") is Registry.get
    assert import_callable("math:sqrt")(9.0) == 3.0


@pytest.mark.parametrize(
    "name, message",
    [
        (":sqrt", "not of the form 'package.module:callable'"),
        ("math:", "not of the form 'package.module:callable'"),
        ("no_such_module_xyz:build", "cannot import module 'no_such_module_xyz'"),
        ("math:no_such_function", "module 'math' has no attribute 'no_such_function'"),
        ("math:pi", "'math:pi' is not callable"),
    ],
)
def test_bad_module_callable_forms_give_clear_errors(name, message):
    with pytest.raises(UnknownNameError) as info:
        make().get(name)
    assert message in str(info.value)
