"""Accuracy of zero-shot or an adapter on a folder of class folders (the CLI's `eval`).

Moved here unchanged from the former clipapp/finetune.py; the streaming evaluation in clipapp/evaluation.py is
to replace it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from clipapp.adapter import Adapter
from clipapp.errors import ClipAppError, ImageLoadError
from clipapp.finetune.intake import _maybe_extracted, labelled_folder
from clipapp.finetune.results import metrics_from_logits
from clipapp.prompts import DEFAULT_TEMPLATES
from clipapp.service import ClipService, batched

log = logging.getLogger(__name__)


def evaluate(service: ClipService, data_dir: str | os.PathLike, adapter: Optional[Adapter] = None, *,
             templates: str | Sequence[str] | None = DEFAULT_TEMPLATES, batch_size: int = 32) -> dict[str, float]:
    """Top-1 / top-5 accuracy on DATA_DIR/<class>/<images>: {"top1", "top5", "n"}.

    Zero-shot on the folder names, or with `adapter`, whose classes must include every folder name.
    Unreadable images are skipped (not counted in n).
    """
    with _maybe_extracted(Path(data_dir)) as root:
        data = labelled_folder(root)
        if adapter is not None:
            adapter.check_service(service)
            missing = [c for c in data.class_names if c not in adapter.class_names]
            if missing:
                raise ClipAppError(f"Folder class(es) {', '.join(map(repr, missing[:5]))} are not classes of adapter "
                                   f"{adapter.name!r} ({', '.join(adapter.class_names[:10])}).")
            remap = np.array([adapter.class_names.index(c) for c in data.class_names])
        if adapter is not None and adapter.visual_state:
            stream = _adapter_features(service, adapter, data.sources, batch_size=batch_size)
        else:
            stream = service.encode_image_files(data.sources, batch_size=batch_size)
        paths, features = [], []
        for path, vector, error in stream:
            if vector is None:
                log.warning("skipped %s", error)
                continue
            paths.append(path)
            features.append(vector)
        by_path = {p: t for p, t in zip(data.sources, data.targets)}
        targets = np.array([by_path[p] for p in paths], dtype=np.int64)
        if not features:
            raise ClipAppError(f"{data_dir}: no readable images.")
        features = np.stack(features)
        if adapter is None:
            logits = service.logit_scale * features @ service.text_embeddings(data.class_names, templates).T
        else:
            logits = adapter.logits_from_features(features)
            targets = remap[targets]
    m = metrics_from_logits(logits, targets)
    return {"top1": m["top1"], "top5": m["top5"], "n": m["n"]}


def _adapter_features(service: ClipService, adapter: Adapter, paths: Sequence[str], batch_size: int = 32):
    """(path, vector or None, error or None) through the adapter's tuned tower, one forward pass per batch."""
    for chunk in batched(paths, batch_size):
        decoded = []
        for path in chunk:
            try:
                decoded.append((path, service.decode(path), None))
            except ImageLoadError as exc:
                decoded.append((path, None, str(exc)))
        good = [image for _, image, _ in decoded if image is not None]
        vectors = iter(adapter.image_features(service, good, batch_size=batch_size) if good else ())
        for path, image, error in decoded:
            yield path, (next(vectors) if image is not None else None), error
