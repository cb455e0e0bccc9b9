"""Multi-resolution training: low resolution first, full resolution at the end (FixRes)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from clipapp.errors import ClipAppError


class ResolutionSchedule:
    """Train at `low_size` and switch to `full_size` for the last `final_fraction` of the epochs.

    Helps two ways (Touvron et al. 2019, "FixRes"): low-resolution epochs are cheaper (cost grows with the
    pixel count), and finishing at the test resolution removes the train/test mismatch in apparent object size
    that random-resized-crop training creates. ViTs need sizes that are multiples of the patch size
    (`multiple_of`) and a model that interpolates its position embeddings for the lower size.
    """

    def __init__(
        self,
        full_size: int,
        total_epochs: int,
        *,
        low_size: int | None = None,
        low_scale: float = 0.75,
        final_fraction: float = 0.25,
        multiple_of: int = 1,
    ) -> None:
        if total_epochs < 1:
            raise ClipAppError(f"total_epochs must be >= 1, got {total_epochs}")
        if not 0.0 <= final_fraction <= 1.0:
            raise ClipAppError(f"final_fraction must be in [0, 1], got {final_fraction}")
        if low_size is None:
            low_size = max(multiple_of, int(full_size * low_scale) // multiple_of * multiple_of)
        if not 0 < low_size <= full_size:
            raise ClipAppError(f"low_size must be in (0, {full_size}], got {low_size}")
        self.full_size, self.low_size, self.total_epochs = full_size, low_size, total_epochs
        final_epochs = min(total_epochs, math.ceil(final_fraction * total_epochs))
        self.switch_epoch = total_epochs - final_epochs  # first epoch (0-based) at full size

    def size_at(self, epoch: int) -> int:
        """Training image side for 0-based `epoch`."""
        return self.full_size if epoch >= self.switch_epoch else self.low_size

    def sizes(self) -> list[int]:
        return [self.size_at(epoch) for epoch in range(self.total_epochs)]


def resize_batch(
    images: torch.Tensor, size: int | tuple[int, int], *, mode: str = "bilinear", antialias: bool = True
) -> torch.Tensor:
    """Resize an (N, C, H, W) float batch to `size` (side or (H, W)); unchanged if already that size.

    Antialiasing matters when shrinking, otherwise downscaled images alias and the low-res epochs learn
    from artefacts.
    """
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(images.shape[-2:]) == hw:
        return images
    aa = antialias and mode in ("bilinear", "bicubic")
    kw = {} if mode in ("nearest", "area", "nearest-exact") else {"align_corners": False}
    return F.interpolate(images, size=hw, mode=mode, antialias=aa, **kw)
