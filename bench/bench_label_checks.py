"""Label checks, measured in one run (docs/benchmarks.md, "Label checks"):

1. "None of these" (clipapp/model/unknown.py): AUROC and flag rates, on images of the labels (Fashion-MNIST test)
   and of other classes (scikit-learn digits, crops of scikit-image photos), of the background-vocabulary gap
   beside the fixed cosine threshold (the best label's raw cosine) and the best softmax probability. Every cut-off
   is chosen on a tuning split (Fashion-MNIST *train* images, flagging 5% of them) and the rates are reported on
   the test split and on digits/photos it never saw. Also prints the calibration to paste into CALIBRATIONS.
2. Label errors (clipapp/classify/suspects.py): precision at k on Fashion-MNIST test images with a known fraction
   of flipped labels, for the normalised margin, 1 - p(given), and the max-softmax ranking (least confident first).
3. The label check's distances (clipapp/model/label_check.py): learnt synonyms and the closest distinct classes.
4. Time of the unknown scores next to the label logits they ride along (repeats, min/median/max).

    PYTHONPATH=. python bench/bench_label_checks.py [--model demo] [--n 2000] [--flip 0.1]

Only the demo model is measured here (no pretrained weights on this machine).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
from PIL import Image


def photo_crops(rng: np.random.Generator, per_photo: int) -> list[Image.Image]:
    import skimage.data as data

    names = ["astronaut", "camera", "cat", "coffee", "horse", "rocket", "chelsea", "immunohistochemistry", "brick"]
    names += ["grass", "gravel", "moon", "page", "text", "clock", "hubble_deep_field", "retina", "colorwheel", "logo"]
    crops = []
    for name in names:
        array = getattr(data, name)()
        image = Image.fromarray(array if array.dtype == np.uint8 else (array * 255).astype(np.uint8))
        w, h = image.size
        for _ in range(per_photo):
            side = int(rng.integers(min(w, h) // 4, min(w, h)))
            x, y = int(rng.integers(0, w - side + 1)), int(rng.integers(0, h - side + 1))
            crops.append(image.crop((x, y, x + side, y + side)))
    return crops


def digit_images() -> list[Image.Image]:
    from sklearn.datasets import load_digits

    digits = load_digits().images
    return [Image.fromarray((d * 255 / 16).astype(np.uint8)).resize((28, 28), Image.BILINEAR) for d in digits]


def auroc(inside: np.ndarray, outside: np.ndarray) -> float:
    """Probability that an outside image scores as more unknown than an inside one (higher = more unknown)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.r_[np.zeros(len(inside)), np.ones(len(outside))], np.r_[inside, outside]))


def unknown_section(service, rng, n: int) -> None:
    from clipapp.images.fashion_mnist import CLASS_NAMES, load_fashion_mnist
    from clipapp.model import scoring, unknown

    labels = list(CLASS_NAMES)
    det = unknown.detector(service, labels)

    def fashion(split: str) -> np.ndarray:
        images, _ = load_fashion_mnist(split)
        pick = rng.choice(len(images), n, replace=False)
        return service.encode_images([Image.fromarray(x) for x in images[pick]], batch_size=256)

    tune, test = fashion("train"), fashion("test")
    others = {"digits": service.encode_images(digit_images(), batch_size=256)}
    others["photos"] = service.encode_images(photo_crops(rng, 40), batch_size=256)

    # Each method as "higher = more unknown".
    def methods(features: np.ndarray) -> dict[str, np.ndarray]:
        cosine = features @ det.label_weights.T
        probs = scoring.probabilities(service.label_logits(cosine))
        gap = -det.gaps(features)
        return {"background gap (ours)": gap, "fixed cosine": -cosine.max(1), "max softmax": -probs.max(1)}

    tuned = methods(tune)
    calibration = unknown.calibrate(-tuned["background gap (ours)"])
    print(f"calibration for {service.spec!r} (paste into CALIBRATIONS): {calibration}")
    print(
        f"\n'none of these': {n} Fashion-MNIST test images vs {len(others['digits'])} digits, "
        f"{len(others['photos'])} photo crops; cut-offs flag 5% of {n} *train* images"
    )
    print(
        f"{'method':24} {'AUROC digits':>12} {'AUROC photos':>12} {'flag labels':>11} {'flag digits':>11} "
        f"{'flag photos':>11}"
    )
    scored_test = methods(test)
    scored_others = {name: methods(f) for name, f in others.items()}
    for method in tuned:
        cut = np.quantile(tuned[method], 1 - unknown.CALIBRATION_FLAG_RATE)
        rates = [float((scored_test[method] > cut).mean())]
        rates += [float((scored_others[name][method] > cut).mean()) for name in others]
        aucs = [auroc(scored_test[method], scored_others[name][method]) for name in others]
        print(f"{method:24} {aucs[0]:12.3f} {aucs[1]:12.3f} " + " ".join(f"{r:11.1%}" for r in rates))
    flags = {"labels": det(test).flag.mean()} | {name: det(f).flag.mean() for name, f in others.items()}
    print("shipped calibration:", ", ".join(f"{k} flagged {v:.1%}" for k, v in flags.items()))


