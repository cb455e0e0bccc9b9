"""The one folder-or-zip context manager (clipapp.images.archive.labelled_root) and the old paths of the zip names.

Zip safety itself (escaping names, links, bombs, floods) is tested in test_finetune.py's "zip safety" section.
"""

from __future__ import annotations

import importlib
import zipfile

import pytest

from clipapp.errors import ClipAppError
from clipapp.images import archive
from clipapp.images.archive import labelled_root


def _zip(path, names):
    with zipfile.ZipFile(path, "w") as z:
        for name in names:
            z.writestr(name, b"x")
    return path


def test_a_folder_is_its_own_root(tmp_path):
    with labelled_root(tmp_path) as root:
        assert root == tmp_path


def test_a_zip_is_extracted_for_the_block_and_removed_after(tmp_path):
    path = _zip(tmp_path / "set.ZIP", ["top/red/a.png", "top/blue/b.jpg", "top/blue/notes.txt"])
    with labelled_root(str(path)) as root:
        assert root.name == "top" and sorted(p.name for p in root.iterdir()) == ["blue", "red"]
        assert sorted(p.name for p in root.rglob("*") if p.is_file()) == ["a.png", "b.jpg"]
        extracted = root
    assert not extracted.exists()


def test_a_refused_zip_leaves_nothing_behind(tmp_path):
    path = _zip(tmp_path / "loose.zip", ["a.png", "red/b.png"])
    with pytest.raises(ClipAppError, match="one folder per class"):
        with labelled_root(path):
            pass
    with pytest.raises(ClipAppError, match="no image files"):
        with labelled_root(_zip(tmp_path / "empty.zip", ["notes.txt"])):
            pass


def test_fine_tuning_and_evaluation_share_it():
    from clipapp.classify import evaluation
    from clipapp.finetune import run

    assert evaluation.labelled_root is labelled_root and run.labelled_root is labelled_root


def test_the_zip_names_keep_their_old_paths():
    import clipapp.finetune as finetune

    assert finetune.extract_labelled_zip is archive.extract_labelled_zip
    assert finetune.MAX_ZIP_FILES == archive.MAX_ZIP_FILES
    intake = importlib.import_module("clipapp.finetune.intake")
    with pytest.warns(DeprecationWarning, match="clipapp.images.archive.extract_labelled_zip"):
        assert intake.extract_labelled_zip is archive.extract_labelled_zip
