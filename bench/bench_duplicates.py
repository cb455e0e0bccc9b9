"""Near-duplicate finding (clipapp/index/duplicates.py) beside a plain all-pairs numpy pass, in one run.

Real images: the scikit-image photos bundled with the package, Fashion-MNIST test images and sklearn's digits
(both scaled up to 112 px), and about a third of them copied by resizing to half, JPEG re-compression at quality
30, a 5% crop of every border and a 1.3x brightness change. "Different photos of one scene" that must stay apart:
the stereo motorcycle pair and, for half the photos, two crops (left and right 60%) of one picture with no
original in the set. Everything is embedded with the bundled demo model (`--model demo`: the only model that can
embed real images on this offline machine; it knows clothing, so photos and digits look alike to it).

Prints: the pair recall / precision sweep over cosine threshold x pHash distance (the defaults come from it), then
ours (the index's k-NN + hash check + components, the defaults) against numpy all pairs at the same threshold,
`--repeats` times each, and with `--synthetic N` the time of ours on N clustered 512-d vectors (bench_search's
generator) with 1,000 injected copies (cosine ~0.97) and their recall. Usage:

    python bench/bench_duplicates.py --originals 3000 --repeats 3 [--synthetic 1000000]
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clipapp.index import ImageIndex, sync_folder  # noqa: E402
from clipapp.index.duplicates import (  # noqa: E402
    DEFAULT_HASH_DISTANCE,
    DEFAULT_THRESHOLD,
    DUPLICATE_NPROBE,
    candidate_pairs,
    find_duplicates,
    perceptual_hash,
)

PHOTOS = ("astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "grass", "gravel", "horse",
          "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "rocket", "text",
          "colorwheel")  # fmt: skip
TRANSFORMS = ("resize", "jpeg", "crop", "bright")


def copy_of(image: Image.Image, how: str, path: Path) -> None:
    w, h = image.size
    if how == "resize":
        image.resize((max(8, w // 2), max(8, h // 2)), Image.Resampling.BICUBIC).save(path, quality=90)
    elif how == "jpeg":
        image.save(path, quality=30)
    elif how == "crop":
        dx, dy = max(1, w // 20), max(1, h // 20)
        image.crop((dx, dy, w - dx, h - dy)).save(path, quality=90)
    else:
        ImageEnhance.Brightness(image).enhance(1.3).save(path, quality=90)


def originals(n: int, rng: np.random.Generator) -> list[tuple[str, Image.Image]]:
    """(name, image): photos and their scene crops, then Fashion-MNIST and digits alternately up to n."""
    import skimage.data
    from sklearn.datasets import load_digits

    from clipapp.images.fashion_mnist import load_fashion_mnist

    out: list[tuple[str, Image.Image]] = []
    for i, name in enumerate(PHOTOS):
        try:
            image = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
        except Exception:  # noqa: BLE001 - a photo that needs a download (offline here) is left out
            continue
        if i % 2:
            w, h = image.size  # two photos of one scene: left and right 60%, no original
            out.append((f"scene-{name}-left", image.crop((0, 0, w * 6 // 10, h))))
            out.append((f"scene-{name}-right", image.crop((w * 4 // 10, 0, w, h))))
        else:
            out.append((f"photo-{name}", image))
    left, right, _ = skimage.data.stereo_motorcycle()
    out += [("scene-motorcycle-left", Image.fromarray(left)), ("scene-motorcycle-right", Image.fromarray(right))]
    fashion, _ = load_fashion_mnist("test")
    digits = load_digits().images
    for j in range(max(0, n - len(out))):
        if j % 2 == 0:
            pixels = fashion[j // 2]
        else:
            pixels = (digits[(j // 2) % len(digits)] * 255 / 16).astype(np.uint8)
        big = Image.fromarray(pixels).convert("RGB").resize((112, 112), Image.Resampling.BICUBIC)
        out.append((f"{'fashion' if j % 2 == 0 else 'digit'}-{j // 2:05d}", big))
    return out[:n]


def make_folder(folder: Path, n: int, seed: int = 0) -> dict[str, int]:
    """Write the originals and their copies; returns {path: family} (copies share their original's family)."""
    rng = np.random.default_rng(seed)
    family: dict[str, int] = {}
    for f, (name, image) in enumerate(originals(n, rng)):
        path = folder / f"{name}.png"
        image.save(path)
        family[str(path)] = f
        if name.startswith("scene-") or rng.random() > 0.35:
            continue
        for how in rng.choice(TRANSFORMS, size=int(rng.integers(1, 3)), replace=False):
            copy = folder / f"{name}-{how}.jpg"
            copy_of(image, str(how), copy)
            family[str(copy)] = f
    return family


def truth_pairs(family: dict[str, int]) -> set[frozenset[str]]:
    by: dict[int, list[str]] = {}
    for path, f in family.items():
        by.setdefault(f, []).append(path)
    return {frozenset(p) for paths in by.values() for p in itertools.combinations(paths, 2)}


def scores(found: set[frozenset[str]], truth: set[frozenset[str]]) -> tuple[float, float]:
    hit = len(found & truth)
    return hit / max(1, len(truth)), hit / max(1, len(found))


def numpy_all_pairs(vectors: np.ndarray, threshold: float, block: int = 2048) -> np.ndarray:
    """The competitor: every pair's cosine, in row blocks; (m, 2) index pairs i < j at or above `threshold`."""
    found = []
    for start in range(0, len(vectors), block):
        sims = vectors[start : start + block] @ vectors.T
        rows, cols = np.nonzero(sims >= threshold)
        keep = cols > rows + start
        found.append(np.stack([rows[keep] + start, cols[keep]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), dtype=np.int64)


def sweep(paths: list[str], vectors: np.ndarray, truth: set[frozenset[str]]) -> None:
    """Pair recall / precision of the embedding alone and with the hash check, over a grid (embedding pairs found
    all-pairs here: the grid is about the signals, not the search)."""
    pairs = numpy_all_pairs(vectors, 0.80)
    sims = np.einsum("ij,ij->i", vectors[pairs[:, 0]], vectors[pairs[:, 1]])
    hashes = {i: perceptual_hash(paths[i]) for i in np.unique(pairs).tolist()}
    dist = np.asarray([hashes[a] - hashes[b] for a, b in pairs.tolist()])
    is_true = np.asarray([frozenset((paths[a], paths[b])) in truth for a, b in pairs.tolist()])
    print(f"sweep over {len(pairs)} pairs with cosine >= 0.80; {len(truth)} true pairs")
    print("threshold  hash<=  recall  precision")
    for t in (0.80, 0.85, 0.88, 0.90, 0.92, 0.94, 0.96, 0.98):
        for h in (None, 10, 14, 18, 22, 26, 30):
            keep = (sims >= t) & (dist <= h if h is not None else True)
            hit = int((keep & is_true).sum())
            print(f"{t:9.2f}  {'-' if h is None else h:>6}  {hit / len(truth):6.3f}  {hit / max(1, keep.sum()):9.3f}")


def real_images(n: int, repeats: int) -> None:
    from clipapp.model.service import ClipService

    work = Path(tempfile.mkdtemp(prefix="bench-dups-"))
    folder = work / "images"
    folder.mkdir()
    family = make_folder(folder, n)
    truth = truth_pairs(family)
    service = ClipService.load("demo", device="cpu")
    started = time.perf_counter()
    with ImageIndex.create(work / "index", service.spec, service.embed_dim) as index:
        sync_folder(index, folder, service)
        print(f"{len(family)} files ({n} originals), {len(truth)} true pairs; embedded with the demo model in "
              f"{time.perf_counter() - started:.0f}s")  # fmt: skip
        ids = index.ids()
        firsts = index.paths_for_ids(ids.tolist())
        paths = [firsts[i][0] for i in ids.tolist()]
        vectors = index.vectors()
        sweep(paths, vectors, truth)
        ours_t, numpy_t = [], []
        for _ in range(repeats):
            report = find_duplicates(index)
            ours_t.append(report.seconds)
            started = time.perf_counter()
            pairs = numpy_all_pairs(vectors, DEFAULT_THRESHOLD)
            numpy_t.append(time.perf_counter() - started)
        found = {frozenset(p) for g in report.groups for p in itertools.combinations([i.path for i in g.images], 2)}
        ours_r, ours_p = scores(found, truth)
        np_r, np_p = scores({frozenset((paths[a], paths[b])) for a, b in pairs.tolist()}, truth)
        print(
            f"threshold {DEFAULT_THRESHOLD}, hash distance {DEFAULT_HASH_DISTANCE}, {repeats} repeats, min/median/max s"
        )
        print(f"ours (k-NN on the index + pHash + components): recall {ours_r:.3f} precision {ours_p:.3f}  "
              f"{spread(ours_t)}  ({len(report.groups)} groups)")  # fmt: skip
        print(
            f"numpy all pairs (embedding only):              recall {np_r:.3f} precision {np_p:.3f}  {spread(numpy_t)}"
        )


def rate(started: float):
    """A progress callback that prints the queries done and the rate every 100k queries (long runs)."""

    def report(done: int, total: int, _message: str) -> None:
        if done % 100_000 < 4096 or done == total:
            seconds = time.perf_counter() - started
            print(f"  {done}/{total} queries in {seconds:.0f} s ({done / seconds:.0f}/s)", flush=True)

    return report


def spread(values: list[float]) -> str:
    return f"{min(values):.2f} / {statistics.median(values):.2f} / {max(values):.2f} s"


def synthetic(n: int, repeats: int, nprobes: list, d: int = 512, copies: int = 1000) -> None:
    """Time (and recall of injected copies) of ours on n clustered vectors; no files, so no hash check."""
    from bench_search import clustered_dataset, unit

    from clipapp.index import FileInfo

    work = Path(tempfile.mkdtemp(prefix="bench-dups-1m-"))
    rng = np.random.default_rng(1)
    vectors, _ = clustered_dataset(n - copies, d, 1, seed=3)
    sources = rng.choice(n - copies, copies, replace=False)
    twins = unit(vectors[sources] + 0.25 / np.sqrt(d) * rng.standard_normal((copies, d), dtype=np.float32))
    started = time.perf_counter()
    with ImageIndex.create(work / "index", "bench", d) as index:
        for start in range(0, n - copies, 100_000):
            stop = min(n - copies, start + 100_000)
            infos = [FileInfo(f"/p/{i}.jpg", 1, 0.0, f"{i:064x}") for i in range(start, stop)]
            index.add_items(vectors[start:stop], infos)
            index.save()
        index.add_items(twins, [FileInfo(f"/p/t{i}.jpg", 1, 0.0, f"t{i:063x}") for i in range(copies)])
        index.save()
        del vectors
        index.ensure_built()
        print(
            f"{n} synthetic {d}-d vectors, {index.index_type} built in {time.perf_counter() - started:.0f}s", flush=True
        )
        print(f"calibrated nprobe {index.structure.nprobe}", flush=True)
        for nprobe in nprobes:
            times = []
            for _ in range(repeats):
                started = time.perf_counter()
                pairs, _scores = candidate_pairs(
                    index, DEFAULT_THRESHOLD, progress=rate(started), **({"nprobe": nprobe} if nprobe else {})
                )
                times.append(time.perf_counter() - started)
                print(f"  repeat: {times[-1]:.1f} s", flush=True)
            found = {tuple(p) for p in pairs.tolist()}
            twin_ids = np.arange(n - copies, n)  # ids are given in insertion order from 0
            hit = sum((int(s), int(t)) in found for s, t in zip(sources, twin_ids, strict=True))
            print(
                f"ours at {n}, nprobe {nprobe or DUPLICATE_NPROBE}: {spread(times)} (candidate search; no files to "
                f"hash), recall of injected copies {hit / copies:.3f}, {len(pairs)} pairs >= {DEFAULT_THRESHOLD}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--synthetic", type=int, default=0, help="also time N synthetic vectors (e.g. 1000000)")
    parser.add_argument("--nprobe", type=int, nargs="*", default=[0], help="nprobe values to time (0: the default)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.originals:
        real_images(args.originals, args.repeats)
    if args.synthetic:
        synthetic(args.synthetic, args.repeats, args.nprobe)


if __name__ == "__main__":
    main()
