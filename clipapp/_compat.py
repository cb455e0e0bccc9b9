"""Old import paths, kept working for one release with a DeprecationWarning (docs/architecture.md, "Old layout").

The package was flat until 0.2; its modules moved into layer folders. `import clipapp.models` (or any moved name)
still works: a meta-path finder answers each old module name with a module that hands out the new one's attributes
and says where they live now.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any, Optional, Sequence

# old module -> the modules that now hold its public names, searched in order
MOVED: dict[str, tuple[str, ...]] = {
    # searched leaf first, so a name is reported where it is defined rather than where it is imported
    "clipapp.models": (
        "clipapp.model.hub",
        "clipapp.model.checkpoint",
        "clipapp.model.spec",
        "clipapp.model.loading",
        "clipapp.model.quantize",
    ),
    "clipapp.service": ("clipapp.model.service",),
    "clipapp.batching": ("clipapp.model.batching",),
    "clipapp.device": ("clipapp.model.device",),
    "clipapp.prompts": ("clipapp.model.prompts",),
    "clipapp.data": ("clipapp.images.decode", "clipapp.images.folders"),
    "clipapp.limits": ("clipapp.images.limits",),
    "clipapp.fashion_mnist": ("clipapp.images.fashion_mnist",),
    "clipapp.predictions": ("clipapp.classify.predictions",),
    "clipapp.evaluation": ("clipapp.classify.evaluation",),
    "clipapp.distributed": tuple(
        f"clipapp.index.distributed{m}" for m in ("", ".session", ".plan", ".actor", ".shards", ".encoder", ".run")
    )
    + ("clipapp.model.loading",),  # model_embed_dim
    "clipapp.adapter": ("clipapp.finetune.adapter", "clipapp.finetune.towers"),
    "clipapp.finetune.models": ("clipapp.finetune.trainable",),
    "clipapp.finetune.selection": ("clipapp.finetune.model_choice",),
    "clipapp.tasks": ("clipapp.app.actions",),
    "clipapp.sessions": ("clipapp.app.sessions", "clipapp.units"),
    "clipapp.jobs": ("clipapp.app.jobs",),
    "clipapp.http_api": ("clipapp.app.http_api",),
    "clipapp.serve": ("clipapp.app.serve", "clipapp.app.options"),
    "clipapp.cli": ("clipapp.app.cli",),
    "clipapp.heatmap_image": ("clipapp.viz.heatmap_image",),
    "clipapp.index.progress": ("clipapp.progress",),
}
# old package -> new package: the package and each of its modules
MOVED_PACKAGES: dict[str, str] = {"clipapp.ui": "clipapp.app.ui"}
# old modules whose name is now a package: the package's __init__ forwards through `forward_getattr`
BECAME_PACKAGES: dict[str, tuple[str, ...]] = {
    "clipapp.classify": ("clipapp.classify.stream",),
    "clipapp.viz": ("clipapp.viz.figures", "clipapp.viz.common"),
}
# renamed names, and names that left a module which still exists: module -> {old name: "new.module.new_name"}
MOVED_NAMES: dict[str, dict[str, str]] = {
    "clipapp.finetune.intake": {
        "parse_selection": "clipapp.app.picks.parse_picks",
        "selection_text": "clipapp.app.picks.picks_text",
        "add_to_selection": "clipapp.app.picks.add_picks",
        "unindexed": "clipapp.app.picks.unindexed",
        "labelled_selection": "clipapp.app.picks.labelled_picks",
        "check_index": "clipapp.app.picks.check_index",
    },
    # one typed result: `classification` (an object) and `classify` (its dict) became `classify` (the object)
    "clipapp.tasks": {"classification": "clipapp.app.actions.classify"},
    # "classifier" and "predict" each meant several things
    "clipapp.classify.stream": {
        "Classifier": "clipapp.classify.stream.LabelScorer",
        "predict": "clipapp.classify.stream.predict_batches",
    },
    # fine-tuning's own (fraction, message) callback type: the one protocol (done, total, message) replaced it
    "clipapp.finetune.config": {"ProgressFn": "clipapp.progress.ProgressFn"},
    "clipapp.finetune.trainable": {
        "HeadClassifier": "clipapp.finetune.trainable.TrainableHead",
        "PartialClassifier": "clipapp.finetune.trainable.PartialTower",
    },
}


def _warn(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new}; the old path goes in the next release", DeprecationWarning, stacklevel=3)


def forward_getattr(old: str, targets: Sequence[str]):
    """A module `__getattr__` (PEP 562) that finds NAME in the modules that now hold it, or where `MOVED_NAMES`
    says it went (renamed, or out of a module that still exists, e.g. `clipapp.finetune.intake`), with a warning."""

    def __getattr__(name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        if name in MOVED_NAMES.get(old, {}):
            return _moved_name(old, name)
        for target in targets:
            module = importlib.import_module(target)
            if hasattr(module, name):
                _warn(f"{old}.{name}", f"{target}.{name}")
                return getattr(module, name)
        raise AttributeError(f"module {old!r} has no attribute {name!r}")

    return __getattr__


def _moved_name(module: str, name: str) -> Any:
    """`MOVED_NAMES[module][name]`'s object, with a warning."""
    new = MOVED_NAMES[module][name]
    target, _, new_name = new.rpartition(".")
    _warn(f"{module}.{name}", new)
    return getattr(importlib.import_module(target), new_name)


class _Forwarder(importlib.abc.Loader):
    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> Optional[types.ModuleType]:
        for old_package, new_package in MOVED_PACKAGES.items():
            if self.old == old_package or self.old.startswith(old_package + "."):
                new = new_package + self.old[len(old_package) :]
                _warn(self.old, new)
                return importlib.import_module(new)  # the module itself: its submodules and state are shared
        module = types.ModuleType(self.old, f"Moved: see {', '.join(MOVED[self.old])}.")
        module.__getattr__ = forward_getattr(self.old, MOVED[self.old])  # type: ignore[method-assign]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        pass


class _OldPaths(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> Optional[importlib.machinery.ModuleSpec]:
        known = fullname in MOVED or any(
            fullname == package or fullname.startswith(package + ".") for package in MOVED_PACKAGES
        )
        if not known:
            return None
        is_package = fullname in MOVED_PACKAGES
        return importlib.machinery.ModuleSpec(fullname, _Forwarder(fullname), is_package=is_package)


def install() -> None:
    if not any(isinstance(finder, _OldPaths) for finder in sys.meta_path):
        # first: below clipapp.ui (= clipapp.app.ui) the path finder would load a second copy of each module
        sys.meta_path.insert(0, _OldPaths())
