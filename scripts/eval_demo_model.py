#!/usr/bin/env python
"""Zero-shot top-1 of the bundled demo model (`clipapp-demo`) on the Fashion-MNIST test set, with plain open_clip.

Loads the model exactly as a user would (`open_clip.add_model_config` + `create_model_and_transforms(name,
pretrained=file)` + `get_tokenizer`), preprocesses every test image with the returned transform, builds the
classifier with `open_clip.zero_shot_classifier.build_zero_shot_classifier` and reports top-1 on all 10,000 test
images and on the fixed subset of the first 1,000, for:

- single prompt   "a photo of a {class name}." with CLASS_NAMES lower-cased
- simple (7)      the ensemble over open_clip.SIMPLE_IMAGENET_TEMPLATES (these were among the training templates)
- openai (80)     the ensemble over open_clip.OPENAI_IMAGENET_TEMPLATES (mostly not seen in training)
- natural labels  "a photo of a {}." with everyday names (t-shirt, pants, sweater, ..., boot)

    .venv/bin/python scripts/eval_demo_model.py [--model-dir clipapp/assets/demo] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import open_clip  # noqa: E402
from open_clip.zero_shot_classifier import build_zero_shot_classifier  # noqa: E402

from clipapp.images.fashion_mnist import CLASS_NAMES, load_fashion_mnist, to_pil_images  # noqa: E402

MODEL_NAME = "clipapp-demo"
SUBSET = 1000
NATURAL_LABELS = ("t-shirt", "pants", "sweater", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot")


def load_demo_model(model_dir: Path):
    """Load the demo model with plain open_clip; returns (model in eval mode, preprocess, tokenizer)."""
    open_clip.add_model_config(model_dir)
    weights = model_dir / f"{MODEL_NAME}.safetensors"
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=str(weights))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(MODEL_NAME)


@torch.no_grad()
def encode_images(model, preprocess, images: np.ndarray, *, batch_size: int = 500) -> torch.Tensor:
    """L2-normalized image features of uint8 (N, 28, 28) images through open_clip's preprocessing."""
    feats = []
    for i in range(0, len(images), batch_size):
        batch = torch.stack([preprocess(im) for im in to_pil_images(images[i:i + batch_size])])
        feats.append(model.encode_image(batch, normalize=True))
    return torch.cat(feats)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model-dir", type=Path, default=REPO_ROOT / "clipapp" / "assets" / "demo")
    p.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1))
    p.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    t0 = time.time()
    model, preprocess, tokenizer = load_demo_model(args.model_dir)
    images, labels = load_fashion_mnist("test")
    labels = torch.from_numpy(labels)
    img_f = encode_images(model, preprocess, images)
    t_img = time.time() - t0

    classnames = [c.lower() for c in CLASS_NAMES]
    setups = {
        "single prompt 'a photo of a {}.'": (classnames, ["a photo of a {}."]),
        "simple ensemble (7 templates)": (classnames, list(open_clip.SIMPLE_IMAGENET_TEMPLATES)),
        "openai ensemble (80 templates)": (classnames, list(open_clip.OPENAI_IMAGENET_TEMPLATES)),
        "natural labels, 'a photo of a {}.'": (list(NATURAL_LABELS), ["a photo of a {}."]),
    }
    results = {}
    with torch.no_grad():
        for name, (names, templates) in setups.items():
            classifier = build_zero_shot_classifier(
                model, tokenizer=tokenizer, classnames=names, templates=templates, num_classes_per_batch=10,
                device="cpu", use_tqdm=False,
            )
            pred = (img_f @ classifier).argmax(1)
            correct = pred.eq(labels)
            per_class = [correct[labels == c].float().mean().item() for c in range(len(CLASS_NAMES))]
            results[name] = {
                "top1_test10k": correct.float().mean().item(),
                "top1_first1k": correct[:SUBSET].float().mean().item(),
                "per_class_test10k": dict(zip(CLASS_NAMES, per_class)),
            }

    print(f"clipapp-demo zero-shot top-1 on Fashion-MNIST test "
          f"({len(labels)} images encoded in {t_img:.1f}s, {sum(p.numel() for p in model.parameters()):,} params)")
    print(f"| {'prompts':<38} | {'test 10k':>8} | {'first 1k':>8} |")
    print(f"|{'-' * 40}|{'-' * 10}|{'-' * 10}|")
    for name, r in results.items():
        print(f"| {name:<38} | {r['top1_test10k'] * 100:7.2f}% | {r['top1_first1k'] * 100:7.2f}% |")
    single = results["single prompt 'a photo of a {}.'"]["per_class_test10k"]
    print("per class (single prompt, 10k): " + ", ".join(f"{k} {v * 100:.1f}" for k, v in single.items()))
    if args.json:
        print(json.dumps({"model": MODEL_NAME, "n_test": len(labels), "n_subset": SUBSET, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
