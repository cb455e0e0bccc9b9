"""Region maps (clipapp/model/regions.py): the pointing game per method on composites, and the cost of each method.

    flock /tmp/bench.lock python bench/bench_explain.py [--composites 100] [--vit-images 3] [--runs 3]

pointing game: composites of Fashion-MNIST test items of different classes: two side by side (56 x 28) or one
    above the other (28 x 56), and four in a 2 x 2 square (56 x 56); the labels are the ten class names. For each
    composite and each of its classes, a hit when the peak of that label's map falls on that item. Chance is 0.5
    for pairs, 0.25 for 2 x 2 (a map that ignores the image peaks anywhere). The demo model (a ModifiedResNet, 32-pixel input) is the
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


def composites(n: int, seed: int = 0, quads: bool = False):
    """n composites (image, [(class, (left, top, right, bottom) of its item), ...]) of Fashion-MNIST test items of
    different classes: pairs side by side (56 x 28) or stacked (28 x 56), alternately; or 2 x 2 (56 x 56)."""
    import numpy as np
    from PIL import Image

    from clipapp.images.fashion_mnist import load_fashion_mnist

    images, labels = load_fashion_mnist("test")
    rng = np.random.default_rng(seed)
    out = []
    while len(out) < n:
        picks = [int(k) for k in rng.integers(0, len(images), 4 if quads else 2)]
        if len({int(labels[k]) for k in picks}) < len(picks):
            continue
        if quads:
            offsets = [(0, 0), (28, 0), (0, 28), (28, 28)]
            canvas = np.zeros((56, 56), dtype=np.uint8)
        elif len(out) % 2 == 0:
            offsets, canvas = [(0, 0), (28, 0)], np.zeros((28, 56), dtype=np.uint8)
        else:
            offsets, canvas = [(0, 0), (0, 28)], np.zeros((56, 28), dtype=np.uint8)
        items = []
        for k, (x, y) in zip(picks, offsets, strict=True):
            canvas[y : y + 28, x : x + 28] = images[k]
            items.append((int(labels[k]), (x, y, x + 28, y + 28)))
        out.append((Image.fromarray(canvas).convert("RGB"), items))
    return out


def pointing_game(service, composites_, labels, method: str) -> float:
    """The share of (composite, present class) whose map peaks over that class's item (the peak cell's centre)."""
    import numpy as np

    from clipapp.model.regions import explain

    hits = total = 0
    maps = explain(service, [image for image, _ in composites_], labels, method=method)
    for (image, items), result in zip(composites_, maps, strict=True):
        for label, (left, top, right, bottom) in items:
            grid = result.grids[label]
            row, col = np.unravel_index(int(grid.argmax()), grid.shape)
            x = (col + 0.5) * image.width / grid.shape[1]
            y = (row + 0.5) * image.height / grid.shape[0]
            hits += left <= x < right and top <= y < bottom
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
    quads = composites(args.composites, seed=1, quads=True)
    demo = ClipService.load("demo", device="cpu", precision="fp32")
    print(f"pointing game, demo model, {len(items)} pairs x 2 labels (chance 0.50) | {len(quads)} 2x2 x 4 (0.25):")
    for method in METHODS:
        pairs_hit, quads_hit = pointing_game(demo, items, labels, method), pointing_game(demo, quads, labels, method)
        print(f"  {method:10s} {pairs_hit:.3f} | {quads_hit:.3f}")

    photos = sorted((ROOT / "assets" / "examples" / "photos").glob("*.jpg"))[: args.vit_images]
    photo_images = [Image.open(p).convert("RGB").resize((800, 600)) for p in photos]
    vit = ClipService.load("ViT-B-32:random", device="cpu", precision="fp32")
    cases = [("demo", demo, [image for image, _ in items[:20]]), ("ViT-B-32:random", vit, photo_images)]
    for name, service, images in cases:
        print(f"cost, {name}, {len(images)} images x {len(labels)} labels, {args.runs} runs:")
        for method in METHODS:
            per_image = [timed_ms_per_image(service, images, labels, method) for _ in range(args.runs)]
            per_pair = [ms / len(labels) for ms in per_image]
            print(f"  {method:10s} ms/image {spread(per_image)}; ms/(image x label) {spread(per_pair, '{:.2f}')}")


if __name__ == "__main__":
    main()
