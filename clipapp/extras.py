"""Optional dependencies (pyproject.toml's extras): imported where a feature uses them, never at module level.

A missing one is a `MissingExtraError` that names the extra to install, e.g. `pip install 'clipapp[sweeps]'`,
instead of an ImportError from deep inside a library.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from clipapp.errors import MissingExtraError


def import_extra(module: str, *, extra: str, feature: str) -> ModuleType:
    """`importlib.import_module(module)`, or a MissingExtraError saying that `feature` needs `clipapp[extra]`."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingExtraError(
            f"{feature} needs the optional dependency {module.split('.')[0]!r}, which is not installed: "
            f"pip install 'clipapp[{extra}]' (import error: {exc})."
        ) from exc
