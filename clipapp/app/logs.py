"""The log set-up of the front ends (`clipapp serve` / app.py, the CLI): clipapp's own INFO lines, and only the
warnings and errors of the libraries underneath.

At start-up faiss's loader logs six INFO lines ("Could not load library with AVX512 support due to:
ModuleNotFoundError ...", normal on any CPU without that build) and open_clip ~12 ("Parsing model identifier",
"Instantiating model architecture", ...) that a new user reads as errors. open_clip logs through the root logger
(`logging.info`), so no per-library logger level can silence it: a filter on the handlers keeps a record below
WARNING only when a `clipapp.*` logger wrote it. `verbose` keeps everything.
"""

from __future__ import annotations

import logging

OWN_LOGGER = "clipapp"


class OwnInfoOnly(logging.Filter):
    """Passes warnings and errors from anyone, and lower levels only from clipapp's own loggers."""

    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name == OWN_LOGGER or record.name.startswith(OWN_LOGGER + ".")
        return own or record.levelno >= logging.WARNING


def configure_logging(level: int, *, fmt: str, verbose: bool = False) -> None:
    """Root logging at `level` with `fmt` (set once: a later call only changes the level and the filter, as
    `clipapp serve` does after the CLI's set-up), third-party lines below WARNING dropped unless `verbose`."""
    logging.basicConfig(level=level, format=fmt)
    root = logging.getLogger()
    root.setLevel(level)
    for handler in root.handlers:
        for old in [f for f in handler.filters if isinstance(f, OwnInfoOnly)]:
            handler.removeFilter(old)
        if not verbose:
            handler.addFilter(OwnInfoOnly())
