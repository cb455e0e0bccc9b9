"""Region maps (clipapp/model/regions.py): the pointing game per method on composites, and the cost of each method.

    flock /tmp/bench.lock python bench/bench_explain.py [--composites 100] [--vit-images 3] [--runs 3]

pointing game: composites of two Fashion-MNIST test items of different classes, side by side (56 x 28) or one
    above the other (28 x 56), in a random order; the labels are the ten class names. For each composite and each
    of its two classes, a hit when the peak of that label's map falls in the half holding that item. Chance is 0.5
    (a map that ignores the image peaks on either half). The demo model (a ModifiedResNet, 32-pixel input) is the
    model that knows these classes; accuracy is deterministic, so it is measured once.
cost: ms per image and per image x label (10 labels) of each method, on the demo model over the composites and on
    ViT-B-32 with random weights (time only: random weights point nowhere) over 800 x 600 example photos. Each
    figure is measured `--runs` times; min / median / max are printed. The competitor of each method is the others.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    return (f"median {fmt.format(statistics.median(values))} (min {fmt.format(min(values))}, "
            f"max {fmt.format(max(values))}, n={len(values)})")


def composites(n: int, seed: int = 0):
    """(image, class of the first item, class of the second item, horizontal?) for n composites."""
    import numpy as np
    from PIL import Image

    from clipapp.images.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist("test")
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        i, j = (int(k) for k in rng.integers(0, len(images), 2))
        if labels[i] == labels[j]:
            continue
        horizontal = len(out) % 2 == 0
        canvas = np.concatenate([images[i], images[j]], axis=1 if horizontal else 0)
        out.append((Image.fromarray(canvas).convert("RGB"), int(labels[i]), int(labels[j]), horizontal))
    return out


def pointing_game(service, items, labels, method: str) -> float:
    import numpy as np

    from clipapp.model.regions import explain

    hits = total = 0
    maps = explain(service, [image for image, *_ in items], labels, method=method)
    for (_, first, second, horizontal), result in zip(items, maps, strict=True):
        for label, half in ((first, 0), (second, 1)):
            grid = result.grids[label]
            row, col = np.unravel_index(int(grid.argmax()), grid.shape)
            position, extent = (col, grid.shape[1]) if horizontal else (row, grid.shape[0])
            hits += int(position >= extent / 2) == half
            total += 1
    return hits / total


def timed_ms_per_image(service, images, labels, method: str) -> float:
    from clipapp.model.regions import explain

    list(explain(service, images[:1], labels, method=method))  # warm: text embeddings cached, buffers allocated
    start = time.perf_counter()
    list(explain(service, images, labels, method=method))
    return (time.perf_counter() - start) * 1000 / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--composites", type=int, default=100)
    parser.add_argument("--vit-images", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    from PIL import Image

    from clipapp.images.fashion_mnist import CLASS_NAMES
    from clipapp.model.regions import METHODS
    from clipapp.model.service import ClipService

    labels = [c.lower() for c in CLASS_NAMES]
    items = composites(args.composites)
    demo = ClipService.load("demo", device="cpu", precision="fp32")
    print(f"pointing game, demo model, {len(items)} composites x 2 labels (chance 0.50):")
    for method in METHODS:
        print(f"  {method:10s} {pointing_game(demo, items, labels, method):.3f}")

    photos = sorted((ROOT / "assets" / "examples" / "photos").glob("*.jpg"))[: args.vit_images]
    photo_images = [Image.open(p).convert("RGB").resize((800, 600)) for p in photos]
    vit = ClipService.load("ViT-B-32:random", device="cpu", precision="fp32")
    cases = [("demo", demo, [image for image, *_ in items[:20]]), ("ViT-B-32:random", vit, photo_images)]
    for name, service, images in cases:
        print(f"cost, {name}, {len(images)} images x {len(labels)} labels, {args.runs} runs:")
        for method in METHODS:
            per_image = [timed_ms_per_image(service, images, labels, method) for _ in range(args.runs)]
            per_pair = [ms / len(labels) for ms in per_image]
            print(f"  {method:10s} ms/image {spread(per_image)}; ms/(image x label) {spread(per_pair, '{:.2f}')}")


if __name__ == "__main__":
    main()
