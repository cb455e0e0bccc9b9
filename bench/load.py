"""Load test on loopback: clipapp beside a no-op Gradio app, and clipapp's plain HTTP API beside its Gradio API.

    python bench/load.py [--users 16] [--seconds 15] [--model demo] [--runs 3]     # the load figures
    python bench/load.py --sessions 300                                          # RSS after many sessions
    python bench/load.py --hostile                                               # RSS per hostile image
    python bench/load.py --figures --runs 3                                      # heatmap renderers

Load: N concurrent gradio_client users for a bounded time against (a) bench/noop_app.py, a Gradio app with the
same inputs whose handlers do nothing (the ceiling Gradio allows on this machine), and (b) clipapp, for /classify
(1 and 8 images) and /search_text; then the same users on POST /v1/classify with plain HTTP (requests). Prints
requests/s, p50, p99, errors and the app's peak RSS, with the ratios (b)/(a) and /v1 over Gradio.
Sessions: RSS of a fresh app, then after S sessions each upload 5 images to "my uploads" and search them.
Hostile: the peak RSS each image of tests/support/hostile.py causes when classified on ViT-B-32 with random weights.
Only 127.0.0.1 is contacted: the apps are started here, on free ports. Run under `flock /tmp/bench.lock`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gradio_client import Client, handle_file  # noqa: E402

from tests.support.apprunner import free_port, running_app, wait_until_up  # noqa: E402

FASHION = sorted((REPO / "assets" / "examples" / "fashion").glob("*.png"))
LABELS = "t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot"


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def noop_app():
    port = free_port()
    proc = subprocess.Popen([sys.executable, str(REPO / "bench" / "noop_app.py"), str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(url, proc)
        yield proc, url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def gradio_calls(client: Client, i: int) -> dict:
    one = [handle_file(str(FASHION[i % len(FASHION)]))]
    eight = [handle_file(str(FASHION[(i + j) % len(FASHION)])) for j in range(8)]
    return {"/classify 1 image": lambda: client.predict(one, LABELS, api_name="/classify"),
            "/classify 8 images": lambda: client.predict(eight, LABELS, api_name="/classify"),
            "/search_text": lambda: client.predict("examples", "a sneaker", api_name="/search_text")}


def http_call(url: str, i: int):
    import requests

    session = requests.Session()
    path = FASHION[i % len(FASHION)]
    payload = path.read_bytes()

    def call():
        response = session.post(url + "v1/classify", files={"images": (path.name, payload, "image/png")},
                                data={"labels": LABELS})
        response.raise_for_status()
        return response.json()
    return call


def hammer(make_call, users: int, seconds: float) -> dict:
    """`users` threads each calling their own `make_call(i)()` in a loop for `seconds`."""
    calls = [make_call(i) for i in range(users)]  # clients connect before the clock starts
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    start = time.perf_counter()
    stop_at = start + seconds

    def user(call) -> None:
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            try:
                call()
                with lock:
                    latencies.append(time.perf_counter() - t0)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(exc)[:200])

    with ThreadPoolExecutor(users) as pool:
        list(pool.map(user, calls))
    wall = time.perf_counter() - start
    ms = np.array(latencies or [np.nan]) * 1000
    return {"n": len(latencies), "rps": len(latencies) / wall, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "errors": errors}


def run_load(args) -> list[dict]:
    rows = []
    with noop_app() as (noop, noop_url):
        for name in ("/classify 1 image", "/classify 8 images", "/search_text"):
            clients = {}

            def make(i, url=noop_url, name=name):
                clients[i] = Client(url, verbose=False)
                return gradio_calls(clients[i], i)[name]
            rows.append({"app": "no-op Gradio", "endpoint": name, **hammer(make, args.users, args.seconds)})
        noop_peak = rss_mb(noop.pid, "VmHWM")
    with tempfile.TemporaryDirectory() as tmp, \
            running_app(["--model", args.model, "--state-dir", tmp]) as (proc, url):
        Client(url, verbose=False).predict("examples", "a sneaker", api_name="/search_text")  # build the index
        for name in ("/classify 1 image", "/classify 8 images", "/search_text"):
            def make(i, url=url, name=name):
                return gradio_calls(Client(url, verbose=False), i)[name]
            rows.append({"app": "clipapp", "endpoint": name, **hammer(make, args.users, args.seconds)})
        rows.append({"app": "clipapp", "endpoint": "POST /v1/classify 1 image",
                     **hammer(lambda i: http_call(url, i), args.users, args.seconds)})
        # Same answers on both paths.
        via_gradio = Client(url, verbose=False).predict([handle_file(str(FASHION[0]))], LABELS, api_name="/classify")
        via_http = http_call(url, 0)()
        same = [t["label"] for t in via_gradio["results"][0]["top"]] == [t["label"] for t in via_http["results"][0]["top"]] \
            and np.allclose([t["prob"] for t in via_gradio["results"][0]["top"]],
                            [t["prob"] for t in via_http["results"][0]["top"]], atol=1e-6)
        app_peak = rss_mb(proc.pid, "VmHWM")
    for row in rows:
        row["peak"] = noop_peak if row["app"] == "no-op Gradio" else app_peak
    rows.append({"same_results": same})
    return rows


def print_load(runs: list[list[dict]], args) -> None:
    print(f"## load: {args.users} users, {args.seconds:.0f} s per endpoint, model {args.model}, {len(runs)} run(s)\n")
    print("| app | endpoint | req/s (min / median / max) | p50 ms | p99 ms | errors | app peak RSS MB |")
    print("|---|---|---|---|---|---|---|")
    table = defaultdict(list)
    for run in runs:
        for row in run[:-1]:
            table[(row["app"], row["endpoint"])].append(row)
    for (app, endpoint), rows in table.items():
        rps = sorted(r["rps"] for r in rows)
        print(f"| {app} | {endpoint} | {rps[0]:.1f} / {np.median(rps):.1f} / {rps[-1]:.1f} | "
              f"{np.median([r['p50'] for r in rows]):.0f} | {np.median([r['p99'] for r in rows]):.0f} | "
              f"{sum(len(r['errors']) for r in rows)} | {np.median([r['peak'] for r in rows]):.0f} |")
    print("\n| ratio | per run | median |\n|---|---|---|")
    for endpoint in ("/classify 1 image", "/classify 8 images", "/search_text"):
        ratios = [next(r for r in run if r.get("endpoint") == endpoint and r["app"] == "clipapp")["rps"] /
                  next(r for r in run if r.get("endpoint") == endpoint and r["app"] == "no-op Gradio")["rps"]
                  for run in runs]
        print(f"| clipapp / no-op, {endpoint} | {', '.join(f'{x:.2f}' for x in ratios)} | {np.median(ratios):.2f} |")
    http = [next(r for r in run if r.get("endpoint") == "POST /v1/classify 1 image")["rps"] /
            next(r for r in run if r.get("endpoint") == "/classify 1 image" and r["app"] == "clipapp")["rps"]
            for run in runs]
    print(f"| /v1/classify / Gradio /classify, 1 image | {', '.join(f'{x:.1f}' for x in http)} | "
          f"{np.median(http):.1f} |")
    print(f"\nsame results on /v1/classify and Gradio /classify: {all(run[-1]['same_results'] for run in runs)}")
    for run in runs:
        for row in run[:-1]:
            for error in row["errors"][:3]:
                print(f"  error ({row['app']} {row['endpoint']}): {error}")


def run_sessions(args) -> None:
    images = FASHION[:5]
    with tempfile.TemporaryDirectory() as tmp, \
            running_app(["--model", args.model, "--state-dir", tmp]) as (proc, url):
        warm = Client(url, verbose=False)
        warm.predict("examples", "a sneaker", api_name="/search_text")
        warm.predict("my uploads", [handle_file(str(p)) for p in images], api_name="/index_images")
        fresh = rss_mb(proc.pid)
        errors = []

        def session(i: int) -> None:
            try:
                client = Client(url, verbose=False)
                report = client.predict("my uploads", [handle_file(str(p)) for p in images], api_name="/index_images")
                assert report["total"] == len(images), report
                hits = client.predict("my uploads", "a sneaker", api_name="/search_text")
                assert len(hits["results"]) == len(images)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                errors.append(str(exc)[:200])

        start = time.perf_counter()
        with ThreadPoolExecutor(args.users) as pool:
            list(pool.map(session, range(args.sessions)))
        seconds = time.perf_counter() - start
        after = rss_mb(proc.pid)
    print(f"## sessions: {args.sessions} sessions x (upload {len(images)} images to 'my uploads', search), "
          f"{args.users} at a time, model {args.model}\n")
    print(f"RSS fresh (warmed up): {fresh:.0f} MB; after: {after:.0f} MB; growth {after - fresh:+.0f} MB "
          f"(goal < 300 MB); {seconds:.0f} s; errors {len(errors)}")
    for error in errors[:5]:
        print("  error:", error)


def run_hostile(args) -> None:
    """Classify each hostile image in this process, resetting the peak-RSS counter before each one."""
    from clipapp.app import actions
    from clipapp.errors import ClipAppError
    from clipapp.model.service import ClipService
    from tests.hostile import bad_image_files, odd_valid_image_files

    service = ClipService.load(args.hostile_model, device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        files = list(bad_image_files(Path(tmp) / "bad").values()) + odd_valid_image_files(Path(tmp) / "odd")
        files.append(REPO / "assets" / "examples" / "photos" / "astronaut.jpg")  # a normal photo for comparison
        print(f"## hostile corpus on {args.hostile_model}: peak RSS while classifying each file\n")
        print("| file | outcome | peak RSS MB |\n|---|---|---|")
        worst = 0.0
        for path in files:
            Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
            try:
                images = actions.load_named_images([path], names=[path.name])
                actions.classify(service, images, "a, b")
                outcome = "classified"
            except ClipAppError as exc:
                outcome = f"refused: {str(exc)[:90]}"
            peak = rss_mb(os.getpid(), "VmHWM")
            worst = max(worst, peak)
            print(f"| {path.name} | {outcome} | {peak:.0f} |")
    print(f"\nlargest peak RSS: {worst:.0f} MB (goal < 2500 MB)")


def run_figures(args) -> None:
    """The heatmap at 20 images x 30 labels: matplotlib (the figure the page used to send) beside the Pillow
    renderer the page uses now, interleaved, each drawn and PNG-encoded."""
    import io

    from PIL import Image

    from clipapp.images.decode import load_image
    from clipapp.viz import figures as viz
    from clipapp.viz.heatmap_image import png_bytes, similarity_heatmap_image

    photos = sorted((REPO / "assets" / "examples" / "photos").glob("*.jpg"))
    images = [load_image(photos[i % len(photos)], min_side=160) for i in range(20)]
    matrix = np.random.default_rng(0).uniform(0.1, 0.35, (20, 30))
    texts = [f"a photo of label number {i}" for i in range(30)]
    times = defaultdict(list)
    for _ in range(args.runs * 2):
        t0 = time.perf_counter()
        fig = viz.similarity_heatmap(matrix, images, texts)
        t1 = time.perf_counter()
        fig.savefig(io.BytesIO(), format="png")
        t2 = time.perf_counter()
        picture = similarity_heatmap_image(matrix, images, texts)
        t3 = time.perf_counter()
        png_bytes(picture)
        t4 = time.perf_counter()
        for name, value in (("matplotlib build", t1 - t0), ("matplotlib savefig PNG", t2 - t1),
                            ("Pillow draw", t3 - t2), ("Pillow PNG", t4 - t3)):
            times[name].append(value * 1000)
    print("## heatmap, 20 images x 30 labels (ms: min / median / max)\n\n| step | ms |\n|---|---|")
    for name, values in times.items():
        print(f"| {name} | {min(values):.0f} / {np.median(values):.0f} / {max(values):.0f} |")
    total = [a + b for a, b in zip(times["matplotlib build"], times["matplotlib savefig PNG"])]
    ours = [a + b for a, b in zip(times["Pillow draw"], times["Pillow PNG"])]
    print(f"\nmatplotlib {np.median(total):.0f} ms, Pillow {np.median(ours):.0f} ms: "
          f"{np.median(total) / np.median(ours):.1f}x faster (median)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--sessions", type=int, default=0, help="measure RSS after this many sessions instead")
    parser.add_argument("--hostile", action="store_true", help="measure RSS per hostile image instead")
    parser.add_argument("--hostile-model", default="ViT-B-32:random")
    parser.add_argument("--figures", action="store_true", help="time the heatmap renderers instead")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.figures:
        run_figures(args)
    elif args.hostile:
        run_hostile(args)
    elif args.sessions:
        run_sessions(args)
    else:
        print_load([run_load(args) for _ in range(args.runs)], args)


if __name__ == "__main__":
    main()
