"""Runtime dependencies are what the app imports on its main paths; the extras are imported only where used.

1. With the optional packages made unimportable, the core and the CLI import and `--help` works, and each feature
   that needs an extra says which one to install.
2. Statically: every third-party module clipapp imports is a declared dependency, and a module-level (eager)
   import is a runtime dependency, never an extra.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import textwrap
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
EXTRA_MODULES = ("optuna", "ray", "pyarrow", "sklearn", "skimage", "transformers")

# None in sys.modules: `import optuna` (and optuna.x) raises ImportError, importlib.util.find_spec says "absent".
BLOCKER = textwrap.dedent(f"""
    import sys

    for name in {EXTRA_MODULES!r}:
        sys.modules[name] = None
""")

PROBE = textwrap.dedent("""
    import contextlib, io, json, sys

    from clipapp.errors import ClipAppError, MissingExtraError
    import clipapp.model.service, clipapp.app.cli, clipapp.tricks, clipapp.index.distributed  # noqa: F401
    from clipapp.tricks import run_sweep
    out = {}
    with contextlib.redirect_stdout(io.StringIO()) as help_text:
        try:
            clipapp.app.cli.main(["--help"])
        except SystemExit as exc:
            out["help_exit"] = exc.code
    out["help_has_classify"] = "classify" in help_text.getvalue()
    out["grid"] = run_sweep(lambda s: -abs(s["a"] - 2), {"a": [1, 2, 3]}, method="grid").best.params["a"]

    def message(call):
        try:
            call()
        except ClipAppError as exc:
            return type(exc).__name__, str(exc)
        return None

    out["random"] = message(lambda: run_sweep(lambda s: 0.0, {"a": (0.0, 1.0)}, method="random", n_trials=2))
    out["ray"] = message(clipapp.index.distributed.import_ray)
    from clipapp.model.service import ClipService
    # a Hugging Face tokenizer (SigLIP2) and a Hugging Face text tower (xlm-roberta): open_clip raised
    # ModuleNotFoundError / "pip install transformers" from inside model creation
    out["hf"] = [message(lambda s=spec: ClipService.load(s, device="cpu"))
                 for spec in ("ViT-B-16-SigLIP2:random", "xlm-roberta-base-ViT-B-32:random")]
    out["leaked"] = sorted(m for m in sys.modules if m.split(".")[0] in EXTRAS and sys.modules[m] is not None)
    print(json.dumps(out))
""")


@pytest.mark.slow
def test_without_the_extras_the_app_runs_and_each_feature_names_its_extra(tmp_path):
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), str(REPO)]), HF_HUB_OFFLINE="1")
    code = f"EXTRAS = {EXTRA_MODULES!r}\n" + PROBE
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["help_exit"] == 0 and out["help_has_classify"]
    assert out["grid"] == 2  # a grid sweep (fine-tuning's cache mode uses one) needs no optuna
    assert out["random"][0] == "MissingExtraError" and "pip install 'clipapp[sweeps]'" in out["random"][1]
    assert "pip install 'clipapp[ray]'" in out["ray"][1]
    for kind, text in out["hf"]:
        assert kind == "MissingExtraError" and "pip install 'clipapp[hf]'" in text and "\n" not in text, text
    assert "ViT-B-16-SigLIP2" in out["hf"][0][1] and "xlm-roberta-base-ViT-B-32" in out["hf"][1][1]
    assert out["leaked"] == []

    # the real entry point too, as a user runs it
    help_run = subprocess.run(
        [sys.executable, "-m", "clipapp", "--help"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600
    )
    assert help_run.returncode == 0 and "serve" in help_run.stdout, help_run.stderr


def test_the_blocker_blocks(tmp_path):
    """Without this, the test above could pass with the extras quietly importable."""
    (tmp_path / "sitecustomize.py").write_text(BLOCKER)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-c", "import optuna"], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0 and "ModuleNotFoundError: import of optuna halted" in result.stderr


# ----------------------------------------------------------------------------------------------- static check
def _imports(path: Path) -> list[tuple[str, bool]]:
    """(top-level module, eager) for every absolute import in `path`; eager = runs when the module is imported
    (not inside a function, not under `if TYPE_CHECKING:`)."""
    found = []

    def visit(node: ast.AST, eager: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, False)
            elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                visit(child, False)
            elif isinstance(child, ast.Import):
                found.extend((alias.name.split(".")[0], eager) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found.append((child.module.split(".")[0], eager))
            else:
                visit(child, eager)

    visit(ast.parse(path.read_text(), str(path)), True)
    return found


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extras = {
        canonicalize_name(Requirement(r).name)
        for reqs in project["optional-dependencies"].values()
        for r in reqs
        if not r.startswith("clipapp[")
    }
    return runtime, extras


def test_every_import_is_declared_and_eager_imports_are_runtime_dependencies():
    runtime, extras = _declared()
    dists = {module: {canonicalize_name(d) for d in names} for module, names in packages_distributions().items()}
    problems = []
    for path in sorted((REPO / "clipapp").rglob("*.py")):
        for module, eager in _imports(path):
            if module in sys.stdlib_module_names or module in ("clipapp", "__future__"):
                continue
            where = f"{path.relative_to(REPO)}: {module}"
            owners = dists.get(module)
            if not owners:
                problems.append(f"{where} is not installed and not declared")
            elif not owners & (runtime | extras):
                problems.append(f"{where} ({', '.join(sorted(owners))}) is not declared in pyproject.toml")
            elif eager and not owners & runtime:
                problems.append(f"{where} is an extra, imported at module level: import it where it is used")
    assert problems == []


def test_the_static_check_sees_lazy_and_eager_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text(
        "import numpy\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import optuna\n"
        "def f():\n    import ray.data\n    from sklearn import svm\n"
    )
    assert _imports(sample) == [
        ("numpy", True),
        ("typing", True),
        ("optuna", False),
        ("ray", False),
        ("sklearn", False),
    ]


# That only clipapp/app/ui/ imports Gradio (docs/architecture.md, "Layers") is an import-linter contract now:
# pyproject.toml [tool.importlinter], run by `make lint`.
