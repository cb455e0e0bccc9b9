"""Sizes and durations people type: sizes ("50mb", "1GB", "512M", or a number of bytes) as bytes, the one parser
behind --max-upload and --max-index-memory; durations ("1d", "12h", "30m", or seconds) behind --session-ttl, and
their description in words."""

from __future__ import annotations

import re

from clipapp.errors import ClipAppError

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1 << 10,
    "m": 1 << 20,
    "mb": 1 << 20,
    "g": 1 << 30,
    "gb": 1 << 30,
    "t": 1 << 40,
    "tb": 1 << 40,
}


def parse_size(text: str | int | None, *, what: str = "size") -> int | None:
    """'1GB', '512M', '2.5g', '50mb', '1073741824' -> bytes (powers of 1024); None or '' -> None."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", text)
    if match is None or match.group(2).lower() not in _UNITS:
        raise ClipAppError(f"{text!r} is not a {what}; write e.g. 50MB, 1GB or a number of bytes.")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def parse_duration(text: str | float | int) -> float:
    """ "1d", "12h", "30m", "90s" or plain seconds -> seconds; what `--session-ttl` accepts."""
    value = str(text).strip().lower()
    units = {"d": 86400, "h": 3600, "m": 60, "s": 1}
    try:
        seconds = float(value[:-1]) * units[value[-1]] if value and value[-1] in units else float(value)
    except ValueError:
        raise ClipAppError(f"Duration {text!r} not understood: use e.g. 1d, 12h, 30m or seconds.") from None
    if seconds <= 0:
        raise ClipAppError(f"Duration {text!r} must be positive.")
    return seconds


def describe_duration(seconds: float) -> str:
    """86400 -> "1 day", 7200 -> "2 hours", 90 -> "90 seconds": whole days, hours or minutes where they fit."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{seconds:g} seconds"
