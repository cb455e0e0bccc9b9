"""A folder of copied photos indexed through the CLI: where the CLI tests of index-reading commands start."""

from __future__ import annotations

from pathlib import Path

from clipapp.app.cli import main


def indexed_copy(photos: list[Path], tmp_path: Path, spec: str, capsys) -> tuple[Path, Path]:
    """Copy `photos` into tmp_path/pics, `clipapp index` them into tmp_path/index; returns (folder, index)."""
    folder, index = tmp_path / "pics", tmp_path / "index"
    folder.mkdir()
    for photo in photos:
        (folder / photo.name).write_bytes(photo.read_bytes())
    assert main(["index", str(folder), "--index", str(index), "--model", spec, "--json"]) == 0
    capsys.readouterr()
    return folder, index
