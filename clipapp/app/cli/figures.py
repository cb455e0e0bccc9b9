"""The PNG a command draws with `--out` (matplotlib, clipapp.viz.figures): the top-k bars of `classify`, the heatmap
of `similarity`, the confusion matrix of `eval`; and the region-map overlays of `explain` (Pillow,
clipapp.viz.region_overlay)."""

from __future__ import annotations

import argparse
import sys

from clipapp.app.options import image_limits

MAX_BARS_IMAGES = 64  # --out draws one row per image: beyond this the figure is unreadable


def classify_bars(report, args: argparse.Namespace) -> None:
    from clipapp.viz import figures as viz

    if report.results is None or len(report.results) > MAX_BARS_IMAGES:
        print(f"note: --out draws at most {MAX_BARS_IMAGES} images printed on stdout; not drawn", file=sys.stderr)
        return
    from clipapp.images.decode import load_image

    bars = [(p.image, list(p.top)) for p in report.results]
    images = None if args.index else [load_image(p.image) for p in report.results]
    viz.save_figure(viz.topk_bars(bars, images=images), args.out)


def similarity_heatmap(result, args: argparse.Namespace) -> None:
    from clipapp.images.decode import load_image
    from clipapp.viz import figures as viz

    images = [load_image(path, limits=image_limits(args)) for path in result.images]  # named by their paths
    viz.save_figure(viz.similarity_heatmap(result.matrix, images, result.texts), args.out)


def region_overlays(result, args: argparse.Namespace) -> None:
    """One PNG per image and label in the folder --out: IMAGE-STEM--LABEL.png (a number added if two images share
    a stem). Each image is decoded again, one at a time."""
    import re
    from pathlib import Path

    from clipapp.images.decode import load_image
    from clipapp.storage import atomic_path
    from clipapp.viz.region_overlay import overlay_png

    folder = Path(args.out)
    folder.mkdir(parents=True, exist_ok=True)
    used: set[str] = set()
    written = 0
    for i, found in enumerate(result.maps):
        stem = Path(found.image).stem
        stem = stem if stem not in used else f"{stem}-{i + 1}"
        used.add(stem)
        image = load_image(found.image, limits=image_limits(args))
        for label, grid in zip(found.labels, found.grids, strict=True):
            slug = re.sub(r"[^\w.-]+", "_", label).strip("_") or "label"
            with atomic_path(folder / f"{stem}--{slug}.png") as tmp:  # never a half-written PNG under the name
                tmp.write_bytes(overlay_png(image, grid))
            written += 1
    print(f"wrote {written} overlays to {folder}", file=sys.stderr)


def confusion_matrix(result, args: argparse.Namespace) -> None:
    from clipapp.viz import figures as viz

    viz.save_figure(viz.confusion_matrix_figure(result.confusion, result.class_names), args.out)


def map_page(result, args: argparse.Namespace) -> None:
    """`CollectionMap` -> a standalone HTML page (images linked as file:// URLs)."""
    from pathlib import Path

    from clipapp.app.map_view import map_document

    Path(args.out).write_text(map_document(result, lambda path: Path(path).absolute().as_uri()), encoding="utf-8")
