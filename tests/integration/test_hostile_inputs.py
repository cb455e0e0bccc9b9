"""Every endpoint and CLI command against broken and hostile input: a clear message, never a crash or a stack
trace, and the server answers the next good request."""

from __future__ import annotations

import pytest
from gradio_client import handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from clipapp.app.cli import main
from tests.support.hostile import HOSTILE_LABELS, bad_image_files, odd_valid_image_files

GENERIC_FAILURE = "Something went wrong"


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    return bad_image_files(tmp_path_factory.mktemp("hostile"))


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    return odd_valid_image_files(tmp_path_factory.mktemp("odd"))


def _assert_clear_refusal(call, expected_fragment: str) -> None:
    with pytest.raises(AppError) as caught:
        call()
    message = str(caught.value)
    assert GENERIC_FAILURE not in message and "Traceback" not in message
    assert expected_fragment in message


def test_bad_files_on_every_image_endpoint(client, bad_files, photos):
    for name, path in bad_files.items():
        upload = handle_file(str(path))
        _assert_clear_refusal(lambda: client.predict([upload], "a, b", "simple", "", 2, api_name="/classify"), name)
        _assert_clear_refusal(lambda: client.predict([upload], "a\nb", api_name="/similarity"), name)
        _assert_clear_refusal(lambda: client.predict("examples", upload, 3, -1, api_name="/search_image"), name)
    # Refused uploads to the index are listed, the valid ones kept.
    uploads = [handle_file(str(p)) for p in bad_files.values()] + [handle_file(str(photos[0]))]
    report = client.predict("my uploads", uploads, api_name="/index_images")
    assert len(report["refused_uploads"]) == len(bad_files) and report["total"] == 1
    result = client.predict([handle_file(str(photos[0]))], "a, b", "simple", "", 2, api_name="/classify")
    assert len(result["results"]) == 1


def test_odd_but_valid_images_are_classified(client, odd_files):
    result = client.predict(
        [handle_file(str(p)) for p in odd_files], "red, green", "simple", "", 2, api_name="/classify"
    )
    assert [r["image"] for r in result["results"]] == [p.name for p in odd_files]


def test_every_image_that_passes_gets_a_heatmap_and_a_gallery_entry(tiny_service, odd_files, tmp_path):
    """The page's heatmap draws every accepted image, 20:1 strips and a single pixel included, and the gallery
    of 'my uploads' lists them all."""
    from clipapp.app.ui.common import AppContext
    from clipapp.app.ui.zero_shot_tab import HeatmapFiles, classify_images

    ctx = AppContext(service=tiny_service, state_dir=tmp_path)
    _, figure = classify_images(ctx, [str(p) for p in odd_files], "red, green")
    drawn = Image.open(HeatmapFiles().draw(figure))
    assert drawn.width > 40 * len(odd_files) and drawn.height > 100
    assert ctx.sessions.store_uploads("s1", [str(p) for p in odd_files]) == []
    assert ctx.sessions.update("my uploads", "s1").total == len(odd_files)


def test_shape_limits_name_the_limit(tiny_service, bad_files):
    from clipapp.errors import ImageLoadError

    for name in ("thin_1x20000.png", "wide_20000x1.png", "needle_1x40M.png", "strip_3x500.png"):
        with pytest.raises(ImageLoadError, match=f"{name}: .*aspect-ratio limit 20:1"):
            tiny_service.encode_images([bad_files[name]])


def test_pixels_after_the_models_resize_are_bounded(tiny_service):
    from clipapp.errors import ImageLoadError
    from clipapp.images.decode import MAX_RESIZED_PIXELS, check_image_shape

    check_image_shape("ok.png", 224 * 20, 224, resize_side=224)  # 20:1 on a 224 model: 1 MP after the resize
    with pytest.raises(ImageLoadError, match="after that resize"):
        check_image_shape("big.png", 1000 * 20, 1000, resize_side=1000)  # 20 MP once the short side is 1000
    assert 1000 * 1000 * 20 > MAX_RESIZED_PIXELS


@pytest.mark.parametrize("case", sorted(HOSTILE_LABELS))
def test_hostile_labels(client, photos, case):
    upload = handle_file(str(photos[0]))
    labels = HOSTILE_LABELS[case]
    with pytest.raises(AppError) as caught:
        client.predict([upload], labels, "simple", "", 2, api_name="/classify")
    assert GENERIC_FAILURE not in str(caught.value)
    try:  # as a search query: either results or a clear refusal
        hits = client.predict("examples", labels, "simple", 3, -1, api_name="/search_text")
        assert len(hits["results"]) == 3
    except AppError as exc:
        assert GENERIC_FAILURE not in str(exc)
    result = client.predict([upload], "a, b", "simple", "", 2, api_name="/classify")
    assert len(result["results"]) == 1


