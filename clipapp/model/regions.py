"""Region maps: for each image and label, a grid over the whole image of where the label matches.

Three methods, chosen by measurement (bench/bench_explain.py, docs/benchmarks.md):
  crops      model-agnostic: square windows at two scales tiling the image, encoded as one batch through the
             service's image encoder; a cell's value is the mean cosine to the label of the windows covering it.
  occlusion  model-agnostic: the image (letterboxed to a square, so the model sees all of it) with one patch at a
             time covered, encoded as one batch; a cell's value is how much covering it lowers the label's cosine.
  gradcam    model-specific: Grad-CAM of the label's cosine on the image tower's last feature map with at least
             4 x 4 cells (ModifiedResNet: a stage's output; ViT: the patch tokens entering the last block).
The grid covers the image, rows top to bottom, `GRID_CELLS` cells along its long side. Values are comparable
within one label's map (and, for crops and occlusion, across labels: both are cosines); the overlay scales each map
to its own range. Images are explained one at a time, so memory is bounded by one image's batch of windows.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipapp.errors import ClipAppError
from clipapp.images.decode import ImageSource
from clipapp.model.prompts import DEFAULT_TEMPLATES
from clipapp.model.service import ClipService
from clipapp.progress import ProgressFn

METHODS = ("crops", "occlusion", "gradcam")
# crops: the only method right on composites (demo model pointing game, 100 pairs | 100 2 x 2: crops 0.975 | 0.985,
# occlusion 0.735 | 0.432, gradcam 0.695 | 0.425; chance 0.5 | 0.25; bench/bench_explain.py). Occlusion and gradcam
# see the letterboxed image, whose items shrink to half the 32-pixel input; crops see each item at the model's own
# scale. Cost per image x 10 labels, medians of 3 runs on 2 shared CPU cores: demo 14 ms (occlusion 26, gradcam
# 14); ViT-B-32 on an 800 x 600 photo 0.44 s (occlusion 3.8 s, gradcam 0.23 s: cheaper, but it points wrong).
DEFAULT_METHOD = "crops"
GRID_CELLS = 8  # cells along the image's long side: 8 x 8 overlays read well over a thumbnail
# Window sides as fractions of the image's short side, each tiling the image at its own side (the last window flush
# with the edge). Measured on the demo model's pointing game (100 pairs | 100 2 x 2 composites): (1, 0.5) tiling
# 0.975 | 0.985; slid at half their side 0.975 | 0.975 with ~2x the windows; (0.5,) 0.83 | 0.985; (0.75,) 0.975 |
# 0.52; (1, 0.75, 0.5) 0.98 | 0.97. A square image thus gets 1 + 4 windows, an 800 x 600 photo 2 + 6.
CROP_SCALES = (1.0, 0.5)
CROP_STRIDE = 1.0
OCCLUSION_PATCH = 4  # the covered patch is 1/4 of the (square) side, slid at half its side: 7 x 7 = 49 copies
GRADCAM_MIN_SIDE = 4  # deepest map this many cells a side: demo pointing game 0.675 at 4 (layer2), 0.55 at 8


@dataclass
class RegionMaps:
    """One image's maps: `grids[k]` (rows, cols) is where `labels[k]` matches, rows top to bottom."""

    image: str
    labels: list[str]
    grids: np.ndarray  # (n_labels, rows, cols) float32

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "labels": [
                {"label": label, "grid": np.round(grid.astype(float), 5).tolist()}
                for label, grid in zip(self.labels, self.grids, strict=True)
            ],
        }


def grid_shape(width: int, height: int, cells: int = GRID_CELLS) -> tuple[int, int]:
    """(rows, cols) of near-square cells covering a width x height image, `cells` along the long side."""
    long_side = max(width, height)
    rows = max(1, round(cells * height / long_side))
    cols = max(1, round(cells * width / long_side))
    return rows, cols


def explain(
    service: ClipService,
    images: Sequence[ImageSource],
    labels: Sequence[str],
    *,
    method: str = DEFAULT_METHOD,
    templates: str | Sequence[str] | None = DEFAULT_TEMPLATES,
    cells: int = GRID_CELLS,
    names: Optional[Sequence[str]] = None,
    progress: Optional[ProgressFn] = None,
) -> Iterator[RegionMaps]:
    """Yield each image's `RegionMaps`, in order; an image that cannot be read raises its ClipAppError. `names`:
    what each result calls its image (default: the path, a PIL image's file name, or "image N")."""
    labels = [str(label) for label in labels]
    if not labels:
        raise ClipAppError("No labels given: name at least one label to locate in the images.")
    if method not in METHODS:
        raise ClipAppError(f"Unknown region method {method!r}: use one of {', '.join(METHODS)}.")
    if cells < 1 or cells > 64:
        raise ClipAppError(f"Grid of {cells} cells: use 1 to 64 cells along the long side.")
    if names is not None and len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    text = torch.from_numpy(service.text_embeddings(labels, templates))
    total = len(images)
    for done, source in enumerate(images):
        image = service.decode(source).convert("RGB")
        shape = grid_shape(*image.size, cells)
        if method == "crops":
            fine = crop_map(service, image, text)
        elif method == "occlusion":
            fine = occlusion_map(service, image, text)
        else:
            fine = gradcam_map(service, image, text)
        if names is not None:
            name = names[done]
        else:
            name = str(source) if isinstance(source, (str, os.PathLike)) else ""
            name = name or getattr(source, "filename", "") or f"image {done + 1}"
        yield RegionMaps(image=str(name), labels=labels, grids=resample(fine, shape))
        if progress is not None:
            progress(done + 1, total, "Region maps")


