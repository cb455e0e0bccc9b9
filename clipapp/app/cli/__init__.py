"""`python -m clipapp COMMAND ...`: every UI action from a terminal; `--json` prints one JSON object on stdout.

User mistakes exit with status 2 and one line on stderr; nothing else is printed on stdout in --json mode.
The commands are a table (commands.py); each result type has one text renderer (render.py).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Optional, Sequence

from clipapp.app.cli.commands import COMMANDS, Command
from clipapp.app.logs import configure_logging
from clipapp.app.options import add_model_arguments
from clipapp.errors import ClipAppError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipapp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.help)
        command.add_arguments(p)
        add_model_arguments(p)
        p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
        p.set_defaults(func=_runner(command))
    from clipapp.app import serve  # serve has the same model flags, its own others, and prints no JSON

    serve_parser = sub.add_parser("serve", help="run the web app (the flags of app.py)")
    serve.add_arguments(serve_parser).set_defaults(func=serve.run)
    return parser


def _runner(command: Command):
    """Run the command; print its result as JSON or as text, after drawing it with --out."""

    def run(args: argparse.Namespace) -> None:
        result = command.run(args)
        if command.figure is not None and args.out:
            command.figure(result, args)
        if args.json:
            print(json.dumps(result.to_dict(), ensure_ascii=False))
        else:
            from clipapp.app.cli.render import render

            print(render(result, args))

    return run


def main(argv: Optional[Sequence[str]] = None) -> int:
    configure_logging(logging.WARNING, fmt="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except ClipAppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:  # a bug, not the user's mistake: the traceback goes to the log, the exit status says which
        logging.getLogger(__name__).exception(
            "internal error in %r; please report it with this traceback", args.command
        )
        return EXIT_INTERNAL_ERROR
    return 0
