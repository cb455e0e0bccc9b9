"""Search filters (clipapp/index/filters.py): dates (inclusive, EXIF else mtime), folder prefix with aliases, tag,
sort by date after the relevance cut-off, every search route (exact, IDSelector, over-fetch) against brute force, and
an index made before the filter indexes existed."""

from __future__ import annotations

import dataclasses
import datetime as dt
import sqlite3
import time

import numpy as np
import pytest

from clipapp.errors import ClipAppError
from clipapp.index import DB_NAME, FileInfo, ImageIndex, SearchFilter, SearchOptions
from clipapp.index import image_index as image_index_module
from tests.support.fake_index import SPEC, random_unit

DIM = 16


def _mtime(day: str, hour: int = 12) -> float:
    d = dt.date.fromisoformat(day)
    return time.mktime((d.year, d.month, d.day, hour, 0, 0, 0, 0, -1))


def _info(path: str, i: int, *, captured: str | None = None, mtime_day: str = "2000-01-01", hour: int = 12):
    return FileInfo(path=path, size=1, mtime=_mtime(mtime_day, hour), sha256=f"h{i}", captured_at=captured)


@pytest.fixture
def dated(tmp_path):
    """Six images: EXIF-dated ones, undated ones (mtime counts), one with an alias in another folder."""
    vectors = random_unit(6, DIM, seed=1)
    infos = [
        _info("/p/2020/a.jpg", 0, captured="2020-05-01 23:59:59", mtime_day="2024-01-01"),
        _info("/p/2020/b.jpg", 1, captured="2020-05-02 00:00:00"),
        _info("/p/2020b/c.jpg", 2, mtime_day="2020-05-01", hour=0),  # no EXIF date: mtime, local midnight
        _info("/p/2021/d.jpg", 3, mtime_day="2021-06-30", hour=23),
        _info("/p/2021/e.jpg", 4, captured="2021-01-01 08:00:00", mtime_day="2020-05-01"),
        _info("/q/f.jpg", 5, captured="2019-12-31 10:00:00"),
    ]
    index = ImageIndex.create(tmp_path / "idx", SPEC, DIM)
    index.add_items(vectors, infos)
    index.add_alias(FileInfo(path="/p/2021/copy-of-f.jpg", size=1, mtime=0.0, sha256="h5"))
    index.set_tags({"/p/2020/a.jpg": [("cat", 0.9)], "/p/2021/d.jpg": [("cat", 0.8)], "/q/f.jpg": [("dog", 0.7)]})
    index.save()
    yield index, vectors
    index.close()


def _ids(index, vector, k=10, **kwargs) -> list[int]:
    return [hit.id for hit in index.search(vector, k=k, **kwargs)[0].hits]


def test_dates_are_inclusive_whole_days_with_mtime_fallback(dated):
    index, vectors = dated
    day = SearchFilter.parse(after="2020-05-01", before="2020-05-01")
    # a: EXIF 23:59:59 of that day (its mtime, 2024, is ignored); c: no EXIF, mtime at local midnight;
    # e: mtime that day but an EXIF date of 2021, which wins
    assert sorted(_ids(index, vectors[0], filter=day)) == [0, 2]
    assert sorted(_ids(index, vectors[0], filter=SearchFilter.parse(after="2020-05-02"))) == [1, 3, 4]
    assert sorted(_ids(index, vectors[0], filter=SearchFilter.parse(before="2019-12-31"))) == [5]
    assert _ids(index, vectors[0], filter=SearchFilter.parse(after="2030-01-01")) == []


def test_under_is_a_folder_prefix_and_counts_aliases(dated):
    index, vectors = dated
    assert sorted(_ids(index, vectors[0], filter=SearchFilter.parse(under="/p/2020"))) == [0, 1]  # not /p/2020b
    assert sorted(_ids(index, vectors[0], filter=SearchFilter.parse(under="/p/2020/"))) == [0, 1]
    hits = index.search(vectors[5], k=10, filter=SearchFilter.parse(under="/p/2021"))[0].hits
    assert sorted(h.id for h in hits) == [3, 4, 5]  # f is under /q, its alias under /p/2021
    assert [h.path for h in hits if h.id == 5] == ["/q/f.jpg"]  # shown by its first path, as always


