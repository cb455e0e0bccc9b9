"""Classification scores, the one implementation: cosines -> logits (logit_scale x cosine, + logit_bias for the
SigLIP family), logits -> probabilities (a softmax over the labels, or independent sigmoids: `multi_label`), and
the top k. `ClipService`, `ZeroShotResult`, the streamed classifier (clipapp/classify/stream.py) and fine-tuned
adapters all score through here. numpy in and out; torch does the arithmetic (its softmax and logsumexp are stable).
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch


def label_logits(cosine: np.ndarray, logit_scale: float, logit_bias: Optional[float] = None) -> np.ndarray:
    """(n, n_labels) cosines -> float32 logits: logit_scale x cosine (+ logit_bias, SigLIP family)."""
    logits = np.multiply(cosine, np.float32(logit_scale), dtype=np.float32)
    if logit_bias is not None:
        logits += np.float32(logit_bias)
    return logits


def probabilities(logits: np.ndarray, *, multi_label: bool = False) -> np.ndarray:
    """(n, n_labels) logits -> probabilities: a softmax over each row, or a sigmoid per entry (`multi_label`)."""
    scores = torch.from_numpy(np.ascontiguousarray(logits))
    return (torch.sigmoid(scores) if multi_label else scores.softmax(dim=-1)).numpy()


def top_k(logits: np.ndarray, k: int, *, multi_label: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(label indices, probabilities), both (n, k) with k clamped to 1..n_labels, best first.

    The top k are found on the logits (their order is the probabilities' order), so only k probabilities per row
    are formed: for the softmax, exp(logit - the row's logsumexp). Equal logits come in torch.topk's order."""
    scores = torch.from_numpy(np.ascontiguousarray(logits))
    k = max(1, min(int(k), scores.shape[1]))
    values, indices = torch.topk(scores, k, dim=1)
    probs = torch.sigmoid(values) if multi_label else torch.exp(values - torch.logsumexp(scores, 1, True))
    return indices.numpy(), probs.numpy()
