"""Freezing parameters by name."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable

import torch.nn as nn

from clipapp.errors import ClipAppError

Pattern = str | re.Pattern


def _matcher(patterns: Iterable[Pattern], regex: bool):
    compiled: list[tuple[Pattern, Callable[[str], object]]] = []
    for pattern in patterns:
        if isinstance(pattern, re.Pattern):
            compiled.append((pattern, pattern.search))
        elif regex:
            compiled.append((pattern, re.compile(pattern).search))
        else:
            compiled.append((pattern, _glob(pattern)))
    return compiled


def _glob(pattern: str) -> Callable[[str], bool]:
    return lambda name: fnmatch.fnmatchcase(name, pattern)


def set_requires_grad_by_pattern(
    model: nn.Module,
    patterns: Iterable[Pattern],
    requires_grad: bool,
    *,
    exclude: Iterable[Pattern] = (),
    regex: bool = False,
    strict: bool = True,
) -> int:
    """Set `requires_grad` on parameters whose name matches a pattern and no `exclude` pattern.

    Patterns are globs on the full parameter name (`visual.transformer.resblocks.0.*`), or regexes searched
    in the name with `regex=True` or as compiled `re.Pattern`s. With `strict`, a pattern that matches nothing
    raises (a typo would otherwise silently train or freeze the wrong thing). Returns how many parameter
    tensors matched.
    """
    include, skip = _matcher(patterns, regex), _matcher(exclude, regex)
    used = {pattern: False for pattern, _ in include}
    count = 0
    for name, param in model.named_parameters():
        hits = [pattern for pattern, match in include if match(name)]
        for pattern in hits:
            used[pattern] = True
        if not hits or any(match(name) for _, match in skip):
            continue
        param.requires_grad_(requires_grad)
        if not requires_grad:
            param.grad = None  # a stale gradient would still be applied by the optimizer
        count += 1
    unused = [str(getattr(p, "pattern", p)) for p, hit in used.items() if not hit]
    if strict and unused:
        raise ClipAppError(f"No parameter name matches {', '.join(map(repr, unused))}.")
    return count


def freeze_by_pattern(model: nn.Module, patterns: Iterable[Pattern], **kwargs) -> int:
    """Freeze matching parameters (see `set_requires_grad_by_pattern`); returns the number frozen.

    Helps when fine-tuning a large pretrained model on little data: freeze the early layers (generic
    features) and train the top ones, which is faster, uses less memory and over-fits less.
    Example: `freeze_by_pattern(model, ["*"], exclude=["head.*"])` is a linear probe.
    """
    return set_requires_grad_by_pattern(model, patterns, False, **kwargs)


def unfreeze_by_pattern(model: nn.Module, patterns: Iterable[Pattern], **kwargs) -> int:
    """Make matching parameters trainable again, e.g. for gradual unfreezing; returns the number unfrozen."""
    return set_requires_grad_by_pattern(model, patterns, True, **kwargs)
