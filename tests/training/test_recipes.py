"""Training runs on tiny generated catalogues (4 classes of coloured shapes, 32 px): each recipe learns."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookalike.training import OTHER, train
from lookalike.training.recipes import ClassifierRecipe

from .conftest import make_shapes_catalogue

FAST = {"image_size": 32, "batch_size": 32, "lr": 5e-3, "show_progress": False}


def test_classifier_learns_well_above_chance(trained_classifier) -> None:
    r = trained_classifier
    assert r.recipe == "classifier" and r.epochs == 6 and r.resumed_from == 0
    last = r.history[-1]
    assert last["val_acc"] >= 0.75  # chance is 0.25
    assert r.history[-1]["loss"] < r.history[0]["loss"]
    rep = r.report
    assert rep["val_top1"] >= 0.75 and rep["val_top1_top20"] >= 0.75
    assert rep["p_at_10"] >= 0.6
    assert {"confusions", "train_seconds", "p_at_10_worst_classes", "top20_classes"} <= set(rep)
    folder = r.model_dir
    for f in ("checkpoint.pt", "model.pt", "training.json", "report.json", "curves.png", "model.onnx"):
        assert (folder / f).is_file(), f
    meta = json.loads((folder / "training.json").read_text())
    assert meta["status"] == "done" and len(meta["epochs"]) == 6
    assert meta["preprocess"]["size"] == [32, 32]
    assert meta["labels"]["classes"] == sorted(meta["labels"]["classes"])
    assert (folder / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_autoencoder_loss_decreases(shapes_catalogue: Path, tmp_path: Path) -> None:
    r = train(shapes_catalogue, tmp_path / "ws", label="category", recipe="autoencoder", epochs=4, **FAST)
    losses = [h["loss"] for h in r.history]
    assert losses[-1] < 0.7 * losses[0]
    assert r.history[-1]["val_loss"] < r.history[0]["val_loss"]
    assert "p_at_10" in r.report and "val_top1" not in r.report  # retrieval measured, no class head


def test_contrastive_is_the_default_without_labels_and_its_loss_decreases(shapes_catalogue: Path,
                                                                           tmp_path: Path) -> None:
    r = train(shapes_catalogue, tmp_path / "ws", label=None, epochs=4, **FAST)
    assert r.recipe == "contrastive"
    losses = [h["loss"] for h in r.history]
    assert losses[-1] < losses[0]
    assert "p_at_10" not in r.report  # no labels, nothing to measure against


def test_resume_continues_at_the_interrupted_epoch(shapes_catalogue: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # the thread count follows the load average and changes the float sums: pin it to compare runs exactly
    monkeypatch.setenv("LOOKALIKE_TORCH_THREADS", "1")
    ws = tmp_path / "ws"
    calls = {"n": 0}
    real = ClassifierRecipe.evaluate

    def interrupted(self: ClassifierRecipe) -> dict[str, float]:
        calls["n"] += 1
        if calls["n"] == 3:  # Ctrl-C during epoch 3's validation: epochs 1 and 2 are saved
            raise KeyboardInterrupt
        return real(self)

    monkeypatch.setattr(ClassifierRecipe, "evaluate", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(shapes_catalogue, ws, label="category", epochs=4, min_count=5, name="r", **FAST)
    monkeypatch.setattr(ClassifierRecipe, "evaluate", real)
    first = json.loads((ws / "models" / "r" / "training.json").read_text())
    assert first["status"] == "running" and [h["epoch"] for h in first["epochs"]] == [1, 2]

    resumed = train(ws, ws, label="category", epochs=4, min_count=5, name="r", **FAST)  # source: the workspace
    assert resumed.resumed_from == 2 and resumed.epochs == 4
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == first["epochs"]

    straight = train(ws, ws, label="category", epochs=4, min_count=5, name="straight", **FAST)
    for a, b in zip(resumed.history, straight.history):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-3, abs=1e-4)  # same run, interrupted or not

    done = train(ws, ws, label="category", epochs=4, min_count=5, name="r", **FAST)
    assert done.resumed_from == 4 and done.history == resumed.history  # nothing left to do
    with pytest.raises(ValueError, match="another configuration"):
        train(ws, ws, label="category", epochs=4, min_count=5, name="r", **{**FAST, "lr": 1e-3})
    fresh = train(ws, ws, label="category", epochs=2, min_count=5, name="r", resume=False, **FAST)
    assert fresh.resumed_from == 0 and fresh.epochs == 2


def test_rare_classes_train_as_other(tmp_path: Path) -> None:
    cat = make_shapes_catalogue(tmp_path / "cat", per_class=15, rare=4)
    r = train(cat, tmp_path / "ws", label="category", epochs=3, min_count=10, **FAST)
    meta = json.loads((r.model_dir / "training.json").read_text())
    assert meta["labels"]["classes"][-1] == OTHER and len(meta["labels"]["classes"]) == 5
    assert meta["labels"]["rare_grouped_as_other"] == ["circle-black"]
    assert meta["labels"]["counts"]["circle-black"] == 4


def test_bad_arguments_are_clear_errors(shapes_catalogue: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown recipe"):
        train(shapes_catalogue, tmp_path / "ws", recipe="gan")
    with pytest.raises(ValueError, match="at least 2 classes"):
        train(shapes_catalogue, tmp_path / "ws", label="category", recipe="classifier", min_count=1000, **FAST)
    with pytest.raises(ValueError, match="autoencoder"):
        train(shapes_catalogue, tmp_path / "ws", recipe="autoencoder", backbone="timm:resnet18", **FAST)


def test_frozen_pretrained_backbone_learns_and_exports(shapes_catalogue: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    """Transfer learning from the installed EfficientNet-Lite0 weights: backbone features computed once (no
    mirror views here) and kept for the next head, only the layers above train; ONNX matches torch."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from lookalike.training.models import load_trained

    r = train(shapes_catalogue, tmp_path / "ws", label="category", backbone="timm:tf_efficientnet_lite0",
              epochs=8, min_count=5, feature_mirror=False, name="lite0", **FAST)
    meta = json.loads((r.model_dir / "training.json").read_text())
    assert meta["config"]["freeze"] and meta["weights_source"].startswith("package:")
    assert meta["preprocess"]["mean"] == [0.5, 0.5, 0.5]  # the backbone's own normalisation
    assert r.report["val_top1"] >= 0.75 and r.report["p_at_10"] >= 0.6  # chance is 0.25
    model = load_trained(r.model_dir, meta["model"])
    x = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        emb, logits = model(torch.from_numpy(x))
    sess = ort.InferenceSession(str(r.model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    o_emb, o_logits = sess.run(None, {"images": x})
    np.testing.assert_allclose(o_emb, emb.numpy(), atol=1e-4)
    np.testing.assert_allclose(o_logits, logits.numpy(), atol=1e-4)
    # a second head (with a hidden layer) on the same frozen backbone reuses the cached features
    with caplog.at_level("INFO", logger="lookalike.training.features"):
        mlp = train(shapes_catalogue, tmp_path / "ws", label="category", backbone="timm:tf_efficientnet_lite0",
                    epochs=8, min_count=5, feature_mirror=False, neck_hidden=64, name="lite0-mlp", **FAST)
    assert any("backbone features from" in m for m in caplog.messages)
    assert mlp.report["val_top1"] >= 0.75
    assert json.loads((mlp.model_dir / "training.json").read_text())["model"]["arch"] == {"neck_hidden": 64}


def test_mirror_tta_is_measured_and_travels_with_the_model(shapes_catalogue: Path, tmp_path: Path) -> None:
    """A finished model re-run with ``tta="mirror"`` is only re-measured (on its cached mirror views), and the
    ``trained:`` encoder then applies the same augmentation without being told."""
    from lookalike.encoders import create_encoder

    ws = tmp_path / "ws"
    kw = dict(label="category", backbone="timm:tf_efficientnet_lite0", epochs=3, min_count=5, name="m", **FAST)
    plain = train(shapes_catalogue, ws, **kw)
    mirrored = train(ws, ws, tta="mirror", **kw)
    assert mirrored.resumed_from == 3 and mirrored.history == plain.history  # no epoch trained again
    assert (plain.report["tta"], mirrored.report["tta"]) == ("none", "mirror")
    assert mirrored.report["val_top1"] >= 0.75  # chance is 0.25
    assert json.loads((mirrored.model_dir / "training.json").read_text())["tta"] == "mirror"
    assert create_encoder(f"trained:{mirrored.model_dir}").tta == "mirror"
    with pytest.raises(ValueError, match="valid: none, mirror"):
        train(ws, ws, tta="rotate", **kw)
    with pytest.raises(ValueError, match="--mirror-features"):
        train(shapes_catalogue, ws, **{**kw, "name": "flat"}, feature_mirror=False, tta="mirror")


def test_shopper_views_are_cached_trained_on_and_measured(shapes_catalogue: Path, tmp_path: Path) -> None:
    """domain_views: each photo also re-staged as a phone photo (on generated backgrounds and a tiny room
    bank), features of every view cached; the head learns from all views and is scored on the re-staged
    held-out photos too."""
    import numpy as np
    from PIL import Image

    rooms = tmp_path / "rooms"
    rooms.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(rooms / f"r{i}.jpg")
    r = train(shapes_catalogue, tmp_path / "ws", label="category", backbone="timm:tf_efficientnet_lite0",
              epochs=6, min_count=5, feature_mirror=False, domain_views=2, backgrounds=rooms,
              domain={"p_jpeg": 0.0}, name="shopper", **FAST)
    meta = json.loads((r.model_dir / "training.json").read_text())
    cfg = meta["config"]
    assert cfg["domain_views"] == 2 and cfg["domain"]["p_jpeg"] == 0.0 and cfg["backgrounds"] == str(rooms)
    cached = list((tmp_path / "ws" / "cache").glob("features-*-plain-shopper2-*.npy"))
    assert len(cached) == 1 and np.load(cached[0]).shape[1] == 3  # the photo + 2 shopper-like views
    last = meta["epochs"][-1]
    assert 0.0 <= last["val_acc_shopper_like"] <= 1.0
    assert r.report["val_top1"] >= 0.75  # the studio photos still classify (chance 0.25)
    with pytest.raises(ValueError, match="unknown domain settings"):
        train(shapes_catalogue, tmp_path / "ws", label="category", backbone="timm:tf_efficientnet_lite0",
              domain_views=1, domain={"sparkle": 1.0}, **FAST)
    with pytest.raises(ValueError, match="frozen pretrained backbone"):
        train(shapes_catalogue, tmp_path / "ws", label="category", domain_views=1, **FAST)


def test_late_blocks_fine_tune_from_cached_early_blocks(shapes_catalogue: Path, tmp_path: Path) -> None:
    """tune_from: the first blocks' output is cached, the later blocks train (their weights move, the early
    ones do not), and the saved model is the whole network: early + late reproduce it."""
    import numpy as np
    import torch

    from lookalike.training.models import TimmBackbone, build_model, load_trained

    r = train(shapes_catalogue, tmp_path / "ws", label="category", backbone="timm:tf_efficientnet_lite0",
              epochs=4, min_count=5, feature_mirror=False, tune_from=5, name="late", **FAST)
    assert r.report["val_top1"] >= 0.75  # chance 0.25
    meta = json.loads((r.model_dir / "training.json").read_text())
    tuned = load_trained(r.model_dir, meta["model"])
    start = build_model(meta["model"], pretrained=True)
    before, after = start.backbone.body, tuned.backbone.body
    assert torch.equal(before.blocks[4][0].conv_pw.weight, after.blocks[4][0].conv_pw.weight)  # frozen
    assert not torch.equal(before.blocks[5][0].conv_pw.weight, after.blocks[5][0].conv_pw.weight)  # trained
    bb: TimmBackbone = tuned.backbone
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32))
    with torch.no_grad():
        torch.testing.assert_close(bb.late(bb.early(x, 5), 5), bb(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="tune_from must be between 1 and"):
        bb.early(x, 7)
