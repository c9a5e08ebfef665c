from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from lookalike.training.augment import to_float
from lookalike.training.domain import (
    DomainCfg,
    ShopperAugment,
    backgrounds,
    bank_crops,
    fabric_texture,
    flat_texture,
    gradient_texture,
    ikea_room_paths,
    load_background_bank,
    product_mask,
    wood_texture,
)

H, W = 64, 48
COLOUR = (200, 40, 60)


def _canvas(n: int = 8, hole: bool = False) -> tuple[torch.Tensor, np.ndarray]:
    """White studio canvases with a coloured ellipse (optionally with a white print inside), and its mask."""
    yy, xx = np.mgrid[:H, :W]
    shape = ((yy - 32) / 22.0) ** 2 + ((xx - 24) / 15.0) ** 2 <= 1.0
    x = np.full((n, H, W, 3), 255, np.uint8)
    x[:, shape] = COLOUR
    if hole:
        x[:, 26:34, 20:28] = 255  # a white logo on the garment: product, not background
    return torch.from_numpy(x), shape


def _tiny_bank(n: int = 3, side: int = 40) -> torch.Tensor:
    """Room stand-ins with no green at all and some structure, so crops are recognisable."""
    g = torch.Generator().manual_seed(0)
    bank = torch.zeros(n, side, side, 3, dtype=torch.uint8)
    bank[..., 0] = torch.randint(30, 220, (n, side, side), generator=g, dtype=torch.uint8)
    bank[..., 2] = torch.linspace(0, 255, side).to(torch.uint8).view(1, 1, side)
    return bank


def test_output_shape_range_and_determinism() -> None:
    x, _ = _canvas()
    aug = ShopperAugment(replace(DomainCfg(), p_jpeg=0.5), bank=_tiny_bank())
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == (8, 3, H, W) and a.dtype == torch.float32
    assert torch.isfinite(a).all() and float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert (a - c).abs().mean() > 0.01


def test_product_mask_marks_the_shape_and_not_the_white() -> None:
    x, shape = _canvas(2, hole=True)
    m = product_mask(to_float(x), thresh=0.92)
    assert m.shape == (2, 1, H, W) and float(m.min()) >= 0.0 and float(m.max()) <= 1.0
    pred, truth = m[0, 0].numpy() > 0.5, shape
    assert (pred & truth).sum() / (pred | truth).sum() > 0.8
    assert float(m[:, :, :6, :6].max()) < 0.01  # the studio white
    assert float(m[:, :, 28:32, 22:26].min()) > 0.99  # the white print inside stays product


def test_product_mask_keeps_gaps_open_to_the_border_as_background() -> None:
    x = np.full((1, H, W, 3), 255, np.uint8)
    x[0, 8:56, 8:18] = x[0, 8:56, 30:40] = x[0, 8:16, 8:40] = (30, 30, 120)  # trousers: the legs' gap opens down
    m = product_mask(to_float(torch.from_numpy(x)))[0, 0]
    assert float(m[20:56, 20:28].max()) < 0.01
    assert float(m[30, 12]) > 0.99 and float(m[30, 35]) > 0.99


def test_composite_replaces_the_white_and_keeps_the_product() -> None:
    x, _ = _canvas(16)
    out = ShopperAugment(replace(DomainCfg.none(), p_composite=1.0))(x, torch.Generator().manual_seed(0))
    corners = torch.cat([out[:, :, :4, :4], out[:, :, -4:, -4:]], 2).flatten(1)
    assert int((corners < 0.99).any(1).sum()) >= 14  # flat backgrounds may be white-ish, but seldom all of them
    assert float((corners - 1).abs().mean()) > 0.1
    centre = out[:, :, 32, 24] * 255
    assert torch.allclose(centre, torch.tensor(COLOUR, dtype=torch.float32).expand_as(centre), atol=0.5)


def test_geometry_fills_off_frame_with_background_never_black() -> None:
    x, _ = _canvas(4)
    bank = torch.zeros(2, 16, 16, 3, dtype=torch.uint8)
    bank[...] = torch.tensor([10, 200, 90], dtype=torch.uint8)
    weights = (0.0, 0.0, 0.0, 0.0, 1.0)
    cfg = replace(DomainCfg.none(), p_composite=1.0, bg_weights=weights, scale=(0.5, 0.5), rotate=20.0,
                  perspective=0.12)
    out = ShopperAugment(cfg, bank=bank)(x, torch.Generator().manual_seed(0))
    assert torch.allclose(out[:, :, 0, 0] * 255, torch.tensor([10.0, 200.0, 90.0]).expand(4, 3), atol=0.5)
    white = ShopperAugment(replace(cfg, p_composite=0.0))(x, torch.Generator().manual_seed(0))
    assert torch.allclose(white[:, :, 0, 0], torch.ones(4, 3), atol=1e-5)