def test_tag_and_combined_filters(dated):
    index, vectors = dated
    assert sorted(_ids(index, vectors[0], tag="cat")) == [0, 3]
    assert sorted(_ids(index, vectors[0], filter=SearchFilter(tag="cat"))) == [0, 3]
    both = SearchFilter.parse(tag="cat", under="/p/2021", after="2021-01-01")
    assert _ids(index, vectors[0], filter=both) == [3]
    assert _ids(index, vectors[0], filter=SearchFilter.parse(tag="cat", before="2019-01-01")) == []


def test_sort_by_date_reorders_the_hits_above_the_cut_off(dated):
    index, vectors = dated
    by_score = index.search(vectors[1], k=6, threshold=-0.2)[0].hits
    by_date = index.search(vectors[1], k=6, threshold=-0.2, sort="date")[0].hits
    assert {h.id for h in by_date} == {h.id for h in by_score}  # the same images: the cut-off came first
    assert all(h.score >= -0.2 for h in by_date)
    dates = {0: "2020-05-01 23:59:59", 1: "2020-05-02", 2: "2020-05-01 00", 3: "2021-06-30", 4: "2021-01-01"}
    dates[5] = "2019-12-31"  # its alias has mtime 0 (1970): the latest date of its paths counts
    order = [h.id for h in by_date]
    assert order == sorted(order, key=lambda i: dates[i], reverse=True)
    assert index.search(vectors[1], k=2, sort="date")[0].hits[0].id in {h.id for h in by_score[:2]}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"after": "2020-13-01"}, "--after '2020-13-01' is not a date"),
        ({"before": "yesterday"}, "--before 'yesterday' is not a date"),
        ({"after": "2020-5-1"}, "YYYY-MM-DD"),
        ({"after": "2021-01-02", "before": "2021-01-01"}, "later than --before"),
        ({"under": "  "}, None),  # blank: no filter
    ],
)
def test_bad_filters_are_clear_errors(kwargs, message):
    if message is None:
        assert SearchFilter.parse(**kwargs).empty
        return
    with pytest.raises(ClipAppError, match=message):
        SearchFilter.parse(**kwargs)


def test_bad_sort_is_a_clear_error(dated):
    index, vectors = dated
    with pytest.raises(ClipAppError, match="Choose one of: relevance, date"):
        index.search(vectors[0], sort="newest")


@pytest.mark.parametrize("route", ["exact", "selector", "overfetch"])
def test_every_filtered_route_equals_brute_force(monkeypatch, route):
    n = 3000
    vectors = random_unit(n, DIM, seed=7)
    wide = route == "overfetch"  # 90% of the images pass (over-fetch), else 10% (IDSelector or exact)
    passes = np.array([(i % 10 != 0) if wide else (i % 10 == 3) for i in range(n)])
    infos = [FileInfo(f"/photos/{'in' if passes[i] else 'out'}/{i:05d}.jpg", 1, 0.0, f"s{i}") for i in range(n)]
    index = ImageIndex.in_memory(SPEC, DIM, exact_threshold=500)  # IVF over 3000
    index.add_items(vectors, infos)
    index.ensure_built()
    assert index.index_type == "ivf"
    monkeypatch.setattr(image_index_module, "FILTER_EXACT_MAX", 10**9 if route == "exact" else 0)
    monkeypatch.setattr(image_index_module, "FILTER_OVERFETCH_MIN_FRACTION", 0.0 if wide else 2.0)
    exact_calls: list[int] = []
    real = image_index_module.st.exact_over_ids
    monkeypatch.setattr(
        image_index_module.st, "exact_over_ids", lambda *a, **kw: exact_calls.append(1) or real(*a, **kw)
    )
    allowed = np.flatnonzero(passes)
    recall = []
    for query in random_unit(20, DIM, seed=8):
        truth = allowed[np.argsort(-(vectors[allowed] @ query))[:10]]
        found = _ids(index, query, k=10, filter=SearchFilter.parse(under="/photos/in"))
        assert set(found) <= set(allowed.tolist())
        recall.append(len(set(found) & set(truth.tolist())) / 10)
    assert min(recall) == 1.0 if route == "exact" else np.mean(recall) >= 0.9, recall
    # exact reads the allowed vectors; over-fetch found k allowed among its candidates (no fallback); the IDSelector
    # may fall back to exact where the probed lists held fewer than k allowed images
    assert bool(exact_calls) if route == "exact" else route == "selector" or not exact_calls
    index.close()


