"""The pre-0.2 flat import paths (`clipapp.models`, `clipapp.ui.common`, ...) still work for one release, each with
a DeprecationWarning naming the new path (clipapp/_compat.py; docs/architecture.md, "Old layout")."""

from __future__ import annotations

import importlib
import inspect
import sys

import pytest

from clipapp import _compat


def _defined_name(module_name: str) -> str | None:
    """A public name the module defines itself (not one it imports), so the forwarder must find it there; for a package
    that only re-exports, the first name it exports."""
    module = importlib.import_module(module_name)
    for name, value in vars(module).items():
        if not name.startswith("_") and getattr(value, "__module__", None) == module_name:
            if inspect.isfunction(value) or inspect.isclass(value):
                return name
    exported = getattr(module, "__all__", ())  # a package that only re-exports its modules' names
    return exported[0] if exported else None


@pytest.mark.parametrize("old", sorted(_compat.MOVED))
def test_an_old_module_path_hands_out_the_new_objects_with_a_warning(old):
    checked = 0
    for new in _compat.MOVED[old]:  # each target that defines a name of its own (a package may only re-export)
        name = _defined_name(new)
        if name is None:
            continue
        sys.modules.pop(old, None)
        with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to clipapp"):
            value = getattr(importlib.import_module(old), name)
        assert value is getattr(importlib.import_module(new), name)
        checked += 1
    assert checked, f"no target of {old} defines a name to check"


@pytest.mark.parametrize("old", sorted(_compat.BECAME_PACKAGES))
def test_a_module_that_became_a_package_still_answers_its_old_names(old):
    new = _compat.BECAME_PACKAGES[old][0]
    name = _defined_name(new)
    assert name is not None
    with pytest.warns(DeprecationWarning, match=f"moved to {new}.{name}"):
        value = getattr(importlib.import_module(old), name)
    assert value is getattr(importlib.import_module(new), name)


def test_an_old_package_path_is_the_new_module_itself():
    for name in [n for n in sys.modules if n == "clipapp.ui" or n.startswith("clipapp.ui.")]:
        del sys.modules[name]
    with pytest.warns(DeprecationWarning, match="clipapp.ui.common moved to clipapp.app.ui.common"):
        old = importlib.import_module("clipapp.ui.common")
    assert old is importlib.import_module("clipapp.app.ui.common")  # one module: its state is shared


def test_an_unknown_name_is_still_an_attribute_error():
    with pytest.raises(AttributeError, match="has no attribute 'no_such_name'"):
        _ = importlib.import_module("clipapp.models").no_such_name
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module("clipapp.no_such_module")