def test_flip_mirrors_exactly() -> None:
    x, _ = _canvas(2)
    x[:, 10:20, 4:10] = torch.tensor([0, 0, 255], dtype=torch.uint8)  # break the symmetry
    out = ShopperAugment(replace(DomainCfg.none(), hflip=1.0))(x, torch.Generator())
    assert torch.allclose(out, torch.flip(to_float(x), dims=[3]), atol=1e-5)


def test_shadow_only_darkens() -> None:
    x, _ = _canvas(8)
    out = ShopperAugment(replace(DomainCfg.none(), p_shadow=1.0))(x, torch.Generator().manual_seed(0))
    ratio = out / to_float(x)
    assert float(ratio.max()) <= 1.0 + 1e-6
    assert bool((ratio.flatten(1).amin(1) < 0.9).all())  # every image got a visible shadow


@pytest.mark.parametrize("gen_fn", [wood_texture, fabric_texture, gradient_texture, flat_texture])
def test_background_generators_are_textured_and_in_range(gen_fn) -> None:
    bg = gen_fn(6, 32, 24, torch.Generator().manual_seed(0))
    assert bg.shape == (6, 3, 32, 24) and float(bg.min()) >= 0.0 and float(bg.max()) <= 1.0
    flat = bg.flatten(1)
    assert bool((flat.amax(1) - flat.amin(1) > 1e-3).all())  # not one constant colour
    assert float(bg.mean(dim=(2, 3)).std(0).max()) > 0.01  # and not the same colour for every image


def test_flat_backgrounds_include_light_and_dark() -> None:
    means = flat_texture(200, 8, 8, torch.Generator().manual_seed(0)).mean(dim=(1, 2, 3))
    assert float((means > 0.7).float().mean()) > 0.25 and float((means < 0.3).float().mean()) > 0.15


def test_bank_crops_and_mixing() -> None:
    bank = _tiny_bank()
    crops = bank_crops(bank, 5, 32, 24, torch.Generator().manual_seed(0))
    assert crops.shape == (5, 3, 32, 24) and float(crops[:, 1].abs().max()) == 0.0  # the bank has no green
    assert bool((crops.flatten(1).amax(1) > crops.flatten(1).amin(1)).all())
    only_bank = (0.0, 0.0, 0.0, 0.0, 1.0)
    mixed = backgrounds(5, 32, 24, torch.Generator().manual_seed(0), bank=bank, weights=only_bank)
    assert float(mixed[:, 1].abs().max()) == 0.0
    with pytest.raises(ValueError):
        backgrounds(5, 32, 24, torch.Generator(), bank=None, weights=only_bank)


def test_load_background_bank_and_room_paths(tmp_path: Path) -> None:
    rooms = tmp_path / "images" / "room_scenes"
    rooms.mkdir(parents=True)
    wide = np.zeros((30, 60, 3), np.uint8)
    wide[:, 15:45] = (250, 0, 0)  # the centre square is red, the sides black
    Image.fromarray(wide).save(rooms / "a.jpg", quality=95)
    Image.fromarray(np.full((50, 40, 3), 90, np.uint8)).save(rooms / "b.jpg")
    (rooms / "broken.jpg").write_bytes(b"not a jpeg")
    paths = ikea_room_paths(tmp_path)
    assert [p.name for p in paths] == ["a.jpg", "b.jpg"]
    bank = load_background_bank(paths + [rooms / "broken.jpg"], size=16)
    assert bank.shape == (2, 16, 16, 3) and bank.dtype == torch.uint8
    assert int(bank[0, :, :, 0].min()) > 200 and int(bank[0, :, :, 1:].max()) < 40  # centre-cropped
    assert load_background_bank(paths, size=16, limit=1).shape == (1, 16, 16, 3)
    out = ShopperAugment(DomainCfg(p_composite=1.0), bank=bank)(_canvas(4)[0], torch.Generator().manual_seed(0))
    assert out.shape == (4, 3, H, W) and float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_none_is_identity_and_jpeg_is_close() -> None:
    x, _ = _canvas(3)
    x[:, 5:9, 5:9] = torch.tensor([12, 34, 56], dtype=torch.uint8)
    same = ShopperAugment(DomainCfg.none())(x, torch.Generator().manual_seed(0))
    assert same.dtype == torch.float32 and torch.equal(same, to_float(x))
    jpeg = ShopperAugment(replace(DomainCfg.none(), p_jpeg=1.0))(x, torch.Generator().manual_seed(0))
    diff = float((jpeg - to_float(x)).abs().mean())
    assert 0.0 < diff < 0.05


def test_cfg_round_trips_through_json() -> None:
    cfg = DomainCfg(rotate=5.0, scale=(0.7, 0.9), bg_weights=(1.0, 0.0, 0.0, 2.0, 0.5), jpeg_quality=(30, 60))
    back = DomainCfg.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.scale, tuple)
    assert DomainCfg.from_dict(DomainCfg.none().to_dict()) == DomainCfg.none()