def test_an_index_made_before_the_filter_indexes_opens_and_filters(dated, tmp_path):
    index, vectors = dated
    folder = index.path
    index.close()
    db = sqlite3.connect(folder / DB_NAME)
    db.execute("DROP INDEX paths_by_captured")
    db.execute("DROP INDEX paths_by_undated_mtime")
    db.commit()
    db.close()
    with ImageIndex.open(folder) as reopened:
        assert sorted(_ids(reopened, vectors[0], filter=SearchFilter.parse(before="2020-05-01"))) == [0, 2, 5]
    db = sqlite3.connect(folder / DB_NAME)
    names = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    plan = " ".join(
        str(row)
        for row in db.execute(
            "EXPLAIN QUERY PLAN SELECT DISTINCT content_id FROM paths WHERE "
            + SearchFilter.parse(after="2020-01-01").where()[0],
            SearchFilter.parse(after="2020-01-01").where()[1],
        )
    )
    db.close()
    assert {"paths_by_captured", "paths_by_undated_mtime"} <= names
    assert "paths_by_captured" in plan and "paths_by_undated_mtime" in plan  # index ranges, not a table scan


def test_search_options_are_checked_once_on_creation():
    assert SearchOptions() == SearchOptions(10, None, SearchFilter(), "relevance")
    assert SearchOptions(k="3", sort=" Date ", filter=None) == SearchOptions(3, None, SearchFilter(), "date")
    assert SearchOptions(min_score=1).min_score == 1.0
    with pytest.raises(ClipAppError, match="k must be at least 1, not 0"):
        SearchOptions(k=0)
    with pytest.raises(ClipAppError, match="Choose one of: relevance, date"):
        SearchOptions(sort="newest")
    with pytest.raises(dataclasses.FrozenInstanceError):
        SearchOptions().k = 5  # type: ignore[misc]
    # the loose keywords' record: a tag given on its own replaces the filter's
    chosen = SearchFilter.parse(under="/p", tag="dog")
    assert SearchOptions.of(k=2, threshold=0.5, tag="cat", filter=chosen, sort="date") == SearchOptions(
        2, 0.5, dataclasses.replace(chosen, tag="cat"), "date"
    )


def test_search_takes_options_or_the_keywords_not_both(dated):
    index, vectors = dated
    chosen = SearchFilter.parse(under="/p/2021")
    by_keywords = index.search(vectors[5], k=3, threshold=-1.0, filter=chosen, sort="date")
    assert index.search(vectors[5], options=SearchOptions(3, -1.0, chosen, "date")) == by_keywords
    with pytest.raises(ClipAppError, match="not both"):
        index.search(vectors[5], k=3, options=SearchOptions())


def _forced(monkeypatch, route: str) -> None:
    """Route every filtered search one way: "prefilter" lists the allowed ids and scores them exactly; "overfetch"
    also on a flat (exact) structure, whose size would otherwise always be scored exactly."""
    monkeypatch.setattr(image_index_module, "FILTER_EXACT_MAX", 10**9 if route == "prefilter" else 0)
    if route != "prefilter":
        monkeypatch.setattr(ImageIndex, "_exact_max", lambda self: 0)
    monkeypatch.setattr(image_index_module, "FILTER_OVERFETCH_MIN_FRACTION", 2.0 if route == "prefilter" else 0.0)


