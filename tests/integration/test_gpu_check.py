"""bench/gpu_check.sh, the one-command GPU check: without CUDA it stops at once with one line and exit status 3;
with --device cpu --small every section runs end to end (the tiny model) and prints one table."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support.paths import REPO_DIR, TESTS_DIR

SCRIPT = REPO_DIR / "bench" / "gpu_check.sh"


def gpu_check(*args: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        CUDA_VISIBLE_DEVICES="",  # no GPU, even on a machine that has one
        HF_HUB_OFFLINE="1",
        CLIPAPP_MODEL_CONFIGS=str(TESTS_DIR / "data"),
    )
    return subprocess.run([str(SCRIPT), *args], cwd=REPO_DIR, env=env, capture_output=True, text=True, timeout=600)


def test_without_cuda_it_says_so_in_one_line():
    out = gpu_check()
    assert out.returncode == 3
    assert out.stdout == ""
    assert out.stderr.count("\n") == 1 and out.stderr.startswith("gpu_check: no CUDA device"), out.stderr


@pytest.mark.server
@pytest.mark.slow
def test_on_the_cpu_every_section_runs_and_prints_one_table(tiny_spec):
    out = gpu_check("--device", "cpu", "--small", "--model", tiny_spec, "--seconds", "2", "--finetune-modes", "head")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("| ") and not line.startswith("| figure")]
    names = [row.split(" | ")[0][2:] for row in rows]
    assert [name.split(":")[0] for name in names] == [
        "model",
        "encode",
        "encode",
        "classify",
        "fine-tune head",
        "serving",
    ], out.stdout
    serving = rows[-1]
    assert "req/s" in serving and " 0 errors" in serving, serving
