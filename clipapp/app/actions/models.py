"""The models a user can pick (clipapp/model/catalog.py): published accuracy and license beside the cost measured on
this project's CPU, which one is the default, which one the flags select, and which ones this installation can load
(`clipapp models`, /v1/models, the page's API `list_models`). Loads no model; this module imports neither torch
nor open_clip (the actions package around it does)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Optional

from clipapp.model.catalog import MODELS, CatalogModel, hf_extra_installed, measured_figures
from clipapp.model.spec import DEFAULT_SPEC, default_spec

HF_EXTRA_HINT = "needs the hf extra: pip install 'clipapp[hf]'"


def median(values: Any) -> Optional[float]:
    """The median of a figure's runs (bench/bench_models.py stores one value per run), or None."""
    if isinstance(values, (int, float)):
        return float(values)
    if not values:
        return None
    return float(statistics.median(values))


@dataclass(frozen=True)
class ModelRow:
    """One model of the table."""

    model: CatalogModel
    default: bool  # clipapp's DEFAULT_SPEC
    selected: bool  # what --model / $CLIPAPP_MODEL picks now
    loadable: bool  # its dependencies are installed (weights download on first use, or are read from a file)
    why_not: Optional[str]
    measured: dict[str, Any]  # this model's entry of catalog_figures.json (one value per run), or {}

    def figure(self, precision: str, key: str) -> Optional[float]:
        """The median of a throughput, load or memory figure measured in `precision` (fp32 or int8)."""
        return median(self.measured.get(precision, {}).get(key))

    def value(self, key: str) -> Optional[float]:
        """The median of a figure measured once per model and run (params_m, finetune_head_s, ...)."""
        return median(self.measured.get(key))

    def to_dict(self) -> dict[str, Any]:
        m = self.model
        return {
            "spec": m.spec,
            "summary": m.summary,
            "default": self.default,
            "selected": self.selected,
            "loadable": self.loadable,
            "why_not": self.why_not,
            "needs_hf_extra": m.needs_hf,
            "imagenet_zero_shot_top1": m.imagenet_top1,
            "accuracy_source": m.accuracy_source,
            "license": m.license,
            "license_source": m.license_source,
            "open_license": m.open_license,
            "params_m": self.value("params_m"),
            "measured": {
                precision: {key: median(values) for key, values in self.measured.get(precision, {}).items()}
                for precision in ("fp32", "int8")
            },
            "finetune_head_s": self.value("finetune_head_s"),
            "finetune_default_s": self.value("finetune_default_s"),  # the planner's, at the CPU's default budget
            "finetune_default_plan": list(self.measured.get("finetune_default_plan", [])),  # what it chose
            "runs": self.measured,
        }


@dataclass(frozen=True)
class ModelTable:
    """`clipapp models`: every catalog model with its figures, and where and when they were measured."""

    rows: tuple[ModelRow, ...]
    default: str
    selected: str
    measured_on: Optional[str]
    measured_at: Optional[str]
    method: Optional[str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "default": self.default,
            "selected": self.selected,
            "measured_on": self.measured_on,
            "measured_at": self.measured_at,
            "method": self.method,
            "models": [row.to_dict() for row in self.rows],
        }


def list_models(selected: Optional[str] = None) -> ModelTable:
    """The catalog's table; `selected` is the spec the caller's flags name (default: $CLIPAPP_MODEL or the
    default spec)."""
    chosen = (selected or default_spec()).strip()
    hf_ready = hf_extra_installed()
    figures = measured_figures()
    rows = tuple(
        ModelRow(
            model=model,
            default=model.spec == DEFAULT_SPEC,
            selected=model.spec == chosen,
            loadable=hf_ready or not model.needs_hf,
            why_not=None if hf_ready or not model.needs_hf else HF_EXTRA_HINT,
            measured=figures["models"].get(model.spec, {}),
        )
        for model in MODELS
    )
    return ModelTable(rows, DEFAULT_SPEC, chosen, figures.get("machine"), figures.get("date"), figures.get("method"))
