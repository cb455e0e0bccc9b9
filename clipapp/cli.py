"""`python -m clipapp COMMAND ...`: every UI action from a terminal; `--json` prints one JSON object on stdout.

User mistakes exit with status 2 and one line on stderr; nothing else is printed on stdout in --json mode.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from clipapp.errors import ClipAppError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _service(args):
    from clipapp.service import ClipService

    service = ClipService.load(args.model, device=args.device, precision=args.precision)
    if service.notice:
        print(f"note: {service.notice}", file=sys.stderr)
    return service


def _emit(args, payload: dict, text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False) if args.json else text)


# -- commands --------------------------------------------------------------------------------------------------
def cmd_classify(args) -> None:
    from clipapp import tasks, viz

    images = tasks.load_named_images(args.images, names=args.images)
    service = _service(args)
    adapter = None
    if args.adapter:
        from clipapp.adapter import load_adapter

        adapter = load_adapter(args.adapter, expected_spec=service.spec)
    result = tasks.classify(service, images, args.labels or "", templates=args.templates, top_k=args.top_k,
                            classifier=adapter)
    if args.out:
        bars = [(r["image"], [(t["label"], t["prob"]) for t in r["top"]]) for r in result["results"]]
        viz.save_figure(viz.topk_bars(bars, images=[i.image for i in images]), args.out)
    lines = [f"model: {result['model']}"]
    for item in result["results"]:
        lines.append(item["image"])
        lines += [f"  {t['prob']:6.1%}  {t['label']}" for t in item["top"]]
    _emit(args, result, "\n".join(lines))


def cmd_similarity(args) -> None:
    from clipapp import tasks, viz

    images = tasks.load_named_images(args.images, names=args.images)
    service = _service(args)
    result = tasks.similarity(service, images, args.texts)
    if args.out:
        fig = viz.similarity_heatmap(result["matrix"], [i.image for i in images], result["texts"])
        viz.save_figure(fig, args.out)
    header = "\t".join(Path(name).name for name in result["images"])
    rows = [f"{text}\t" + "\t".join(f"{row[j]:.3f}" for row in result["matrix"]) for j, text in enumerate(result["texts"])]
    _emit(args, result, "\n".join([f"model: {result['model']}", "\t" + header, *rows]))


# -- parser -------------------------------------------------------------------------------------------------------
def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model spec (default: $CLIPAPP_MODEL or ViT-B-32:laion2b_s34b_b79k; "
                        "offline without cached weights: the bundled demo model)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="auto", help="auto, fp32, fp16 (GPU) or bf16")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")


COMMANDS: dict[str, Callable] = {}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipapp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="zero-shot top-k labels for images")
    p.add_argument("images", nargs="+", help="image files")
    p.add_argument("--labels", help='candidate labels, comma separated: "cat,dog,car" (not needed with --adapter)')
    p.add_argument("--templates", default="simple", help='simple (7), openai (80), none, or one template like "a photo of a {}."')
    p.add_argument("--top-k", type=int, default=5)
    p.add_argument("--adapter", help="a fine-tuned adapter (.safetensors with its .json) to classify with")
    p.add_argument("--out", help="save the top-k bars as PNG")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("similarity", help="cosine similarity matrix of images x texts, heatmap with --out")
    p.add_argument("images", nargs="+")
    p.add_argument("--texts", nargs="+", required=True)
    p.add_argument("--out", help="save the heatmap as PNG")
    p.set_defaults(func=cmd_similarity)

    for extra in EXTRA_COMMANDS:
        extra(sub)
    for name, subparser in sub.choices.items():
        _add_common(subparser)
    return parser


# Commands that live with their own feature module register here (search, fine-tuning).
EXTRA_COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = []


def main(argv: Optional[Sequence[str]] = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args = build_parser().parse_args(argv)
    if args.command == "classify" and not args.labels and not args.adapter:
        print("error: give --labels (or --adapter)", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        args.func(args)
    except ClipAppError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
