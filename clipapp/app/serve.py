"""Run the clipapp web app: `clipapp serve [--model SPEC] [--device auto|cpu|cuda] [--host H] [--port P]`.

The one serve entry point: `clipapp serve`, `python -m clipapp serve` and `python app.py` all parse these flags and
call `run`. Gradio and the model are imported only in `run`, so `clipapp --help` stays fast.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from clipapp.app.logs import configure_logging
from clipapp.app.options import add_model_arguments, load_service
from clipapp.errors import ClipAppError

AUTH_ENV = "CLIPAPP_AUTH"
log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The web app's flags, on `parser` (app.py's own parser, or the CLI's `serve` subcommand)."""
    add_model_arguments(parser)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind; 0.0.0.0 exposes the app on the network")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument(
        "--state-dir",
        default=os.environ.get("CLIPAPP_STATE_DIR", ".clipapp"),
        help="where indexes and adapters are kept",
    )
    parser.add_argument(
        "--allowed-root",
        action="append",
        default=[],
        help="a server folder the browser may index (repeatable); none by default",
    )
    parser.add_argument(
        "--auth", default=os.environ.get(AUTH_ENV), help=f"require a login, USER:PASSWORD (or set ${AUTH_ENV})"
    )
    parser.add_argument("--max-upload", default="50mb", help="largest accepted upload, e.g. 50mb")
    parser.add_argument(
        "--verbose", action="store_true", help="also log the INFO lines of faiss, open_clip and other libraries"
    )
    parser.add_argument(
        "--session-ttl",
        default="1d",
        help="how long a browser session's uploads and adapters are kept after its last use (e.g. 1d, 12h, 30m)",
    )
    return parser


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    return add_arguments(argparse.ArgumentParser(description=__doc__.splitlines()[0])).parse_args(argv)


def parse_auth(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user or not password:
        raise ClipAppError("--auth must be USER:PASSWORD, both non-empty.")
    return user, password


def run(args: argparse.Namespace) -> None:
    """Load the model and serve the app until interrupted."""
    # the CLI configured WARNING already: the server logs its address
    configure_logging(logging.INFO, fmt="%(asctime)s %(levelname)s %(name)s: %(message)s", verbose=args.verbose)
    auth = parse_auth(args.auth)

    from clipapp.units import parse_duration

    session_ttl_s = parse_duration(args.session_ttl)

    import uvicorn

    from clipapp.app.ui import build_server
    from clipapp.app.ui.common import AppContext

    service = load_service(args, say_notice=False)
    ctx = AppContext(
        service=service,
        state_dir=Path(args.state_dir).resolve(),
        allowed_roots=tuple(Path(p).resolve() for p in args.allowed_root),
        session_ttl_s=session_ttl_s,
    )
    app = build_server(ctx, auth=auth, max_upload=args.max_upload)
    if args.host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        log.warning("Listening on %s without --auth: anyone who can reach this port can use the app.", args.host)
    # One port serves the page (/), Gradio's API, the plain JSON API (/v1/..., docs at /docs) and /health.
    log.info("Serving on http://%s:%d/ (JSON API docs at /docs)", args.host, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`python app.py`: a user mistake (e.g. a malformed --auth) is one line on stderr and exit status 2."""
    try:
        run(parse_args(argv))
    except ClipAppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
