"""Classification at dataset scale: the CLI path against the obvious loop, int8 against fp32, and --index at 1M.

    flock /tmp/bench.lock python bench/bench_classify.py [--files 10000] [--vit-files 1000] [--runs 3]
        [--sections files,int8,index]

files: N Fashion-MNIST test images written as PNG files (real pictures, not noise), and the example photos as
    800x600 JPEG files (where reduced-scale decoding and holding every image matter), are classified to a CSV by
    `python -m clipapp classify FOLDER --csv` (decoding included) and by the CLIP notebook's loop (open every file,
    then open_clip preprocess + encode_image per batch, softmax, top-5, CSV), each in its own subprocess so that its
    peak RSS is its own; on the demo model and on ViT-B-32 with random weights (fewer files: 2 CPU cores). Both
    use the one template "a photo of a {}." so their predictions must agree; the top-1 agreement is printed.
int8: the demo model and ViT-B-32 (random weights: fewer images) in int8 against fp32 (what `--precision auto` gives
    on a CPU): images/s and top-1 agreement on Fashion-MNIST test images.
index: `classify --index`'s scoring path (matrix product, probabilities, top-5, CSV rows) over 1,000,000 stored
    512-d vectors and 1,000 labels.
Each figure is measured `--runs` times; min / median / max are printed.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TEMPLATE = "a photo of a {}."
BATCH = 64
TOP_K = 5


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    return (f"median {fmt.format(statistics.median(values))} (min {fmt.format(min(values))}, "
            f"max {fmt.format(max(values))}, n={len(values)})")


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def labels() -> list[str]:
    from clipapp.images.fashion_mnist import CLASS_NAMES

    return [c.lower() for c in CLASS_NAMES]


def write_photo_jpegs(folder: Path, n: int) -> None:
    """The example photos (scikit-image's, in assets/examples/photos) as 800x600 JPEG files, as a camera folder."""
    from PIL import Image

    photos = [Image.open(p).convert("RGB").resize((800, 600)) for p in sorted((ROOT / "assets" / "examples" /
                                                                               "photos").glob("*.jpg"))]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        photos[i % len(photos)].save(folder / f"{i:06d}.jpg", quality=90)


def write_fashion_pngs(folder: Path, n: int) -> None:
    from clipapp.images.fashion_mnist import load_fashion_mnist, to_pil_images

    images, _ = load_fashion_mnist("test")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        to_pil_images(images[i % len(images)])[0].save(folder / f"{i:06d}.png")


# -- the two contenders, each run as `bench_classify.py --worker NAME` in a fresh process -----------------------
def worker_ours(model: str, folder: str, out: str) -> dict:
    import open_clip  # noqa: F401 - imports are outside the timing, in both workers
    import torch

    import clipapp.model.service  # noqa: F401
    from clipapp.app.cli import main

    torch.manual_seed(0)  # NAME:random: the same random weights as the notebook worker's
    start = time.perf_counter()
    code = main(["classify", folder, "--labels", ",".join(labels()), "--templates", TEMPLATE, "--top-k", str(TOP_K),
                 "--csv", out, "--model", model, "--device", "cpu"])
    assert code == 0, f"classify exited {code}"
    return {"seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}


def worker_notebook(model: str, folder: str, out: str) -> dict:
    """The CLIP notebook way: load every image, then preprocess + encode_image per batch."""
    import open_clip
    import torch
    from PIL import Image

    from clipapp.model.spec import DEMO_WEIGHTS, register_model_configs

    torch.manual_seed(0)
    start = time.perf_counter()
    register_model_configs()
    name, _, weights = model.partition(":")
    if model == "demo":
        name, weights = "clipapp-demo", str(DEMO_WEIGHTS)
    clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=None if weights == "random"
                                                                else weights)
    clip.eval()
    tokenizer = open_clip.get_tokenizer(name)
    paths = sorted(str(p) for p in Path(folder).iterdir())
    images = [Image.open(p).convert("RGB") for p in paths]
    names = labels()
    with torch.no_grad():
        text = clip.encode_text(tokenizer([TEMPLATE.format(c) for c in names]))
        text /= text.norm(dim=-1, keepdim=True)
        with open(out, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "label", "prob"])
            for i in range(0, len(images), BATCH):
                features = clip.encode_image(torch.stack([preprocess(im) for im in images[i:i + BATCH]]))
                features /= features.norm(dim=-1, keepdim=True)
                probs = (clip.logit_scale.exp() * features @ text.T).softmax(dim=-1)
                values, indices = probs.topk(TOP_K, dim=-1)
                for path, value, index in zip(paths[i:i + BATCH], values.tolist(), indices.tolist()):
                    writer.writerow([path, names[index[0]], f"{value[0]:.6g}"])
    return {"seconds": time.perf_counter() - start, "rss_mb": peak_rss_mb()}


