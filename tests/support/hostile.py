"""A corpus of broken and hostile uploads and label strings, shared by the API and CLI hostile-input tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims huge dimensions, with one tiny compressed row: decoding would need gigabytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


def bad_image_files(folder: Path) -> dict[str, Path]:
    """name -> file that must be refused with a clear message."""
    folder.mkdir(parents=True, exist_ok=True)
    valid = _png(Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    corpus = {
        "text_as_jpg.jpg": b"this is not an image at all\n" * 10,
        "empty.png": b"",
        "truncated.png": valid[: len(valid) // 3],
        "bomb.png": _png(Image.new("1", (12_000, 12_000))),  # 144 MP in a few kB
        "huge_header.png": _png_header_only(200_000, 200_000),
        "html_as_png.png": b"<html><script>alert(1)</script></html>",
        "zip_as_jpg.jpg": b"PK\x03\x04" + b"\x00" * 100,
        # Extreme aspect ratios: each side small enough for the pixel limit, but a model's resize of the shorter
        # side to its input size would make billions of pixels of them.
        "thin_1x20000.png": _png(Image.new("L", (1, 20_000), 128)),
        "wide_20000x1.png": _png(Image.new("RGB", (20_000, 1), (200, 10, 10))),
        "needle_1x40M.png": _png_header_only(1, 40_000_000),
        "strip_3x500.png": _png(Image.new("RGB", (3, 500), (0, 0, 200))),  # 167:1
    }
    paths = {}
    for name, data in corpus.items():
        path = folder / name
        path.write_bytes(data)
        paths[name] = path
    return paths


def odd_valid_image_files(folder: Path) -> list[Path]:
    """Valid images in unusual modes and with wrong extensions: these must work."""
    folder.mkdir(parents=True, exist_ok=True)
    png_named_gif = folder / "really_a_png.gif"
    png_named_gif.write_bytes(_png(Image.new("RGB", (20, 20), (0, 200, 0))))
    paths = [png_named_gif]
    # The most elongated shapes allowed (20:1, both ways) and the smallest image: the heatmap and gallery show them.
    for size, name in (((400, 20), "wide_20to1.png"), ((12, 240), "tall_1to20.png"), ((1, 1), "one_pixel.png")):
        path = folder / name
        Image.new("RGB", size, (250, 120, 0)).save(path)
        paths.append(path)
    for mode, name in (
        ("RGBA", "rgba.png"),
        ("LA", "la.png"),
        ("I;16", "sixteen.png"),
        ("P", "palette.png"),
        ("CMYK", "cmyk.jpg"),
        ("1", "bilevel.png"),
    ):
        path = folder / name
        Image.new(mode, (24, 16)).save(path)
        paths.append(path)
    return paths


HOSTILE_LABELS = {
    "empty": "",
    "only separators": " , ,\n, ",
    "enormous": "a" * 100_000,
    "control characters": "cat,\x00dog\x1b[31m",
    "5000 labels": ",".join(f"label {i}" for i in range(5000)),
    "duplicates": "cat, Cat",
}
