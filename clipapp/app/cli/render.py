"""The text the CLI prints for each result type (without --json; with it, the result's `to_dict`). One renderer per
type, found by `render`; the types are imported only when a result is printed, so `--help` stays light."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable


def classify_text(report, args: argparse.Namespace) -> str:
    """`ClassifyReport`: the top labels of every image kept in memory, and where the output files went."""
    note = " (multi-label: independent sigmoid probabilities)" if report.multi_label else ""
    lines = [f"model: {report.model}{note}"]
    for item in report.results or []:
        lines.append(item.image + ("  (none of these labels?)" if item.unknown else ""))
        lines += [f"  {prob:6.1%}  {label}" for label, prob in item.top]
        if item.unknown_score is not None:
            lines.append(f"  {item.unknown_score:6.1%}  none of these")
    files = [path for path in (args.csv, args.jsonl) if path]
    if files:
        lines.append(
            f"classified {report.classified}"
            + (f", {report.resumed} already done" if report.resumed else "")
            + f", skipped {len(report.skipped)} -> {', '.join(map(str, files))}"
        )
    return "\n".join(lines)


def similarity_text(result, _args: argparse.Namespace) -> str:
    """`Similarity`: a tab-separated table, one row per text, one column per image."""
    header = "\t".join(Path(name).name for name in result.images)
    rows = [f"{text}\t" + "\t".join(f"{row[j]:.3f}" for row in result.matrix) for j, text in enumerate(result.texts)]
    return "\n".join([f"model: {result.model}", "\t" + header, *rows])


def explain_text(result, _args: argparse.Namespace) -> str:
    """`Explanation`: for each image and label, the cell where the label matches most (row, column from the top
    left) and its value; the grids themselves are in --json and drawn by --out."""
    lines = [f"model: {result.model} (region maps: {result.method})"]
    for found in result.maps:
        rows, cols = found.grids.shape[1:]
        lines.append(f"{found.image} ({rows} x {cols} grid)")
        for label, grid in zip(found.labels, found.grids, strict=True):
            row, col = divmod(int(grid.argmax()), cols)
            lines.append(f"  {label}: strongest at row {row + 1}, column {col + 1} ({float(grid.max()):.3f})")
    return "\n".join(lines)


def _metrics_line(name: str, metrics) -> str:
    if not metrics:
        return f"{name}: no held-out images"
    return f"{name}: top-1 {metrics['top1']:.1%}  top-5 {metrics['top5']:.1%}  (n={metrics['n']})"


def _ran_line(result) -> str:
    took = result.seconds.get("total", 0.0)
    if result.plan is None:
        return f"took: {took:.1f} s"
    return f"ran: {result.plan.label}; estimated {result.plan.seconds:.1f} s, took {took:.1f} s"


def adapter_text(report, _args: argparse.Namespace) -> str:
    """`AdapterReport`: the classes, the validation, accuracy before and after, and the adapter's file."""
    result = report.result
    return "\n".join(
        [
            f"model: {report.model}",
            f"classes: {', '.join(result.class_names)}",
            f"validation: {result.validation['kind']} ({result.validation['n_held_out']} held-out of "
            f"{result.validation['n_images']} images), best epoch {result.best_epoch}",
            _metrics_line("before (zero-shot)", result.before),
            _metrics_line("after (adapted)  ", result.after),
            *[f"note: {note}" for note in result.notes],
            *[f"skipped: {s}" for s in result.skipped],
            _ran_line(result),
            f"adapter: {report.adapter}",
        ]
    )


def eval_text(result, _args: argparse.Namespace) -> str:
    """`EvalResult`: overall top-1/top-5 and top-1 per class."""
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
    if result.suspects is not None:
        shown = result.suspects.ranked(min(10, result.suspects_limit))
        lines.append(f"most suspect labels ({len(shown)} shown; all in --suspects' file):" if shown else "no suspects")
        lines += [f"  {s.score:.3f}  {s.image}: {s.given} -> {s.predicted}?" for s in shown]
    return "\n".join(lines)


