"""Few-shot adaptation: the zero-shot start, the head beating zero-shot, WiSE, splits, adapters on disk, partial
fine-tuning on a copy, the cache adapter, the CLI contracts, safe zip extraction and the /finetune API."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from clipapp.app.cli import main
from clipapp.classify.evaluation import evaluate_folder
from clipapp.errors import ClipAppError
from clipapp.finetune import (
    FinetuneConfig,
    FinetuneStopped,
    beats_zero_shot,
    extract_labelled_zip,
    finetune,
    finetune_folder,
    labelled_folder,
    labelled_uploads,
    plan_validation,
    stratified_folds,
    stratified_split,
)
from clipapp.finetune.adapter import adapter_paths, load_adapter
from tests.support.colour_images import CLASSES, colour_images, write_folder, write_zip


@pytest.fixture(scope="module")
def colours12():
    return labelled_uploads(colour_images(12))


@pytest.fixture(scope="module")
def head_result(tiny_service, colours12):
    return finetune(tiny_service, colours12, FinetuneConfig(mode="head", seed=0), name="colours")


# --------------------------------------------------------------------------------------------- the head
def test_zero_training_steps_is_zero_shot(tiny_service, colours12):
    result = finetune(tiny_service, colours12, FinetuneConfig(epochs=0))
    images = [image for image, _ in colour_images(2, seed=5)]
    adapted = result.adapter.classify(tiny_service, images)
    zero_shot = tiny_service.zero_shot(images, list(colours12.class_names), templates="simple")
    assert adapted.labels == zero_shot.labels
    np.testing.assert_allclose(adapted.probs, zero_shot.probs, atol=1e-5)
    assert result.after["top1"] == pytest.approx(result.before["top1"])


def test_head_beats_zero_shot_on_held_out(head_result):
    assert head_result.validation["kind"] == "kfold" and head_result.after["n"] == 36  # every image held out once
    assert head_result.before["top1"] < 0.6  # the random tiny model cannot name colours
    assert head_result.after["top1"] > head_result.before["top1"] + 0.3
    assert head_result.after["loss"] < head_result.before["loss"]
    history = head_result.history
    assert len(history["epoch"]) == len(history["val_acc"]) >= 2 and history["epoch"][0] == 0
    confusion = np.asarray(head_result.confusion_after)
    assert confusion.shape == (3, 3) and confusion.sum() == 36
    assert json.loads(json.dumps(head_result.to_dict()))["after"]["n"] == 36


def test_sign_test_lets_only_a_clear_gain_replace_zero_shot():
    targets = np.zeros(40, dtype=np.int64)
    held_out = np.arange(40)

    def logits_right(n_right: int, offset: int = 0) -> np.ndarray:
        """Two-class logits that get images offset .. offset + n_right - 1 right."""
        logits = np.tile([0.0, 1.0], (40, 1))
        logits[offset : offset + n_right] = [1.0, 0.0]
        return logits

    zero = logits_right(20)
    assert not beats_zero_shot(logits_right(22), zero, targets, held_out)  # 2 more right: noise
    assert not beats_zero_shot(logits_right(20, offset=10), zero, targets, held_out)  # as many wins as losses
    assert beats_zero_shot(logits_right(30), zero, targets, held_out)  # 10 wins, 0 losses: p = 0.001
    assert beats_zero_shot(logits_right(22), zero, targets, held_out, p_value=0.3)  # p = 0.25


def test_one_image_per_class_keeps_zero_shot_and_says_why(tiny_service):
    result = finetune(tiny_service, labelled_uploads(colour_images(1)), FinetuneConfig(epochs=5))
    zero_shot = tiny_service.text_embeddings(list(CLASSES), "simple")
    np.testing.assert_allclose(result.adapter.head, zero_shot, atol=1e-6)
    assert any("single image" in note and "second image per class" in note for note in result.notes)


@pytest.mark.parametrize("kfold_below", [20, 4])  # k-fold and a held-out split
def test_random_init_probe_never_returns_its_untrained_start(tiny_service, kfold_below):
    # shuffled labels and a huge learning rate: every trained epoch has a far worse held-out loss than the start
    items = colour_images(12)
    shuffled = np.random.default_rng(0).permutation([name for _, name in items])
    data = labelled_uploads([(image, name) for (image, _), name in zip(items, shuffled, strict=False)])
    config = FinetuneConfig(
        mode="head",
        head_init="random",
        wise_alpha=1.0,
        require_gain=False,
        epochs=3,
        lr=1e4,
        kfold_below=kfold_below,
        mixup=0.0,
        label_smoothing=0.0,
        ema=0.0,
    )
    result = finetune(tiny_service, data, config)
    assert min(result.history["val_loss"][1:]) > result.history["val_loss"][0]
    assert result.best_epoch >= 1


def test_held_out_split_early_stopping_and_refit(tiny_service, colours12):
    result = finetune(
        tiny_service, colours12, FinetuneConfig(mode="head", kfold_below=4, epochs=60, patience=3, wise_alpha=1.0)
    )
    assert result.validation["kind"] == "holdout" and result.after["n"] == 9
    assert result.after["top1"] > result.before["top1"]
    history = result.history
    best = int(np.argmin(history["val_loss"]))
    assert result.best_epoch == best  # EarlyStopping restored the best epoch...
    assert len(history["epoch"]) <= 61 and (len(history["epoch"]) == 61 or len(history["epoch"]) - 1 - best == 3)


def test_wise_alpha_zero_keeps_the_zero_shot_head(tiny_service, colours12):
    result = finetune(tiny_service, colours12, FinetuneConfig(epochs=5, wise_alpha=0.0))
    zero_shot = tiny_service.text_embeddings(list(colours12.class_names), "simple")
    np.testing.assert_allclose(result.adapter.head, zero_shot, atol=1e-6)


def test_tricks_on_cached_features_run(tiny_service, colours12):
    config = FinetuneConfig(
        mode="head",
        epochs=4,
        mixup=0.2,
        label_smoothing=0.1,
        ema=0.9,
        sam=0.05,
        focal=2.0,
        class_balanced=0.99,
        clip_grad=1.0,
        cutmix=1.0,
    )
    result = finetune(tiny_service, colours12, config)
    assert np.isfinite(result.history["train_loss"][1:]).all()
    assert any("CutMix" in note for note in result.notes)  # no pixels in head mode: said, not silently ignored


def test_progress_epochs_and_stop(tiny_service, colours12):
    seen, epochs = [], []
    finetune(
        tiny_service,
        colours12,
        FinetuneConfig(epochs=3, max_folds=2),
        progress=lambda done, total, m: seen.append(done / total),
        on_epoch=epochs.append,
    )
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen) and seen == sorted(seen)
    assert [h["epoch"][-1] for h in epochs] == [0, 1, 2, 3] * 2  # two folds, live (the refit is not plotted)
    assert [h["stage"] for h in epochs[::4]] == ["fold 1/2: ", "fold 2/2: "]
    calls = iter(range(10**6))
    result = finetune(tiny_service, colours12, FinetuneConfig(epochs=50), stop=lambda: next(calls) > 40)
    assert result.stopped and len(result.history["epoch"]) < 51
    with pytest.raises(FinetuneStopped):
        finetune(tiny_service, colours12, stop=lambda: True)


@pytest.mark.parametrize(
    "config",
    [FinetuneConfig(epochs=3, max_folds=2), FinetuneConfig(epochs=4, kfold_below=2), FinetuneConfig(mode="cache")],
    ids=["kfold", "holdout", "cache"],
)
def test_progress_counts_the_whole_plan_once(tiny_service, colours12, config):
    """The one protocol (clipapp.progress): one total for the whole plan, a monotone `done` that never passes it and
    ends at it, so the CLI's bar and the page's fraction never go back."""
    calls = []
    finetune(tiny_service, colours12, config, progress=lambda *call: calls.append(call))
    totals = {total for _, total, _ in calls}
    assert len(totals) == 1
    total = totals.pop()
    done = [d for d, _, _ in calls]
    assert done == sorted(done) and 0 <= done[0] and done[-1] == total and calls[-1][2] == "done"
    if config.mode == "cache":
        assert total == len(colours12) + 1  # the images encoded, then the blend's grid search
    elif config.kfold_below == 20:  # 2 folds and the refit, 3 epochs each: one unit an image, one an epoch
        assert total == len(colours12) + 3 * 3
        folds = [d for d, _, m in calls if m.startswith("fold")]
        assert folds == list(range(len(colours12) + 1, len(colours12) + 7))


def test_config_is_data():
    config = FinetuneConfig(mode="partial", mixup=0.2, templates=["a photo of {}."])
    assert FinetuneConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ClipAppError, match="Unknown fine-tune setting"):
        FinetuneConfig.from_dict({"learning_rate": 1})
    with pytest.raises(ClipAppError, match="WiSE alpha"):
        FinetuneConfig(wise_alpha=2).validate()
    with pytest.raises(ClipAppError, match="mode"):
        FinetuneConfig(mode="full").validate()
    # a schedule left unset is the mode's own; one given is kept; a previous session's settings still load
    assert (FinetuneConfig(mode="head").epochs, FinetuneConfig(mode="partial").epochs) == (80, 30)
    assert FinetuneConfig(mode="partial", epochs=7, views=1).to_dict()["epochs"] == 7
    old = {k: v for k, v in FinetuneConfig(mode="head").to_dict().items() if k not in ("views", "mix_space")}
    assert FinetuneConfig.from_dict(old).views == 1


# --------------------------------------------------------------------------------------------- splits
def test_stratified_split_keeps_every_class_in_both_parts():
    targets = np.repeat(np.arange(5), [2, 3, 4, 9, 20])
    for seed in range(5):
        train, val = stratified_split(targets, seed=seed)
        assert set(targets[train]) == set(targets[val]) == set(range(5))
        assert not set(train) & set(val) and len(train) + len(val) == len(targets)
    train, val = stratified_split(targets, val_per_class=1)
    assert np.bincount(targets[val]).tolist() == [1] * 5


def test_k_fold_when_few_shots():
    targets = np.repeat(np.arange(4), 3)
    folds = stratified_folds(targets, 3, seed=1)
    assert sorted(np.concatenate(folds).tolist()) == list(range(12))
    assert all(np.bincount(targets[f], minlength=4).tolist() == [1, 1, 1, 1] for f in folds)
    plan = plan_validation(targets, FinetuneConfig())
    assert plan.kind == "kfold" and len(plan.splits) == 3
    one_shot = plan_validation(np.arange(3), FinetuneConfig())  # 1 image per class: no fold may be empty
    assert one_shot.kind == "kfold" and all(len(train) and len(val) for train, val in one_shot.splits)
    assert plan_validation(np.repeat(np.arange(3), 4), FinetuneConfig(kfold_below=4)).kind == "holdout"
    assert plan_validation(np.repeat(np.arange(3), 20), FinetuneConfig()).kind == "holdout"


def test_k_fold_fine_tune_reports_out_of_fold(tiny_service):
    result = finetune(tiny_service, labelled_uploads(colour_images(2)), FinetuneConfig(epochs=10))
    assert result.validation["kind"] == "kfold" and result.after["n"] == 6
    assert result.after["top1"] >= result.before["top1"]


# --------------------------------------------------------------------------------------------- adapters on disk
def test_adapter_round_trip_safetensors_and_json(tiny_service, head_result, tmp_path, tiny_spec):
    weights, meta = head_result.adapter.save(tmp_path / "colours")
    assert (weights, meta) == adapter_paths(tmp_path / "colours.json")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["colours.json", "colours.safetensors"]
    header_length = int.from_bytes(weights.read_bytes()[:8], "little")  # safetensors: u64 length + JSON header
    header = json.loads(weights.read_bytes()[8 : 8 + header_length])
    assert header["head.weight"]["shape"] == [3, 32] and header["head.bias"]["shape"] == [3]
    description = json.loads(meta.read_text())
    assert description["format_version"] == 2 and description["class_names"] == ["red", "green", "blue"]
    assert description["model_spec"] == tiny_spec and description["config"]["mode"] == "head"
    assert description["metrics"]["after"]["top1"] == head_result.after["top1"]

    loaded = load_adapter(tmp_path / "colours.safetensors", expected_spec=tiny_spec)
    images = [image for image, _ in colour_images(1, seed=9)]
    np.testing.assert_allclose(
        loaded.classify(tiny_service, images).probs, head_result.adapter.classify(tiny_service, images).probs, atol=1e-6
    )
    assert loaded.classify(tiny_service, images).top(1)[0][0][0] in CLASSES
    assert loaded.cosine(tiny_service, images).shape == (3, 3)


def test_version_1_adapter_without_bias_still_loads(tiny_service, head_result, tmp_path):
    """Format 1 stored unit-norm rows and no bias; such files must keep classifying as they did."""
    from safetensors.torch import save_file

    from clipapp.storage import file_sha256

    old = head_result.adapter
    weights, meta = old.save(tmp_path / "old")
    unit_rows = old.head / np.linalg.norm(old.head, axis=1, keepdims=True)
    save_file({"head.weight": torch.from_numpy(unit_rows)}, str(weights))
    description = json.loads(meta.read_text())
    meta.write_text(json.dumps({**description, "format_version": 1, "weights_sha256": file_sha256(weights)}))

    loaded = load_adapter(tmp_path / "old")
    features = tiny_service.encode_images([image for image, _ in colour_images(1, seed=3)])
    np.testing.assert_array_equal(loaded.head_bias, np.zeros(3, dtype=np.float32))
    np.testing.assert_allclose(
        loaded.logits_from_features(features), old.logit_scale * features @ unit_rows.T, atol=1e-5
    )


def test_adapter_refused_for_another_model_or_broken_files(head_result, tmp_path):
    head_result.adapter.save(tmp_path / "a")
    with pytest.raises(ClipAppError, match="made for model"):
        load_adapter(tmp_path / "a", expected_spec="ViT-B-32:laion2b_s34b_b79k")
    with pytest.raises(ClipAppError, match="missing.json"):
        load_adapter(tmp_path / "missing")
    (tmp_path / "a.safetensors").write_bytes(b"\x80\x04not safetensors at all")
    with pytest.raises(ClipAppError, match="a.safetensors"):
        load_adapter(tmp_path / "a")
    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(ClipAppError, match="a.json"):
        load_adapter(tmp_path / "a")


# --------------------------------------------------------------------------------------------- partial and cache
def test_partial_fine_tuning_leaves_the_resident_model_alone(tiny_service, colours12, tmp_path, tiny_spec):
    before = {k: v.clone() for k, v in tiny_service.model.state_dict().items()}
    config = FinetuneConfig(mode="partial", blocks=1, epochs=3, visual_lr=1e-3, mixup=0.2, cutmix=1.0, ema=0.9)
    result = finetune(tiny_service, colours12, config)
    after = tiny_service.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    adapter = result.adapter
    assert adapter.visual_blocks == 1
    assert any(k.startswith("visual.transformer.resblocks.1.") for k in adapter.visual_state)
    assert not any(k.startswith("visual.transformer.resblocks.0.") for k in adapter.visual_state)
    images = [image for image, _ in colour_images(1, seed=3)]
    adapter.save(tmp_path / "partial")
    loaded = load_adapter(tmp_path / "partial", expected_spec=tiny_spec)
    np.testing.assert_allclose(
        loaded.classify(tiny_service, images).probs, adapter.classify(tiny_service, images).probs, atol=1e-5
    )
    # evaluate_folder() goes through the tuned tower in batches, skipping unreadable files.
    folder = tmp_path / "eval"
    labelled = colour_images(3, seed=4)
    for i, (image, name) in enumerate(labelled):
        (folder / name).mkdir(parents=True, exist_ok=True)
        image.save(folder / name / f"{i}.png")
    (folder / CLASSES[0] / "broken.png").write_bytes(b"not a png")
    probs = loaded.classify(tiny_service, [image for image, _ in labelled]).probs
    expected = np.mean([loaded.class_names[j] == name for j, (_, name) in zip(probs.argmax(1), labelled, strict=False)])
    metrics = evaluate_folder(tiny_service, folder, loaded, batch_size=4)
    assert metrics.n == len(labelled) and metrics.top1 == pytest.approx(expected)
    assert [s.path for s in metrics.skipped] == [str(folder / CLASSES[0] / "broken.png")]
    with pytest.raises(ClipAppError, match="blocks"):
        finetune(tiny_service, colours12, FinetuneConfig(mode="partial", blocks=7))


def test_cache_adapter(tiny_service, colours12, tmp_path, tiny_spec):
    result = finetune(tiny_service, colours12, FinetuneConfig(mode="cache"))
    adapter = result.adapter
    assert adapter.cache_keys.shape == (36, 32) and adapter.cache_values.shape == (36, 3)
    assert adapter.cache_alpha > 0 and adapter.cache_beta > 0
    assert result.after["top1"] > result.before["top1"]
    adapter.save(tmp_path / "cache")
    images = [image for image, _ in colour_images(1, seed=4)]
    np.testing.assert_allclose(
        load_adapter(tmp_path / "cache").classify(tiny_service, images).probs,
        adapter.classify(tiny_service, images).probs,
        atol=1e-6,
    )


# --------------------------------------------------------------------------------------------- CLI
def run_json(capsys, *argv) -> dict:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_finetune_eval_classify_contracts(capsys, tiny_spec, tmp_path):
    data = write_folder(tmp_path / "data", colour_images(8))
    out = tmp_path / "adapters" / "colours"
    result = run_json(
        capsys,
        "finetune",
        str(data),
        "--out",
        str(out),
        "--model",
        tiny_spec,
        "--json",
        "--epochs",
        "20",
        "--mixup",
        "0.2",
        "--label-smoothing",
        "0.1",
        "--ema",
        "0.9",
        "--seed",
        "1",
    )
    assert {"before", "after", "adapter", "history"} <= set(result)
    assert result["adapter"] == str(out) + ".safetensors" and Path(result["adapter"]).is_file()
    assert set(result["before"]) >= {"top1", "top5", "n"} and result["after"]["n"] == result["before"]["n"] == 24
    assert result["class_names"] == ["blue", "green", "red"]  # the folder names, sorted
    assert result["config"]["mixup"] == 0.2 and result["config"]["ema"] == 0.9

    zero_shot = run_json(capsys, "eval", str(data), "--model", tiny_spec, "--json")
    adapted = run_json(capsys, "eval", str(data), "--model", tiny_spec, "--adapter", result["adapter"], "--json")
    assert set(zero_shot) == set(adapted) >= {"top1", "top5", "n", "per_class", "confusion"} and adapted["n"] == 24
    assert adapted["top1"] > zero_shot["top1"]

    image = next((data / "red").iterdir())
    classified = run_json(
        capsys, "classify", str(image), "--model", tiny_spec, "--adapter", str(out), "--json", "--top-k", "2"
    )
    assert classified["model"] == f"{tiny_spec} + adapter colours"
    assert len(classified["results"][0]["top"]) == 2 and classified["results"][0]["top"][0]["label"] in CLASSES


def test_cli_prints_the_plan_before_training(capsys, tiny_spec, tmp_path):
    """The plan line (what runs, about how long, the budget) comes before the progress bar; the report ends with
    what ran against its estimate."""
    data = write_folder(tmp_path / "data", colour_images(4))
    argv = ["finetune", str(data), "--out", str(tmp_path / "p"), "--model", tiny_spec, "--budget", "5m"]
    assert main([*argv, "--mode", "head"]) == 0
    out, err = capsys.readouterr()
    plan = re.search(r"plan: about \d+ s: head, \d+ epochs x \d+ folds \(budget 300 s\)", err)
    assert plan is not None and plan.start() == 0  # first, before the (here disabled: no terminal) progress bar
    assert re.search(r"ran: head, \d+ epochs x \d+ folds; estimated [\d.]+ s, took [\d.]+ s", out)


def test_cli_errors_are_messages(capsys, tiny_spec, tmp_path):
    data = write_folder(tmp_path / "data", colour_images(2))
    assert (
        main(
            [
                "finetune",
                str(data),
                "--out",
                str(tmp_path / "x"),
                "--model",
                tiny_spec,
                "--mode",
                "partial",
                "--blocks",
                "9",
                "--json",
            ]
        )
        == 2
    )
    assert "blocks" in capsys.readouterr().err
    assert main(["eval", str(data), "--model", tiny_spec, "--adapter", str(tmp_path / "nope")]) == 2
    assert "nope.json" in capsys.readouterr().err


def test_finetune_folder_from_zip_and_evaluate(tiny_service, tmp_path):
    archive = write_zip(tmp_path / "set.zip", colour_images(4), top="my photos/")
    result = finetune_folder(tiny_service, archive, FinetuneConfig(epochs=5), out=tmp_path / "z")
    assert result.class_names == ["blue", "green", "red"]
    metrics = evaluate_folder(tiny_service, archive, load_adapter(tmp_path / "z"))
    assert metrics.n == 12 and 0 <= metrics.top1 <= 1


# --------------------------------------------------------------------------------------------- zip safety
@pytest.mark.parametrize(
    "name, message",
    [
        ("../evil.png", r"\.\."),
        ("red/../../evil.png", r"\.\."),
        ("/etc/evil.png", "absolute"),
        ("C:/evil.png", "absolute"),
    ],
)
def test_zip_refuses_escaping_names(tmp_path, name, message):
    path = tmp_path / "bad.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("red/ok.png", b"x")
        archive.writestr(name, b"x")
    with pytest.raises(ClipAppError, match=message):
        extract_labelled_zip(path, tmp_path / "out")
    assert not (tmp_path / "evil.png").exists()


def test_zip_refuses_symlinks_bombs_and_floods(tmp_path):
    link = zipfile.ZipInfo("red/link.png")
    link.external_attr = 0o120777 << 16
    with zipfile.ZipFile(tmp_path / "link.zip", "w") as archive:
        archive.writestr(link, "/etc/passwd")
    with pytest.raises(ClipAppError, match="symbolic link"):
        extract_labelled_zip(tmp_path / "link.zip", tmp_path / "out1")

    with zipfile.ZipFile(tmp_path / "bomb.zip", "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("red/bomb.png", b"\0" * (20 * 2**20))  # 20 MiB of zeros deflate to ~20 KiB
    with pytest.raises(ClipAppError, match="zip bomb"):
        extract_labelled_zip(tmp_path / "bomb.zip", tmp_path / "out2")
    with pytest.raises(ClipAppError, match="zip bomb"):
        extract_labelled_zip(tmp_path / "bomb.zip", tmp_path / "out3", max_total_bytes=2**20, max_ratio=10**9)

    with zipfile.ZipFile(tmp_path / "many.zip", "w") as archive:
        for i in range(30):
            archive.writestr(f"red/{i}.png", b"x")
    with pytest.raises(ClipAppError, match="at most 20"):
        extract_labelled_zip(tmp_path / "many.zip", tmp_path / "out4", max_files=20)
    with pytest.raises(ClipAppError, match="not a readable zip"):
        extract_labelled_zip(tmp_path / "link.zip.missing", tmp_path / "out5")


def test_zip_extracts_only_images_and_finds_the_class_folders(tmp_path):
    archive = write_zip(tmp_path / "good.zip", colour_images(2), top="top/")
    with zipfile.ZipFile(archive, "a") as z:
        z.writestr("top/red/notes.txt", b"not an image")
        z.writestr("__MACOSX/top/red/._000.png", b"junk")
    root = extract_labelled_zip(archive, tmp_path / "out")
    assert root.name == "top" and sorted(p.name for p in root.iterdir()) == ["blue", "green", "red"]
    assert labelled_folder(root).counts().tolist() == [2, 2, 2]
    assert not list(root.rglob("*.txt")) and not (tmp_path / "out" / "__MACOSX").exists()


# --------------------------------------------------------------------------------------------- the web API
def test_gradio_finetune_endpoint(client, tmp_path):
    from gradio_client import handle_file

    assert "/finetune" in client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    archive = write_zip(tmp_path / "colours.zip", colour_images(6))
    summary, curves, confusion, report, files = client.predict(
        zip_file=handle_file(str(archive)), epochs=15, api_name="/finetune"
    )
    assert report["before"]["n"] == report["after"]["n"] > 0
    assert report["after"]["top1"] >= report["before"]["top1"]
    assert "zero-shot" in summary and report["adapter"] in summary
    assert curves["plot"].startswith("data:image") and confusion["plot"].startswith("data:image")
    assert sorted(Path(f).suffix for f in files) == [".json", ".safetensors"]
    # the session's adapter now classifies in the Zero-shot tab (labels are not needed)
    image = write_folder(tmp_path / "one", colour_images(1, seed=8)[:1]) / "red" / "000.png"
    result = client.predict([handle_file(str(image))], "", "simple", "", 2, api_name="/classify")
    assert result["model"].endswith(f"+ adapter {report['adapter']}")
    assert {t["label"] for t in result["results"][0]["top"]} <= set(CLASSES)


def test_the_page_shows_the_plan_before_training_ends(client, tmp_path):
    """The /finetune stream (what the page draws) says the planner's choice and estimate before the summary, and the
    summary says what ran against its estimate."""
    from gradio_client import handle_file

    archive = write_zip(tmp_path / "colours.zip", colour_images(4))
    job = client.submit(zip_file=handle_file(str(archive)), mode="head", budget="120", api_name="/finetune")
    final = job.result()[0]
    summaries = [output[0] for output in job.outputs()]
    planned = next(i for i, text in enumerate(summaries) if text and text.startswith("**Plan:** about "))
    assert "budget 120 s" in summaries[planned] and "head" in summaries[planned]
    assert planned < len(summaries) - 1 and "is now used by the Zero-shot tab" not in summaries[planned]
    assert re.search(r"Ran: head, \d+ epochs x \d+ folds; estimated about \d+ s, took \d+ s", final)


def test_an_adapter_is_private_to_the_session_that_trained_it(app_url, tmp_path, photos):
    """Alice's fine-tuned model answers Alice's classify calls only; Bob still gets plain zero-shot."""
    import zipfile

    from gradio_client import Client, handle_file

    archive = tmp_path / "two_classes.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for i, photo in enumerate(photos[:6]):
            zf.write(photo, f"{'odd' if i % 2 else 'even'}/{photo.name}")
    alice, bob = Client(app_url, verbose=False), Client(app_url, verbose=False)
    alice.predict(handle_file(str(archive)), api_name="/finetune")
    mine = alice.predict([handle_file(str(photos[0]))], "x, y", "simple", "", 2, api_name="/classify")
    theirs = bob.predict([handle_file(str(photos[0]))], "x, y", "simple", "", 2, api_name="/classify")
    assert "adapter" in mine["model"] and {t["label"] for t in mine["results"][0]["top"]} == {"odd", "even"}
    assert "adapter" not in theirs["model"] and {t["label"] for t in theirs["results"][0]["top"]} == {"x", "y"}
