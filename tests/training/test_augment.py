from __future__ import annotations

import numpy as np
import torch

from lookalike.encoders.prep import PreprocessCfg
from lookalike.training.augment import AugmentCfg, BatchAugment, normalise, to_float


def _batch(n: int = 8, h: int = 32, w: int = 24) -> torch.Tensor:
    rng = np.random.default_rng(0)
    x = np.full((n, h, w, 3), 255, np.uint8)
    x[:, 8:24, 4:12] = rng.integers(0, 200, (n, 1, 1, 3), dtype=np.uint8)  # a coloured block, left of centre
    return torch.from_numpy(x)


def test_shapes_ranges_and_determinism() -> None:
    x = _batch()
    aug = BatchAugment(AugmentCfg.strong())
    a = aug(x, torch.Generator().manual_seed(1))
    b = aug(x, torch.Generator().manual_seed(1))
    c = aug(x, torch.Generator().manual_seed(2))
    assert a.shape == (8, 3, 32, 24) and a.dtype == torch.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_no_augmentation_is_identity_and_fill_is_white() -> None:
    x = _batch()
    same = BatchAugment(AugmentCfg.none())(x, torch.Generator().manual_seed(0))
    assert torch.allclose(same, to_float(x))
    shrink = BatchAugment(AugmentCfg(hflip=0, zoom=(0.5, 0.5), aspect=0, shift=0, brightness=0, contrast=0,
                                     saturation=0))(x, torch.Generator())
    assert torch.allclose(shrink[:, :, 0, :], torch.ones_like(shrink[:, :, 0, :]), atol=1e-5)  # white border


def test_flip_mirrors_left_right_only() -> None:
    x = _batch(1)
    flip = BatchAugment(AugmentCfg(hflip=1.0, zoom=(1, 1), aspect=0, shift=0, brightness=0, contrast=0,
                                   saturation=0))(x, torch.Generator())
    assert torch.allclose(flip, torch.flip(to_float(x), dims=[3]), atol=1e-5)


def test_normalise_uses_the_preprocess_mean_and_std() -> None:
    pre = PreprocessCfg(size=(2, 2), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    out = normalise(torch.ones(1, 3, 2, 2), pre)
    assert torch.allclose(out, torch.full((1, 3, 2, 2), 2.0))
