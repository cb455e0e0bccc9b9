"""Start-up cost: `clipapp --help`, every subcommand's `--help` and argument errors import neither torch nor
open_clip (together ~5 s on this machine: bench/bench_startup.py), and `import clipapp.model.service` does not import
open_clip until a model is built. Checked through `sys.modules` in a fresh interpreter, never by the clock.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "open_clip", "torchvision")

CLI_PROBE = textwrap.dedent("""
    import argparse, contextlib, io, json, sys

    from clipapp.app.cli import build_parser, main

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    commands = sorted(sub.choices)
    calls = [["--help"]] + [[c, "--help"] for c in commands] + [
        ["classify", "a.png"],                     # no --labels: refused by main before any work
        ["classify", "--top-k", "0", "a.png"],     # refused by argparse
        ["no-such-command"],
    ]
    codes, outputs = [], []
    for argv in calls:
        with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.redirect_stderr(io.StringIO()) as err:
            try:
                code = main(argv)
            except SystemExit as exc:
                code = exc.code
        codes.append(code)
        outputs.append(out.getvalue() + err.getvalue())
    heavy = sorted(m for m in HEAVY if m in sys.modules)
    print(json.dumps({"commands": commands, "codes": codes, "outputs": outputs, "heavy": heavy}))
""")


def _run(code: str) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO), HF_HUB_OFFLINE="1")
    result = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + code],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _check_cli(out: dict) -> None:
    assert {"classify", "similarity", "index", "search", "finetune", "eval", "serve"} <= set(out["commands"])
    n = len(out["commands"])
    assert out["codes"][: n + 1] == [0] * (n + 1)  # every --help printed and exited 0
    for command, text in zip(out["commands"], out["outputs"][1 : n + 1], strict=True):
        assert f"usage: python -m clipapp {command}" in text
    assert out["codes"][n + 1 :] == [2, 2, 2]
    assert "give --labels" in out["outputs"][n + 1] and "--top-k" in out["outputs"][n + 2]
    assert out["heavy"] == []


def test_help_and_argument_errors_import_no_torch():
    """Everything the parser imports (the fine-tune settings, clipapp/finetune/config.py, included; the package
    loads its training modules on first use) is torch-free."""
    _check_cli(_run(CLI_PROBE))


def test_the_probe_sees_torch_when_it_is_imported():
    """The checks above can fail: the same probe, after the service (which needs torch) is imported, reports it."""
    out = _run("import clipapp.model.service\n" + CLI_PROBE)
    assert "torch" in out["heavy"]


def test_service_imports_open_clip_only_when_a_model_is_built():
    out = _run(
        textwrap.dedent("""
        import json, sys

        import clipapp.model.service

        after_import = sorted(m for m in HEAVY if m in sys.modules)
        service = clipapp.model.service.ClipService.load("demo")
        probs = service.zero_shot([__import__("PIL.Image").Image.new("RGB", (28, 28))], ["shirt", "boot"]).probs
        print(json.dumps({"after_import": after_import, "after_load": sorted(m for m in HEAVY if m in sys.modules),
                          "sum": float(probs.sum())}))
    """)
    )
    assert out["after_import"] == ["torch"]  # the service needs torch; open_clip waits for a model
    assert "open_clip" in out["after_load"]
    assert out["sum"] == pytest.approx(1.0, abs=1e-5)


def test_template_sets_read_lazily_are_the_named_ones():
    from clipapp.model.prompts import TEMPLATE_SET_NAMES, resolve_templates, template_sets

    assert tuple(template_sets()) == TEMPLATE_SET_NAMES
    assert len(resolve_templates("simple")) == 7 and len(resolve_templates("openai")) == 80
    assert resolve_templates("none") == ("{}",)
