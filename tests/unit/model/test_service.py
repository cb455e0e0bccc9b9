"""ClipService against open_clip's own reference computations, caching, trimming and thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import open_clip
import pytest
import torch
from open_clip.zero_shot_classifier import build_zero_shot_classifier
from open_clip.zero_shot_metadata import SIMPLE_IMAGENET_TEMPLATES
from PIL import Image

from clipapp.errors import ClipAppError
from clipapp.model.service import ClipService, encode_text_trimmed
from tests.support.paths import TINY_MODEL

LABELS = ["astronaut", "cat", "cup of coffee", "rocket", "motorcycle", "a page of printed text"]


@pytest.fixture(scope="module")
def reference(tiny_weights):
    """Plain open_clip, loaded the way its README does, from the same file."""
    model, _, preprocess = open_clip.create_model_and_transforms(TINY_MODEL, pretrained=str(tiny_weights))
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(TINY_MODEL)


def test_zero_shot_matches_open_clip_reference(tiny_service, reference, photos):
    model, preprocess, tokenizer = reference
    images = [Image.open(p).convert("RGB") for p in photos]
    with torch.no_grad():
        classifier = build_zero_shot_classifier(model, tokenizer, LABELS, SIMPLE_IMAGENET_TEMPLATES, device="cpu")
        features = model.encode_image(torch.stack([preprocess(im) for im in images]), normalize=True)
        expected = (model.logit_scale.exp() * features @ classifier).softmax(dim=-1).numpy()

    result = tiny_service.zero_shot(images, LABELS, templates="simple")
    assert result.probs.shape == (len(images), len(LABELS))
    np.testing.assert_allclose(result.probs, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)


def test_similarity_matches_clip_notebook(tiny_service, reference, photos):
    model, preprocess, tokenizer = reference
    texts = ["a photo of an astronaut", "a cat", "a cup of coffee"]
    images = [Image.open(p).convert("RGB") for p in photos]
    with torch.no_grad():  # the notebook: normalise both, then text_features @ image_features.T
        image_features = model.encode_image(torch.stack([preprocess(im) for im in images])).float()
        text_features = model.encode_text(tokenizer(texts)).float()
        image_features /= image_features.norm(dim=-1, keepdim=True)
        text_features /= text_features.norm(dim=-1, keepdim=True)
        notebook = (text_features @ image_features.T).numpy()
    np.testing.assert_allclose(tiny_service.similarity(images, texts), notebook.T, atol=1e-5, rtol=0)
    # paths work as well as PIL images; JPEG files may be decoded at reduced scale (the next test)
    np.testing.assert_allclose(tiny_service.similarity(photos, texts), notebook.T, atol=2e-3, rtol=0)


def test_trimmed_text_encoder_equals_full_context(reference):
    model = reference[0]
    tokens = reference[2](["a", "a photo of a dog.", "itap of a very large and rather unusual cup of coffee."])
    with torch.no_grad():
        full = model.encode_text(tokens)
        trimmed = encode_text_trimmed(model, tokens)
    torch.testing.assert_close(trimmed, full, atol=1e-5, rtol=0)


def test_embeddings_are_normalized_float32(tiny_service, photos):
    images = tiny_service.encode_images(photos[:3])
    texts = tiny_service.encode_texts(["a", "b c"])
    for array in (images, texts):
        assert array.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(array, axis=1), 1.0, atol=1e-5)
    assert images.shape == (3, tiny_service.embed_dim)


def test_repeated_labels_are_answered_from_the_cache(tiny_service, photos):
    labels = ["zebra crossing", "lighthouse at dusk", "bowl of ramen"]
    first = tiny_service.zero_shot(photos[:1], labels, templates="openai")
    encoded = tiny_service.stats.prompts_encoded
    second = tiny_service.zero_shot(photos[:1], list(reversed(labels)), templates="openai")
    assert tiny_service.stats.prompts_encoded == encoded  # nothing new went through the text tower
    np.testing.assert_allclose(second.probs[0][::-1], first.probs[0], atol=1e-6)


def test_template_ensemble_is_mean_of_normalized_then_renormalized(tiny_service):
    templates = ("a photo of a {}.", "a drawing of a {}.")
    ensemble = tiny_service.text_embeddings(["cat"], templates)[0]
    singles = tiny_service.encode_texts(["a photo of a cat.", "a drawing of a cat."])
    mean = singles.mean(axis=0)
    np.testing.assert_allclose(ensemble, mean / np.linalg.norm(mean), atol=1e-6)


def test_top_k_is_sorted_and_bounded(tiny_service, photos):
    result = tiny_service.zero_shot(photos[:2], LABELS, templates="a photo of a {}.")
    top = result.top(3)
    assert [len(row) for row in top] == [3, 3]
    for row in top:
        probs = [p for _, p in row]
        assert probs == sorted(probs, reverse=True)
    assert len(result.top(100)[0]) == len(LABELS)


def test_label_longer_than_context_is_refused(tiny_service):
    long_label = " ".join(["word"] * (tiny_service.context_length + 5))
    with pytest.raises(ClipAppError, match="tokens"):
        tiny_service.zero_shot([Image.new("RGB", (8, 8))], ["cat", long_label])


def test_concurrent_calls_give_the_same_answers(tiny_service, photos):
    expected = tiny_service.zero_shot(photos[:2], LABELS).probs

    def call(i):
        return tiny_service.zero_shot(photos[:2], LABELS).probs

    with ThreadPoolExecutor(max_workers=8) as pool:
        for probs in pool.map(call, range(16)):
            np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_encode_image_files_skips_bad_files_in_order(tiny_service, photos, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not really a jpeg")
    paths = [str(photos[0]), str(bad), str(photos[1])]
    results = list(tiny_service.encode_image_files(paths, batch_size=2))
    assert [r[0] for r in results] == paths
    assert results[1][1] is None and "not an image" in results[1][2]
    direct = tiny_service.encode_images([photos[0], photos[1]])
    np.testing.assert_allclose(np.stack([results[0][1], results[2][1]]), direct, atol=1e-6)


def test_large_jpegs_decode_at_the_models_scale_with_the_same_embeddings(tiny_service, photos, tmp_path):
    """A camera-sized JPEG is decoded at reduced scale (never below twice the model's input side), and its
    embedding stays that of the full decode: files and bytes take this path, PIL images are used as given."""
    big = tmp_path / "big.jpg"
    full = Image.open(photos[0]).convert("RGB").resize((2048, 1536), Image.BICUBIC)
    full.save(big, quality=92)
    decoded = tiny_service.decode(big)
    assert tiny_service.decode_side <= min(decoded.size) < 1536
    assert min(ClipService(tiny_service.loaded, reduced_decoding=False).decode(big).size) == 1536
    from_file = tiny_service.encode_images([big])
    from_full_decode = tiny_service.encode_images([Image.open(big).convert("RGB")])
    assert float((from_file * from_full_decode).sum()) > 0.9999
    streamed = next(tiny_service.encode_image_files([str(big)]))[1]
    np.testing.assert_allclose(streamed, from_file[0], atol=1e-6)
