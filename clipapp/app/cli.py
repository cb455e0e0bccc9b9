"""`python -m clipapp COMMAND ...`: every UI action from a terminal; `--json` prints one JSON object on stdout.

User mistakes exit with status 2 and one line on stderr; nothing else is printed on stdout in --json mode.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Optional, Sequence

from clipapp.errors import ClipAppError

EXIT_USER_ERROR = 2
EXIT_INTERNAL_ERROR = 1


def _service(args):
    from clipapp.model.service import ClipService

    service = ClipService.load(args.model, device=args.device, precision=args.precision, limits=_limits(args))
    if service.notice:
        print(f"note: {service.notice}", file=sys.stderr)
    return service


def _limits(args):
    from clipapp.images.limits import ImageLimits

    return ImageLimits(max_pixels=args.max_pixels)


def _emit(args, payload: dict, text: str) -> None:
    print(json.dumps(payload, ensure_ascii=False) if args.json else text)


# -- commands --------------------------------------------------------------------------------------------------
MAX_BARS_IMAGES = 64  # --out draws one row per image: beyond this the figure is unreadable


def _progress_bar(args, unit: str = "img"):
    """A `progress(done, total, message)` callback drawing a tqdm bar on stderr (when it is a terminal), and its
    closer."""
    from clipapp.progress import tqdm_progress

    bar = tqdm_progress(unit=unit, file=sys.stderr, disable=not sys.stderr.isatty(), dynamic_ncols=True)
    return bar, bar.close


def _classifier(args, service):
    from clipapp.classify.stream import adapter_classifier, zero_shot_classifier

    if args.adapter:
        from clipapp.finetune.adapter import load_adapter

        return adapter_classifier(service, load_adapter(args.adapter, expected_spec=service.spec))
    return zero_shot_classifier(service, args.labels or "", templates=args.templates)


def _run_classify(args, service, classifier, outputs, keep: bool):
    from clipapp.classify import stream as core

    progress, close_bar = _progress_bar(args)
    try:
        if args.index:
            from clipapp.classify.predictions import IndexTags
            from clipapp.index import ImageIndex

            index = ImageIndex.open(args.index, expected_spec=service.spec)
            if args.tag:
                outputs = [*outputs, IndexTags(index, min_prob=args.tag_min_prob)]
            return core.classify_vectors(
                index.iter_vectors(core.VECTOR_BATCH, every_path=True),
                classifier,
                k=args.top_k,
                outputs=outputs,
                keep_results=keep,
                progress=progress,
                total=index.path_count,
            )
        if args.ray:
            from clipapp.classify.stream import ray_encoder

            with ray_encoder(args.ray, service, precision=args.precision) as encoder:
                return core.classify_files(
                    service,
                    args.images,
                    classifier,
                    k=args.top_k,
                    outputs=outputs,
                    keep_results=keep,
                    progress=progress,
                    encoder=encoder,
                )
        return core.classify_files(
            service, args.images, classifier, k=args.top_k, outputs=outputs, keep_results=keep, progress=progress
        )
    finally:
        close_bar()
        for output in outputs:
            output.close()


def cmd_classify(args) -> None:
    from clipapp.classify.predictions import open_outputs
    from clipapp.viz import figures as viz

    if bool(args.images) == bool(args.index):
        raise ClipAppError("Give image files or folders, or --index PATH (not both).")
    if args.resume and not (args.csv or args.jsonl):
        raise ClipAppError("--resume continues an output file: give --csv PATH or --jsonl PATH.")
    if args.tag and not args.index:
        raise ClipAppError("--tag stores the labels in an index: give --index PATH (index the folder first).")
    if args.ray and args.index:
        raise ClipAppError("--index reads stored vectors and encodes nothing; --ray is for encoding image files.")
    service = _service(args)
    classifier = _classifier(args, service)
    keep = not (args.csv or args.jsonl)  # with an output file, results go there, not into memory
    outputs = open_outputs(csv_path=args.csv, jsonl_path=args.jsonl, k=args.top_k, resume=args.resume)
    report = _run_classify(args, service, classifier, outputs, keep)
    for item in report.skipped:
        print(f"skipped: {item.path} ({item.error})", file=sys.stderr)
    if report.classified == 0 and report.skipped:
        raise ClipAppError(
            f"No image could be classified ({len(report.skipped)} unreadable, listed above): {report.skipped[0].error}"
        )
    if report.classified == 0 and not report.resumed and args.index:
        raise ClipAppError(f"The index {args.index} has no images yet: add some with `index FOLDER --index PATH`.")
    if report.classified == 0 and not report.resumed:
        from clipapp.images.decode import IMAGE_EXTENSIONS

        raise ClipAppError(
            "No images found: give image files, or folders that contain images "
            f"({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})."
        )
    if args.out:
        if report.results is None or len(report.results) > MAX_BARS_IMAGES:
            print(f"note: --out draws at most {MAX_BARS_IMAGES} images printed on stdout; not drawn", file=sys.stderr)
        else:
            from clipapp.images.decode import load_image

            bars = [(p.image, list(p.top)) for p in report.results]
            images = None if args.index else [load_image(p.image) for p in report.results]
            viz.save_figure(viz.topk_bars(bars, images=images), args.out)
    lines = [
        f"model: {report.model}" + (" (multi-label: independent sigmoid probabilities)" if report.multi_label else "")
    ]
    for item in report.results or []:
        lines.append(item.image)
        lines += [f"  {prob:6.1%}  {label}" for label, prob in item.top]
    if outputs:
        lines.append(
            f"classified {report.classified}"
            + (f", {report.resumed} already done" if report.resumed else "")
            + f", skipped {len(report.skipped)} -> {', '.join(str(o.path) for o in outputs)}"
        )
    _emit(args, report.to_dict(), "\n".join(lines))


def cmd_similarity(args) -> None:
    from clipapp.app import actions
    from clipapp.viz import figures as viz

    images = actions.load_named_images(args.images, names=args.images, limits=_limits(args))
    service = _service(args)
    result = actions.similarity(service, images, args.texts)
    if args.out:
        fig = viz.similarity_heatmap(result["matrix"], [i.image for i in images], result["texts"])
        viz.save_figure(fig, args.out)
    header = "\t".join(Path(name).name for name in result["images"])
    rows = [
        f"{text}\t" + "\t".join(f"{row[j]:.3f}" for row in result["matrix"]) for j, text in enumerate(result["texts"])
    ]
    _emit(args, result, "\n".join([f"model: {result['model']}", "\t" + header, *rows]))


def _finetune_config(args: argparse.Namespace):
    """The parsed `finetune` flags -> the config: one flag per setting, named after its field (`_add_settings`)."""
    from clipapp.finetune.config import FinetuneConfig, settings

    return FinetuneConfig.from_settings({name: getattr(args, name) for name in settings()})


def _metrics_line(name: str, metrics) -> str:
    if not metrics:
        return f"{name}: no held-out images"
    return f"{name}: top-1 {metrics['top1']:.1%}  top-5 {metrics['top5']:.1%}  (n={metrics['n']})"


def _finetune_data(args):
    """The labelled images: a folder or zip, `--class NAME=IMAGES` lists, or a `path,label` CSV."""
    from clipapp import finetune

    given = [
        name
        for name, value in (("DATA_DIR", args.data_dir), ("--class", args.classes), ("--from-csv", args.from_csv))
        if value
    ]
    if len(given) != 1:
        raise ClipAppError(
            "Give the labelled images one way: DATA_DIR, --class NAME=IMAGE[,IMAGE...] (once per "
            "class) or --from-csv FILE" + (f"; got {' and '.join(given)}." if given else ".")
        )
    if args.from_index:
        if args.data_dir:
            raise ClipAppError("--from-index takes its images from --class or --from-csv, not from DATA_DIR.")
        finetune.check_index(args.from_index)
    if args.classes:
        return finetune.labelled_class_lists(args.classes)
    if args.from_csv:
        return finetune.labelled_csv(args.from_csv)
    return None


def cmd_finetune(args) -> None:
    from clipapp.finetune import finetune_folder, finetune_labelled
    from clipapp.finetune.adapter import adapter_paths

    config = _finetune_config(args)
    data = _finetune_data(args)
    service = _service(args)

    def progress(fraction: float, message: str) -> None:
        if not args.json and not args.quiet and sys.stderr.isatty():
            print(f"\r[{fraction:5.1%}] {message:<60}", end="", file=sys.stderr, flush=True)

    if data is None:
        result = finetune_folder(service, args.data_dir, config, out=args.out, progress=progress)
    else:
        result = finetune_labelled(service, data, config, out=args.out, progress=progress)
    if not args.json and not args.quiet and sys.stderr.isatty():
        print(file=sys.stderr)
    weights_path, _ = adapter_paths(args.out)
    payload = {"model": service.spec, "adapter": str(weights_path), **result.to_dict()}
    lines = [
        f"model: {service.spec}",
        f"classes: {', '.join(result.class_names)}",
        f"validation: {result.validation['kind']} ({result.validation['n_held_out']} held-out of "
        f"{result.validation['n_images']} images), best epoch {result.best_epoch}",
        _metrics_line("before (zero-shot)", result.before),
        _metrics_line("after (adapted)  ", result.after),
        *[f"note: {note}" for note in result.notes],
        *[f"skipped: {s}" for s in result.skipped],
        f"adapter: {weights_path}",
    ]
    _emit(args, payload, "\n".join(lines))


def cmd_eval(args) -> None:
    from clipapp.classify.evaluation import evaluate_folder

    service = _service(args)
    adapter = None
    if args.adapter:
        from clipapp.finetune.adapter import load_adapter

        adapter = load_adapter(args.adapter, expected_spec=service.spec)
    progress, close_bar = _progress_bar(args)
    try:
        result = evaluate_folder(service, args.data_dir, adapter, templates=args.templates, progress=progress)
    finally:
        close_bar()
    for item in result.skipped:
        print(f"skipped: {item.path} ({item.error})", file=sys.stderr)
    if args.out:
        from clipapp.viz import figures as viz

        viz.save_figure(viz.confusion_matrix_figure(result.confusion, result.class_names), args.out)
    width = max(len(name) for name in result.class_names)
    lines = [
        f"model: {result.model}",
        f"top-1 {result.top1:.2%}  top-5 {result.top5:.2%}  n={result.n}",
        "per class (top-1, n):",
    ]
    lines += [
        f"  {row['class']:<{width}}  "
        + (f"{row['top1']:6.1%}" if row["top1"] is not None else "     -")
        + f"  {row['n']}"
        for row in result.per_class()
    ]
    _emit(args, result.to_dict(), "\n".join(lines))


_METAVARS = {int: "N", float: "X", str: "TEXT"}


def _setting_type(spec):
    """argparse's `type=` for a setting: the setting's own parsing, its refusal as argparse's usage error."""

    def parse(text: str):
        try:
            return spec.parse(text)
        except ClipAppError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def _add_settings(parser: argparse.ArgumentParser) -> None:
    """One flag per `FinetuneConfig` setting, from its metadata: name, help, choices, type and the default shown."""
    from clipapp.finetune.config import settings

    group = parser.add_argument_group("fine-tune settings (FinetuneConfig; 'auto' where the default is automatic)")
    for spec in settings().values():
        help_text = spec.describe().replace("%", "%%")
        if spec.type is bool:
            action = group.add_argument(
                spec.flag, dest=spec.name, action=argparse.BooleanOptionalAction, default=spec.default
            )
            action.help = help_text  # after: Python 3.11's BooleanOptionalAction would append the default again
            continue
        group.add_argument(
            spec.flag,
            dest=spec.name,
            type=_setting_type(spec),
            choices=spec.setting.choices or None,
            default=spec.default,
            metavar=None if spec.setting.choices else _METAVARS[spec.type],
            help=help_text,
        )


