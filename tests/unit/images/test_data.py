"""Image decoding: broken and hostile files get clear errors; odd but valid images are decoded correctly."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipapp.errors import ClipAppError, ImageLoadError
from clipapp.images.decode import load_image
from clipapp.images.folders import ImageFolder, list_image_files


def _png_bytes(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=kwargs.pop("format", "PNG"), **kwargs)
    return buffer.getvalue()


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("hello, I am text")
    with pytest.raises(ImageLoadError, match="notes.jpg: not an image"):
        load_image(path)


def test_empty_file(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(ImageLoadError, match="empty"):
        load_image(path)


def test_truncated_file(tmp_path):
    data = _png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageLoadError, match="cut.png: the file is truncated or corrupt"):
        load_image(path)


def test_decompression_bomb_is_refused_before_decoding():
    bomb = _png_bytes(Image.new("1", (10_000, 10_000)))  # 100 MP that compresses to a few kB
    assert len(bomb) < 100_000
    with pytest.raises(ImageLoadError, match="over the limit"):
        load_image(bomb)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageLoadError, match="no such file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageLoadError, match="folder"):
        load_image(tmp_path)


def test_rgba_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    out = load_image(_png_bytes(rgba))
    assert out.mode == "RGB" and out.getpixel((0, 0)) == (255, 255, 255)


def test_palette_with_transparency():
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([0, 0, 0, 10, 200, 10] + [0] * 762)
    palette.info["transparency"] = 0
    assert load_image(_png_bytes(palette, transparency=0)).getpixel((1, 1)) == (255, 255, 255)


def test_16_bit_grayscale_is_rescaled_not_clipped():
    array = np.linspace(0, 65535, 16 * 16).reshape(16, 16).astype(np.uint16)
    out = np.asarray(load_image(_png_bytes(Image.fromarray(array, mode="I;16"))))
    assert out.dtype == np.uint8 and out.min() == 0 and out.max() == 255
    assert len(np.unique(out[..., 0])) > 100  # a gradient, not a clipped white image


def test_cmyk_jpeg():
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # red in CMYK
    r, g, b = load_image(_png_bytes(cmyk, format="JPEG")).getpixel((4, 4))
    assert r > 200 and g < 60 and b < 60


def test_exif_rotation_is_applied():
    wide = Image.new("RGB", (40, 10), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    out = load_image(_png_bytes(wide, format="JPEG", exif=exif.tobytes()))
    assert out.size == (10, 40)


def _photo_jpeg(size: tuple[int, int], **kwargs) -> bytes:
    from skimage import data

    return _png_bytes(
        Image.fromarray(data.astronaut()).resize(size, Image.BICUBIC), format="JPEG", quality=90, **kwargs
    )


def test_large_jpeg_is_decoded_at_reduced_scale_but_never_below_min_side():
    photo = _photo_jpeg((2000, 1500))
    full = load_image(photo)
    reduced = load_image(photo, min_side=200)
    assert full.size == (2000, 1500)
    assert reduced.size == (500, 375)  # libjpeg's 1/4 scale: the smallest whose shorter side is >= 200
    # the same picture: the full decode shrunk to that size is close to the reduced decode, pixel by pixel
    shrunk = np.asarray(full.resize(reduced.size, Image.BOX), dtype=np.float64)
    assert np.abs(shrunk - np.asarray(reduced, dtype=np.float64)).mean() < 3.0
    assert load_image(photo, min_side=1000).size == (2000, 1500)  # under 2x the side asked for: no reduction


def test_reduced_decoding_applies_exif_rotation_and_leaves_other_formats_alone():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    assert load_image(_photo_jpeg((2000, 1500), exif=exif.tobytes()), min_side=200).size == (375, 500)
    png = _png_bytes(Image.new("RGB", (2000, 1500), (10, 20, 30)))
    assert load_image(png, min_side=200).size == (2000, 1500)


def test_image_folder_layout(tmp_path):
    for cls, n in {"cats": 2, "dogs": 3, ".hidden": 1}.items():
        (tmp_path / cls).mkdir()
        for i in range(n):
            Image.new("RGB", (4, 4)).save(tmp_path / cls / f"{i}.png")
    (tmp_path / "empty_class").mkdir()
    dataset = ImageFolder.scan(tmp_path)
    assert dataset.class_names == ("cats", "dogs")
    assert list(dataset.targets) == [0, 0, 1, 1, 1]
    assert len(list_image_files(tmp_path)) == 5  # hidden folder skipped


def test_image_folder_needs_two_classes(tmp_path):
    (tmp_path / "only").mkdir()
    Image.new("RGB", (4, 4)).save(tmp_path / "only" / "a.png")
    with pytest.raises(ClipAppError, match="at least 2"):
        ImageFolder.scan(tmp_path)


def test_old_data_module_answers_from_decode_and_folders():
    import importlib

    old = importlib.import_module("clipapp.data")
    with pytest.warns(DeprecationWarning, match="clipapp.images.folders.ImageFolder"):
        assert old.ImageFolder is ImageFolder
    with pytest.warns(DeprecationWarning, match="clipapp.images.decode.load_image"):
        assert old.load_image is load_image
