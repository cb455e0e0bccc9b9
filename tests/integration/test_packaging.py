"""The package people install: a wheel built from this checkout, installed into a fresh venv, runs `clipapp`.

A fresh venv with its own copy of torch, gradio, ... would copy gigabytes, so the fresh venv reaches the project
venv's site-packages through a .pth file and the wheel is installed with --no-deps; then every Requires-Dist of the
wheel (runtime and each extra) is checked against what that environment has, so an undeclared dependency fails
here. The commands run from a folder outside the checkout, without PYTHONPATH, so the installed clipapp is the one
that runs (checked). Also: the ranges in pyproject.toml agree with the pins in requirements*.txt.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "assets" / "examples" / "fashion" / "ankle_boot.png"
LABELS = "ankle boot, bag, dress, sneaker, trouser"

# Run inside the fresh venv: every Requires-Dist of `clipapp` (with every extra it provides, and the extras those
# ask of other distributions) that is not satisfied there, plus any requirement named on the command line.
UNSATISFIED = textwrap.dedent("""
    import json, sys
    from importlib.metadata import PackageNotFoundError, distribution
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    def unsatisfied(dist_name, extras, seen):
        problems = []
        dist = distribution(dist_name)
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras or [""]):
                continue
            if canonicalize_name(req.name) == canonicalize_name(dist_name):
                continue  # clipapp[dev] -> clipapp[ray,...]: those extras are checked anyway
            problems += check(req, seen)
        return problems

    def check(req, seen):
        try:
            found = distribution(req.name)
        except PackageNotFoundError:
            return [f"{req} (not installed)"]
        if req.specifier and not req.specifier.contains(found.version, prereleases=True):
            return [f"{req} (found {found.version})"]
        key = (canonicalize_name(req.name), tuple(sorted(req.extras)))
        if req.extras and key not in seen:
            seen.add(key)
            return unsatisfied(req.name, sorted(req.extras), seen)
        return []

    clipapp = distribution("clipapp")
    extras = [""] + list(clipapp.metadata.get_all("Provides-Extra") or [])
    problems = unsatisfied("clipapp", extras, set())
    problems += [p for line in sys.argv[1:] for p in check(Requirement(line), set())]
    print(json.dumps({"extras": extras, "requires": clipapp.requires, "unsatisfied": problems}))
""")


def _run(cmd, *, cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(venv python, clipapp script, env, cwd): the wheel of this checkout installed into a fresh venv."""
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"  # build from a copy: setuptools writes build/ and *.egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    shutil.copytree(REPO / "clipapp", src / "clipapp", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    wheels = root / "wheels"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, src],
        cwd=root,
        env=dict(os.environ),
    )
    assert built.returncode == 0, built.stdout + built.stderr
    (wheel,) = wheels.glob("clipapp-*.whl")

    venv = root / "fresh"
    made = _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=root, env=dict(os.environ))
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    site = Path(
        _run(
            [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root, env=dict(os.environ)
        ).stdout.strip()
    )
    ours = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "project-venv.pth").write_text("\n".join(sorted(ours)) + "\n")
    done = _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", wheel],
        cwd=root,
        env=dict(os.environ),
    )
    assert done.returncode == 0, done.stdout + done.stderr

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CLIPAPP_MODEL_CONFIGS", "CLIPAPP_MODEL")}
    env.update(HF_HUB_OFFLINE="1", CLIPAPP_STATE_DIR=str(root / "state"))
    work = root / "elsewhere"  # outside the checkout: `import clipapp` must find the installed package
    work.mkdir()
    return python, venv / "bin" / "clipapp", env, work


@pytest.mark.slow
def test_wheel_runs_from_the_fresh_venv_not_the_checkout(installed):
    python, _, env, work = installed
    probe = "import clipapp, clipapp.model.spec as m; print(clipapp.__file__); print(m.DEMO_WEIGHTS)"
    where = _run([python, "-c", probe], cwd=work, env=env)
    assert where.returncode == 0, where.stderr
    module_file, weights = where.stdout.split()
    venv = python.parent.parent
    assert Path(module_file).is_relative_to(venv) and not Path(module_file).is_relative_to(REPO)
    assert Path(weights).is_relative_to(venv) and Path(weights).stat().st_size > 1_000_000  # package data shipped


@pytest.mark.slow
def test_clipapp_help_lists_the_commands(installed):
    _, clipapp, env, work = installed
    result = _run([clipapp, "--help"], cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    for command in ("classify", "similarity", "index", "search", "finetune", "eval", "serve"):
        assert command in result.stdout
    serve = _run([clipapp, "serve", "--help"], cwd=work, env=env)
    assert serve.returncode == 0, serve.stderr
    assert "--port" in serve.stdout and "--allowed-root" in serve.stdout


@pytest.mark.slow
def test_clipapp_classify_with_the_bundled_demo_model(installed):
    _, clipapp, env, work = installed
    result = _run(
        [
            clipapp,
            "classify",
            EXAMPLE,
            "--labels",
            LABELS,
            "--model",
            "demo",
            "--device",
            "cpu",
            "--top-k",
            "2",
            "--json",
        ],
        cwd=work,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["model"].startswith("demo")
    (item,) = payload["results"]
    assert item["top"][0]["label"] == "ankle boot" and item["top"][0]["prob"] > 0.5


@pytest.mark.slow
def test_every_declared_dependency_is_satisfied(installed):
    python, _, env, work = installed
    result = _run([python, "-c", UNSATISFIED, "clipapp-no-such-distribution>=1"], cwd=work, env=env)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert {"ray", "parquet", "sweeps", "map", "hf", "bench", "dev", "all"} <= set(report["extras"])
    assert any(r.startswith("torch") for r in report["requires"])
    # the check can fail: a requirement nobody installed is reported, and it is the only one
    assert report["unsatisfied"] == ["clipapp-no-such-distribution>=1 (not installed)"]


# ------------------------------------------------------------------------------------- ranges against the pins
def _pins(*names: str) -> dict[str, Requirement]:
    pins = {}
    for name in names:
        for line in (REPO / name).read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                req = Requirement(line)
                pins[canonicalize_name(req.name)] = req
    return pins


def _declared() -> tuple[list[Requirement], dict[str, list[Requirement]]]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = {
        name: [Requirement(r) for r in reqs if not r.startswith("clipapp[")]
        for name, reqs in project["optional-dependencies"].items()
    }
    return [Requirement(r) for r in project["dependencies"]], extras


def _pinned_version(req: Requirement) -> str:
    (spec,) = req.specifier
    assert spec.operator == "==", f"{req}: requirements files pin exact versions"
    return spec.version


def test_runtime_ranges_hold_the_runtime_lock_exactly():
    runtime, _ = _declared()
    lock = _pins("requirements.txt")
    declared = {canonicalize_name(r.name): r for r in runtime}
    assert set(declared) == set(lock), "requirements.txt (what the Dockerfile installs) = the runtime dependencies"
    for name, req in declared.items():
        assert req.specifier.contains(_pinned_version(lock[name])), f"{lock[name]} is outside {req}"


def test_extras_ranges_hold_their_pins():
    _, extras = _declared()
    pins = _pins("requirements-extras.txt", "requirements-dev.txt")
    for extra, reqs in extras.items():
        for req in reqs:
            name = canonicalize_name(req.name)
            assert name in pins, f"[{extra}] {req} has no pin in requirements-extras.txt / requirements-dev.txt"
            assert req.specifier.contains(_pinned_version(pins[name])), f"{pins[name]} is outside {req}"
            assert set(req.extras) <= set(pins[name].extras), f"{pins[name]} lacks the extras of {req}"
