"""What the training loop eats: every image decoded once, the frozen part of the model run once per image and per
augmented view, and the cached outputs laid out for mixing.

In head mode the frozen part is the whole model (the cache holds embeddings). In partial mode it is the tower below
the first tuned block: the cache holds the activations entering it (ModifiedResNet: spatial maps N, C, H, W; ViT:
tokens N, L, D), so a training step runs only the tuned blocks. Mixup on these activations is manifold mixup
(Verma et al., ICML 2019); CutMix pastes boxes of the spatial maps, or of the ViT patch-token grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Optional

import numpy as np
import torch
import torch.nn as nn

from clipapp.errors import ImageLoadError
from clipapp.finetune.config import FinetuneConfig, StopFlag, stopped
from clipapp.finetune.intake import LabelledImages
from clipapp.finetune.results import FinetuneStopped
from clipapp.finetune.towers import tuned_visual_copy, visual_kind, visual_prefix, vit_grid_size
from clipapp.finetune.trainable import PartialTower, TrainableHead
from clipapp.model.device import training_dtype
from clipapp.model.service import ClipService
from clipapp.progress import ProgressFn
from clipapp.tricks import MixedBatch

CACHE_BYTES = 2 << 30  # at most this much cached activations (views x images); fewer views beyond it
PREFIX_BATCH = 64
VIEW_SCALE = (0.6, 1.0)  # RandomResizedCrop area range of the augmented views (CoOp / Tip-Adapter use a crop too)


@dataclass
class EncodedImages:
    features: np.ndarray  # (n, dim) L2-normalised
    targets: np.ndarray
    names: list[str]
    images: list  # decoded PIL images (kept for partial fine-tuning and augmented views)
    skipped: list[str]


def encode_labelled(
    service: ClipService,
    data: LabelledImages,
    *,
    progress: Optional[ProgressFn] = None,
    stop: StopFlag = None,
    batch_size: int = 32,
) -> EncodedImages:
    """Decode every image once (bad files are skipped and named) and encode it with the resident model."""
    images, targets, names, skipped = [], [], [], []
    for source, target, name in zip(data.sources, data.targets, data.names, strict=True):
        try:
            images.append(service.decode(source))
        except ImageLoadError as exc:
            skipped.append(str(exc))
            continue
        targets.append(int(target))
        names.append(name)
    chunks = []
    for start in range(0, len(images), batch_size):
        if stopped(stop):
            raise FinetuneStopped("Fine-tuning stopped while encoding the images; nothing was saved.")
        chunks.append(service.encode_images(images[start : start + batch_size], batch_size=batch_size))
        if progress:
            done = min(start + batch_size, len(images))
            progress(done, len(images), f"encoded {done}/{len(images)} images")
    features = np.concatenate(chunks) if chunks else np.zeros((0, service.embed_dim), dtype=np.float32)
    return EncodedImages(features, np.asarray(targets, dtype=np.int64), names, images, skipped)


# ------------------------------------------------------------------------------------------------ inputs
@dataclass
class Inputs:
    """The trainable model's inputs for a set of images.

    `views` (V, n, ...): the frozen part's output per view, view 0 being the image itself (validation uses it).
    `pixels` (n, 3, H, W) instead when mixing in pixel space: the frozen part then runs at every step, uncached.
    """

    views: Optional[torch.Tensor] = None
    pixels: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if (self.views is None) == (self.pixels is None):
            raise ValueError("Inputs takes either views or pixels.")

    @property
    def pixel_space(self) -> bool:
        return self.views is None

    def _pixels(self) -> torch.Tensor:
        assert self.pixels is not None  # __post_init__: pixels are set when views are not
        return self.pixels

    def __len__(self) -> int:
        return len(self._pixels()) if self.views is None else self.views.shape[1]

    def take(self, index: np.ndarray) -> "Inputs":
        idx = torch.as_tensor(index, dtype=torch.long)
        if self.views is None:
            return Inputs(pixels=self._pixels()[idx])
        return Inputs(views=self.views[:, idx])

    def plain(self, start: int, stop: int) -> torch.Tensor:
        """Rows start..stop of view 0 (or of the pixels)."""
        return self._pixels()[start:stop] if self.views is None else self.views[0, start:stop]

    def draw(self, batch: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """A training batch: for each image, one of its views at random."""
        idx = torch.as_tensor(batch, dtype=torch.long)
        if self.views is None:
            return self._pixels()[idx]
        if self.views.shape[0] == 1:
            return self.views[0, idx]
        view = torch.as_tensor(rng.integers(self.views.shape[0], size=len(batch)), dtype=torch.long)
        return self.views[view, idx]


@dataclass(frozen=True)
class TokenGrid:
    """ViT tokens (N, prefix + h * w, D) seen as maps (N, D, h, w) for CutMix; the prefix (class) tokens are
    blended with the mixing weight instead."""

    prefix: int
    height: int
    width: int

    @classmethod
    def of(cls, visual: nn.Module, tokens_per_image: int) -> Optional[TokenGrid]:
        """A ViT tower's grid, given how many tokens its blocks see per image; None for a conv tower (its
        activations are maps already)."""
        if visual_kind(visual) != "vit":
            return None
        height, width = vit_grid_size(visual)
        return cls(tokens_per_image - height * width, height, width)

    def mix(
        self, mixer: Callable[[torch.Tensor, torch.Tensor], MixedBatch], tokens: torch.Tensor, target: torch.Tensor
    ) -> MixedBatch:
        n, _, dim = tokens.shape
        head, patches = tokens[:, : self.prefix], tokens[:, self.prefix :]
        maps = patches.transpose(1, 2).reshape(n, dim, self.height, self.width)
        mixed = mixer(maps, target)
        patches = mixed.inputs.reshape(n, dim, self.height * self.width).transpose(1, 2)
        head = mixed.lam * head + (1.0 - mixed.lam) * head[mixed.index]
        return MixedBatch(torch.cat([head, patches], dim=1), mixed.targets, mixed.lam, mixed.index, mixed.box)


@dataclass
class TrainingSetup:
    """Everything a training run needs besides its indices: a fresh model per run, and its cached inputs."""

    build_model: Callable[[], nn.Module]
    inputs: Inputs
    grid: Optional[TokenGrid] = None  # ViT activations: CutMix through the token grid
    visual: Optional[nn.Module] = None  # partial mode: the tower copy the tuned blocks live in
    zero_visual: Optional[dict[str, torch.Tensor]] = None  # its tuned parameters at the start
    views: int = 1  # views really cached (CACHE_BYTES may lower the request)


def prefix_tokens(visual: nn.Module, first_tuned: int, pixel_batches: Iterable[torch.Tensor]) -> torch.Tensor:
    """The frozen blocks' output (what partial mode caches and trains on) for batches of pixels, without
    gradients."""
    with torch.no_grad():
        return torch.cat([visual_prefix(visual, pixels, first_tuned) for pixels in pixel_batches])


def augmented_views(images: list, views: int, seed: int) -> list[list]:
    """`views` lists of the images: the images themselves, then random resized crops (no flips: they change
    digits and text)."""
    from torchvision.transforms import RandomResizedCrop

    torch.manual_seed(seed)  # torchvision draws from torch's global generator
    out = [list(images)]
    for _ in range(views - 1):
        out.append([RandomResizedCrop(image.size[::-1], scale=VIEW_SCALE, ratio=(0.9, 1.1))(image) for image in images])
    return out


def _affordable_views(config: FinetuneConfig, n_images: int, bytes_per_view: int) -> int:
    assert config.views is not None  # FinetuneConfig.__post_init__ fills None in from MODE_DEFAULTS
    return max(1, min(config.views, CACHE_BYTES // max(1, n_images * bytes_per_view)))


def prepare_training(
    service: ClipService, encoded: EncodedImages, config: FinetuneConfig, start_weights: np.ndarray
) -> TrainingSetup:
    """Run the frozen part once per image and view and wrap the result with a model factory."""
    logit_scale = float(service.logit_scale)
    if config.mode != "partial":
        views = _affordable_views(config, len(encoded.images), 4 * service.embed_dim)
        cached = [torch.from_numpy(encoded.features)]
        for extra in augmented_views(encoded.images, views, config.seed)[1:]:
            cached.append(torch.from_numpy(service.encode_images(extra)))
        return TrainingSetup(
            lambda: TrainableHead(start_weights, logit_scale), Inputs(views=torch.stack(cached)), views=views
        )

    assert config.blocks is not None  # FinetuneConfig.__post_init__ fills None in (the strongest candidate's)
    visual, first_tuned, _ = tuned_visual_copy(service.trainable_model(), config.blocks)
    visual = visual.to(service.device)
    zero_visual = {n: p.detach().clone() for n, p in visual.named_parameters() if p.requires_grad}
    dtype = training_dtype(config.train_precision, service.device)

    def build_model() -> nn.Module:
        visual.load_state_dict(zero_visual, strict=False)  # every run starts from the resident weights
        return PartialTower(visual, first_tuned, TrainableHead(start_weights, logit_scale), dtype).to(service.device)

    def pixels_of(images: list) -> torch.Tensor:
        return torch.stack([service.preprocess(image) for image in images]).to(service.device)

    grid = None
    if visual_kind(visual) == "vit":  # the token count per image, from one image through the frozen blocks
        grid = TokenGrid.of(visual, prefix_tokens(visual, first_tuned, [pixels_of(encoded.images[:1])]).shape[1])
    if config.mix_space == "pixels":  # the uncached reference path
        return TrainingSetup(build_model, Inputs(pixels=pixels_of(encoded.images)), grid, visual, zero_visual)

    cached, views = [], 1
    assert config.views is not None  # FinetuneConfig.__post_init__ fills None in from MODE_DEFAULTS
    for i, images in enumerate(augmented_views(encoded.images, config.views, config.seed)):
        batches = (pixels_of(images[s : s + PREFIX_BATCH]) for s in range(0, len(images), PREFIX_BATCH))
        cached.append(prefix_tokens(visual, first_tuned, batches))
        views = _affordable_views(config, len(images), cached[0][0].numel() * cached[0].element_size())
        if i + 1 >= views:
            break
    return TrainingSetup(build_model, Inputs(views=torch.stack(cached)), grid, visual, zero_visual, len(cached))
