"""How long the collection map takes to draw in Chromium (Playwright), at N images, as shipped (at most MAX_DRAWN
points drawn: a uniform sample) beside drawing every point.

    flock /tmp/bench.lock python bench/bench_map_browser.py --n 100000 --runs 3

The page is `clipapp map --out`'s (viz/map_page.py's `map_document`) for a synthetic map: N points around 30
cluster centres in [0, 1]^2, paths like a photo library's. Per run (a fresh browser page each):
* load: `page.goto` of the file until its load event (read, parse the JSON payload, draw) in ms;
* redraw: in the page, JSON.parse of the payload + `clipappMap` + two animation frames (the canvas composited);
* drag frame: the mean time of one lasso mousemove (each repaints every drawn point and the lasso), over 60 moves;
* select: the mouseup that closes the lasso and hands the selected paths over (point-in-polygon over the drawn).
Figures: min / median / max over the runs. The browser: /usr/bin/chromium (or $CLIPAPP_CHROMIUM), headless, no GPU.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from clipapp.app.actions.collection_map import CollectionMap, MapCluster  # noqa: E402
from clipapp.viz import map_page  # noqa: E402

CHROMIUM = os.environ.get("CLIPAPP_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
CLUSTERS = 30

MEASURE = """async () => {
  const frames = () => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)));
  const root = document.getElementById('map'), text = document.getElementById('map-data').textContent;
  let t = performance.now();
  clipappMap(root, JSON.parse(text), () => {});
  await frames();
  const redraw = performance.now() - t;
  let picked = null;
  clipappMap(root, JSON.parse(text), paths => { picked = paths; });
  await frames();
  const canvas = root.querySelector('canvas'), r = canvas.getBoundingClientRect();
  const at = (type, x, y, target) => target.dispatchEvent(new MouseEvent(type,
    {clientX: r.left + x * r.width, clientY: r.top + y * r.height, bubbles: true}));
  at('mousedown', 0.5, 0.05, canvas);
  const moves = 60;
  t = performance.now();
  for (let i = 1; i <= moves; i++) {  // around an ellipse through the middle of the map
    const a = (2 * Math.PI * i) / moves;
    at('mousemove', 0.5 + 0.4 * Math.sin(a), 0.5 - 0.45 * Math.cos(a), canvas);
  }
  const drag = (performance.now() - t) / moves;
  t = performance.now();
  at('mouseup', 0.5, 0.05, window);
  const select = performance.now() - t;
  return {redraw, drag, select, selected: picked ? picked.length : -1};
}"""


def synthetic_map(n: int, seed: int = 0) -> CollectionMap:
    rng = np.random.default_rng(seed)
    centres = rng.random((CLUSTERS, 2))
    cluster = rng.integers(0, CLUSTERS, n).astype(np.int32)
    xy = np.clip(centres[cluster] + 0.04 * rng.standard_normal((n, 2)), 0, 1).astype(np.float32)
    sizes = np.bincount(cluster, minlength=CLUSTERS)
    paths = [f"/home/ann/Pictures/{2010 + i % 15}/{i // 1000:04d}/IMG_{i:07d}.jpg" for i in range(n)]
    return CollectionMap(
        paths, xy, cluster, [MapCluster(c, f"cluster {c}", int(sizes[c])) for c in range(CLUSTERS)], "umap"
    )


def one_page(browser, url: str) -> dict:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    started = time.perf_counter()
    page.goto(url, wait_until="load")
    page.wait_for_selector("#map canvas")
    load = (time.perf_counter() - started) * 1000
    figures = page.evaluate(MEASURE)
    page.close()
    return {"load": load, **figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    result = synthetic_map(args.n)
    folder = Path(tempfile.mkdtemp(prefix="bench-map-browser-"))
    pages = {}
    for drawn in (map_page.MAX_DRAWN, args.n):
        path = folder / f"map-{drawn}.html"
        payload = map_page.drawn_payload(result, lambda p: "file://" + p, max_drawn=drawn)
        html = map_page.map_document(result, lambda p: "file://" + p, max_drawn=drawn)
        path.write_text(html, encoding="utf-8")
        pages[drawn] = (path, len(payload["points"]))
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        for drawn, (path, count) in pages.items():
            rows = [one_page(browser, path.as_uri()) for _ in range(args.runs)]
            size = path.stat().st_size / 2**20
            label = "as shipped" if drawn == map_page.MAX_DRAWN else "every point"
            print(f"\nN={args.n}, {count} points drawn ({label}), page {size:.1f} MB, runs={args.runs}")
            for key in ("load", "redraw", "drag", "select"):
                values = sorted(r[key] for r in rows)
                print(f"  {key:<7} ms  {values[0]:8.1f} / {statistics.median(values):8.1f} / {values[-1]:8.1f}")
            print(f"  lasso selected {rows[-1]['selected']} points")
        browser.close()


if __name__ == "__main__":
    main()