def run_worker(name: str, model: str, folder: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, __file__, "--worker", name, "--model", model, "--folder", str(folder),
                           "--out", str(out)], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{name} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def top1_column(path: Path) -> dict[str, str]:
    with open(path, newline="") as f:
        return {row[0]: row[1] for row in list(csv.reader(f))[1:]}


def bench_files(args, tmp: Path) -> None:
    print("## files -> CSV: `classify FOLDER --csv` vs the notebook loop (decoding and model load included)\n")
    configs = [("demo", "fashion", args.files), ("demo", "photos", args.photo_files),
               ("ViT-B-32:random", "fashion", args.vit_files)]
    for model, kind, n in configs:
        if n == 0:  # e.g. --vit-files 0: ViT-B-32 runs at ~7 img/s on 2 shared cores
            continue
        folder = tmp / f"{kind}-{n}"
        if not folder.is_dir():
            (write_fashion_pngs if kind == "fashion" else write_photo_jpegs)(folder, n)
        results: dict[str, list[dict]] = {"ours": [], "notebook": []}
        for _ in range(args.runs):
            for name in results:  # interleaved: drift of the machine hits both alike
                results[name].append(run_worker(name, model, folder, tmp / f"{name}.csv"))
        ours, notebook = top1_column(tmp / "ours.csv"), top1_column(tmp / "notebook.csv")
        agree = sum(ours[p] == notebook.get(p) for p in ours) / len(ours)
        rate = {k: [n / r["seconds"] for r in v] for k, v in results.items()}
        rss = {k: [r["rss_mb"] for r in v] for k, v in results.items()}
        what = "Fashion-MNIST 28x28 PNG" if kind == "fashion" else "800x600 JPEG photo"
        print(f"{model}, {n} {what} files, batch {BATCH}, top-{TOP_K}, {os.cpu_count()} CPUs:")
        print(f"  ours      images/s {spread(rate['ours'])}; peak RSS MB {spread(rss['ours'], '{:.0f}')}")
        print(f"  notebook  images/s {spread(rate['notebook'])}; peak RSS MB {spread(rss['notebook'], '{:.0f}')}")
        ratios = [a / b for a, b in zip(rate["ours"], rate["notebook"])]
        print(f"  speed ratio ours/notebook {spread(ratios, '{:.2f}')}; RSS ratio "
              f"{statistics.median(rss['ours']) / statistics.median(rss['notebook']):.2f}; "
              f"top-1 agreement {agree:.4f} ({len(ours)} rows)\n")


def bench_int8(args) -> None:
    print("## int8 vs fp32 (`--precision auto` on a CPU): the demo model, and ViT-B-32 with random weights (its "
          "speed is real; its accuracy is chance)\n")
    for model, n in (("demo", args.int8_images), ("ViT-B-32:random", args.vit_int8_images)):
        if n > 0:
            int8_rows(model, n, args.runs)


def int8_rows(model: str, n: int, runs: int) -> None:
    import numpy as np
    import torch

    from clipapp.images.fashion_mnist import load_fashion_mnist, to_pil_images
    from clipapp.model.service import ClipService

    images, targets = load_fashion_mnist("test")
    pil = to_pil_images(images[:n])
    services = {}
    for p in ("fp32", "int8"):
        torch.manual_seed(0)  # NAME:random: the same random weights for both precisions
        services[p] = ClipService.load(model, device="cpu", precision=p, micro_batch_window_s=0)
    rates: dict[str, list[float]] = {p: [] for p in services}
    results = {}
    for _ in range(runs):
        for precision, service in services.items():
            start = time.perf_counter()
            features = service.encode_images(pil, batch_size=BATCH)
            rates[precision].append(len(pil) / (time.perf_counter() - start))
            results[precision] = service.zero_shot([], labels(), templates="simple", image_features=features)
    top = {p: r.probs.argmax(axis=1) for p, r in results.items()}
    agree = float((top["fp32"] == top["int8"]).mean())
    accuracy = {p: float((t == targets[:len(pil)]).mean()) for p, t in top.items()}
    diff = float(np.abs(results["fp32"].probs - results["int8"].probs).max())
    print(f"{model}: {len(pil)} Fashion-MNIST test images, image encoding only (images in memory), batch {BATCH}:")
    for precision in services:
        print(f"  {precision}  images/s {spread(rates[precision])}; zero-shot top-1 accuracy {accuracy[precision]:.4f}")
    print(f"  int8/fp32 speed {spread([a / b for a, b in zip(rates['int8'], rates['fp32'])], '{:.2f}')}; "
          f"top-1 agreement {agree:.4f}; max |prob difference| {diff:.2e}\n")