def resample(maps: torch.Tensor, shape: tuple[int, int]) -> np.ndarray:
    """(n_labels, h, w) maps -> (n_labels, rows, cols) float32, antialiased bilinear (area-like when shrinking)."""
    out = F.interpolate(maps[None].float(), size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out[0].numpy().astype(np.float32)


def _positions(length: int, window: int, stride: float = 0.5) -> list[int]:
    """Window starts covering [0, length) at strides of at most `stride` x the window, first at 0 and last at
    length - window."""
    if window >= length:
        return [0]
    steps = math.ceil((length - window) / (window * stride))
    return [round(i * (length - window) / steps) for i in range(steps + 1)]


def _accumulate(boxes: list[tuple[int, int, int, int]], scores: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The mean of `scores` (n_boxes, n_labels) over the boxes covering each cell of a fine grid over `size`
    (width, height): (n_labels, h, w), the grid 4x the output's resolution so box edges fall near cell edges."""
    width, height = size
    h, w = grid_shape(width, height, 4 * GRID_CELLS)
    total = torch.zeros(scores.shape[1], h, w)
    count = torch.zeros(1, h, w)
    for (left, top, right, bottom), score in zip(boxes, scores, strict=True):
        r0, r1 = round(top * h / height), max(round(bottom * h / height), round(top * h / height) + 1)
        c0, c1 = round(left * w / width), max(round(right * w / width), round(left * w / width) + 1)
        total[:, r0:r1, c0:c1] += score[:, None, None]
        count[:, r0:r1, c0:c1] += 1
    return total / count.clamp(min=1)


def shrink(image: Image.Image, side: int, *, short: bool) -> Image.Image:
    """`image` scaled down so that its short (or long) side is at most `side`: what a method holds in memory is
    then bounded by the model's input size (and the aspect ratio the image limits allow), not by the photo."""
    width, height = image.size
    scale = side / (min(width, height) if short else max(width, height))
    if scale >= 1:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)


def crop_map(service: ClipService, image: Image.Image, text: torch.Tensor) -> torch.Tensor:
    """crops: windows at `CROP_SCALES` of the short side, one batch through the image encoder. The image is first
    shrunk to a short side of 2x the model's input, so the smallest windows still fill the input."""
    image = shrink(image, 2 * service.input_side, short=True)
    width, height = image.size
    boxes = []
    for scale in CROP_SCALES:
        side = max(1, round(min(width, height) * scale))
        rows, cols = _positions(height, side, CROP_STRIDE), _positions(width, side, CROP_STRIDE)
        boxes += [(x, y, x + side, y + side) for y in rows for x in cols]
    features = torch.from_numpy(service.encode_images([image.crop(box) for box in boxes]))
    return _accumulate(boxes, features @ text.T, image.size)


def letterbox(image: Image.Image) -> tuple[Image.Image, tuple[int, int, int, int], tuple[int, ...]]:
    """The image centred on a square of its border's mean colour (the model's preprocessing would otherwise crop
    a non-square image to its centre), the box it occupies there, and that colour."""
    width, height = image.size
    side = max(width, height)
    pixels = np.asarray(image)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    fill = tuple(int(v) for v in border.mean(axis=0).round())
    square = Image.new("RGB", (side, side), fill)
    left, top = (side - width) // 2, (side - height) // 2
    square.paste(image, (left, top))
    return square, (left, top, left + width, top + height), fill


def _crop_map_to_box(maps: torch.Tensor, side: int, box: tuple[int, int, int, int]) -> torch.Tensor:
    """The part of (n, h, w) maps over a `side` square that lies over `box` (the image within its letterbox)."""
    h, w = maps.shape[1:]
    left, top, right, bottom = box
    r0, r1 = math.floor(top * h / side), math.ceil(bottom * h / side)
    c0, c1 = math.floor(left * w / side), math.ceil(right * w / side)
    return maps[:, r0:r1, c0:c1]


def occlusion_map(service: ClipService, image: Image.Image, text: torch.Tensor) -> torch.Tensor:
    """occlusion: the letterboxed image with one patch covered (in the pad colour) per copy, one batch; the square
    is at most 2x the model's input side (the model sees it at 1x)."""
    square, box, fill = letterbox(shrink(image, 2 * service.input_side, short=False))
    side = square.size[0]
    patch = max(1, side // OCCLUSION_PATCH)
    boxes, copies = [], [square]
    left, top, right, bottom = box
    for y in _positions(side, patch):
        for x in _positions(side, patch):
            if x + patch <= left or x >= right or y + patch <= top or y >= bottom:
                continue  # wholly over the padding: covering it changes nothing
            covered = square.copy()
            covered.paste(fill, (x, y, x + patch, y + patch))
            boxes.append((x, y, x + patch, y + patch))
            copies.append(covered)
    cosine = torch.from_numpy(service.encode_images(copies)) @ text.T
    drops = cosine[:1] - cosine[1:]
    return _crop_map_to_box(_accumulate(boxes, drops, (side, side)), side, box)


def gradcam_map(service: ClipService, image: Image.Image, text: torch.Tensor) -> torch.Tensor:
    """gradcam: Grad-CAM (Selvaraju et al.) of each label's cosine on a feature map of the image tower, one
    backward pass for all labels (the feature map repeated once per label)."""
    square, box, _ = letterbox(shrink(image, 2 * service.input_side, short=False))
    model = service.trainable_model()  # an int8 model has no gradients; its fp32 copy does
    visual = getattr(model, "visual", None)
    dtype = next(model.parameters()).dtype
    pixels = service.preprocess(square)[None].to(service.device, dtype=dtype)
    labels = text.to(service.device, dtype=torch.float32)
    with torch.enable_grad():
        if visual is not None and hasattr(visual, "attnpool") and hasattr(visual, "layer4"):
            cam = _gradcam_resnet(visual, pixels, labels)
        elif visual is not None and hasattr(visual, "transformer") and hasattr(visual, "grid_size"):
            cam = _gradcam_vit(visual, pixels, labels)
        else:
            raise ClipAppError(
                f"The gradcam region method needs a ResNet or ViT image tower; {service.spec} has "
                f"{type(visual).__name__}. Use --method crops or occlusion, which work with every model."
            )
    return _crop_map_to_box(cam.detach().float().cpu(), square.size[0], box)


def _cam(features: torch.Tensor, embeddings: torch.Tensor, labels: torch.Tensor, spatial_dims: tuple) -> torch.Tensor:
    """Grad-CAM from `features` (n_labels copies, requiring grad) and the `embeddings` computed from them."""
    cosine = (F.normalize(embeddings.float(), dim=-1) * labels).sum()  # copy k scores label k
    (grads,) = torch.autograd.grad(cosine, features)
    weights = grads.mean(dim=spatial_dims, keepdim=True)
    return F.relu((weights * features).sum(dim=1 if spatial_dims == (2, 3) else 2))


def _gradcam_resnet(visual: Any, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """open_clip's ModifiedResNet: the deepest stage output with >= GRADCAM_MIN_SIDE cells a side (the demo
    model's 32-pixel input ends at 1 x 1, so its map comes from layer2, 4 x 4)."""
    stages = [visual.layer1, visual.layer2, visual.layer3, visual.layer4]
    with torch.no_grad():
        x = visual.stem(pixels)
        outputs = []
        for stage in stages:
            x = stage(x)
            outputs.append(x)
    chosen = max([i for i, out in enumerate(outputs) if min(out.shape[2:]) >= GRADCAM_MIN_SIDE], default=0)
    features = outputs[chosen].expand(len(labels), -1, -1, -1).clone().requires_grad_(True)
    x = features
    for stage in stages[chosen + 1 :]:
        x = stage(x)
    cam = _cam(features, visual.attnpool(x), labels, (2, 3))
    return cam


def _gradcam_vit(visual: Any, pixels: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """open_clip's VisionTransformer: the patch tokens entering the last block (the class token and any prefix
    tokens are left out of the map)."""
    transformer = visual.transformer
    blocks = list(transformer.resblocks)
    with torch.no_grad():
        x = visual._embeds(pixels)
        if not transformer.batch_first:
            x = x.transpose(0, 1)
        for block in blocks[:-1]:
            x = block(x)
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    features = x.expand(len(labels), -1, -1).clone().requires_grad_(True)
    y = features if transformer.batch_first else features.transpose(0, 1)
    y = blocks[-1](y)
    if not transformer.batch_first:
        y = y.transpose(0, 1)
    pooled, _ = visual._pool(y)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    grid_h, grid_w = visual.grid_size
    n_patches = grid_h * grid_w
    cam = _cam(features, pooled, labels, (1,))  # (n_labels, tokens)
    return cam[:, -n_patches:].reshape(len(labels), grid_h, grid_w)
