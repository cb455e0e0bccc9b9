"""The label check: warnings about a label set before it is used to classify or fine-tune.

Four kinds, each a `LabelWarning` (`to_dict` is the JSON of `"warnings"`):
  empty      entries that are empty after parsing ("cat,,dog"): dropped, maybe a typo
  duplicate  the same label twice (case-insensitive): classification refuses them
  too_long   a label whose prompts exceed the model's context: classification refuses them
  too_close  two labels the model can barely tell apart: their prompt-ensemble embeddings are closer than
             `CLOSE_FRACTION` of the model's own spread (the median distance 1 - cosine between the labels and
             the background words of clipapp/model/unknown.py), so scaling with the model's geometry
On the demo model with the "simple" templates, synonyms the model learnt as one class (sneaker / trainer, coat /
jacket, trouser / pants, ...) are at distance <= 0.001 and the closest two distinct Fashion-MNIST classes
(pullover / coat) at 0.317, the spread being ~0.2-0.3: any fraction from 0.01 to 1 separates them; 0.1 leaves
room both ways (bench/bench_label_checks.py prints these distances).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from clipapp.model.prompts import DEFAULT_TEMPLATES, fill_template, resolve_templates

CLOSE_FRACTION = 0.1
MAX_CLOSE_PAIRS = 20  # a label set of near-copies would otherwise list n^2 pairs


@dataclass(frozen=True)
class LabelWarning:
    kind: str  # empty | duplicate | too_long | too_close
    labels: tuple[str, ...]
    message: str

    def to_dict(self) -> dict:
        return {"kind": self.kind, "labels": list(self.labels), "message": self.message}


def _entries(raw: str | Sequence[str]) -> list[str]:
    parts = re.split(r"[,\n]", raw) if isinstance(raw, str) else [str(p) for p in raw]
    return [" ".join(part.split()) for part in parts]


def text_warnings(raw: str | Sequence[str]) -> tuple[list[str], list[LabelWarning]]:
    """(the labels, as `parse_labels` keeps them, first of each duplicate only; the empty and duplicate warnings).
    No model needed."""
    entries = _entries(raw)
    warnings = []
    # Blank trailing entries ("a, b," or a final newline) are how people type lists: only inner ones are suspect.
    stripped = list(entries)
    while stripped and not stripped[-1]:
        stripped.pop()
    empty = [i + 1 for i, e in enumerate(stripped) if not e]
    if empty:
        where = ", ".join(map(str, empty[:10]))
        warnings.append(
            LabelWarning("empty", (), f"{len(empty)} empty label(s) (entry {where}) were dropped: a doubled comma?")
        )
    seen: dict[str, str] = {}
    labels: list[str] = []
    for entry in (e for e in entries if e):
        key = entry.casefold()
        if key in seen:
            warnings.append(
                LabelWarning("duplicate", (seen[key], entry), f"{entry!r} repeats {seen[key]!r}: give each label once.")
            )
            continue
        seen[key] = entry
        labels.append(entry)
    return labels, warnings


def _too_long(service, labels: list[str], templates: tuple[str, ...]) -> tuple[list[str], list[LabelWarning]]:
    encode = getattr(service.tokenizer, "encode", None)
    if encode is None:
        return labels, []
    limit = service.context_length - 2  # start- and end-of-text tokens
    fitting, warnings = [], []
    for label in labels:
        longest = max(len(encode(fill_template(t, label))) for t in templates)
        if longest > limit:
            warnings.append(
                LabelWarning(
                    "too_long",
                    (label,),
                    f"{label[:60]!r} makes prompts of {longest} tokens; this model reads at most {limit}: shorten it.",
                )
            )
        else:
            fitting.append(label)
    return fitting, warnings


def close_pairs(label_weights: np.ndarray, background: np.ndarray) -> tuple[list[tuple[int, int, float]], float]:
    """([(i, j, distance)] of label pairs closer than CLOSE_FRACTION x the spread, closest first; the spread)."""
    every = np.concatenate([label_weights, background])
    distance = 1.0 - every @ every.T
    upper = np.triu_indices(len(every), 1)
    spread = float(np.median(distance[upper]))
    n = len(label_weights)
    rows, cols = np.triu_indices(n, 1)
    d = distance[:n, :n][rows, cols]
    close = np.flatnonzero(d < CLOSE_FRACTION * spread)
    close = close[np.argsort(d[close], kind="stable")]
    return [(int(rows[k]), int(cols[k]), float(d[k])) for k in close], spread


def check_labels(service, raw: str | Sequence[str], templates=DEFAULT_TEMPLATES) -> list[LabelWarning]:
    """Every warning for `raw` (the labels box's text, or a list) on `service`'s model; [] when all is well."""
    from clipapp.model.unknown import BACKGROUND

    labels, warnings = text_warnings(raw)
    template_set = resolve_templates(templates)
    labels, long_warnings = _too_long(service, labels, template_set)
    warnings += long_warnings
    if len(labels) >= 2:
        weights = service.text_embeddings(labels, template_set)
        pairs, spread = close_pairs(weights, service.text_embeddings(list(BACKGROUND), template_set))
        for i, j, d in pairs[:MAX_CLOSE_PAIRS]:
            warnings.append(
                LabelWarning(
                    "too_close",
                    (labels[i], labels[j]),
                    f"{labels[i]!r} and {labels[j]!r} are nearly the same to this model (distance {d:.3g}, "
                    f"its typical distance {spread:.3g}): merge them or make them more distinct.",
                )
            )
    return warnings