def bench_index(args) -> None:
    import numpy as np

    from clipapp.classify.predictions import CsvPredictions
    from clipapp.classify.stream import LabelScorer, classify_vectors

    n, dim, n_labels, batch = args.index_vectors, 512, 1000, 8192
    print(f"## classify --index: {n:,} stored {dim}-d vectors x {n_labels:,} labels, top-{TOP_K} to CSV\n")
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, dim), dtype=np.float32)
    for start in range(0, n, 65536):  # in chunks: a whole-array norm would double the peak RSS reported below
        chunk = vectors[start:start + 65536]
        chunk /= np.linalg.norm(chunk, axis=1, keepdims=True)
    text = rng.standard_normal((n_labels, dim), dtype=np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    paths = [f"photos/{i // 1000:04d}/IMG_{i:07d}.jpg" for i in range(n)]
    label_names = [f"label {i}" for i in range(n_labels)]
    text_t = np.ascontiguousarray(text.T)

    def logits(features):  # what zero_shot_classifier builds: logit_scale (100) x cosine
        return np.multiply(features @ text_t, np.float32(100.0), dtype=np.float32)

    classifier = LabelScorer(labels=label_names, model="synthetic", multi_label=False, logits=logits)

    def batches():
        for start in range(0, n, batch):
            yield paths[start:start + batch], vectors[start:start + batch]

    seconds, scoring = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.runs):
            output = CsvPredictions(Path(tmp) / "index.csv", TOP_K)
            start = time.perf_counter()
            report = classify_vectors(batches(), classifier, k=TOP_K, outputs=[output])
            output.close()
            seconds.append(time.perf_counter() - start)
            start = time.perf_counter()
            report_only = classify_vectors(batches(), classifier, k=TOP_K)  # same, without writing rows
            scoring.append(time.perf_counter() - start)
            assert report.classified == report_only.classified == n
        size = (Path(tmp) / "index.csv").stat().st_size
    print(f"  with the CSV ({size / 1e6:.0f} MB)   seconds {spread(seconds)}")
    print(f"  scoring only (product, softmax, top-{TOP_K}) seconds {spread(scoring)}")
    print(f"  peak RSS of this process {peak_rss_mb():.0f} MB (the 1M x 512 float32 vectors alone: "
          f"{vectors.nbytes / 1e6:.0f} MB)\n")
    bench_index_store(args, vectors, paths, classifier)


def bench_index_store(args, vectors, paths, classifier) -> None:
    """The whole `classify --index PATH [--tag]` path on a real index folder: the vectors read from the SQLite
    store's vector file (`iter_vectors`), scored, and with --tag each image's top-5 (prob >= 0.01) stored as tags."""
    from clipapp.classify.predictions import IndexTags
    from clipapp.classify.stream import VECTOR_BATCH, classify_vectors
    from clipapp.index import FileInfo, ImageIndex

    n = len(paths)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        index = ImageIndex.create(Path(tmp) / "index", "synthetic", vectors.shape[1])
        for lo in range(0, n, 100_000):  # bounded transactions, as a sync commits
            hi = min(n, lo + 100_000)
            index.add_items(vectors[lo:hi], [FileInfo(path=paths[i], size=1000, mtime=0.0, sha256=f"{i:064x}")
                                             for i in range(lo, hi)])
            index.save()
        print(f"  (index folder of {n:,} images written in {time.perf_counter() - start:.0f} s)")
        read, tagged = [], []
        for _ in range(args.runs):
            start = time.perf_counter()
            report = classify_vectors(index.iter_vectors(VECTOR_BATCH, every_path=True), classifier, k=TOP_K)
            read.append(time.perf_counter() - start)
            assert report.classified == n
            tags = IndexTags(index, min_prob=0.01)
            start = time.perf_counter()
            classify_vectors(index.iter_vectors(VECTOR_BATCH, every_path=True), classifier, k=TOP_K, outputs=[tags])
            tags.close()
            tagged.append(time.perf_counter() - start)
        print(f"  from the index folder (iter_vectors), scoring   seconds {spread(read)}")
        print(f"  ... and --tag (top-{TOP_K} >= 0.01 into SQLite)    seconds {spread(tagged)} "
              f"({sum(index.tag_counts().values()):,} tags)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10_000, help="image files for the demo model")
    parser.add_argument("--photo-files", type=int, default=1_000, help="800x600 JPEG files for the demo model")
    parser.add_argument("--vit-files", type=int, default=1_000, help="image files for ViT-B-32 (slow on 2 cores)")
    parser.add_argument("--int8-images", type=int, default=2_000)
    parser.add_argument("--vit-int8-images", type=int, default=256, help="ViT-B-32 images for the int8 section")
    parser.add_argument("--index-vectors", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--sections", default="files,int8,index")
    parser.add_argument("--worker", choices=("ours", "notebook"), help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        fn = worker_ours if args.worker == "ours" else worker_notebook
        print(json.dumps(fn(args.model, args.folder, args.out)))
        return
    import torch

    print(f"# bench_classify: {os.cpu_count()} CPUs, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    sections = set(args.sections.split(","))
    with tempfile.TemporaryDirectory(prefix="bench-classify-") as tmp:
        if "files" in sections:
            bench_files(args, Path(tmp))
    if "int8" in sections:
        bench_int8(args)
    if "index" in sections:
        bench_index(args)


if __name__ == "__main__":
    main()
