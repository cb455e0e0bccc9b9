"""The flags that choose and limit the model, defined once for every CLI command and for `serve` / app.py:
`--model`, `--device`, `--precision` and `--max-pixels`; and the service they describe."""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from clipapp.images.limits import ImageLimits
    from clipapp.model.service import ClipService


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """`--model`, `--device`, `--precision`, and the image limit (`add_limit_arguments`)."""
    from clipapp.model.spec import DEFAULT_SPEC  # light: the spec module imports open_clip only when parsing

    parser.add_argument(
        "--model",
        default=None,
        help=f"model spec (default: the model an existing --index was built with, else $CLIPAPP_MODEL or "
        f"{DEFAULT_SPEC}; offline without cached weights: the bundled demo model; `clipapp models` lists the "
        "usual ones)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default="auto",
        help="auto (GPU: amp, CPU: fp32), fp32, fp16 or amp (GPU; amp = fp16 "
        "autocast over fp32 weights), bf16, int8 (CPU)",
    )
    add_limit_arguments(parser)


def add_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """`--max-pixels`, the image limit a user may change; its default is the one in `ImageLimits`."""
    from clipapp.images.limits import MAX_IMAGE_PIXELS

    parser.add_argument(
        "--max-pixels",
        type=int,
        default=MAX_IMAGE_PIXELS,
        help=f"largest accepted image in pixels, checked before decoding (default {MAX_IMAGE_PIXELS:,})",
    )


def image_limits(args: argparse.Namespace) -> ImageLimits:
    from clipapp.images.limits import ImageLimits

    return ImageLimits(max_pixels=args.max_pixels)


def index_model(args: argparse.Namespace) -> str | None:
    """The model an existing `--index` was built with, when neither --model nor $CLIPAPP_MODEL names one: an index
    outlives a change of the default model (ViT-B-32 laion2b until 2026-12), so it keeps its own."""
    from clipapp.model.spec import SPEC_ENV

    index = getattr(args, "index", None)
    if not index or os.environ.get(SPEC_ENV):
        return None
    from clipapp.index import stored_model_spec

    return stored_model_spec(index)


def load_service(args: argparse.Namespace, *, say_notice: bool = True) -> ClipService:
    """The service the flags describe; its notice (e.g. the demo model stands in) goes to stderr."""
    from clipapp.model.service import ClipService

    spec = args.model or index_model(args)
    service = ClipService.load(spec, device=args.device, precision=args.precision, limits=image_limits(args))
    if say_notice and service.notice:
        print(f"note: {service.notice}", file=sys.stderr)
    return service