def _add_finetune_commands(sub) -> None:
    p = sub.add_parser(
        "finetune",
        help="few-shot adaptation from DATA_DIR/<class>/<images> (or a .zip of it), "
        "from --class NAME=IMAGES lists or from a path,label CSV",
    )
    p.add_argument("data_dir", nargs="?", help="folder of class folders (class names = folder names), or a .zip")
    p.add_argument(
        "--class",
        dest="classes",
        action="append",
        metavar="NAME=IMAGE[,IMAGE...]",
        help='one class and its images, e.g. --class "sneaker=a.png,b.png"; repeat for every class',
    )
    p.add_argument("--from-csv", metavar="FILE", help="a CSV of path,label rows (paths relative to the CSV)")
    p.add_argument(
        "--from-index",
        metavar="PATH",
        help="the image index the --class / --from-csv paths were "
        "found in (search results); checked to exist and hold images",
    )
    p.add_argument("--out", required=True, help="adapter path: writes OUT.safetensors and OUT.json")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    _add_settings(p)
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("eval", help="top-1/top-5 accuracy on DATA_DIR/<class>/<images>, zero-shot or with --adapter")
    p.add_argument("data_dir")
    p.add_argument("--adapter", help="an adapter written by finetune")
    p.add_argument("--templates", default="simple", help="zero-shot templates: simple, openai, none, or one")
    p.add_argument("--out", help="save the confusion matrix (row-normalised) as PNG")
    p.set_defaults(func=cmd_eval)


