"""The bundled demo model (clipapp/assets/demo) loads with plain open_clip and classifies Fashion-MNIST zero-shot."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier

from clipapp.images.fashion_mnist import CLASS_NAMES, load_fashion_mnist, to_pil_images

DEMO_DIR = Path(__file__).resolve().parents[3] / "clipapp" / "assets" / "demo"
MODEL_NAME = "clipapp-demo"
WEIGHTS = DEMO_DIR / f"{MODEL_NAME}.safetensors"
MAX_WEIGHTS_BYTES = 20 * 1000 * 1000
SUBSET = 1000
MIN_TOP1 = 0.75


def test_demo_files_present_and_small():
    assert (DEMO_DIR / f"{MODEL_NAME}.json").is_file()
    assert WEIGHTS.is_file()
    assert WEIGHTS.stat().st_size <= MAX_WEIGHTS_BYTES


@pytest.fixture(scope="module")
def demo_model():
    open_clip.add_model_config(DEMO_DIR)
    model, _, preprocess = open_clip.create_model_and_transforms(MODEL_NAME, pretrained=str(WEIGHTS))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(MODEL_NAME)


def test_demo_model_loads_as_fp32_open_clip(demo_model):
    model, preprocess, tokenizer = demo_model
    assert isinstance(model, open_clip.CLIP)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert isinstance(tokenizer, open_clip.SimpleTokenizer)
    assert model.vocab_size == 49408


def test_demo_model_zero_shot_fashion_mnist_subset(demo_model):
    model, preprocess, tokenizer = demo_model
    images, labels = load_fashion_mnist("test")
    images, labels = images[:SUBSET], torch.from_numpy(labels[:SUBSET])
    with torch.no_grad():
        batch = torch.stack([preprocess(im) for im in to_pil_images(images)])
        img_f = model.encode_image(batch, normalize=True)
        classifier = build_zero_shot_classifier(
            model,
            tokenizer=tokenizer,
            classnames=[c.lower() for c in CLASS_NAMES],
            templates=["a photo of a {}."],
        )
    top1 = (img_f @ classifier).argmax(1).eq(labels).float().mean().item()
    assert top1 >= MIN_TOP1, f"zero-shot top-1 on the first {SUBSET} test images is {top1:.3f}"


def test_demo_model_through_the_service_as_the_app_runs_it():
    """The app's path: spec `demo`, automatic precision (fp32 on a CPU), the 7 simple templates."""
    from clipapp.model.service import ClipService

    service = ClipService.load("demo", device="cpu")
    images, labels = load_fashion_mnist("test")
    result = service.zero_shot(to_pil_images(images[:SUBSET]), [c.lower() for c in CLASS_NAMES], templates="simple")
    top1 = float((result.probs.argmax(axis=1) == labels[:SUBSET]).mean())
    assert top1 >= MIN_TOP1, f"{service.description}: top-1 {top1:.3f}"
