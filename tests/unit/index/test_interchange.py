"""clipapp.index interchange: export to clip-retrieval's embedding-folder layout (parquet or JSON-lines metadata),
import into a new index without encoding (same search answers, aliases and tags), a folder written the way
clip-retrieval writes it (float16, image_path only), and the refusals: another model, another dimension, no such
layout, no pyarrow."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from clipapp.errors import ClipAppError, MissingExtraError
from clipapp.index import FileInfo, ImageIndex
from clipapp.index.interchange import export_index, import_embeddings
from tests.support.fake_index import SPEC, infos_for, random_unit

D = 16


def _source(tmp_path, n=3000):
    folder = tmp_path / "idx"
    index = ImageIndex.create(folder, SPEC, D, exact_threshold=1000)
    index.add_items(random_unit(n, D, seed=12), infos_for(range(n)))
    index.add_alias(FileInfo("/copies/0000003.jpg", 1, 1.0, f"{3:064x}"))
    index.set_tags({"/photos/0000003.jpg": [("cat", 0.9), ("pet", 0.4)]})
    index.save()
    index.remove_paths([f"/photos/{i:07d}.jpg" for i in range(100, 400)])
    index.save()
    return index


def _answers(index, queries):
    return [[(h.path, round(h.score, 5), h.aliases) for h in r.hits] for r in index.search(queries, k=5)]


@pytest.mark.parametrize("fmt,meta_file", [("parquet", "metadata_0.parquet"), ("npy", "metadata_0.jsonl")])
def test_export_then_import_into_a_new_index_answers_the_same(tmp_path, fmt, meta_file):
    source = _source(tmp_path)
    report = export_index(source.path, tmp_path / "out", fmt, rows_per_part=1000)
    assert report.images == 2700 and report.parts == 3 and report.format == fmt
    out = tmp_path / "out"
    assert (out / "metadata" / meta_file).exists()
    first = np.load(out / "img_emb" / "img_emb_0.npy")
    assert first.shape == (1000, D) and first.dtype == np.float32
    np.testing.assert_allclose(first[:3], source.vectors()[:3], atol=1e-7)
    assert json.loads((out / "clipapp.json").read_text()) | {"format": fmt} == {
        "model": SPEC,
        "dim": D,
        "images": 2700,
        "parts": 3,
        "format": fmt,
    }

    target = ImageIndex.create(tmp_path / "new", SPEC, D, exact_threshold=1000)
    imported = import_embeddings(target, out, batch_rows=700)
    assert imported.to_dict() == {"added": 2701, "updated": 0, "removed": 0, "skipped": [], "errors": {}, "total": 2701}
    queries = random_unit(15, D, seed=3)
    assert _answers(target, queries) == _answers(source, queries)
    assert target.tags("/copies/0000003.jpg") == [("cat", 0.9), ("pet", 0.4)]
    record = target.record("/photos/0000005.jpg")
    assert (record.size, record.mtime, record.sha256) == (1005, 5.0, f"{5:064x}")
    again = import_embeddings(target, out)  # a resumed or repeated import adds nothing
    assert (again.added, again.updated, len(target)) == (0, 2701, 2700)


def test_a_clip_retrieval_folder_float16_with_image_path_only_imports(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    vectors = random_unit(50, D, seed=8).astype(np.float16)
    (tmp_path / "emb" / "img_emb").mkdir(parents=True)
    (tmp_path / "emb" / "metadata").mkdir()
    np.save(tmp_path / "emb" / "img_emb" / "img_emb_0.npy", vectors)
    paths = [f"/laion/{i:05d}.jpg" for i in range(50)]
    pq.write_table(pa.table({"image_path": paths, "caption": ["x"] * 50}), tmp_path / "emb/metadata/metadata_0.parquet")
    index = ImageIndex.create(tmp_path / "idx", SPEC, D)
    assert import_embeddings(index, tmp_path / "emb").added == 50
    hits = index.search(vectors[7].astype(np.float32), k=1)[0].hits
    assert hits[0].path == paths[7] and hits[0].score > 0.999


def test_import_refuses_another_model_or_dimension_and_a_folder_of_another_layout(tmp_path):
    source = _source(tmp_path, n=500)
    export_index(source.path, tmp_path / "out", "npy")
    other_model = ImageIndex.create(tmp_path / "m", "other-model", D)
    with pytest.raises(ClipAppError, match=f"embeddings of model {SPEC}.*index .* of model other-model"):
        import_embeddings(other_model, tmp_path / "out")
    (tmp_path / "out" / "clipapp.json").unlink()  # as clip-retrieval writes it: no model name, the dimension is checked
    wider = ImageIndex.create(tmp_path / "w", SPEC, D * 2)
    with pytest.raises(ClipAppError, match=r"shape \(200, 16\).*holds 32-d vectors"):
        import_embeddings(wider, tmp_path / "out")
    with pytest.raises(ClipAppError, match="not an embedding folder: expected img_emb/img_emb_0.npy"):
        import_embeddings(wider, tmp_path / "m")
    assert len(other_model) == 0 and len(wider) == 0


def test_export_refuses_a_used_folder_an_unknown_format_and_names_the_extra_without_pyarrow(tmp_path, monkeypatch):
    source = _source(tmp_path, n=500)
    with pytest.raises(ClipAppError, match="Unknown export format 'csv'"):
        export_index(source.path, tmp_path / "x", "csv")
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "f").write_text("mine")
    with pytest.raises(ClipAppError, match="not an empty folder"):
        export_index(source.path, tmp_path / "used", "npy")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(MissingExtraError, match=r"pip install 'clipapp\[parquet\]'"):
        export_index(source.path, tmp_path / "p", "parquet")
    assert export_index(source.path, tmp_path / "n", "npy").images == 200  # npy needs numpy only
    assert not (tmp_path / "p").exists()
