"""Tests for clipapp.viz.figures: every figure renders to a PNG; the heatmap carries the right texts, values,
thumbnails."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.offsetbox import OffsetImage
from PIL import Image

from clipapp.viz import common
from clipapp.viz import figures as viz


def render(fig: Figure, dpi: int = 60) -> Image.Image:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    buf.seek(0)
    img = Image.open(buf)
    img.load()
    return img


def assert_renders(fig: Figure, min_px: int = 150) -> Image.Image:
    assert isinstance(fig, Figure)
    img = render(fig)
    assert img.format == "PNG"
    assert min(img.size) >= min_px * 0.5 and max(img.size) >= min_px, img.size
    arr = np.asarray(img.convert("L"))
    assert arr.std() > 5, "figure is blank"
    return img


def thumbnails(fig: Figure) -> list:
    """Thumbnail artists: AxesImages other than the heatmap itself, plus any OffsetImages."""
    heat_ax = fig.axes[0]
    found = [im for im in heat_ax.images if im.get_array().ndim == 3]
    found += [a for ax in fig.axes for a in ax.findobj(OffsetImage)]
    return found


def sample_images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(n)
    modes = []
    for i in range(n):
        w, h = (30 + 17 * i % 90, 20 + 29 * i % 120)
        arr = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        kind = i % 5
        if kind == 1:
            img = img.convert("L")
        elif kind == 2:
            img = img.convert("RGBA")
        elif kind == 3:
            img = img.convert("P")
        elif kind == 4:
            img = Image.fromarray((rng.integers(0, 65535, (h, w))).astype(np.uint16))  # I;16
        modes.append(img)
    return modes


def heat_axes(fig):
    return fig.axes[0]


# ------------------------------------------------------------------------------------------ heatmap
def test_heatmap_cells_labels_thumbnails():
    rng = np.random.default_rng(0)
    m = rng.uniform(-0.1, 0.4, (3, 4))  # 3 images, 4 texts
    texts = ["a cat", "a dog", "a photo of a rocket", "$x^2$ costs $5"]
    fig = viz.similarity_heatmap(m, sample_images(3), texts, title="t")
    ax = heat_axes(fig)
    # one text per cell, laid out rows = texts, columns = images, 2 decimals
    cells = {(round(t.get_position()[0]), round(t.get_position()[1])): t.get_text() for t in ax.texts}
    assert len(ax.texts) == 12 and len(cells) == 12
    for i in range(3):
        for j in range(4):
            assert cells[(i, j)] == f"{m[i, j]:.2f}"
    assert [t.get_text() for t in ax.get_yticklabels()] == texts
    assert len(thumbnails(fig)) == 3
    heat = [im for im in ax.images if im.get_array().ndim == 2]
    assert len(heat) == 1 and heat[0].get_array().shape == (4, 3)
    assert_renders(fig)


def test_heatmap_thumbnails_square_any_mode():
    imgs = sample_images(5) + [Image.new("RGB", (400, 10), "red"), Image.new("LA", (5, 300))]
    fig = viz.similarity_heatmap(np.zeros((len(imgs), 2)), imgs, ["a", "b"])
    thumbs = thumbnails(fig)
    assert len(thumbs) == len(imgs)
    for t in thumbs:
        arr = np.asarray(t.get_array())
        assert arr.shape[0] == arr.shape[1] and arr.shape[2] == 4
        x0, x1, y0, y1 = t.get_extent()
        assert abs(abs(x1 - x0) - abs(y1 - y0)) < 1e-9  # square slot
    assert_renders(fig)


def test_heatmap_long_texts_shortened():
    long = "a very long caption " * 20
    fig = viz.similarity_heatmap(np.ones((1, 1)) * 0.3, sample_images(1), [long])
    label = heat_axes(fig).get_yticklabels()[0].get_text()
    assert label.endswith("\u2026") and len(label) <= 60


@pytest.mark.parametrize("n_img,n_txt", [(1, 1), (20, 30), (1, 30), (20, 1)])
def test_heatmap_sizes_render(n_img, n_txt):
    rng = np.random.default_rng(1)
    fig = viz.similarity_heatmap(
        rng.uniform(0, 0.4, (n_img, n_txt)), sample_images(n_img), [f"text {j} " * (j % 4 + 1) for j in range(n_txt)]
    )
    assert len(heat_axes(fig).texts) == n_img * n_txt
    assert len(thumbnails(fig)) == n_img
    assert_renders(fig)


def test_heatmap_grows_with_counts():
    sizes = {}
    for n_img, n_txt in [(1, 1), (4, 4), (8, 12), (20, 30)]:
        fig = viz.similarity_heatmap(np.zeros((n_img, n_txt)), sample_images(n_img), ["t"] * n_txt)
        sizes[(n_img, n_txt)] = fig.get_size_inches()
    w = [sizes[k][0] for k in sorted(sizes)]
    h = [sizes[k][1] for k in sorted(sizes)]
    assert w == sorted(w) and h == sorted(h)
    assert sizes[(20, 30)][0] > 2 * sizes[(1, 1)][0] and sizes[(20, 30)][1] > 4 * sizes[(1, 1)][1]
    # the font shrinks with the cell but stays readable
    small = viz.similarity_heatmap(np.zeros((20, 30)), None, ["t"] * 30)
    big = viz.similarity_heatmap(np.zeros((2, 2)), None, ["t"] * 2)
    assert 6 <= small.axes[0].texts[0].get_fontsize() < big.axes[0].texts[0].get_fontsize()


def test_heatmap_without_images_numbers_columns():
    fig = viz.similarity_heatmap(np.zeros((2, 3)), None, ["a", "b", "c"])
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["image 1", "image 2"]
    assert thumbnails(fig) == []
    assert_renders(fig)


@pytest.mark.parametrize(
    "shape,n_img,n_txt",
    [((3, 4), 4, 3), ((3, 4), 3, 5), ((2, 4), 3, 4), ((12,), 3, 4), ((2, 3, 4), 2, 3)],
)
def test_heatmap_shape_mismatch_raises(shape, n_img, n_txt):
    with pytest.raises(ValueError, match="shape"):
        viz.similarity_heatmap(np.zeros(shape), sample_images(n_img), ["t"] * n_txt)


def test_heatmap_empty_and_nan_raise():
    with pytest.raises(ValueError):
        viz.similarity_heatmap(np.zeros((0, 2)), [], ["a", "b"])
    with pytest.raises(ValueError, match="NaN"):
        viz.similarity_heatmap(np.array([[np.nan]]), sample_images(1), ["a"])


def test_heatmap_threads():
    """Figures built and rendered concurrently (as the web server does) all come out right."""
    errors, sizes = [], []

    def work(k):
        try:
            fig = viz.similarity_heatmap(np.full((2, 3), 0.1 * k), sample_images(2), ["a", "b", "c"])
            sizes.append(render(fig, dpi=40).size)
            assert {t.get_text() for t in fig.axes[0].texts} == {f"{0.1 * k:.2f}"}
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(set(sizes)) == 1


# ------------------------------------------------------------------------------------------ top-k
def test_topk_bars_sorted_with_values():
    results = [
        ("cat.jpg", [("dog", 0.2), ("cat", 0.7), ("car", 0.1)]),
        ("rocket.jpg", [("rocket", 0.95), ("tower", 0.05)]),
    ]
    fig = viz.topk_bars(results, images=sample_images(2))
    bar_axes = [ax for ax in fig.axes if ax.patches]
    assert len(bar_axes) == 2
    for ax, (caption, preds) in zip(bar_axes, results, strict=False):
        assert ax.get_title(loc="left") == caption
        ylabels = [t.get_text() for t in ax.get_yticklabels()]
        expected = sorted(preds, key=lambda lp: -lp[1])
        assert ylabels == [lbl for lbl, _ in expected]
        widths = [p.get_width() for p in ax.patches]
        # highest bar drawn on top: sort the bars by their on-screen height, top first
        screen_y = [ax.transData.transform((0, p.get_y() + p.get_height() / 2))[1] for p in ax.patches]
        top_to_bottom = [w for _, w in sorted(zip(screen_y, widths, strict=False), reverse=True)]
        assert top_to_bottom == sorted(widths, reverse=True)
        assert [t.get_text() for t in ax.texts] == [f"{p:.1%}" for _, p in expected]
    assert sum(len(ax.images) for ax in fig.axes) == 2  # one thumbnail per row
    assert_renders(fig)


def test_topk_without_images_and_empty():
    fig = viz.topk_bars([("a", [("x", 0.6), ("y", 0.4)])])
    assert sum(len(ax.images) for ax in fig.axes) == 0
    assert_renders(fig, min_px=100)
    assert isinstance(viz.topk_bars([]), Figure)
    with pytest.raises(ValueError):
        viz.topk_bars([("a", [("x", 1.0)])], images=sample_images(2))


# ------------------------------------------------------------------------------------------ training curves
def test_training_curves_axes():
    hist = {
        "epoch": [1, 2, 3],
        "train_loss": [1.0, 0.7, 0.5],
        "val_loss": [1.1, 0.8, 0.7],
        "train_acc": [0.5, 0.6, 0.7],
        "val_acc": [0.4, 0.55, 0.6],
        "lr": [1e-3, 1e-3, 5e-4],
    }
    fig = viz.training_curves(hist, title="run 1")
    loss_ax, acc_ax = fig.axes
    assert {ln.get_label() for ln in loss_ax.lines} == {"train_loss", "val_loss"}
    assert {ln.get_label() for ln in acc_ax.lines} == {"train_acc", "val_acc"}
    val = next(ln for ln in acc_ax.lines if ln.get_label() == "val_acc")
    assert list(val.get_xdata()) == [1, 2, 3] and list(val.get_ydata()) == [0.4, 0.55, 0.6]
    assert val.get_linestyle() == "--"
    assert_renders(fig)


@pytest.mark.parametrize("hist", [{}, None, {"train_loss": [], "val_acc": []}])
def test_training_curves_empty(hist):
    fig = viz.training_curves(hist)
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert texts.count("no data yet") == 2
    assert_renders(fig)


# ------------------------------------------------------------------------------------------ confusion matrix
def test_confusion_matrix_normalised():
    cm = np.array([[8, 2, 0], [1, 1, 0], [0, 0, 0]])
    fig = viz.confusion_matrix_figure(cm, ["a", "b", "c"])
    ax = fig.axes[0]
    shown = np.asarray(ax.images[0].get_array())
    np.testing.assert_allclose(shown, [[0.8, 0.2, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 0.0]])
    cells = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    assert cells[(0, 0)] == "0.80" and cells[(1, 0)] == "0.50" and cells[(2, 2)] == "0.00"
    assert [t.get_text() for t in ax.get_yticklabels()] == ["a", "b", "c"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c"]
    assert ax.get_ylabel() == "true" and ax.get_xlabel() == "predicted"
    assert_renders(fig)


def test_confusion_matrix_counts_and_errors():
    cm = np.array([[8, 2], [1, 1]])
    fig = viz.confusion_matrix_figure(cm, ["a", "b"], normalize=False)
    assert sorted(t.get_text() for t in fig.axes[0].texts) == ["1", "1", "2", "8"]
    with pytest.raises(ValueError):
        viz.confusion_matrix_figure(np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError):
        viz.confusion_matrix_figure(np.zeros((2, 2)), ["a"])


# ------------------------------------------------------------------------------------------ save
def test_save_figure_creates_dirs(tmp_path):
    fig = viz.training_curves({"train_loss": [1, 0.5]})
    out = viz.save_figure(fig, tmp_path / "a" / "b" / "curves.png")
    assert out.exists()
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size[0] > 300


def test_square_thumbnail_keeps_aspect():
    thumb = common.square_thumbnail(Image.new("RGB", (200, 100), "red"), size=64)
    assert thumb.shape == (64, 64, 4)
    assert thumb[0, 32, 3] == 0 and thumb[32, 32, 3] == 255 and tuple(thumb[32, 32, :3]) == (255, 0, 0)
    assert common.square_thumbnail(np.zeros((10, 10), dtype=bool)).shape[2] == 4


def test_thumbnails_of_extreme_shapes_keep_every_side_and_small_images_stay_sharp():
    for size in ((1, 20), (20, 1), (1, 1), (400, 20)):
        thumb = common.thumbnail_rgba(Image.new("RGB", size, "red"), 160)
        assert min(thumb.shape[:2]) >= 1 and max(thumb.shape[:2]) == 160
    checker = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8))
    enlarged = common.thumbnail_rgba(checker, 160)
    assert set(np.unique(enlarged[..., 0])) == {0, 255}  # nearest-neighbour: no grey blur between the pixels
    assert common.square_thumbnail(Image.new("RGB", (1, 20000)), 64).shape == (64, 64, 4)


def test_pillow_heatmap_has_the_notebook_layout():
    from clipapp.viz.heatmap_image import similarity_heatmap_image

    small = similarity_heatmap_image(np.array([[0.1, 0.3]]), sample_images(1), ["a cat", "a dog"])
    big = similarity_heatmap_image(
        np.random.default_rng(0).uniform(0, 0.4, (20, 30)), sample_images(20), [f"label {i}" for i in range(30)]
    )
    assert small.mode == "RGB" and big.width > small.width and big.height > 2 * small.height
    assert big.width <= 1600 and big.height <= 2100  # 20 x 30 stays about 12 x 18 inches at 100 dpi
    colours = np.asarray(big).reshape(-1, 3)
    assert len(np.unique(colours, axis=0)) > 100  # cells in many colours, thumbnails, text
    with pytest.raises(ValueError):
        similarity_heatmap_image(np.zeros((2, 3)), sample_images(1), ["a", "b", "c"])