def cmd_index(args) -> None:
    from clipapp.index import parse_memory_size

    max_memory = parse_memory_size(args.max_index_memory)  # a bad size fails before any work
    if args.ray:
        from clipapp.index import ImageIndex
        from clipapp.index.distributed import index_folder_ray
        from clipapp.model.spec import resolve_spec

        report = index_folder_ray(
            args.folder,
            args.index,
            address=args.ray,
            spec=resolve_spec(args.model),
            precision="fp32" if args.precision == "auto" else args.precision,
        )
        if max_memory is not None:
            with ImageIndex.open(args.index) as index:
                index.set_max_memory(max_memory)
                index.save()
                index.ensure_built()
    else:
        from clipapp.app import actions
        from clipapp.index import tqdm_progress

        service = _service(args)
        with tqdm_progress(disable=args.json or not sys.stderr.isatty(), unit="img") as progress:
            report = actions.index_folder(service, args.folder, args.index, progress=progress, max_memory=max_memory)
    text = (
        f"added {report.added}, updated {report.updated}, removed {report.removed}, "
        f"skipped {len(report.skipped)}; {report.total} images in {args.index}"
    )
    skipped = [f"skipped: {item.path}: {item.error}" for item in report.skipped]
    _emit(args, report.to_dict(), "\n".join([text, *skipped]))


