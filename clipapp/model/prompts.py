"""Prompt templates, template ensembles and label parsing: the one place that turns user text into prompts."""

from __future__ import annotations

import re
from functools import cache
from typing import Sequence

from clipapp.errors import ClipAppError

PLACEHOLDER = "{}"

TEMPLATE_SET_NAMES = ("simple", "openai", "none")
DEFAULT_TEMPLATES = "simple"


@cache
def template_sets() -> dict[str, tuple[str, ...]]:
    """The named template sets, read from open_clip on first use: importing open_clip imports torch and torchvision
    (2-5 s), and the CLI's parser imports this module through the fine-tune settings, so `--help` must not."""
    from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES

    # open_clip keeps its templates as lambdas; calling them with the placeholder gives format strings.
    return {
        "simple": tuple(t(PLACEHOLDER) for t in SIMPLE_IMAGENET_TEMPLATES),
        "openai": tuple(t(PLACEHOLDER) for t in OPENAI_IMAGENET_TEMPLATES),
        "none": (PLACEHOLDER,),
    }


# Beyond this a request is almost surely a mistake, and it would hold the shared model for minutes on a CPU.
MAX_LABELS = 1000
MAX_LABEL_CHARS = 300
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def resolve_templates(choice: str | Sequence[str] | None = DEFAULT_TEMPLATES) -> tuple[str, ...]:
    """`simple` (7), `openai` (80), `none` (the bare label), one custom template containing `{}`, or a list."""
    if choice is None or (isinstance(choice, str) and not choice.strip()):
        choice = DEFAULT_TEMPLATES
    if isinstance(choice, str):
        key = choice.strip()
        if key.lower() in TEMPLATE_SET_NAMES:
            return template_sets()[key.lower()]
        templates: tuple[str, ...] = (key,)
    else:
        templates = tuple(choice)
    for template in templates:
        if template.count(PLACEHOLDER) != 1:
            raise ClipAppError(
                f"Template {template!r} must contain exactly one '{{}}' where the label goes "
                f"(or choose one of: {', '.join(TEMPLATE_SET_NAMES)})."
            )
    return templates


def fill_template(template: str, label: str) -> str:
    # str.replace, not str.format: labels may contain braces.
    return template.replace(PLACEHOLDER, label)


def parse_labels(labels: str | Sequence[str], *, max_labels: int = MAX_LABELS) -> list[str]:
    """Split comma- or newline-separated labels, strip them and validate: non-empty, unique, not too many."""
    if isinstance(labels, str):
        parts = re.split(r"[,\n]", labels)
    else:
        parts = [str(part) for part in labels]
    cleaned = [" ".join(part.split()) for part in parts]
    cleaned = [label for label in cleaned if label]
    if not cleaned:
        raise ClipAppError("No labels given: type at least one label (comma or newline separated).")
    if len(cleaned) > max_labels:
        raise ClipAppError(f"{len(cleaned)} labels given; at most {max_labels} are allowed per request.")
    for label in cleaned:
        if _CONTROL_CHARS.search(label):
            raise ClipAppError(f"Label {label[:40]!r} contains control characters.")
        if len(label) > MAX_LABEL_CHARS:
            raise ClipAppError(f"Label {label[:40]!r}... is {len(label)} characters; the limit is {MAX_LABEL_CHARS}.")
    seen: set[str] = set()
    duplicates = []
    for label in cleaned:
        key = label.casefold()
        if key in seen and label not in duplicates:
            duplicates.append(label)
        seen.add(key)
    if duplicates:
        shown = ", ".join(repr(d) for d in duplicates[:5])
        raise ClipAppError(f"Duplicate label(s) {shown}: each label must be given once.")
    return cleaned
