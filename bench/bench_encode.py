"""Encoding benchmark: raw open_clip (the notebook way) vs ClipService, same weights, same inputs, one run.

    python bench/bench_encode.py [--model ViT-B-32:random] [--images 64] [--prompts 256]

Prints ratios; the goals (issue "Foundation"): text encoding of 256 template prompts >= 4x faster with max abs
diff <= 1e-5; a repeated label set answered from the cache with no encoding; image throughput ratio >= 0.95;
peak process memory with ViT-B-32 on CPU under 2 GB.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from PIL import Image  # noqa: E402

from clipapp.prompts import TEMPLATE_SETS, fill_template  # noqa: E402
from clipapp.service import ClipService  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"
LABELS = ["cat", "dog", "car", "airplane", "ship", "truck", "horse", "bird", "frog", "deer", "rocket", "coffee",
          "astronaut", "motorcycle", "camera", "page of text"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 1):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def example_images(n: int) -> list[Image.Image]:
    files = sorted(EXAMPLES.glob("*/*.jpg")) + sorted(EXAMPLES.glob("*/*.png"))
    images = [Image.open(f).convert("RGB") for f in files]
    return [images[i % len(images)] for i in range(n)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-32:random")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)

    service = ClipService.load(args.model, device="cpu", precision="fp32")
    model, preprocess, tokenizer = service.model, service.preprocess, service.tokenizer
    print(f"model {service.description}; torch threads {torch.get_num_threads()}")

    templates = TEMPLATE_SETS["openai"]
    prompts = [fill_template(templates[i % len(templates)], LABELS[i // len(templates) % len(LABELS)])
               for i in range(args.prompts)]

    images = example_images(args.images)

    def raw_text():
        with torch.no_grad():
            return F.normalize(model.encode_text(tokenizer(prompts)), dim=-1).numpy()

    def ours_text_cold():
        service._text_cache.clear()
        return service.encode_texts(prompts)

    def raw_images():
        with torch.no_grad():
            return F.normalize(model.encode_image(torch.stack([preprocess(im) for im in images])), dim=-1).numpy()

    # Ours first, so the peak memory printed is that of the service, not of the raw full-context batch.
    ours_t, our_vectors = timed(ours_text_cold, args.repeat)
    before = service.stats.prompts_encoded
    warm_t, _ = timed(lambda: service.encode_texts(prompts), args.repeat)
    encoded_when_warm = service.stats.prompts_encoded - before
    ours_i, our_img_vectors = timed(lambda: service.encode_images(images), args.repeat)
    service_peak = peak_rss_mb()

    raw_t, raw_vectors = timed(raw_text, args.repeat)
    raw_i, raw_img_vectors = timed(raw_images, args.repeat)
    diff = float(np.abs(raw_vectors - our_vectors).max())
    img_diff = float(np.abs(raw_img_vectors - our_img_vectors).max())

    print()
    print("| measure | raw open_clip | clipapp | ratio | goal |")
    print("|---|---|---|---|---|")
    print(f"| text, {args.prompts} template prompts (s) | {raw_t:.3f} | {ours_t:.3f} | {raw_t / ours_t:.1f}x faster | >= 4x |")
    print(f"| text max abs diff (normalized) | | {diff:.2e} | | <= 1e-5 |")
    print(f"| same prompts again, from cache (s) | {raw_t:.3f} | {warm_t:.4f} | {raw_t / warm_t:.0f}x; "
          f"{encoded_when_warm} prompts encoded | 0 encoded |")
    print(f"| images/s, {args.images} images | {args.images / raw_i:.1f} | {args.images / ours_i:.1f} | "
          f"{raw_i / ours_i:.2f} | >= 0.95 |")
    print(f"| image max abs diff (normalized) | | {img_diff:.2e} | | |")
    print(f"| peak process memory (MB) | {peak_rss_mb():.0f} (after the raw run) | {service_peak:.0f} | | < 2048 |")


if __name__ == "__main__":
    main()
