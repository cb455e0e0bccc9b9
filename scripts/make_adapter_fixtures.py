"""Golden adapter fixtures, written by the clipapp on sys.path (an OLD checkout), for tests/unit/finetune/test_golden_adapters.py.

    git worktree add /tmp/oldcode <commit>
    PYTHONPATH=/tmp/oldcode HF_HUB_OFFLINE=1 .venv/bin/python scripts/make_adapter_fixtures.py \
        --out tests/data/adapters/<label> --images tests/data/adapters/images

For each mode (head, cache, partial) it fine-tunes the demo model on a few Fashion-MNIST training images (3 classes,
4 each; a couple of epochs: the point is the file format, not accuracy), saves the adapter with that code's own
`Adapter.save`, and stores beside it (`expected.json`) the logits and probabilities that code computes for the
committed probe images, the commit the files were written by and the sha256 of the demo weights used.

The demo model must be today's: an old checkout older than the demo model's retraining (e66f9eb) gets today's
`clipapp-demo.*` copied over its assets/models/demo/ first, so the fixture tests the file format, not the model.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import tempfile
from pathlib import Path

import numpy as np

CLASSES = {1: "trouser", 7: "sneaker", 8: "bag"}  # Fashion-MNIST label -> folder (class) name
PER_CLASS = 4
MODES = ("head", "cache", "partial")


def _write_training_folder(root: Path) -> Path:
    from clipapp.images.fashion_mnist import load_fashion_mnist, to_pil_images

    images, labels = load_fashion_mnist("train")
    for label, name in CLASSES.items():
        (root / name).mkdir(parents=True)
        picked = np.flatnonzero(labels == label)[:PER_CLASS]
        for i, image in zip(picked, to_pil_images(images[picked]), strict=True):
            image.save(root / name / f"{i}.png")
    return root


def write_probe_images(folder: Path) -> list[Path]:
    """Two held-out test images per class (committed once, shared by every fixture)."""
    from clipapp.images.fashion_mnist import load_fashion_mnist, to_pil_images

    folder.mkdir(parents=True, exist_ok=True)
    images, labels = load_fashion_mnist("test")
    paths = []
    for label, name in CLASSES.items():
        picked = np.flatnonzero(labels == label)[:2]
        for i, image in zip(picked, to_pil_images(images[picked]), strict=True):
            path = folder / f"{name}-{i}.png"
            if not path.exists():
                image.save(path)
            paths.append(path)
    return sorted(paths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                        help="partial adapters are 5 MB (a tuned block of the demo model): not in every fixture")
    args = parser.parse_args()

    import clipapp
    from clipapp.finetune import FinetuneConfig, finetune_folder
    from clipapp.finetune.adapter import FORMAT_VERSION
    from clipapp.model.service import ClipService

    code = Path(clipapp.__file__).resolve().parents[1]
    commit = subprocess.run(["git", "-C", str(code), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    probes = write_probe_images(args.images)
    service = ClipService.load("demo", device="cpu", precision="fp32")
    from clipapp.model.spec import DEMO_WEIGHTS
    known = {f.name for f in dataclasses.fields(FinetuneConfig)}
    args.out.mkdir(parents=True, exist_ok=True)
    expected = {"commit": commit, "format_version": FORMAT_VERSION, "spec": service.spec,
                "demo_weights_sha256": hashlib.sha256(Path(DEMO_WEIGHTS).read_bytes()).hexdigest(),
                "probe_images": [p.name for p in probes], "adapters": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = _write_training_folder(Path(tmp) / "train")
        for mode in args.modes:
            settings = {"mode": mode, "epochs": 2, "seed": 0, "blocks": 1, "require_gain": False,
                        "val_per_class": 1}
            config = FinetuneConfig(**{k: v for k, v in settings.items() if k in known})
            result = finetune_folder(service, data, config, out=args.out / mode)
            adapter = result.adapter
            features = adapter.image_features(service, [str(p) for p in probes])
            logits = adapter.logits_from_features(features)
            expected["adapters"][mode] = {
                "class_names": list(adapter.class_names),
                "logits": np.asarray(logits, dtype=np.float64).round(6).tolist(),
                "probs": np.asarray(adapter.probs_from_features(features), dtype=np.float64).round(6).tolist(),
            }
    (args.out / "expected.json").write_text(json.dumps(expected, indent=1) + "\n")
    print(f"wrote {args.out} (format {FORMAT_VERSION}, commit {commit[:10]})")


if __name__ == "__main__":
    main()