def cmd_search(args) -> None:
    from clipapp.app import actions
    from clipapp.index import ImageIndex

    service = _service(args)
    index = ImageIndex.open(args.index, expected_spec=service.spec)
    if args.text is not None:
        result = actions.search_text(
            service, index, args.text, k=args.k, threshold=args.threshold, templates=args.templates, tag=args.tag
        )
    else:
        result = actions.search_image(service, index, args.image, k=args.k, threshold=args.threshold, tag=args.tag)
    payload = result.to_dict()
    lines = [
        f"{hit['score']:.3f}  {hit['path']}" + (f"  (also {', '.join(hit['aliases'])})" if hit["aliases"] else "")
        for hit in payload["results"]
    ]
    _emit(args, payload, "\n".join(lines) or "no results")


def _add_search_commands(sub) -> None:
    p = sub.add_parser("index", help="create or update (incrementally) an image index of a folder")
    p.add_argument("folder", help="folder of images, searched recursively")
    p.add_argument("--index", required=True, help="index folder (created if missing)")
    p.add_argument(
        "--ray", help="embed on a Ray cluster: auto (a running one, else local) or HOST:PORT / ray://HOST:PORT"
    )
    p.add_argument(
        "--max-index-memory",
        help="RAM the search structure may use, e.g. 1GB (kept with the index); "
        "over it, compressed codes with exact re-rank",
    )
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="search an index by text (with a + b - c arithmetic) or by an image")
    p.add_argument("--index", required=True)
    query = p.add_mutually_exclusive_group(required=True)
    query.add_argument("--text", help='e.g. "a dog in the snow" or "dog + snow - grass" (img:PATH terms allowed)')
    query.add_argument("--image", help="an image file to find similar images to")
    p.add_argument("-k", type=int, default=10, help="number of results")
    p.add_argument("--threshold", type=float, help="only results with at least this cosine score")
    p.add_argument("--templates", default="simple", help="templates for text terms: simple, openai, none, or one")
    p.add_argument("--tag", help="only images tagged with this label (tags are written by classify --index)")
    p.set_defaults(func=cmd_search)