def sync_text(report, args: argparse.Namespace) -> str:
    """`SyncReport`: the counts, then each skipped file and why."""
    text = (
        f"added {report.added}, updated {report.updated}, removed {report.removed}, "
        f"skipped {len(report.skipped)}; {report.total} images in {args.index}"
    )
    return "\n".join([text, *(f"skipped: {item.path}: {item.error}" for item in report.skipped)])


def compaction_text(report, args: argparse.Namespace) -> str:
    """`CompactionReport`: rows dropped and bytes before -> after."""
    return (
        f"compacted {args.index}: {report.images} images kept, {report.dead_rows} dead rows dropped, vectors "
        f"{report.bytes_before / 1e6:.1f} MB -> {report.bytes_after / 1e6:.1f} MB in {report.seconds:.1f}s"
    )


def backup_text(report, args: argparse.Namespace) -> str:
    """`BackupReport`: where the copy went and what it holds."""
    return (
        f"backed up {args.index} to {report.dest}: {report.images} images, {report.paths} paths, "
        f"{report.bytes / 1e6:.1f} MB in {report.seconds:.1f}s"
    )


def export_text(report, args: argparse.Namespace) -> str:
    """`ExportReport`: where the embedding folder went."""
    return (
        f"exported {report.images} images of {args.index} to {report.dest} ({report.format}, {report.parts} "
        f"part(s), {report.bytes / 1e6:.1f} MB) in {report.seconds:.1f}s"
    )


def search_text(result, _args: argparse.Namespace) -> str:
    """`SearchResult`: one line per hit, best first, with the other paths of the same image."""
    hits = result.to_dict()["results"]
    lines = [
        f"{hit['score']:.3f}  {hit['path']}" + (f"  (also {', '.join(hit['aliases'])})" if hit["aliases"] else "")
        for hit in hits
    ]
    return "\n".join(lines) or "no results"


def duplicates_text(report, args: argparse.Namespace) -> str:
    """`DuplicateReport`: one block per group, the keeper marked, then the counts."""
    lines = []
    for number, group in enumerate(report.groups, 1):
        lines.append(f"group {number} (similarity >= {group.similarity:.3f}):")
        lines += [
            f"  {'keep' if image.path == group.keep else '    '}  {image.width}x{image.height}  "
            f"{image.size / 1e3:.0f} kB  {image.date}  {image.path}"
            for image in group.images
        ]
    extra = sum(len(group.images) - 1 for group in report.groups)
    lines.append(
        f"{len(report.groups)} groups, {extra} copies beside their keepers, among {report.images} images "
        f"(threshold {report.threshold}, {report.rejected} of {report.candidates} candidate pairs refused by the "
        f"perceptual hash) in {report.seconds:.1f}s" + (f"; rows written to {args.csv}" if args.csv else "")
    )
    return "\n".join(lines)


def moves_text(report, args: argparse.Namespace) -> str:
    """`MoveReport`: each file moved, each left alone and why, and the undo log."""
    lines = [f"moved {a} -> {b}" for a, b in report.moved]
    lines += [f"skipped {path}: {why}" for path, why in report.skipped]
    verb = "restored" if args.undo else "moved"
    lines.append(f"{verb} {len(report.moved)}, skipped {len(report.skipped)}")
    if not args.undo:
        lines.append(f"undo with: clipapp duplicates --undo {report.log}")
    return "\n".join(lines)


def map_text(result, args: argparse.Namespace) -> str:
    """`CollectionMap`: the clusters by size with their names, and where the page went."""
    lines = [f"{len(result.paths)} images of {args.index} in {len(result.clusters)} clusters ({result.method} layout)"]
    lines += [f"  {c.size:7d}  {c.name}" for c in sorted(result.clusters, key=lambda c: -c.size)]
    if args.out:
        lines.append(f"map: {args.out}")
    return "\n".join(lines)


