#!/usr/bin/env python
"""Few-shot benchmark: does "Fine-tune" beat zero-shot and a plain linear probe on real images?

The bundled demo model (`--model demo`, trained on Fashion-MNIST) is adapted to
  - scikit-learn's digits (1,797 8x8 handwritten digits, upscaled): classes the demo model has never seen, so its
    zero-shot accuracy is near chance and all the gain must come from the few labelled images;
  - Fashion-MNIST: support images from the train split, evaluation on the test split: classes it knows.
At 1, 4 and 16 shots per class, over 3 seeds, on the images not used for adaptation (capped at `--eval-cap`):
  zero-shot                   the text classifier of the class prompts
  linear probe (random init)  a plain linear probe: the same head, optimiser, schedule and early stopping, started
                              from random weights, without tricks, WiSE or the zero-shot fallback
  logistic regression         scikit-learn's L-BFGS logistic regression (the CLIP paper's probe), C chosen by
                              cross-validation on the shots (C = 10 at 1 shot); a reference
  ours, no tricks             the head initialised from the zero-shot weights, without mixup / smoothing / EMA
  ours: default               `FinetuneConfig()`: the same plus mixup 0.2, label smoothing 0.1, EMA 0.99
  cache (training-free)       the Tip-Adapter-style cache adapter
  partial (--partial)         `FinetuneConfig(mode="partial")`: also the last 2 visual blocks, on a copy; minutes
For Fashion-MNIST a reference line gives logistic regression on all `--pool` labelled train images: the demo model
was trained on Fashion-MNIST, so its zero-shot head is already a supervised classifier that few shots can hardly beat.
Everything runs through `clipapp.finetune.finetune`, the function the CLI and the web app call. Prints markdown
tables of mean +- std top-1 and the wall time of head fine-tuning on cached features at 16 shots x 10 classes.

    .venv/bin/python bench/bench_fewshot.py                 # a few minutes on 2 CPU cores
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO_DIR = Path(__file__).resolve().parents[1]
if str(REPO_DIR) not in sys.path:
    sys.path.insert(0, str(REPO_DIR))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from clipapp.finetune import FinetuneConfig, finetune, labelled_uploads, metrics_from_logits  # noqa: E402
from clipapp.service import ClipService  # noqa: E402

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
NO_TRICKS = dict(mixup=0.0, label_smoothing=0.0, ema=0.0)
LOGREG_METHOD = "logistic regression (scikit-learn, C by cross-validation)"
METHODS: dict[str, FinetuneConfig | None] = {
    "zero-shot": None,
    "linear probe (random init)": FinetuneConfig(head_init="random", anchor_weight=0.0, wise_alpha=1.0,
                                                 require_gain=False, **NO_TRICKS),
    LOGREG_METHOD: None,
    "ours: zero-shot-init head, no tricks": FinetuneConfig(**NO_TRICKS),
    "ours: default = + mixup 0.2, label smoothing 0.1, EMA 0.99": FinetuneConfig(),
    "cache adapter (Tip-Adapter, training-free)": FinetuneConfig(mode="cache"),
}
DEFAULT_METHOD = "ours: default = + mixup 0.2, label smoothing 0.1, EMA 0.99"
PROBE_METHOD = "linear probe (random init)"
PARTIAL_METHOD = "partial: last 2 visual blocks + head (default tricks)"


@dataclass
class Dataset:
    name: str
    class_names: list[str]
    pool_images: list[Image.Image]  # the shots are drawn from here
    pool_labels: np.ndarray
    eval_images: list[Image.Image] | None  # None: evaluate on the pool images not drawn as shots
    eval_labels: np.ndarray | None


def digits(side: int) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # 0..16 intensities, ink bright on black like Fashion-MNIST's objects; bicubic upscale to the model's input size
    images = [Image.fromarray(np.clip(a * 16, 0, 255).astype(np.uint8), mode="L").resize((side, side), Image.BICUBIC)
              for a in bunch.images]
    return Dataset("digits (sklearn, 8x8 upscaled)", list(DIGIT_NAMES), images, bunch.target.astype(np.int64),
                   None, None)


def fashion(eval_cap: int, pool_size: int, seed: int) -> Dataset:
    from clipapp.fashion_mnist import CLASS_NAMES, load_fashion_mnist, to_pil_images

    train_x, train_y = load_fashion_mnist("train")
    test_x, test_y = load_fashion_mnist("test")
    rng = np.random.default_rng(seed)
    pool = rng.choice(len(train_y), size=min(pool_size, len(train_y)), replace=False)
    evaluation = rng.choice(len(test_y), size=min(eval_cap, len(test_y)), replace=False)
    return Dataset("Fashion-MNIST (shots from train, eval on test)", [c.lower() for c in CLASS_NAMES],
                   to_pil_images(train_x[pool]), train_y[pool], to_pil_images(test_x[evaluation]), test_y[evaluation])


def draw_shots(labels: np.ndarray, shots: int, rng: np.random.Generator) -> np.ndarray:
    return np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), size=shots, replace=False)
                                   for c in np.unique(labels)]))


def run(service: ClipService, data: Dataset, *, shots_list, seeds, eval_cap: int,
        methods) -> tuple[dict, list, Optional[float]]:
    """{(method, shots): [top-1 per seed]}, the head training times at 16 shots, and (with a separate evaluation
    set) the top-1 of logistic regression on every pool image: what a linear head gets from many labels."""
    pool_features = service.encode_images(data.pool_images, batch_size=256)
    eval_features = None
    reference = None
    if data.eval_images is not None:
        from sklearn.linear_model import LogisticRegression

        eval_features = service.encode_images(data.eval_images, batch_size=256)
        probe = LogisticRegression(C=10.0, max_iter=3000).fit(pool_features, data.pool_labels)
        reference = float(probe.score(eval_features, data.eval_labels))
    zero_shot = service.text_embeddings(data.class_names, "simple")
    scores: dict[tuple[str, int], list[float]] = {}
    train_seconds = []
    for shots in shots_list:
        for seed in range(seeds):
            rng = np.random.default_rng(1000 * shots + seed)
            support = draw_shots(data.pool_labels, shots, rng)
            if eval_features is None:
                rest = np.setdiff1d(np.arange(len(data.pool_labels)), support)
                rest = rng.permutation(rest)[:eval_cap]
                features, labels = pool_features[rest], data.pool_labels[rest]
                images = [data.pool_images[i] for i in rest]
            else:
                features, labels, images = eval_features, data.eval_labels, data.eval_images
            items = [(data.pool_images[i], data.class_names[data.pool_labels[i]]) for i in support]
            labelled = labelled_uploads(items, class_names=data.class_names)
            for method, config in methods.items():
                if method == LOGREG_METHOD:
                    logits = logistic_regression(pool_features[support], data.pool_labels[support], shots,
                                                 features)
                elif config is None:
                    logits = service.logit_scale * features @ zero_shot.T
                else:
                    result = finetune(service, labelled, FinetuneConfig(**{**config.to_dict(), "seed": seed}))
                    adapter = result.adapter
                    if adapter.visual_state:  # tuned visual blocks: the images go through the adapter's tower
                        logits = adapter.logits_from_features(adapter.image_features(service, images, batch_size=256))
                    else:
                        logits = adapter.logits_from_features(features)
                    if method == DEFAULT_METHOD and shots == 16 and len(data.class_names) == 10:
                        train_seconds.append(result.seconds["train"])
                scores.setdefault((method, shots), []).append(metrics_from_logits(logits, labels)["top1"])
            print(f"  {data.name}: {shots}-shot seed {seed} done", file=sys.stderr, flush=True)
    return scores, train_seconds, reference


def logistic_regression(x: np.ndarray, y: np.ndarray, shots: int, evaluate_on: np.ndarray) -> np.ndarray:
    from sklearn.linear_model import LogisticRegression, LogisticRegressionCV

    if shots >= 2:
        model = LogisticRegressionCV(Cs=[0.1, 1.0, 10.0, 100.0, 1000.0], cv=min(shots, 4), max_iter=5000,
                                     l1_ratios=(0.0,), scoring="accuracy", use_legacy_attributes=False)
    else:
        model = LogisticRegression(C=10.0, max_iter=5000)
    return model.fit(x, y).decision_function(evaluate_on)


def table(name: str, scores: dict, shots_list, methods, n_eval: str) -> str:
    header = f"| {name} — top-1 % on {n_eval} (mean ± std, {len(next(iter(scores.values())))} seeds) | " + \
        " | ".join(f"{s}-shot" for s in shots_list) + " |"
    lines = [header, "|---|" + "---:|" * len(shots_list)]
    for method in methods:
        cells = []
        for shots in shots_list:
            values = 100 * np.asarray(scores[(method, shots)])
            cells.append(f"{values.mean():.1f} ± {values.std():.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def check(scores: dict, shots_list) -> list[str]:
    """The acceptance bar: the default beats zero-shot and the random-init probe at 4 and 16 shots (mean top-1)."""
    problems = []
    for shots in (s for s in shots_list if s >= 4):
        ours = np.mean(scores[(DEFAULT_METHOD, shots)])
        for other in ("zero-shot", PROBE_METHOD):
            if ours <= np.mean(scores[(other, shots)]):
                problems.append(f"{shots}-shot: default {100 * ours:.1f} <= {other} "
                                f"{100 * np.mean(scores[(other, shots)]):.1f}")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--shots", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--eval-cap", type=int, default=2000, help="at most this many evaluation images per dataset")
    parser.add_argument("--pool", type=int, default=5000, help="Fashion-MNIST train images the shots are drawn from")
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion"], choices=["digits", "fashion"])
    parser.add_argument("--partial", action="store_true",
                        help="add a row for partial fine-tuning (last 2 visual blocks + head, pixel mixup); slow")
    parser.add_argument("--precision", default="fp32", help="fp32 (default) or auto (int8 on CPU where it is safe)")
    args = parser.parse_args(argv)

    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    service = ClipService.load(args.model, device="cpu", precision=args.precision, allow_fallback=False)
    side = service.input_side
    print(f"model {service.spec} ({service.loaded.precision}), logit scale {service.logit_scale:.1f}; "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, {platform.processor() or platform.machine()}")
    started = time.perf_counter()
    all_train_seconds: list[float] = []
    failed = []
    methods = dict(METHODS)
    if args.partial:
        methods[PARTIAL_METHOD] = FinetuneConfig(mode="partial")
    for key in args.datasets:
        data = digits(side) if key == "digits" else fashion(args.eval_cap, args.pool, seed=0)
        n_eval = (f"the remaining images (≤ {args.eval_cap})" if data.eval_images is None
                  else f"{len(data.eval_labels)} test images")
        scores, train_seconds, reference = run(service, data, shots_list=args.shots, seeds=args.seeds,
                                               eval_cap=args.eval_cap, methods=methods)
        all_train_seconds += train_seconds
        print()
        print(table(data.name, scores, args.shots, methods, n_eval))
        if reference is not None:
            print(f"\nreference: logistic regression (sklearn, C=10) on all {len(data.pool_labels)} labelled pool "
                  f"images ({len(data.pool_labels) // len(data.class_names)} per class): {100 * reference:.1f}")
        failed += [f"{data.name}: {p}" for p in check(scores, args.shots)]
    print()
    if all_train_seconds:
        print(f"head fine-tuning on cached features, 16 shots x 10 classes (validation runs + refit on all): "
              f"{np.mean(all_train_seconds):.2f} s mean, {np.max(all_train_seconds):.2f} s max "
              f"over {len(all_train_seconds)} runs (target < 10 s)")
    print(f"total bench time {time.perf_counter() - started:.0f} s")
    if failed:
        print("NOT MET: the default must beat zero-shot and the random-init probe at 4 and 16 shots:")
        print("\n".join(f"  {p}" for p in failed))
        return 1
    print("met: the default beats zero-shot and the random-init linear probe at 4 and 16 shots on every dataset")
    return 0


if __name__ == "__main__":
    sys.exit(main())