@pytest.mark.parametrize("passing", [0.1, 0.5, 0.9])
def test_overfetch_checked_in_sql_returns_the_prefilter_hits(monkeypatch, passing):
    """On an exact structure the over-fetched candidates checked against SQL give exactly the prefilter's hits (ids
    and scores), folder aliases and tags included, without listing the allowed ids; a query whose candidates hold
    fewer than k allowed images still gets them (the retry, then the listing)."""
    n = 2000
    vectors = random_unit(n, DIM, seed=3)
    rng = np.random.default_rng(4)
    inside = rng.random(n) < passing
    infos = [FileInfo(f"/photos/{'in' if inside[i] else 'out'}/{i:05d}.jpg", 1, 0.0, f"s{i}") for i in range(n)]
    index = ImageIndex.in_memory(SPEC, DIM)
    index.add_items(vectors, infos)
    aliased = np.flatnonzero(~inside)[:50]  # outside images that an alias under /photos/in lets in
    for i in aliased.tolist():
        index.add_alias(FileInfo(f"/photos/in/alias-{i:05d}.jpg", 1, 0.0, f"s{i}"))
    index.set_tags({infos[i].path: [("cat", 0.9)] for i in range(0, n, 3)})
    assert index.index_type == "flat"
    queries = np.concatenate([random_unit(10, DIM, seed=5), -vectors[np.flatnonzero(inside)[:3]]])
    filters = [SearchFilter.parse(under="/photos/in"), SearchFilter.parse(under="/photos/in", tag="cat")]
    answers = {}
    for route in ("prefilter", "overfetch"):
        _forced(monkeypatch, route)
        if route == "overfetch":  # the route is chosen by a count: the allowed ids are never listed
            monkeypatch.setattr(index._store, "ids_matching", lambda f: pytest.fail("listed the allowed ids"))
        answers[route] = [
            [(h.id, round(h.score, 5)) for h in index.search(q, k=10, filter=f)[0].hits]
            for f in filters
            for q in queries
        ]
    assert answers["overfetch"] == answers["prefilter"]
    allowed = set(np.flatnonzero(inside).tolist()) | set(aliased.tolist())
    assert all(len(hits) == 10 and {i for i, _ in hits} <= allowed for hits in answers["prefilter"][: len(queries)])
    index.close()


def test_overfetch_short_of_k_allowed_candidates_falls_back_to_the_listing(monkeypatch):
    n = 1000
    vectors = random_unit(n, DIM, seed=6)
    query = random_unit(1, DIM, seed=7)[0]
    far = np.argsort(vectors @ query)[:20]  # the 20 images least like the query are the only ones allowed
    infos = [FileInfo(f"/p/{'in' if i in set(far.tolist()) else 'out'}/{i}.jpg", 1, 0.0, f"s{i}") for i in range(n)]
    index = ImageIndex.in_memory(SPEC, DIM)
    index.add_items(vectors, infos)
    _forced(monkeypatch, "overfetch")
    listed = []
    real = index._store.ids_matching
    monkeypatch.setattr(index._store, "ids_matching", lambda f: listed.append(1) or real(f))
    monkeypatch.setattr(image_index_module, "FILTER_OVERFETCH_MAX_FETCH", 100)  # the retry cannot reach them
    found = _ids(index, query, k=5, filter=SearchFilter.parse(under="/p/in"))
    truth = far[np.argsort(-(vectors[far] @ query))][:5].tolist()
    assert found == truth and listed == [1]
    index.close()


def test_the_route_count_counts_passing_paths_and_stops_at_its_limit(dated):
    index, _ = dated
    store, folder = index._store, SearchFilter.parse(under="/p")
    assert store.count_matching(folder) == 6  # five images under /p, and f's alias /p/2021/copy-of-f.jpg
    assert store.count_matching(folder, limit=4) == 4
    assert store.count_matching(SearchFilter.parse(tag="cat")) == 2
    assert store.count_matching(SearchFilter.parse(after="2999-01-01")) == 0
