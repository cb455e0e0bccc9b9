"""The planner's step costs (plan.StepCosts) measured on the loaded model and this hardware: a few timed steps on a
sample of the user's own images, before training.

Timed per (mode, depth), once and only when the planner asks (it weighs candidates strongest first and stops at the
first that fits): decoding and encoding an image with the whole model (every mode), the frozen part below the tuned
blocks per image (partial), and one training step and one validation forward through the real training code
(loop.time_steps) on a throwaway model: a head, or a copy of the tower's top. The resident model is only read.
"""

from __future__ import annotations

import time
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F

from clipapp.finetune.config import FinetuneConfig
from clipapp.finetune.features import PREFIX_BATCH, Inputs, TokenGrid, prefix_tokens
from clipapp.finetune.intake import LabelledImages
from clipapp.finetune.loop import fastest_threads, time_steps, torch_threads
from clipapp.finetune.plan import StepCosts
from clipapp.finetune.towers import tuned_visual_copy
from clipapp.finetune.trainable import PartialTower, TrainableHead
from clipapp.model.device import training_dtype
from clipapp.model.service import ClipService


def sample_indices(targets: np.ndarray, size: int) -> np.ndarray:
    """Up to `size` image indices taken from every class in turn (their first images): a batch as training sees."""
    by_class = [np.flatnonzero(targets == label) for label in np.unique(targets)]
    order = [members[i] for i in range(max(map(len, by_class), default=0)) for members in by_class if i < len(members)]
    return np.asarray(order[:size], dtype=np.int64)


def _batch_of(x: torch.Tensor, size: int) -> torch.Tensor:
    """`x`'s rows repeated up to a full batch: fewer images than a batch must not time a cheaper step."""
    return x.repeat(-(-size // len(x)), *([1] * (x.ndim - 1)))[: max(size, len(x))]


class MeasuredCosts:
    """A plan.CostsFn: `costs(mode, blocks)` timed on `data`'s images (plan.choose asks once per mode and depth and
    remembers the answer). An image that cannot be decoded is left out of the sample (encoding will skip it too)."""

    def __init__(self, service: ClipService, data: LabelledImages, config: FinetuneConfig):
        self._service, self._config = service, config
        self._n_classes = len(data.class_names)
        self._sources = [data.sources[i] for i in sample_indices(np.asarray(data.targets), config.batch_size)]
        self._images: list = []
        self._features: Optional[torch.Tensor] = None
        self._encode = 0.0

    def _encoded(self) -> float:
        """Seconds per image of decoding and the whole model; the sample's features kept for the head."""
        from clipapp.errors import ImageLoadError

        if self._features is None:
            started = time.perf_counter()
            for source in self._sources:
                try:
                    self._images.append(self._service.decode(source))
                except ImageLoadError:
                    continue
            if not self._images:
                self._images = [self._blank()]
            decode = (time.perf_counter() - started) / len(self._images)
            self._service.encode_images(self._images[:1])  # warms the kernels: the first call pays for set-up
            started = time.perf_counter()
            features = self._service.encode_images(self._images)
            self._encode = decode + (time.perf_counter() - started) / len(self._images)
            self._features = torch.from_numpy(np.asarray(features))
        return self._encode

    def _blank(self):
        from PIL import Image

        return Image.new("RGB", (224, 224), (128, 128, 128))

    def _head(self) -> TrainableHead:
        generator = torch.Generator().manual_seed(0)
        weights = F.normalize(torch.randn(self._n_classes, self._service.embed_dim, generator=generator), dim=-1)
        return TrainableHead(weights, float(self._service.logit_scale))

    def __call__(self, mode: str, blocks: int) -> StepCosts:
        encode = self._encoded()
        if mode == "cache":
            return StepCosts(encode)
        assert self._features is not None  # set by _encoded
        if mode == "head":
            features = _batch_of(self._features, self._config.batch_size)
            head = self._head()
            threads, timing = self._timed(head, Inputs(views=features[None]), None)
            return StepCosts(encode, step=timing.step, forward_per_image=timing.forward_per_image, threads=threads)
        return self._measure_partial(encode, blocks)

    def _measure_partial(self, encode: float, blocks: int) -> StepCosts:
        service = self._service
        started = time.perf_counter()
        visual, first_tuned, _ = tuned_visual_copy(service.trainable_model(), blocks)  # refuses what cannot split
        visual = visual.to(service.device)
        setup = time.perf_counter() - started
        pixels = torch.stack([service.preprocess(image) for image in self._images]).to(service.device)
        started = time.perf_counter()
        tokens = prefix_tokens(visual, first_tuned, pixels.split(PREFIX_BATCH))
        prefix = (time.perf_counter() - started) / len(pixels)
        grid = TokenGrid.of(visual, tokens.shape[1])
        dtype = training_dtype(self._config.train_precision, service.device)
        model = PartialTower(visual, first_tuned, self._head(), dtype).to(service.device)
        threads, timing = self._timed(model, Inputs(views=_batch_of(tokens, self._config.batch_size)[None]), grid)
        return StepCosts(
            encode,
            prefix_per_image=prefix,
            step=timing.step,
            forward_per_image=timing.forward_per_image,
            per_run=timing.per_run,
            setup=setup,
            threads=threads,
        )

    def _timed(self, model, inputs: Inputs, grid: Optional[TokenGrid]):
        """The thread count training would choose (loop.fastest_threads), and the steps timed with it."""
        threads = fastest_threads(model, inputs, self._service.device, batch_size=self._config.batch_size)
        with torch_threads(threads):
            return threads, time_steps(model, inputs, self._n_classes, self._config, grid=grid)
