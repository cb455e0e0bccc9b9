"""The entry points: `clipapp serve` and `python app.py` are one parser and one function; a bug in a command exits 1
with its traceback logged, a user mistake exits 2 with one line."""

from __future__ import annotations

import argparse
import logging

import app
from clipapp.app import cli, serve


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {opt for action in parser._actions for opt in action.option_strings} - {"-h", "--help"}


def _serve_subparser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["serve"]


def test_clipapp_serve_takes_exactly_app_py_flags():
    app_parser = serve.add_arguments(argparse.ArgumentParser())
    assert _options(_serve_subparser()) == _options(app_parser)
    assert "--json" not in _options(_serve_subparser())  # serve prints no JSON result
    flags = ["--port", "8081", "--allowed-root", "/srv/photos", "--model", "demo"]
    args = cli.build_parser().parse_args(["serve", *flags])
    assert args.func is serve.run and args.port == 8081 and args.allowed_root == ["/srv/photos"]
    assert vars(app.parse_args(flags)) == {k: v for k, v in vars(args).items() if k not in ("command", "func")}


def test_serve_bad_auth_is_a_user_error_before_any_model_loads(capsys):
    assert app.main(["--auth", "no-colon"]) == 2
    assert "--auth must be USER:PASSWORD" in capsys.readouterr().err
    assert cli.main(["serve", "--auth", "no-colon"]) == cli.EXIT_USER_ERROR


def test_an_unexpected_error_exits_internal_error_with_the_traceback_logged(monkeypatch, caplog, capsys):
    from clipapp.classify import stream as classify

    def broken(*args, **kwargs):
        raise RuntimeError("boom in classify_files")

    monkeypatch.setattr(classify, "classify_files", broken)
    with caplog.at_level(logging.ERROR):
        status = cli.main(["classify", "some.png", "--labels", "a,b", "--json"])
    assert status == cli.EXIT_INTERNAL_ERROR == 1
    (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert record.exc_info and "boom in classify_files" in str(record.exc_info[1])
    assert capsys.readouterr().out == ""  # --json: nothing but a result on stdout, and there is none


def test_the_model_flags_are_defined_once_for_every_command_and_serve():
    """--model/--device/--precision/--max-pixels come from clipapp/app/options.py: same help, same defaults."""
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    model_flags = ("--model", "--device", "--precision", "--max-pixels")

    def described(p):
        return {
            a.option_strings[0]: (a.help, a.default)
            for a in p._actions
            if a.option_strings and a.option_strings[0] in model_flags
        }

    shown = [described(p) for p in sub.choices.values()]
    assert len(shown[0]) == len(model_flags) and all(each == shown[0] for each in shown)


def test_the_pre_0_2_limit_flags_path_still_answers():
    import warnings

    from clipapp.app.options import add_limit_arguments

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        from clipapp.serve import add_limit_arguments as old
    assert old is add_limit_arguments and any(issubclass(w.category, DeprecationWarning) for w in caught)
