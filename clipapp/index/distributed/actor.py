"""EmbedActor: the Ray Data callable that runs on the workers, one model copy per actor."""

from __future__ import annotations

import os
import socket
from typing import Optional

import numpy as np

from clipapp.errors import ClipAppError

# Row status returned by EmbedActor.
OK, BAD_IMAGE, MISSING, FATAL = "ok", "error", "missing", "fatal"


class EmbedActor:
    """Ray Data callable class: loads the model once, then embeds batches of {"path": [...]} rows.

    Returns per row: path, vector (float32, zeros unless ok), status (ok / error / missing / fatal), error text and
    node. A model that cannot be loaded is reported in-band as `fatal` rows rather than by failing __init__, so
    the driver can name the cause and node instead of Ray retrying the actor.
    """

    def __init__(
        self,
        *,
        spec: str,
        dim: int,
        precision: str = "fp32",
        device: str = "auto",
        num_cpus: int = 1,
        batch_size: int = 32,
    ):
        import torch

        torch.set_num_threads(max(1, int(num_cpus)))  # this actor's share of the node, no oversubscription
        self.dim = int(dim)
        self.batch_size = int(batch_size)
        self.node = socket.gethostname()
        self.service = None
        self.error: Optional[str] = None
        try:
            from clipapp.model.service import ClipService

            # No fallback to the demo model: every vector of an index must come from the same model.
            # No micro-batcher: a bulk job has no concurrent small requests to merge.
            service = ClipService.load(
                spec,
                device=device,
                precision=precision,
                allow_fallback=False,
                micro_batch_window_s=0,
                decode_workers=max(1, int(num_cpus)),
            )
            if service.spec != spec or service.embed_dim != self.dim:
                raise ClipAppError(f"loaded {service.spec} ({service.embed_dim}-d), expected {spec} ({self.dim}-d)")
            self.service = service
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which raises a ClipAppError
            self.error = f"cannot load model {spec}: {exc if isinstance(exc, ClipAppError) else repr(exc)}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        vectors = np.zeros((len(paths), self.dim), dtype=np.float32)
        status = [FATAL] * len(paths)
        errors = [self.error or ""] * len(paths)
        if self.service is not None:
            row_of = {p: i for i, p in enumerate(paths)}
            present = []
            for i, path in enumerate(paths):
                if os.path.exists(path):
                    present.append(path)
                else:
                    status[i], errors[i] = MISSING, "no such file on this node"
            for path, vector, error in self.service.encode_image_files(present, batch_size=self.batch_size):
                i = row_of[path]
                if vector is None:
                    status[i], errors[i] = BAD_IMAGE, error or "could not be encoded"
                else:
                    vectors[i], status[i], errors[i] = vector, OK, ""
        return {
            "path": np.array(paths, dtype=object),
            "vector": vectors,
            "status": np.array(status, dtype=object),
            "error": np.array(errors, dtype=object),
            "node": np.array([self.node] * len(paths), dtype=object),
        }
