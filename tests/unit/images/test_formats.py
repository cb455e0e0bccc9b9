"""HEIC/HEIF and camera RAW files, made in the test by real encoders (pillow-heif, a DNG written with tifffile),
read upright by `load_image` and listed by the folder rules that `index` and `classify` share."""

from __future__ import annotations

import numpy as np
import pillow_heif
import pytest
import tifffile
from PIL import Image

from clipapp.errors import ImageLoadError
from clipapp.images.decode import load_image
from clipapp.images.folders import list_image_files

EXIF_ORIENTATION = 0x0112
ROTATE_CW = 6  # EXIF/TIFF orientation: the stored picture must be turned 90 degrees clockwise to stand upright


def correlation(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a.convert("L"), dtype=float).ravel()
    y = np.asarray(b.convert("L"), dtype=float).ravel()
    return float(np.corrcoef(x, y)[0, 1])


@pytest.fixture(scope="module")
def photo(photos) -> Image.Image:
    return Image.open(next(p for p in photos if p.stem == "coffee")).convert("RGB").resize((256, 192))


def test_heic_made_by_pillow_heif_reads_upright(photo, tmp_path):
    plain = tmp_path / "plain.heic"
    pillow_heif.from_pillow(photo).save(plain, quality=95)
    decoded = load_image(plain)
    assert decoded.mode == "RGB" and decoded.size == photo.size
    assert correlation(decoded, photo) > 0.98
    assert np.abs(np.asarray(decoded, float) - np.asarray(photo, float)).mean() < 6  # lossy, but the same picture

    rotated = tmp_path / "rotated.HEIF"  # extensions in any case
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = ROTATE_CW
    photo.save(rotated, format="HEIF", quality=95, exif=exif.tobytes())
    upright = load_image(rotated)
    assert upright.size == (photo.height, photo.width)
    assert correlation(upright, photo.transpose(Image.Transpose.ROTATE_270)) > 0.98
    assert load_image(rotated.read_bytes()).size == upright.size  # an upload's bytes: Pillow's opener knows HEIF
    assert set(list_image_files(tmp_path)) == {plain, rotated}


def _bayer_dng(path, photo: Image.Image, *, orientation: int = 1, preview: Image.Image | None = None) -> None:
    """A DNG as a camera writes it: an RGGB Bayer mosaic (8-bit white level), a neutral white balance, an sRGB
    colour matrix, and optionally an RGB preview in IFD0 with the raw data in a SubIFD."""
    rgb = np.asarray(photo, dtype=np.uint16)
    mosaic = np.empty(rgb.shape[:2], np.uint16)
    mosaic[0::2, 0::2] = rgb[0::2, 0::2, 0]
    mosaic[0::2, 1::2] = rgb[0::2, 1::2, 1]
    mosaic[1::2, 0::2] = rgb[1::2, 0::2, 1]
    mosaic[1::2, 1::2] = rgb[1::2, 1::2, 2]
    xyz_to_srgb = [3.2406, -1.5372, -0.4986, -0.9689, 1.8758, 0.0415, 0.0557, -0.2040, 1.0570]
    color_matrix = [v for x in xyz_to_srgb for v in (round(x * 10000), 10000)]
    dng = [
        (50706, "B", 4, (1, 4, 0, 0), True),
        (50708, "s", 0, "clipapp test camera", True),
        (274, "H", 1, orientation, True),
    ]
    raw = [
        (33421, "H", 2, (2, 2), True),
        (33422, "B", 4, (0, 1, 1, 2), True),
        (50717, "I", 1, 255, True),
        (50721, "2i", 9, color_matrix, True),
        (50728, "2I", 3, (1, 1, 1, 1, 1, 1), True),
        (50778, "H", 1, 21, True),
    ]
    if preview is None:
        tifffile.imwrite(path, mosaic, photometric=32803, extratags=dng + raw)
        return
    with tifffile.TiffWriter(path) as tif:
        tif.write(np.asarray(preview), photometric="rgb", subfiletype=1, subifds=1, extratags=dng)
        tif.write(mosaic, photometric=32803, subfiletype=0, extratags=raw)


def test_dng_without_preview_is_demosaiced_upright(photo, tmp_path):
    path = tmp_path / "IMG_0001.DNG"
    _bayer_dng(path, photo, orientation=ROTATE_CW)
    decoded = load_image(path)
    assert decoded.mode == "RGB" and decoded.size == (photo.height, photo.width)
    assert correlation(decoded, photo.transpose(Image.Transpose.ROTATE_270)) > 0.9
    assert correlation(decoded, photo.transpose(Image.Transpose.ROTATE_90)) < 0.5  # not turned the wrong way
    with open(path, "rb") as f:  # a file object with a RAW name (an upload) takes the same path
        assert load_image(f).size == decoded.size
    assert list_image_files(tmp_path) == [path]


def test_dng_embedded_preview_is_used_when_large_enough(photo, tmp_path):
    marked = photo.copy()
    marked.paste((255, 0, 0), (0, 0, 64, 64))  # only the preview has a red square: tells which one was read
    path = tmp_path / "with_preview.dng"
    _bayer_dng(path, photo, orientation=ROTATE_CW, preview=marked)
    from_preview = load_image(path, min_side=96)
    assert from_preview.size == (photo.height, photo.width)
    top_right = np.asarray(from_preview)[:64, -64:]  # the red corner turned clockwise: top left -> top right
    assert top_right[..., 0].mean() > 200 and top_right[..., 1].mean() < 60
    demosaiced = load_image(path, min_side=300)  # the preview is too small for this: the sensor data is decoded
    assert np.asarray(demosaiced)[:64, -64:, 1].mean() > 60


def test_broken_raw_and_heic_are_named_errors(tmp_path):
    for name in ("broken.nef", "broken.heic"):
        (tmp_path / name).write_bytes(b"II*\x00" + b"\x01" * 200)
        with pytest.raises(ImageLoadError, match=name):
            load_image(tmp_path / name)
