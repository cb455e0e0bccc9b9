"""Matplotlib figures for the app: similarity heatmap, top-k bars, training curves, confusion matrix.

Every function builds a fresh `matplotlib.figure.Figure` bound to its own Agg canvas and never touches pyplot,
so figures can be drawn from several web-server threads at once. No Gradio import: `gr.Plot` takes the returned
Figure as it is, the CLI writes it with `save_figure`.

The heatmap follows OpenAI's CLIP notebook "Interacting with CLIP": texts as rows, image thumbnails above the
columns, the cosine written in each cell. Sizes are laid out in inches from the counts (cell size, font sizes,
label widths measured with the renderer), so a 1x1 and a 20x30 matrix both come out readable.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import MaxNLocator

from clipapp.errors import ClipAppError
from clipapp.viz.common import (
    HEATMAP_CMAP,
    HEATMAP_TITLE,
    LABEL_CHARS,
    clip,
    color_range,
    dark_ink_on,
    heatmap_grid,
    shorten,
    square_thumbnail,
)

__all__ = [
    "confusion_matrix_figure",
    "save_figure",
    "similarity_heatmap",
    "topk_bars",
    "training_curves",
]

CONFUSION_CMAP = "Blues"
BAR_COLOR = "#4C72B0"
TOP_BAR_COLOR = "#DD8452"
DEFAULT_DPI = 120


# --------------------------------------------------------------------------------------------- helpers
def _new_figure(width_in: float, height_in: float, dpi: float = 100) -> Figure:
    fig = Figure(figsize=(width_in, height_in), dpi=dpi, facecolor="white")
    FigureCanvasAgg(fig)  # its own Agg canvas: no pyplot, no global backend switch
    return fig


def _text_width_in(fig: Figure, texts: Sequence[str], fontsize: float) -> float:
    """Widest rendered width of `texts` in inches (measured with the figure's Agg renderer)."""
    if not texts:
        return 0.0
    canvas = fig.canvas
    assert isinstance(canvas, FigureCanvasAgg)  # every figure here is made by _new_figure, on its own Agg canvas
    renderer = canvas.get_renderer()
    prop = FontProperties(size=fontsize)
    widest = max(renderer.get_text_width_height_descent(t, prop, ismath=False)[0] for t in texts)
    return widest / fig.dpi


def _wrap_to_width(fig: Figure, text: str, fontsize: float, width_in: float, max_lines: int = 2) -> list[str]:
    """Greedy word wrap of `text` to `width_in` inches; the last allowed line gets an ellipsis if text remains."""
    words = re.sub(r"\s+", " ", str(text)).strip().split(" ")
    lines: list[str] = []
    while words and len(lines) < max_lines:
        line = words.pop(0)
        while words and _text_width_in(fig, [line + " " + words[0]], fontsize) <= width_in:
            line += " " + words.pop(0)
        lines.append(line)
    if words or (lines and _text_width_in(fig, [lines[-1]], fontsize) > width_in):
        last = lines[-1] + (" " + " ".join(words) if words else "")
        n = len(last)
        while n > 1 and _text_width_in(fig, [shorten(last, n)], fontsize) > width_in:
            n -= max(1, n // 10)
        lines[-1] = shorten(last, n) if len(last) > n else last
    return lines or [""]


def _contrast_color(rgba) -> str:
    """Black or white, whichever reads better on the given cell colour (0..1)."""
    return "black" if dark_ink_on(rgba) else "white"


# --------------------------------------------------------------------------------------------- heatmap
@dataclass(frozen=True)
class _HeatmapLayout:
    """Where the heatmap's parts go, in inches, and its font sizes in points."""

    cell: float  # a cell's edge
    value_fs: float
    label_fs: float
    title_fs: float
    top_extra: float  # the thumbnail row above the grid, in cells
    left: float
    bottom: float
    ax_w: float
    ax_h: float
    fig_w: float
    fig_h: float
    heading_lines: list[str]
    title_x: float
    cbar_gap: float = 0.15
    cbar_w: float = 0.18


def similarity_heatmap(
    matrix: np.ndarray,
    images: Sequence[object] | None,
    texts: Sequence[str],
    *,
    title: str | None = None,
) -> Figure:
    """Cosine similarities of `n_images` images and `n_texts` texts, as in the CLIP notebook.

    `matrix` has shape (n_images, n_texts). Texts are the rows (y labels), images the columns with their
    thumbnails drawn above, each cell shows its cosine with 2 decimals. `images=None` numbers the columns instead.
    """
    grid, texts = heatmap_grid(matrix, images, texts)  # rows = texts, columns = images
    n_txt, n_img = grid.shape
    fig = _new_figure(4, 4)  # resized below; text is measured with its renderer first
    labels = [shorten(t, LABEL_CHARS) for t in texts]
    at = _heatmap_layout(fig, n_txt, n_img, labels, title if title is not None else HEATMAP_TITLE, images is not None)
    fig.set_size_inches(at.fig_w, at.fig_h)

    ax = fig.add_axes((at.left / at.fig_w, at.bottom / at.fig_h, at.ax_w / at.fig_w, at.ax_h / at.fig_h))
    im = _heatmap_cells(ax, grid, at.value_fs)
    _heatmap_axes(ax, n_txt, n_img, images, labels, at)

    cax = fig.add_axes(
        (
            (at.left + at.ax_w + at.cbar_gap) / at.fig_w,
            at.bottom / at.fig_h,
            at.cbar_w / at.fig_w,
            n_txt * at.cell / at.fig_h,
        )
    )
    cb = fig.colorbar(im, cax=cax)
    cb.ax.tick_params(labelsize=max(7.0, at.label_fs * 0.8))
    cb.outline.set_visible(False)

    fig.text(
        at.title_x / at.fig_w,
        1 - 0.12 / at.fig_h,
        "\n".join(at.heading_lines),
        ha="center",
        va="top",
        fontsize=at.title_fs,
        parse_math=False,
        linespacing=1.3,
    )
    return fig


def _heatmap_layout(
    fig: Figure, n_txt: int, n_img: int, labels: list[str], heading: str, thumbnails: bool
) -> _HeatmapLayout:
    """The heatmap's sizes from its counts, label widths and title (measured with `fig`'s renderer)."""
    # Cell edge in inches: large for small matrices, shrinking so 20 x 30 stays on about 12 x 18 inches.
    cell = clip(min(12.0 / n_img, 18.0 / (n_txt + 1.2)), 0.5, 1.1)
    value_fs = clip(cell * 72 * 0.26, 6.5, 14)
    label_fs = clip(cell * 72 * 0.25, 8, 13)
    title_fs = 13 if n_img > 3 else 11
    top_extra = 1.1 if thumbnails else 0.0  # thumbnail row above the grid, in cell units (+ a gap)

    label_w = _text_width_in(fig, labels, label_fs) + 0.15
    left = label_w + 0.15
    cbar_gap, cbar_w, cbar_labels = _HeatmapLayout.cbar_gap, _HeatmapLayout.cbar_w, 0.55
    right = cbar_gap + cbar_w + cbar_labels
    bottom = 0.25 if thumbnails else 0.45
    ax_w = n_img * cell
    ax_h = (n_txt + top_extra) * cell
    fig_w = max(left + ax_w + right, 4.5)
    fig_h = bottom + ax_h
    left += (fig_w - (left + ax_w + right)) / 2  # centre the grid when the minimum width kicks in
    # Title: centred over the grid, wrapped onto up to 3 lines rather than cut where the figure is narrow.
    heading_lines = _wrap_to_width(fig, heading, title_fs, fig_w - 0.3, max_lines=3)
    fig_h += 0.2 + 0.27 * len(heading_lines) * title_fs / 12
    half = max(_text_width_in(fig, heading_lines, title_fs) / 2, 0.01)
    title_x = clip(left + ax_w / 2, min(half + 0.15, fig_w / 2), max(fig_w - half - 0.15, fig_w / 2))
    return _HeatmapLayout(
        cell, value_fs, label_fs, title_fs, top_extra, left, bottom, ax_w, ax_h, fig_w, fig_h, heading_lines, title_x
    )


def _heatmap_cells(ax, grid: np.ndarray, value_fs: float):
    """The coloured grid with each cell's cosine written in an ink that reads on it; returns the image (for the
    colour bar)."""
    n_txt, n_img = grid.shape
    lo, hi = color_range(grid)
    norm = Normalize(vmin=lo, vmax=hi)
    im = ax.imshow(
        grid,
        cmap=HEATMAP_CMAP,
        norm=norm,
        aspect="equal",
        interpolation="nearest",
        extent=(-0.5, n_img - 0.5, n_txt - 0.5, -0.5),
    )
    cell_rgba = im.get_cmap()(norm(grid))
    for y in range(n_txt):
        for x in range(n_img):
            ax.text(
                x,
                y,
                f"{grid[y, x]:.2f}",
                ha="center",
                va="center",
                fontsize=value_fs,
                color=_contrast_color(cell_rgba[y, x]),
                parse_math=False,
            )
    return im


def _heatmap_axes(
    ax, n_txt: int, n_img: int, images: Sequence[object] | None, labels: list[str], at: _HeatmapLayout
) -> None:
    """The thumbnails above the columns (or "image N" ticks), the texts beside the rows, no frame."""
    if images is not None:
        for x, img in enumerate(images):
            thumb = square_thumbnail(img)
            # Square slot one cell wide above column x (y grows downwards on this axis).
            ax.imshow(
                thumb, extent=(x - 0.47, x + 0.47, -0.55, -0.55 - 0.94), interpolation="antialiased", aspect="equal"
            )
        ax.set_xticks([])
    else:
        ax.set_xticks(range(n_img), [f"image {i + 1}" for i in range(n_img)], fontsize=at.label_fs * 0.85)
    ax.set_xlim(-0.5, n_img - 0.5)
    ax.set_ylim(n_txt - 0.5, -0.5 - at.top_extra)
    ax.set_yticks(range(n_txt), labels, fontsize=at.label_fs, parse_math=False)
    ax.tick_params(axis="y", length=0, pad=6)
    for spine in ax.spines.values():
        spine.set_visible(False)


# --------------------------------------------------------------------------------------------- top-k bars
def topk_bars(
    results: Sequence[tuple[str, Sequence[tuple[str, float]]]],
    *,
    images: Sequence[object] | None = None,
) -> Figure:
    """One row per image: optional thumbnail at the left, its top-k labels as horizontal bars, highest on top,
    the probability written at the end of each bar (like the notebook's top-5 figure)."""
    results = list(results)
    if images is not None and len(images) != len(results):
        raise ValueError(f"{len(images)} images given for {len(results)} results")
    if not results:
        fig = _new_figure(6, 1.6)
        fig.text(0.5, 0.5, "no results", ha="center", va="center", fontsize=12, color="0.4")
        return fig

    rows = []
    for caption, preds in results:
        preds = sorted(((str(lbl), float(p)) for lbl, p in preds), key=lambda lp: lp[1], reverse=True)
        rows.append((str(caption), preds))
    k_max = max(1, max(len(p) for _, p in rows))
    label_fs, value_fs, title_fs = 10.0, 9.0, 11.0
    row_h = max(1.6, 0.27 * k_max + 0.65)

    fig = _new_figure(4, 4)
    all_labels = [shorten(lbl, 36) for _, preds in rows for lbl, _ in preds] or [""]
    label_w = _text_width_in(fig, all_labels, label_fs) + 0.2
    thumb_w = (row_h - 0.5) if images is not None else 0.0
    bar_w = 3.8
    left_pad, gap, right_pad = 0.15, 0.25, 0.25
    fig_w = left_pad + thumb_w + (gap if images is not None else 0.0) + label_w + bar_w + right_pad
    fig_h = row_h * len(rows) + 0.1
    fig.set_size_inches(fig_w, fig_h)

    max_p = max([p for _, preds in rows for _, p in preds] or [1.0])
    x_max = 1.0 if max_p <= 1.0 + 1e-9 else max_p
    for r, (caption, preds) in enumerate(rows):
        row_bottom = fig_h - 0.05 - row_h * (r + 1)
        ax_h = row_h - 0.55  # room for the caption above
        ax_bottom = row_bottom + 0.15
        if images is not None:
            tax = fig.add_axes((left_pad / fig_w, ax_bottom / fig_h, thumb_w / fig_w, ax_h / fig_h))
            tax.imshow(square_thumbnail(images[r]), interpolation="antialiased")
            tax.set_axis_off()
        bx = left_pad + (thumb_w + gap if images is not None else 0.0) + label_w
        ax = fig.add_axes((bx / fig_w, ax_bottom / fig_h, bar_w / fig_w, ax_h / fig_h))
        ax.set_title(shorten(caption, 70), fontsize=title_fs, loc="left", parse_math=False)
        if not preds:
            ax.text(0.5, 0.5, "no predictions", ha="center", va="center", transform=ax.transAxes, color="0.4")
            ax.set_axis_off()
            continue
        y = np.arange(len(preds))
        probs = [p for _, p in preds]
        colors = [TOP_BAR_COLOR] + [BAR_COLOR] * (len(preds) - 1)
        ax.barh(y, probs, height=0.7, color=colors)
        ax.set_yticks(y, [shorten(lbl, 36) for lbl, _ in preds], fontsize=label_fs, parse_math=False)
        ax.set_ylim(k_max - 0.5, -0.5)  # highest on top; same bar height in every row
        ax.set_xlim(0, x_max * 1.22)
        for yi, p in zip(y, probs, strict=True):
            if x_max > 1.0:
                txt = f"{p:.3g}"
            else:
                txt = "<0.1%" if 0 < p < 0.0005 else f"{p:.1%}"
            ax.text(p + x_max * 0.015, float(yi), txt, va="center", ha="left", fontsize=value_fs)
        ax.set_xticks([])
        ax.tick_params(axis="y", length=0)
        for side in ("top", "right", "bottom"):
            ax.spines[side].set_visible(False)
    return fig


# --------------------------------------------------------------------------------------------- training curves
_X_KEYS = ("epoch", "epochs", "step", "steps", "iteration", "iter")
_ACC_HINTS = ("acc", "top1", "top5", "top-1", "top-5", "f1", "precision", "recall")
_SKIP_HINTS = ("lr", "learning_rate", "time", "seconds")


def training_curves(history: Mapping[str, Sequence[float]] | None, *, title: str | None = None) -> Figure:
    """Loss curves on the left axis, accuracy (and other metrics) on the right; x = epoch or step.

    Keys containing "loss" go left; "acc"/"top1"/"top5"/... go right; an "epoch" or "step" key, when its length
    matches a series, gives that series' x values, otherwise x = 1..n. Series starting with val/test/eval are
    dashed. An empty history shows "no data yet".
    """
    history = dict(history or {})
    x_key = next((k for k in history if k.lower() in _X_KEYS), None)
    x_vals = list(history.pop(x_key)) if x_key else None
    x_label = (x_key or "epoch").lower().rstrip("s")
    loss, acc = {}, {}
    for key, values in history.items():
        vals = np.asarray([np.nan if v is None else float(v) for v in (values or [])], dtype=np.float64)
        low = key.lower()
        if vals.size == 0 or low in _SKIP_HINTS or low.endswith(("_lr", "/lr")):
            continue
        if "loss" in low:
            loss[key] = vals
        elif any(h in low for h in _ACC_HINTS):
            acc[key] = vals
        else:
            acc[key] = vals  # other metrics share the right-hand axis

    fig = _new_figure(10, 4)
    axes = fig.subplots(1, 2)
    fig.subplots_adjust(left=0.07, right=0.98, bottom=0.14, top=0.82 if title else 0.88, wspace=0.22)
    if title:
        fig.suptitle(shorten(title, 100), fontsize=13)
    for ax, series, name in ((axes[0], loss, "loss"), (axes[1], acc, "accuracy")):
        ax.set_title(name, fontsize=11)
        ax.set_xlabel(x_label)
        ax.grid(True, alpha=0.3)
        if not series:
            ax.text(
                0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes, fontsize=12, color="0.45"
            )
            ax.set_xticks([])
            ax.set_yticks([])
            continue
        for key, vals in series.items():
            if x_vals is not None and len(x_vals) == len(vals):
                xs = np.asarray(x_vals, dtype=np.float64)
            else:
                xs = np.arange(1, len(vals) + 1, dtype=np.float64)
            dashed = key.lower().startswith(("val", "test", "eval", "valid"))
            ax.plot(
                xs,
                vals,
                linestyle="--" if dashed else "-",
                marker="o" if len(vals) <= 30 else None,
                markersize=3.5,
                linewidth=1.6,
                label=key,
            )
        if name == "accuracy":
            finite = np.concatenate([v[np.isfinite(v)] for v in series.values()] or [np.zeros(0)])
            if finite.size and finite.min() >= 0 and finite.max() <= 1:
                ax.set_ylim(0, 1.02)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=9, loc="best")
    return fig


# --------------------------------------------------------------------------------------------- confusion matrix
def _row_normalize(counts: np.ndarray) -> np.ndarray:
    sums = counts.sum(axis=1, keepdims=True)
    return np.divide(counts, sums, out=np.zeros_like(counts, dtype=np.float64), where=sums > 0)


def confusion_matrix_figure(
    matrix: np.ndarray,
    class_names: Sequence[str],
    *,
    normalize: bool = True,
) -> Figure:
    """Counts of (true class row, predicted class column); with `normalize` each row is divided by its total
    (a row with no samples stays 0), so the diagonal is the per-class recall."""
    counts = np.asarray(matrix, dtype=np.float64)
    names = [str(c) for c in class_names]
    if counts.ndim != 2 or counts.shape[0] != counts.shape[1]:
        raise ValueError(f"confusion matrix must be square (n, n), got shape {counts.shape}")
    n = counts.shape[0]
    if len(names) != n:
        raise ValueError(f"confusion matrix is {n}x{n} but {len(names)} class names were given")
    if n == 0:
        raise ClipAppError("No classes to show in the confusion matrix.")
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("confusion matrix counts must be finite and non-negative")

    values = _row_normalize(counts) if normalize else counts
    cell = clip(10.0 / n, 0.3, 0.9)
    value_fs = clip(cell * 72 * 0.25, 5, 12)
    label_fs = clip(cell * 72 * 0.3, 6, 11)
    fig = _new_figure(4, 4)
    labels = [shorten(c, 28) for c in names]
    label_w = _text_width_in(fig, labels, label_fs) + 0.15
    left = label_w + 0.45
    bottom = label_w * 0.75 + 0.55  # rotated 45 degree x labels
    right, top = 1.0, 0.55
    ax_side = n * cell
    fig_w, fig_h = left + ax_side + right, bottom + ax_side + top
    fig.set_size_inches(fig_w, fig_h)
    ax = fig.add_axes((left / fig_w, bottom / fig_h, ax_side / fig_w, ax_side / fig_h))
    vmax = 1.0 if normalize else max(1.0, float(values.max()))
    norm = Normalize(vmin=0.0, vmax=vmax)
    im = ax.imshow(values, cmap=CONFUSION_CMAP, norm=norm, interpolation="nearest", aspect="equal")
    cmap = im.get_cmap()
    if n <= 40:
        for i in range(n):
            for j in range(n):
                v = values[i, j]
                txt = f"{v:.2f}" if normalize else f"{int(round(v))}"
                ax.text(j, i, txt, ha="center", va="center", fontsize=value_fs, color=_contrast_color(cmap(norm(v))))
    ax.set_xticks(
        range(n), labels, fontsize=label_fs, rotation=45, ha="right", rotation_mode="anchor", parse_math=False
    )
    ax.set_yticks(range(n), labels, fontsize=label_fs, parse_math=False)
    ax.set_xlabel("predicted", fontsize=11)
    ax.set_ylabel("true", fontsize=11)
    total = int(round(counts.sum()))
    correct = float(np.trace(counts))
    acc = correct / counts.sum() if counts.sum() > 0 else math.nan
    ax.set_title(
        f"Confusion matrix ({'row-normalised, ' if normalize else ''}n={total}, accuracy {acc:.1%})", fontsize=11
    )
    cax = fig.add_axes(((left + ax_side + 0.15) / fig_w, bottom / fig_h, 0.18 / fig_w, ax_side / fig_h))
    fig.colorbar(im, cax=cax).ax.tick_params(labelsize=8)
    return fig


# --------------------------------------------------------------------------------------------- saving
def save_figure(fig: Figure, path: str | Path, *, dpi: int = DEFAULT_DPI) -> Path:
    """Write `fig` as a PNG (tight bounding box, white background); parent folders are created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.1, facecolor="white")
    return path