def suspects_section(service, rng, n: int, flip: float) -> None:
    from clipapp.classify.suspects import suspect_scores
    from clipapp.images.fashion_mnist import CLASS_NAMES, load_fashion_mnist
    from clipapp.model import scoring

    images, truth = load_fashion_mnist("test")
    pick = rng.choice(len(images), n, replace=False)
    images, truth = images[pick], truth[pick]
    given = truth.copy()
    flipped = rng.choice(n, int(round(flip * n)), replace=False)
    given[flipped] = (truth[flipped] + rng.integers(1, 10, len(flipped))) % 10  # always another class
    features = service.encode_images([Image.fromarray(x) for x in images], batch_size=256)
    probs = scoring.probabilities(service.label_logits(features @ service.text_embeddings(list(CLASS_NAMES)).T))
    ours, _ = suspect_scores(probs, given)  # doubted images by 1 - p(given), then the rest
    rankings = {
        "doubted, 1 - p(given) (ours)": ours + (1 - probs[np.arange(n), given]) * (ours == 0) * 1e-3,
        "1 - p(given), all images": 1 - probs[np.arange(n), given],
        "normalised margin": probs.max(1) - probs[np.arange(n), given],
        "max softmax (least sure)": -probs.max(1),
    }
    is_error = np.zeros(n, dtype=bool)
    is_error[flipped] = True
    ks = [25, 50, 100, 200]
    print(
        f"\nlabel errors: {n} Fashion-MNIST test images, {len(flipped)} labels flipped ({flip:.0%}); "
        f"zero-shot accuracy on the true labels {(probs.argmax(1) == truth).mean():.1%}"
    )
    print(f"{'ranking':30} " + " ".join(f"{'P@' + str(k):>7}" for k in ks))
    for name, score in rankings.items():
        order = np.argsort(-score, kind="stable")
        print(f"{name:30} " + " ".join(f"{is_error[order[:k]].mean():7.1%}" for k in ks))


def label_check_section(service) -> None:
    from clipapp.images.fashion_mnist import CLASS_NAMES
    from clipapp.model.label_check import CLOSE_FRACTION, close_pairs
    from clipapp.model.unknown import BACKGROUND

    synonyms = [("sneaker", "trainer"), ("coat", "jacket"), ("trouser", "pants"), ("pullover", "sweater")]
    synonyms += [("bag", "handbag"), ("sneaker", "snekaer")]  # the last: a typo the tokenizer splits
    classes = [c.lower() for c in CLASS_NAMES]
    weights = service.text_embeddings(classes)
    background = service.text_embeddings(list(BACKGROUND))
    _, spread = close_pairs(weights, background)
    distance = 1 - weights @ weights.T
    upper = np.triu_indices(len(classes), 1)
    closest = int(np.argmin(distance[upper]))
    i, j = upper[0][closest], upper[1][closest]
    print(
        f"\nlabel check: spread {spread:.3f}, 'too close' below {CLOSE_FRACTION * spread:.4f}; "
        f"closest two classes {classes[i]} / {classes[j]} at {distance[i, j]:.3f}"
    )
    for a, b in synonyms:
        pair = service.text_embeddings([a, b])
        print(f"  {a} / {b}: {1 - float(pair[0] @ pair[1]):.4f}")


def timing_section(service, rng, repeats: int) -> None:
    from clipapp.images.fashion_mnist import CLASS_NAMES
    from clipapp.model import unknown

    det = unknown.detector(service, list(CLASS_NAMES))
    features = rng.standard_normal((8192, service.embed_dim)).astype(np.float32)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    times: dict[str, list[float]] = {"label logits": [], "unknown scores": []}
    for _ in range(repeats):
        start = time.perf_counter()
        service.label_logits(features @ det.label_weights.T)
        times["label logits"].append(time.perf_counter() - start)
        start = time.perf_counter()
        det(features)
        times["unknown scores"].append(time.perf_counter() - start)
    print(f"\ntime per 8,192 stored vectors, 10 labels ({repeats} repeats, min/median/max ms):")
    for name, values in times.items():
        ms = [v * 1000 for v in values]
        print(f"  {name:16} {min(ms):6.1f} {statistics.median(ms):6.1f} {max(ms):6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo")
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--flip", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    from clipapp.model.service import ClipService

    service = ClipService.load(args.model, device="cpu")
    print(f"model {service.spec} ({service.description})")
    rng = np.random.default_rng(0)
    unknown_section(service, rng, args.n)
    suspects_section(service, rng, min(args.n, 1000), args.flip)
    label_check_section(service)
    timing_section(service, rng, args.repeats)


if __name__ == "__main__":
    main()
