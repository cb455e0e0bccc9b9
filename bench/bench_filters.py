"""Filtered search benchmark: a date filter on ImageIndex.search beside unfiltered search and numpy, one run.

    flock /tmp/bench.lock python bench/bench_filters.py [--n 1M] [--dim 512] [--runs 3] [--queries 30]

Data: bench_search.py's clustered unit vectors written into an index folder in bulk (kept under --work and reused by
the next run). Each image gets a random day out of 1000 (70% as an EXIF `captured_at`, 30% only as the file's mtime,
so both halves of the date filter are used): a 10-day range passes 1% of the images, 50 days 5%, 100 days 10%, 500
days 50%.

Per run and per selectivity, the single-query p50 (ms, over --queries queries, each method on the same queries) of:
* unfiltered: `index.search(q, k=10)`;
* filtered, ours: `index.search(q, k=10, filter=SearchFilter(after, before))` as shipped (the SQL count that
  chooses the route, and the listing or the candidate check, included), and each route of --routes forced: exact
  (list the allowed ids, score their vectors read from the file), selector (list them, faiss IDSelector prefilter),
  overfetch (2k/fraction unfiltered candidates, checked against SQL by content id);
* the SQL listing of the allowed ids alone, and the SQL count alone;
* numpy: the obvious mask + brute force over the vectors held in RAM (`s = X @ q; s[~mask] = -inf; top 10`), with
  the mask precomputed (it does not count the date lookup).
Recall@10 of each filtered route against the exact filtered answer. Figures: min / median / max over the runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from bench_search import SIZES, clustered_dataset

from clipapp.index import FileInfo, ImageIndex, SearchFilter
from clipapp.index import image_index as image_index_module

K = 10
DAYS = 1000
FIRST_DAY = dt.date(2020, 1, 1)
SELECTIVITY_DAYS = {"1%": 10, "5%": 50, "10%": 100, "50%": 500}


def day_stamp(day: dt.date) -> float:
    return time.mktime((day.year, day.month, day.day, 12, 0, 0, 0, 0, -1))


def build(folder: Path, database: np.ndarray, days: np.ndarray, dated: np.ndarray) -> None:
    index = ImageIndex.create(folder, "bench", database.shape[1])
    for start in range(0, len(database), 100_000):
        stop = min(len(database), start + 100_000)
        infos = []
        for i in range(start, stop):
            day = FIRST_DAY + dt.timedelta(days=int(days[i]))
            captured = f"{day.isoformat()} 12:00:00" if dated[i] else None
            infos.append(FileInfo(f"/photos/{i:08d}.jpg", 1000, day_stamp(day), f"{i:064x}", captured_at=captured))
        index.add_items(database[start:stop], infos)
        index.save()
    index.ensure_built()
    index.save()
    index.close()


def p50_ms(fn, queries: np.ndarray) -> tuple[float, list]:
    fn(queries[0])  # warm-up
    times, answers = [], []
    for query in queries:
        started = time.perf_counter()
        answers.append(fn(query))
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), answers


def forced(route: str):
    """Patch the route constants so that ImageIndex._search_filtered takes `route`."""
    if route == "exact":
        return {"FILTER_EXACT_MAX": 10**12}
    if route == "selector":
        return {"FILTER_EXACT_MAX": 0, "FILTER_OVERFETCH_MIN_FRACTION": 2.0}
    return {"FILTER_EXACT_MAX": 0, "FILTER_OVERFETCH_MIN_FRACTION": 0.0}  # over-fetch


def one_run(
    index: ImageIndex, database: np.ndarray, days: np.ndarray, queries: np.ndarray, which: list, routes: list
) -> dict:
    row: dict = {}
    ids = lambda result: [hit.id for hit in result[0].hits]  # noqa: E731
    row["unfiltered"], _ = p50_ms(lambda q: ids(index.search(q, k=K)), queries)
    for label in which:
        span = SELECTIVITY_DAYS[label]
        after = FIRST_DAY + dt.timedelta(days=200)
        chosen = SearchFilter(after=after, before=after + dt.timedelta(days=span - 1))
        mask = (days >= 200) & (days < 200 + span)

        def brute(q, mask=mask):
            scores = database @ q
            scores[~mask] = -np.inf
            top = np.argpartition(scores, len(scores) - K)[-K:]
            return top[np.argsort(-scores[top])].tolist()

        row[f"{label} numpy"], truth = p50_ms(brute, queries)
        row[f"{label} sql"], _ = p50_ms(lambda q, f=chosen: index._store.ids_matching(f), queries[:5])
        if hasattr(index._store, "count_matching"):  # not in the code before it (a before/after comparison)
            row[f"{label} count"], _ = p50_ms(lambda q, f=chosen: index._store.count_matching(f), queries[:5])
        row[f"{label} ours"], found = p50_ms(lambda q, f=chosen: ids(index.search(q, k=K, filter=f)), queries)
        row[f"{label} ours recall"] = recall(found, truth)
        for route in filter(None, routes):
            saved = {name: getattr(image_index_module, name) for name in forced(route)}
            for name, value in forced(route).items():
                setattr(image_index_module, name, value)
            try:
                row[f"{label} {route}"], found = p50_ms(
                    lambda q, f=chosen: ids(index.search(q, k=K, filter=f)), queries
                )
            finally:
                for name, value in saved.items():
                    setattr(image_index_module, name, value)
            row[f"{label} {route} recall"] = recall(found, truth)
        row[f"{label} passing"] = int(mask.sum())
    return row


def recall(found: list, truth: list) -> float:
    return sum(len(set(f) & set(t)) for f, t in zip(found, truth, strict=True)) / max(1, sum(map(len, truth)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", default="1M")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--work", default="/tmp/bench_filters")
    parser.add_argument("--selectivities", default="1%,10%,50%", help="of " + ", ".join(SELECTIVITY_DAYS))
    parser.add_argument("--routes", default="exact,selector,overfetch", help="the routes to force, comma separated")
    args = parser.parse_args()
    n = SIZES.get(args.n) or int(args.n)
    database, queries = clustered_dataset(n, args.dim, args.queries, seed=0)
    rng = np.random.default_rng(1)
    days, dated = rng.integers(0, DAYS, n), rng.random(n) < 0.7
    folder = Path(args.work) / f"{n}x{args.dim}"
    if not folder.exists():
        started = time.perf_counter()
        build(folder, database, days, dated)
        print(f"built {folder} in {time.perf_counter() - started:.0f} s", flush=True)
    index = ImageIndex.open(folder)
    index.ensure_built()
    print(f"structure: {index.structure}", flush=True)
    rows = []
    for run in range(args.runs):
        rows.append(one_run(index, database, days, queries, args.selectivities.split(","), args.routes.split(",")))
        print(f"run {run + 1}: " + ", ".join(f"{k}={v:.3g}" for k, v in rows[-1].items()), flush=True)
    print(f"\n{'at ' + args.n + ' x ' + str(args.dim):<28} p50 ms (min / median / max of {args.runs} runs)")
    for key in rows[0]:
        values = sorted(r[key] for r in rows)
        print(f"{key:<28} {values[0]:.3g} / {statistics.median(values):.3g} / {values[-1]:.3g}")


if __name__ == "__main__":
    main()
