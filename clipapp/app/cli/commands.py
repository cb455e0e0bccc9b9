"""The CLI's commands as a table: each row names the command, says how its arguments are added, and runs it by
calling one actions function with typed arguments; the typed result is printed by `render` (or as JSON), and drawn
by the row's `figure` with `--out`. Heavy modules are imported inside `run`, so `--help` stays light."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Callable, Optional

from clipapp.app.cli import arguments, figures
from clipapp.app.cli.progress import bar
from clipapp.app.options import image_limits, load_service
from clipapp.errors import ClipAppError


def _print_skipped(item) -> None:
    print(f"skipped: {item.path} ({item.error})", file=sys.stderr)


def _print_warning(warning) -> None:
    print(f"warning: {warning.message}", file=sys.stderr)


def _print_plan(plan) -> None:
    """The planner's choice, before the progress bar starts (plan.Plan.line)."""
    print(f"plan: {plan.line()}", file=sys.stderr, flush=True)


def classify(args: argparse.Namespace):
    if not args.labels and not args.adapter:
        raise ClipAppError("give --labels (or --adapter)")
    from clipapp.app import actions

    job = actions.BatchClassify(
        images=args.images,
        index=args.index,
        labels=args.labels or "",
        templates=args.templates,
        top_k=args.top_k,
        adapter=args.adapter,
        csv=args.csv,
        jsonl=args.jsonl,
        resume=args.resume,
        tag=args.tag,
        tag_min_prob=args.tag_min_prob,
        ray=args.ray,
        precision=args.precision,
        unknown=args.unknown,
    )
    service = load_service(args)
    with bar() as progress:
        return actions.classify_batch(
            service, job, progress=progress, on_skipped=_print_skipped, on_warning=_print_warning
        )


def similarity(args: argparse.Namespace):
    from clipapp.app import actions

    images = actions.load_named_images(args.images, names=args.images, limits=image_limits(args))
    return actions.similarity(load_service(args), images, args.texts)


def _index_archive(args: argparse.Namespace):
    from clipapp.app import actions

    if args.folder:
        raise ClipAppError("--compact, --backup and --from-embeddings take no image FOLDER; run them on their own.")
    with bar(disable=args.json) as progress:
        if args.compact:
            return actions.compact_index(args.index, progress=progress)
        if args.backup:
            return actions.backup_index(args.index, args.backup, progress=progress)
        return actions.import_embeddings(load_service(args), args.from_embeddings, args.index, progress=progress)


def explain(args: argparse.Namespace):
    from clipapp.app import actions

    service = load_service(args)
    with bar() as progress:
        return actions.explain(
            service,
            args.images,
            args.labels,
            names=args.images,
            method=args.method,
            templates=args.templates,
            cells=args.cells,
            progress=progress,
        )


def index(args: argparse.Namespace):
    from clipapp.app import actions
    from clipapp.index import parse_memory_size

    if args.compact or args.backup or args.from_embeddings:
        return _index_archive(args)
    if not args.folder:
        raise ClipAppError("Give the image FOLDER to index (or --compact, --backup DEST or --from-embeddings DIR).")
    max_memory = parse_memory_size(args.max_index_memory)  # a bad size fails before any work
    if args.ray:
        return actions.index_folder_ray(
            args.folder, args.index, address=args.ray, model=args.model, precision=args.precision, max_memory=max_memory
        )
    service = load_service(args)
    with bar(disable=args.json) as progress:
        return actions.index_folder(service, args.folder, args.index, progress=progress, max_memory=max_memory)


def export(args: argparse.Namespace):
    from clipapp.app import actions

    with bar(disable=args.json) as progress:
        return actions.export_index(args.index, args.dest, args.format, progress=progress)


def search(args: argparse.Namespace):
    from clipapp.app import actions
    from clipapp.index import ImageIndex, SearchFilter, SearchOptions

    chosen = SearchFilter.parse(after=args.after, before=args.before, under=args.under, tag=args.tag)
    options = SearchOptions(k=args.k, min_score=args.threshold, filter=chosen, sort=args.sort)  # before loading
    service = load_service(args)
    index = ImageIndex.open(args.index, expected_spec=service.spec)
    if args.text is not None:
        return actions.search_text(service, index, args.text, options, templates=args.templates)
    return actions.search_image(service, index, args.image, options)


