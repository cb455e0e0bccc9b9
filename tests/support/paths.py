"""Where the tests' files are, and the tiny model they use (tests/data/clipapp-tiny.json)."""

from __future__ import annotations

from pathlib import Path

TESTS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = TESTS_DIR.parent
TINY_MODEL = "clipapp-tiny"  # tests/data/clipapp-tiny.json: a 2-layer open_clip CLIP, 32-d embeddings
EXAMPLES_DIR = REPO_DIR / "assets" / "examples"
