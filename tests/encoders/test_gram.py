"""The gram style encoder: Gram descriptors, PCA fit, save/load round trip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from lookalike.encoders import ENCODERS
from lookalike.encoders import weights as W
from lookalike.encoders.gram import STATE_JSON, STATE_NPZ, GramEncoder
from lookalike.encoders.prep import resize_to_array
from lookalike.io_utils import read_json

torch.set_num_threads(2)
BACKBONE = "test_efficientnet"
SMALL = {"backbone": BACKBONE, "image_size": 64, "dim": 6, "channels": 8, "out_indices": (1, 2)}


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(W, "_hub_reachable", lambda *a, **k: False)


@pytest.fixture(scope="module")
def backbone_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One generated backbone checkpoint, so two encoders share the same weights."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("gram") / "backbone.pth"
    torch.save(timm.create_model(BACKBONE, pretrained=False).state_dict(), path)
    return path


def _textures(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    out = []
    yy, xx = np.mgrid[0:80, 0:80]
    for i in range(n):
        freq, angle = rng.uniform(0.1, 0.8), rng.uniform(0, np.pi)
        wave = np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
        colour = rng.uniform(0, 255, 3)
        arr = 127 + wave[..., None] * (colour - 127) * (i % 3 + 1) / 3
        out.append(Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)))
    return out


def test_unfit_use_raises_clearly(backbone_ckpt: Path) -> None:
    enc = GramEncoder(checkpoint=backbone_ckpt, **SMALL)
    assert enc.needs_fit and not enc.fitted
    with pytest.raises(RuntimeError, match=r"call fit\(.*load_state"):
        enc.encode(_textures(2), show_progress=False)
    with pytest.raises(RuntimeError, match="not fitted"):
        enc.save_state(Path("/nonexistent"))


def test_descriptors_are_per_stage_normalised_gram_triangles(backbone_ckpt: Path) -> None:
    enc = GramEncoder(checkpoint=backbone_ckpt, **SMALL)
    chs = [timm.create_model(BACKBONE).feature_info[i]["num_chs"] for i in SMALL["out_indices"]]
    reduced = [min(c, SMALL["channels"]) for c in chs]
    assert enc.raw_dim == sum(c * (c + 1) // 2 for c in reduced)
    batch = np.stack([resize_to_array(im, enc.preprocess) for im in _textures(3)])
    raw = enc.descriptors(batch)
    assert raw.shape == (3, enc.raw_dim) and raw.dtype == np.float32
    start = 0
    for c in reduced:
        part = raw[:, start:start + c * (c + 1) // 2]
        np.testing.assert_allclose(np.linalg.norm(part, axis=1), 1.0, atol=1e-5)
        start += c * (c + 1) // 2
    # the diagonal of a Gram matrix is a sum of squares: never negative
    first = raw[:, : reduced[0] * (reduced[0] + 1) // 2]
    diag = [i * reduced[0] - i * (i - 1) // 2 for i in range(reduced[0])]
    assert (first[:, diag] >= 0).all()


def test_fit_save_load_round_trip(backbone_ckpt: Path, tmp_path: Path) -> None:
    images = _textures(14)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 not really a jpeg")
    enc = ENCODERS.create("gram", checkpoint=backbone_ckpt, **SMALL)
    assert isinstance(enc, GramEncoder) and enc.weights_source == "checkpoint"
    enc.fit([*images, bad], show_progress=False)  # a bad image is skipped, not fatal
    assert enc.fitted and enc.dim == 6 and enc.n_fit == 14
    v = enc.encode(images, batch_size=4, show_progress=False)
    assert v.shape == (14, 6) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.encode(images, batch_size=14, show_progress=False), v, atol=1e-5)

    enc.save_state(tmp_path / "state")
    assert {p.name for p in (tmp_path / "state").iterdir()} == {STATE_NPZ, STATE_JSON}  # no temp files left
    meta = read_json(tmp_path / "state" / STATE_JSON)
    assert meta["dim"] == 6 and meta["n_fit"] == 14 and meta["weights"] == "checkpoint"

    again = GramEncoder(checkpoint=backbone_ckpt, seed=123, **SMALL)  # projections come from the state
    with pytest.raises(FileNotFoundError):
        again.load_state(tmp_path / "elsewhere")
    again.load_state(tmp_path / "state")
    assert again.fitted and again.dim == 6 and again.info()["fitted"]
    np.testing.assert_allclose(again.encode(images, batch_size=4, show_progress=False), v, atol=1e-6)

    other = GramEncoder(checkpoint=backbone_ckpt, **{**SMALL, "channels": 4})
    with pytest.raises(ValueError, match="channels"):
        other.load_state(tmp_path / "state")


def test_small_catalogue_caps_dim_and_sampling_is_seeded(backbone_ckpt: Path) -> None:
    enc = GramEncoder(checkpoint=backbone_ckpt, max_fit_images=5, **{**SMALL, "dim": 50})
    enc.fit(_textures(9), show_progress=False)
    assert enc.n_fit == 5 and enc.dim == 4  # 5 centred samples span at most 4 directions
    assert enc.encode(_textures(2), show_progress=False).shape == (2, 4)
    with pytest.raises(ValueError, match="at least 2"):
        GramEncoder(checkpoint=backbone_ckpt, **SMALL).fit(_textures(1), show_progress=False)


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="out_indices"):
        GramEncoder(backbone=BACKBONE, pretrained=False, out_indices=(1, 9))
    with pytest.raises(ValueError, match="dim"):
        GramEncoder(backbone=BACKBONE, pretrained=False, dim=0)
