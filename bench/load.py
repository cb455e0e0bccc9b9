"""Load test on loopback: N concurrent gradio_client users at /classify and /search_text for a bounded time,
while a fine-tune runs in the same app.

    python bench/load.py [--users 8] [--seconds 60] [--model demo]

Prints throughput, p50/p99 latency per endpoint, the error count (goal 0) and the app's peak memory.
Only 127.0.0.1 is contacted: the app is started here, on a free port.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
import zipfile
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from apprunner import running_app  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from clipapp.fashion_mnist import CLASS_NAMES, load_fashion_mnist, to_pil_images  # noqa: E402

FASHION = REPO / "assets" / "examples" / "fashion"
LABELS = "t-shirt, trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot"


def fewshot_zip(folder: Path, shots: int = 8) -> Path:
    images, labels = load_fashion_mnist("train")
    path = folder / "fewshot.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for class_id, name in enumerate(CLASS_NAMES):
            picks = np.flatnonzero(labels == class_id)[:shots]
            for i, image in zip(picks, to_pil_images(images[picks])):
                file = folder / f"{class_id}_{i}.png"
                image.save(file)
                archive.write(file, f"{name.replace('/', '-')}/{i}.png")
    return path


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--model", default="demo")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, running_app(["--model", args.model, "--state-dir", tmp]) as (proc, url):
        archive = fewshot_zip(Path(tmp))
        latencies: dict[str, list[float]] = defaultdict(list)
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + args.seconds
        finetune_seconds: list[float] = []

        def user(i: int) -> None:
            client = Client(url, verbose=False)
            image = handle_file(str(sorted(FASHION.glob("*.png"))[i % 10]))
            calls = (("/classify", lambda: client.predict([image], LABELS, "simple", "", 3, api_name="/classify")),
                     ("/search_text", lambda: client.predict("examples", "a sneaker", "simple", 5, -1,
                                                             api_name="/search_text")))
            n = 0
            while time.monotonic() < stop_at:
                name, call = calls[(i + n) % 2]
                n += 1
                start = time.perf_counter()
                try:
                    call()
                    with lock:
                        latencies[name].append(time.perf_counter() - start)
                except Exception as exc:  # noqa: BLE001 - counted and reported
                    with lock:
                        errors.append(f"{name}: {exc}")

        def finetuner() -> None:
            client = Client(url, verbose=False)
            start = time.perf_counter()
            try:
                client.predict(handle_file(str(archive)), api_name="/finetune")
                finetune_seconds.append(time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001
                errors.append(f"/finetune: {exc}")

        threads = [threading.Thread(target=finetuner)] + [threading.Thread(target=user, args=(i,))
                                                           for i in range(args.users)]
        wall = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - wall
        peak = peak_rss_mb(proc.pid)

    print(f"## load: {args.users} users for {args.seconds:.0f} s, model {args.model}, a fine-tune running\n")
    print("| endpoint | requests | req/s | p50 ms | p99 ms |\n|---|---|---|---|---|")
    for name, values in sorted(latencies.items()):
        ms = np.array(values) * 1000
        print(f"| {name} | {len(values)} | {len(values) / wall:.1f} | {np.percentile(ms, 50):.0f} | "
              f"{np.percentile(ms, 99):.0f} |")
    print(f"\nfine-tune: {'%.1f s' % finetune_seconds[0] if finetune_seconds else 'did not finish'}; "
          f"errors: {len(errors)} (goal 0); app peak memory {peak:.0f} MB")
    for error in errors[:10]:
        print("  error:", error[:200])


if __name__ == "__main__":
    main()