def duplicates(args: argparse.Namespace):
    from clipapp.app import actions

    with bar(disable=args.json) as progress:
        if args.undo:
            return actions.undo_duplicate_moves(args.undo, progress=progress)
        if not args.index:
            raise ClipAppError("Give --index PATH (the index to search for near-duplicates), or --undo LOG.")
        report = actions.find_duplicates(args.index, threshold=args.threshold, progress=progress)
        if args.csv:
            actions.write_duplicates_csv(report, args.csv)
        if args.move_to:
            return actions.move_duplicates(report, args.move_to, progress=progress)
    return report


def tag(args: argparse.Namespace):
    from clipapp.app import actions

    paths = list(args.images)
    if args.from_file:
        try:
            with open(args.from_file, encoding="utf-8") as handle:
                paths += handle.read().splitlines()
        except OSError as exc:
            raise ClipAppError(f"Cannot read the images to tag from {args.from_file}: {exc.strerror}.") from exc
    return actions.tag_images(args.index, paths, args.tag)


def finetune(args: argparse.Namespace):
    from clipapp.app import actions

    config = arguments.finetune_config(args)
    source = actions.LabelledSource(
        data_dir=args.data_dir, classes=args.classes or (), from_csv=args.from_csv, from_index=args.from_index
    )
    service = load_service(args)
    # a unit is an image encoded or an epoch trained (clipapp.finetune.run, "_PlanProgress"); tqdm shows the ETA
    with bar(unit="step", disable=args.json or args.quiet) as progress:
        return actions.finetune_to_file(
            service,
            source,
            config,
            args.out,
            progress=progress,
            on_warning=_print_warning,
            on_plan=None if args.quiet else _print_plan,
        )


def evaluate(args: argparse.Namespace):
    from clipapp.app import actions

    service = load_service(args)
    with bar() as progress:
        result = actions.evaluate(
            service,
            args.data_dir,
            adapter=args.adapter,
            templates=args.templates,
            progress=progress,
            suspects=args.suspects,
            suspects_top=args.suspects_top,
        )
    for item in result.skipped:
        _print_skipped(item)
    return result


def collection_map(args: argparse.Namespace):
    from clipapp.app import actions

    labels = [t for t in (args.labels or "").split(",") if t.strip()]
    service = load_service(args)
    with bar(disable=args.json) as progress:
        return actions.collection_map(service, args.index, labels=labels, clusters=args.clusters, progress=progress)


def models(args: argparse.Namespace):
    from clipapp.app import actions

    return actions.list_models(args.model)


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], Any]  # -> a typed result with `to_dict`
    figure: Optional[Callable[[Any, argparse.Namespace], None]] = None  # draws the result with --out


COMMANDS: tuple[Command, ...] = (
    Command(
        "classify",
        "zero-shot top-k labels for images, folders or a whole index",
        arguments.classify,
        classify,
        figures.classify_bars,
    ),
    Command(
        "similarity",
        "cosine similarity matrix of images x texts, heatmap with --out",
        arguments.similarity,
        similarity,
        figures.similarity_heatmap,
    ),
    Command(
        "explain",
        "where each label matches in each image: a grid per image and label, overlay PNGs with --out",
        arguments.explain,
        explain,
        figures.region_overlays,
    ),
    Command("index", "create or update (incrementally) an image index of a folder", arguments.index, index),
    Command("search", "search an index by text (with a + b - c arithmetic) or by an image", arguments.search, search),
    Command(
        "export",
        "write an index as an embedding folder (clip-retrieval's img_emb/*.npy + metadata/) for other tools",
        arguments.export,
        export,
    ),
    Command(
        "duplicates",
        "near-duplicate groups of an index (resized, re-compressed, cropped, brightened copies), each with a "
        "suggested keeper; --move-to DIR moves the others aside (--undo LOG puts them back)",
        arguments.duplicates,
        duplicates,
    ),
    Command(
        "map",
        "every image of an index in 2D with named clusters (--json, or an HTML page with --out)",
        arguments.collection_map,
        collection_map,
        figures.map_page,
    ),
    Command(
        "tag",
        "give indexed images (a selection made on the map) a tag that `search --tag` filters by",
        arguments.tag,
        tag,
    ),
    Command(
        "finetune",
        "few-shot adaptation from DATA_DIR/<class>/<images> (or a .zip of it), "
        "from --class NAME=IMAGES lists or from a path,label CSV",
        arguments.finetune,
        finetune,
    ),
    Command(
        "eval",
        "top-1/top-5 accuracy on DATA_DIR/<class>/<images>, zero-shot or with --adapter",
        arguments.evaluate,
        evaluate,
        figures.confusion_matrix,
    ),
    Command(
        "models",
        "the models you can pick: published accuracy, license, and speed, memory and fine-tune time measured on a "
        "2-core CPU; loads no model",
        arguments.models,
        models,
    ),
)
