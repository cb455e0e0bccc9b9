"""ClipService: one resident CLIP model serving image and text embeddings, similarity and zero-shot.

Thread-safe: the web server calls it from many worker threads. No Gradio here; the UI and CLI both call this.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from clipapp.errors import ClipAppError
from clipapp.images.decode import DEFAULT_LIMITS, ImageLimits, ImageSource, load_image
from clipapp.lru import LRU
from clipapp.model import scoring
from clipapp.model.batching import MicroBatcher
from clipapp.model.loading import LoadedModel, load_model, towers
from clipapp.model.prompts import DEFAULT_TEMPLATES, fill_template, resolve_templates
from clipapp.model.unknown import UnknownScores, detector

if TYPE_CHECKING:  # open_clip itself is imported where a model is built (clipapp.model.loading): it costs ~2.6 s
    import open_clip

PAD_TOKEN_ID = 0  # open_clip's SimpleTokenizer pads with 0


def batched(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


@dataclass
class ZeroShotResult:
    """Per-image scores over `labels`, the model's own way (clipapp/model/scoring.py): `probs` is a softmax of
    `logits` (logit_scale x cosine for CLIP) or, for SigLIP-family models (`multi_label`), independent sigmoids."""

    labels: list[str]
    logits: np.ndarray  # (n_images, n_labels)
    cosine: np.ndarray  # (n_images, n_labels)
    multi_label: bool = False  # True: each probability stands alone (sigmoid); they need not sum to 1
    unknown: Optional[UnknownScores] = None  # "none of these" per image (clipapp/model/unknown.py), when asked
    probs: np.ndarray = field(init=False)  # (n_images, n_labels)

    def __post_init__(self) -> None:
        self.probs = scoring.probabilities(self.logits, multi_label=self.multi_label)

    def top(self, k: int = 5) -> list[list[tuple[str, float]]]:
        """The k best (label, probability) of each image, best first."""
        indices, probs = scoring.top_k(self.logits, k, multi_label=self.multi_label)
        return [
            [(self.labels[j], p) for j, p in zip(row, row_probs, strict=True)]
            for row, row_probs in zip(indices.tolist(), probs.tolist(), strict=True)
        ]


@dataclass
class EncodeStats:
    """How much work the encoders did: tests and benchmarks use it to prove caching works."""

    images_encoded: int = 0
    prompts_encoded: int = 0
    text_cache_hits: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self.lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)


class ClipService:
    """A loaded CLIP model plus caches. Build with `ClipService.load(spec, device=..., precision=...)`."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        text_cache_size: int = 200_000,
        decode_workers: int = 2,
        reduced_decoding: bool = True,
        limits: ImageLimits = DEFAULT_LIMITS,
        micro_batch_window_s: float = 0.005,
        micro_batch_rows: int = 64,
    ):
        self.loaded = loaded
        self.model = loaded.model
        self.preprocess = loaded.preprocess
        self.tokenizer = loaded.tokenizer
        self.device = loaded.device
        self.stats = EncodeStats()
        self._dtype = next(self.model.parameters()).dtype
        # amp: fp32 weights, forward passes under autocast (fp16 on a GPU), as open_clip's zero-shot evaluation.
        # fp16/bf16: open_clip casts only convolutions, linears and projections to low precision and leaves norms
        # (a ResNet's BatchNorm) in fp32, so their float32 outputs meet low-precision weights: autocast in the
        # weights' dtype casts each op's inputs (without it, the demo ResNet failed with "expected Float").
        autocast_dtype = {
            "amp": torch.float16 if self.device.type == "cuda" else torch.bfloat16,
            "fp16": torch.float16,
            "bf16": torch.bfloat16,
        }.get(loaded.precision)
        self._autocast = (
            (lambda: torch.autocast(self.device.type, dtype=autocast_dtype)) if autocast_dtype else nullcontext
        )
        self._model_lock = threading.Lock()  # one forward pass at a time: the CPU has no spare cores to share
        self._text_cache: LRU[str, np.ndarray] = LRU(text_cache_size)
        self._cache_lock = threading.Lock()
        self._decode_workers = decode_workers
        # Large JPEG files are decoded at reduced scale, never below 3x the model's input side: a 12 MP photo decodes
        # ~5x faster, and the embeddings stay within cosine 0.9999 of a full decode (lowest over the example photos
        # on the demo model: 0.99992; 2x the side gave 0.9995). None = always decode in full.
        self.decode_side = 3 * self.input_side if reduced_decoding else None
        self.limits = limits  # what an image may be (pixels, aspect ratio), for every image this service reads
        self._can_trim_text = _supports_trimmed_text(self.model)
        self._float_model: Optional[torch.nn.Module] = None
        # Small interactive requests from concurrent users share forward passes; bulk encoding bypasses this.
        self._image_batcher = (
            MicroBatcher(
                self._forward_images,
                window_s=micro_batch_window_s,
                max_rows=micro_batch_rows,
                name="image-micro-batcher",
            )
            if micro_batch_window_s > 0
            else None
        )
        with torch.no_grad():
            self.logit_scale = float(towers(self.model).logit_scale.exp())
            bias = getattr(self.model, "logit_bias", None)
            # SigLIP-family models are trained with a sigmoid loss and carry a learnt bias: their probabilities are
            # sigmoid(logit_scale * cos + logit_bias), independent per label (as their authors and the HF pipeline).
            self.logit_bias: Optional[float] = None if bias is None else float(bias.reshape(-1)[0])

    @classmethod
    def load(
        cls,
        spec: Optional[str] = None,
        *,
        device: str = "auto",
        precision: str = "auto",
        allow_fallback: bool = True,
        **kwargs,
    ) -> "ClipService":
        return cls(load_model(spec, device=device, precision=precision, allow_fallback=allow_fallback), **kwargs)

    # -- what is loaded ---------------------------------------------------------------------------------------
    @property
    def spec(self) -> str:
        return self.loaded.spec

    @property
    def embed_dim(self) -> int:
        return self.loaded.embed_dim

    @property
    def context_length(self) -> int:
        return self.loaded.context_length

    @property
    def description(self) -> str:
        return self.loaded.description

    @property
    def notice(self) -> Optional[str]:
        return self.loaded.notice

    @property
    def multi_label(self) -> bool:
        """Whether label probabilities are independent sigmoids (SigLIP family) rather than a softmax over labels."""
        return self.logit_bias is not None

    @property
    def input_side(self) -> int:
        """The side, in pixels, of the images the image tower takes (the larger one if not square)."""
        size = getattr(getattr(self.model, "visual", None), "image_size", 224)
        return int(max(size) if isinstance(size, (tuple, list)) else size)

    # -- images -----------------------------------------------------------------------------------------------
    def decode(self, source: ImageSource) -> Image.Image:
        """`load_image` at the resolution this model needs (`decode_side`), refusing shapes whose resize to the input
        side would be unbounded; PIL images pass through unchanged."""
        return load_image(source, limits=self.limits, min_side=self.decode_side, resize_side=self.input_side)

    def encode_images(self, images: Sequence[ImageSource], *, batch_size: int = 32) -> np.ndarray:
        """L2-normalized float32 embeddings, one row per image (PIL images, paths or bytes)."""
        rows = [self.preprocess(self.decode(image)) for image in images]
        return self._encode_pixels(rows, batch_size=batch_size)

    def encode_image_files(
        self,
        paths: Sequence[str],
        *,
        batch_size: int = 32,
        prefetch_batches: int = 2,
        encoder: Optional[Callable[[list[Image.Image]], np.ndarray]] = None,
    ) -> Iterator[tuple[str, Optional[np.ndarray], Optional[str]]]:
        """Yield (path, vector or None, error or None) in order; decoding runs in threads, overlapped with
        encoding, holding at most `prefetch_batches + 1` batches of decoded images in memory.

        The threads only decode (Pillow, which releases the GIL); the preprocessing's tensor work runs in the
        encoding thread. Run in the decode threads, it made every forward pass ~3x slower (demo model, 2 CPUs:
        63 ms per 64-image batch of 28x28 PNGs and 107 ms of 800x600 photos, against 21-25 ms on images in
        memory): torch ops in other threads compete with the forward's own (each such thread brings its own
        OpenMP team, and holds the GIL between ops). Decode-only threads keep the forward at its in-memory 21-23 ms
        (bench/bench_classify.py shows the whole CLI path).

        `encoder`: embeds a batch of decoded images instead of this model's image tower (an adapter with its own
        tuned visual blocks)."""
        paths = [str(p) for p in paths]
        if not paths:
            return

        def prepare(path: str) -> tuple[Optional[Image.Image], Optional[str]]:
            try:
                return self.decode(path), None
            except ClipAppError as exc:
                return None, str(exc)

        with ThreadPoolExecutor(max_workers=self._decode_workers, thread_name_prefix="decode") as pool:
            chunks = batched(paths, batch_size)
            pending: deque[tuple[list[str], list[Future]]] = deque()

            def submit_next() -> None:
                chunk = next(chunks, None)
                if chunk:
                    pending.append((chunk, [pool.submit(prepare, p) for p in chunk]))

            for _ in range(prefetch_batches + 1):
                submit_next()
            while pending:
                chunk, futures = pending.popleft()
                submit_next()
                prepared = [f.result() for f in futures]
                good = [image for image, _ in prepared if image is not None]
                if not good:
                    vectors: Iterator[np.ndarray] = iter(())
                elif encoder is not None:
                    vectors = iter(encoder(good))
                else:
                    rows = [self.preprocess(image) for image in good]
                    vectors = iter(self._encode_pixels(rows, batch_size=batch_size))
                for path, (image, error) in zip(chunk, prepared, strict=True):
                    yield path, (next(vectors) if image is not None else None), error

    def _forward_images(self, pixels: torch.Tensor) -> torch.Tensor:
        with self._model_lock, torch.inference_mode(), self._autocast():
            features = towers(self.model).encode_image(pixels.to(self.device, dtype=self._dtype))
        return F.normalize(features.float(), dim=-1).cpu()

    def _encode_pixels(self, rows: list[torch.Tensor], *, batch_size: int) -> np.ndarray:
        if not rows:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        if self._image_batcher is not None and len(rows) < self._image_batcher.max_rows:
            out = self._image_batcher.submit(torch.stack(rows)).numpy()
        else:
            out = np.concatenate(
                [self._forward_images(torch.stack(chunk)).numpy() for chunk in batched(rows, batch_size)]
            )
        self.stats.add(images_encoded=len(rows))
        return out.astype(np.float32, copy=False)

    def trainable_model(self) -> torch.nn.Module:
        """The model in floating point, for fine-tuning: the resident one, or, when that one is int8 (which cannot
        be trained), an fp32 copy loaded once on first use. Callers must copy what they change."""
        if self.loaded.precision != "int8":
            return self.model
        with self._cache_lock:
            if self._float_model is None:
                self._float_model = load_model(
                    self.spec, device=str(self.device), precision="fp32", allow_fallback=False
                ).model
            return self._float_model

    # -- texts ------------------------------------------------------------------------------------------------
    def check_prompt_lengths(self, prompts: Sequence[str]) -> None:
        """Refuse prompts the tokenizer would silently cut: the user should know the model reads only the start."""
        encode = getattr(self.tokenizer, "encode", None)
        if encode is None:
            return
        limit = self.context_length - 2  # start- and end-of-text tokens
        for prompt in prompts:
            n_tokens = len(encode(prompt))
            if n_tokens > limit:
                raise ClipAppError(
                    f"Text {prompt[:60]!r}{'...' if len(prompt) > 60 else ''} is {n_tokens} tokens; this model reads "
                    f"at most {limit}. Use a shorter label or a shorter template."
                )

    def encode_texts(self, texts: Sequence[str], *, batch_size: int = 256) -> np.ndarray:
        """L2-normalized float32 embeddings, one row per text; repeated texts come from the cache."""
        texts = [str(t) for t in texts]
        if not texts:
            return np.zeros((0, self.embed_dim), dtype=np.float32)
        with self._cache_lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        self.stats.add(text_cache_hits=len(texts) - len(missing))
        if missing:
            self.check_prompt_lengths(missing)
            for chunk in batched(missing, batch_size):
                vectors = self._encode_prompts(chunk)
                with self._cache_lock:
                    for text, vector in zip(chunk, vectors, strict=True):
                        self._text_cache.put(text, vector)
            self.stats.add(prompts_encoded=len(missing))
        with self._cache_lock:
            cached = {t: self._text_cache.peek(t) for t in set(texts)}
        found = {t: v for t, v in cached.items() if v is not None}
        # A text evicted by another thread between the two lock holds is simply encoded again.
        lost = [t for t in cached if t not in found]
        if lost:
            found.update(zip(lost, self._encode_prompts(lost), strict=True))
        return np.stack([found[t] for t in texts]).astype(np.float32, copy=False)

    def _encode_prompts(self, prompts: list[str]) -> np.ndarray:
        tokens = self.tokenizer(prompts).to(self.device)
        with self._model_lock, torch.inference_mode(), self._autocast():
            if self._can_trim_text:
                features = encode_text_trimmed(self.model, tokens)
            else:
                features = towers(self.model).encode_text(tokens)
        return F.normalize(features.float(), dim=-1).cpu().numpy()

    def text_embeddings(
        self, labels: Sequence[str], templates: str | Sequence[str] | None = DEFAULT_TEMPLATES
    ) -> np.ndarray:
        """One row per label: the mean of its normalized per-template embeddings, re-normalized (open_clip's
        `build_zero_shot_classifier`)."""
        templates = resolve_templates(templates)
        prompts = [fill_template(t, label) for label in labels for t in templates]
        per_prompt = self.encode_texts(prompts).reshape(len(labels), len(templates), -1)
        mean = per_prompt.mean(axis=1)
        return (mean / np.linalg.norm(mean, axis=1, keepdims=True)).astype(np.float32)

    # -- tasks ------------------------------------------------------------------------------------------------
    def similarity(self, images: Sequence[ImageSource], texts: Sequence[str]) -> np.ndarray:
        """Cosine similarity (n_images, n_texts) of the texts as written, as in the CLIP notebook."""
        if not texts:
            raise ClipAppError("No texts given.")
        return self.encode_images(images) @ self.encode_texts(texts).T

    def zero_shot(
        self,
        images: Sequence[ImageSource],
        labels: Sequence[str],
        *,
        templates: str | Sequence[str] | None = DEFAULT_TEMPLATES,
        image_features: Optional[np.ndarray] = None,
        classifier: Optional[np.ndarray] = None,
        unknown: bool = False,
    ) -> ZeroShotResult:
        """Probabilities over `labels` for each image. `image_features` skips image encoding;
        `classifier` (n_labels, dim) replaces the text classifier, e.g. with a fine-tuned head. `unknown`: also
        whether each image matches none of the labels (against the labels' text embeddings, whatever `classifier`)."""
        labels = list(labels)
        if not labels:
            raise ClipAppError("No labels given.")
        features = self.encode_images(images) if image_features is None else image_features
        weights = self.text_embeddings(labels, templates) if classifier is None else classifier
        cosine = features @ weights.T
        return ZeroShotResult(
            labels=labels,
            logits=self.label_logits(cosine),
            cosine=cosine,
            multi_label=self.multi_label,
            unknown=detector(self, labels, templates)(features) if unknown else None,
        )

    def label_probabilities(self, cosine: np.ndarray) -> np.ndarray:
        """(n_images, n_labels) cosines to label classifiers -> probabilities, the model's own way: a softmax of
        logit_scale x cosine over the labels (CLIP), or sigmoid(logit_scale x cosine + logit_bias) per label
        (SigLIP family, `multi_label`)."""
        return scoring.probabilities(self.label_logits(cosine), multi_label=self.multi_label)

    def label_logits(self, cosine: np.ndarray) -> np.ndarray:
        """logit_scale x cosine (+ logit_bias for SigLIP-family models): what `label_probabilities` normalises."""
        return scoring.label_logits(cosine, self.logit_scale, self.logit_bias)


def _supports_trimmed_text(model: torch.nn.Module) -> bool:
    """The causal text tower of open_clip's CLIP pools at the end-of-text token, whose features depend only on
    earlier positions, so running it only up to the longest prompt gives the same embeddings."""
    import open_clip

    return (
        isinstance(model, open_clip.CLIP)
        and getattr(model, "attn_mask", None) is not None
        and getattr(model, "text_pool_type", None) in ("argmax", "eos")
    )


def encode_text_trimmed(model: open_clip.CLIP, tokens: torch.Tensor) -> torch.Tensor:
    """`model.encode_text(tokens)` computed over the first L positions only, L = longest prompt in the batch.

    Mirrors open_clip's `CLIP.encode_text` step by step with the positional embedding and causal mask sliced.
    """
    from open_clip.transformer import text_global_pool

    positions = torch.arange(tokens.shape[1], device=tokens.device)
    length = int(((tokens != PAD_TOKEN_ID) * (positions + 1)).max())
    tokens = tokens[:, :length]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, tokens, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        x = (
            model.text_projection(x)
            if isinstance(model.text_projection, torch.nn.Linear)
            else x @ model.text_projection
        )
    return x