def test_bad_custom_template(client, photos):
    _assert_clear_refusal(
        lambda: client.predict(
            [handle_file(str(photos[0]))], "a, b", "simple", "no placeholder", 2, api_name="/classify"
        ),
        "{}",
    )


@pytest.mark.parametrize("command", ["classify", "similarity"])
def test_cli_refuses_bad_files_with_exit_2(capsys, tiny_spec, bad_files, command):
    for name, path in bad_files.items():
        extra = ["--labels", "a,b"] if command == "classify" else ["--texts", "a", "b"]
        assert main([command, str(path), *extra, "--model", tiny_spec, "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and name in captured.err and "Traceback" not in captured.err


@pytest.mark.parametrize("case", sorted(HOSTILE_LABELS))
def test_cli_refuses_hostile_labels(capsys, tiny_spec, photos, case):
    assert main(["classify", str(photos[0]), "--labels", HOSTILE_LABELS[case] or " ", "--model", tiny_spec]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_hostile_zips_on_the_finetune_endpoint(client, photos, tmp_path):
    import zipfile

    def make(name: str, writer) -> str:
        path = tmp_path / name
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            writer(archive)
        return str(path)

    traversal = make(
        "traversal.zip", lambda a: (a.write(photos[0], "red/a.jpg"), a.writestr("../evil.jpg", photos[1].read_bytes()))
    )
    absolute = make(
        "absolute.zip", lambda a: (a.write(photos[0], "red/a.jpg"), a.writestr("/tmp/evil.jpg", photos[1].read_bytes()))
    )
    bomb = make("bomb.zip", lambda a: a.writestr("red/bomb.png", b"\0" * (20 * 2**20)))
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"definitely not a zip")
    for path, fragment in ((traversal, ".."), (absolute, "absolute"), (bomb, "zip bomb"), (str(not_zip), "zip")):
        _assert_clear_refusal(lambda: client.predict(handle_file(path), api_name="/finetune"), fragment)
    assert not (tmp_path.parent / "evil.jpg").exists() and not __import__("os").path.exists("/tmp/evil.jpg")
    result = client.predict([handle_file(str(photos[0]))], "a, b", "simple", "", 2, api_name="/classify")
    assert len(result["results"]) == 1


def test_cli_search_and_index_refuse_bad_input(capsys, tiny_spec, bad_files, photos, tmp_path):
    index = tmp_path / "index"
    assert main(["index", str(photos[0].parent), "--index", str(index), "--model", tiny_spec, "--json"]) == 0
    capsys.readouterr()
    for name, path in bad_files.items():
        assert main(["search", "--index", str(index), "--image", str(path), "--model", tiny_spec, "--json"]) == 2
        captured = capsys.readouterr()
        assert captured.out == "" and name in captured.err
    for query in ("", "   ", "- grass", "+"):
        assert main(["search", "--index", str(index), "--text", query, "--model", tiny_spec]) == 2
        assert capsys.readouterr().err.startswith("error: ")
    assert main(["index", str(tmp_path / "missing"), "--index", str(index), "--model", tiny_spec]) == 2
    assert main(["search", "--index", str(tmp_path / "no-index"), "--text", "cat", "--model", tiny_spec]) == 2


def test_image_limits_are_the_services_and_a_cli_flag(capsys, tiny_spec, tiny_weights, photos):
    """The limits are an argument of the service and a flag, not an environment variable read at import."""
    from PIL import Image

    from clipapp.app import actions
    from clipapp.app.cli import main
    from clipapp.errors import ClipAppError, ImageLoadError
    from clipapp.images.decode import ImageLimits
    from clipapp.model.loading import load_model
    from clipapp.model.service import ClipService

    width, height = Image.open(photos[0]).size
    strict = ClipService(
        load_model(tiny_spec, device="cpu", precision="fp32"), limits=ImageLimits(max_pixels=width * height - 1)
    )
    with pytest.raises(ImageLoadError, match="over the limit of"):
        strict.encode_images([photos[0]])
    with pytest.raises(ImageLoadError, match="over the limit of"):  # uploads decoded with the service's limits
        actions.load_named_images([photos[0]], limits=strict.limits)
    assert len(actions.load_named_images([photos[0]])) == 1  # the default limits let it through
    with pytest.raises(ClipAppError, match="must be positive"):
        ImageLimits(max_pixels=0)
    argv = ["classify", str(photos[0]), "--labels", "cat,dog", "--model", tiny_spec]
    assert main([*argv, "--max-pixels", str(width * height - 1)]) == 2
    assert "over the limit of" in capsys.readouterr().err
    assert main(argv) == 0