def tag_text(report, args: argparse.Namespace) -> str:
    """`TagReport`: how many images got the tag, how many carry it now, and how to search them."""
    return (
        f"tagged {report.tagged} images {report.tag!r}; {report.total} images of {args.index} have it "
        f"(search them with --tag {report.tag!r})"
    )


def _number(value, fmt: str = "{:.1f}") -> str:
    return "-" if value is None else fmt.format(value)


def models_text(table, _args: argparse.Namespace) -> str:
    """`ModelTable`: one line per model (medians of the measured runs), `*` the default, `>` the one --model picks;
    the sources of the published figures are in --json."""
    header = (
        f"  {'model':<44} {'ImageNet':>8} {'license':<11} {'params':>7} {'load':>5} {'RSS':>6} "
        f"{'images/s':>11} {'texts/s':>11} {'fine-tune s':>19}"
    )
    under = f"  {'':<44} {'0-shot':>8} {'':<11} {'M':>7} {'s':>5} {'MB':>6} {'fp32  int8':>11} {'fp32  int8':>11} "
    lines = [header, under + f"{'head':>9} {'default':>9}"]
    for row in table.rows:
        mark = ("*" if row.default else " ") + (">" if row.selected else " ")
        lines.append(
            f"{mark}{row.model.spec:<44} {_number(row.model.imagenet_top1, '{:.1f}%'):>8} {row.model.license:<11} "
            f"{_number(row.value('params_m'), '{:.0f}'):>7} {_number(row.figure('fp32', 'load_s')):>5} "
            f"{_number(row.figure('fp32', 'rss_mb'), '{:.0f}'):>6} "
            f"{_number(row.figure('fp32', 'images_per_s')):>5} {_number(row.figure('int8', 'images_per_s')):>5} "
            f"{_number(row.figure('fp32', 'texts_per_s'), '{:.0f}'):>5} "
            f"{_number(row.figure('int8', 'texts_per_s'), '{:.0f}'):>5} "
            f"{_number(row.value('finetune_head_s'), '{:.0f}'):>9} "
            f"{_number(row.value('finetune_default_s'), '{:.0f}'):>9}" + ("" if row.loadable else f"  ({row.why_not})")
        )
    lines.append(f"* the default ({table.default})   > selected by --model / $CLIPAPP_MODEL ({table.selected})")
    if table.measured_on:
        lines.append(f"measured {table.measured_at} on {table.measured_on}, random weights (the architecture's cost)")
    lines.append("ImageNet: published zero-shot top-1; its source and each license's: --json, or docs/models.md")
    return "\n".join(lines)


def _renderers() -> dict[type, Callable[[Any, argparse.Namespace], str]]:
    from clipapp.app.actions import AdapterReport, CollectionMap, Explanation, ModelTable, Similarity, TagReport
    from clipapp.classify.evaluation import EvalResult
    from clipapp.classify.stream import ClassifyReport
    from clipapp.index import BackupReport, CompactionReport, ExportReport, SearchResult, SyncReport
    from clipapp.index.duplicates import DuplicateReport
    from clipapp.index.moves import MoveReport

    return {
        ClassifyReport: classify_text,
        Similarity: similarity_text,
        Explanation: explain_text,
        AdapterReport: adapter_text,
        EvalResult: eval_text,
        SyncReport: sync_text,
        SearchResult: search_text,
        CompactionReport: compaction_text,
        BackupReport: backup_text,
        ExportReport: export_text,
        DuplicateReport: duplicates_text,
        MoveReport: moves_text,
        CollectionMap: map_text,
        TagReport: tag_text,
        ModelTable: models_text,
    }


def render(result: Any, args: argparse.Namespace) -> str:
    """The text for `result`, by its type."""
    return _renderers()[type(result)](result, args)