# -- parser -------------------------------------------------------------------------------------------------------
def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default=None,
        help="model spec (default: $CLIPAPP_MODEL or ViT-B-32:laion2b_s34b_b79k; "
        "offline without cached weights: the bundled demo model)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default="auto",
        help="auto (GPU: amp, CPU: fp32), fp32, fp16 or amp (GPU; amp = fp16 "
        "autocast over fp32 weights), bf16, int8 (CPU)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    from clipapp.app.serve import add_limit_arguments

    add_limit_arguments(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m clipapp", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("classify", help="zero-shot top-k labels for images, folders or a whole index")
    p.add_argument("images", nargs="*", help="image files and folders (searched recursively, as index does)")
    p.add_argument("--index", help="classify every image of this index from its stored vectors (no file is read)")
    p.add_argument("--labels", help='candidate labels, comma separated: "cat,dog,car" (not needed with --adapter)')
    p.add_argument(
        "--templates", default="simple", help='simple (7), openai (80), none, or one template like "a photo of a {}."'
    )
    p.add_argument("--top-k", type=_positive_int, default=5)
    p.add_argument("--adapter", help="a fine-tuned adapter (.safetensors with its .json) to classify with")
    p.add_argument("--csv", help="write image,label,prob,label_2,prob_2,... rows to this file as results arrive")
    p.add_argument("--jsonl", help="write one JSON object per image to this file as results arrive")
    p.add_argument(
        "--resume", action="store_true", help="skip images already in the --csv/--jsonl file, append the rest"
    )
    p.add_argument(
        "--tag",
        action="store_true",
        help="with --index: store each image's top-k labels (prob >= --tag-min-prob) as tags in the "
        "index, for search --tag LABEL",
    )
    p.add_argument("--tag-min-prob", type=float, default=0.5, help="smallest probability stored as a tag (0..1)")
    p.add_argument("--ray", help="encode on a Ray cluster: auto (a running one, else local) or HOST:PORT")
    p.add_argument("--out", help=f"save the top-k bars as PNG (up to {MAX_BARS_IMAGES} images)")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser("similarity", help="cosine similarity matrix of images x texts, heatmap with --out")
    p.add_argument("images", nargs="+")
    p.add_argument("--texts", nargs="+", required=True)
    p.add_argument("--out", help="save the heatmap as PNG")
    p.set_defaults(func=cmd_similarity)

    _add_search_commands(sub)
    _add_finetune_commands(sub)
    for subparser in sub.choices.values():
        _add_common(subparser)
    from clipapp.app import serve  # after the loop: serve has its own --model/--device/--precision and no --json

    serve_parser = sub.add_parser("serve", help="run the web app (the flags of app.py)")
    serve.add_arguments(serve_parser).set_defaults(func=serve.run)
    return parser


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
    except Exception:  # a bug, not the user's mistake: the traceback goes to the log, the exit status says which
        logging.getLogger(__name__).exception(
            "internal error in %r; please report it with this traceback", args.command
        )
        return EXIT_INTERNAL_ERROR
    return 0
