"""Sizes people type ("50mb", "1GB", "512M", or a number of bytes) as bytes: the one parser behind --max-upload and
--max-index-memory."""

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
