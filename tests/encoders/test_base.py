"""The shared encode() contract, exercised with a minimal encoder defined here."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.encoders.base import Encoder
from lookalike.encoders.prep import PreprocessCfg, normalise_batch, resize_image


class MeanColour(Encoder):
    name, dim = "mean-colour", 3
    preprocess = PreprocessCfg(size=(8, 8), mean=(0, 0, 0), std=(1, 1, 1))

    def _embed(self, batch: np.ndarray) -> np.ndarray:
        return batch.reshape(len(batch), -1, 3).mean(1) + 1.0


def write(tmp: Path, n: int) -> list[Path]:
    out = []
    for i in range(n):
        p = tmp / f"{i}.png"
        Image.new("RGB", (10 + i, 12), (i * 3 % 256, 100, 200)).save(p)
        out.append(p)
    return out


def test_contract_shape_dtype_norm(tmp_path: Path) -> None:
    v = MeanColour().encode(write(tmp_path, 5), batch_size=2, show_progress=False)
    assert v.shape == (5, 3) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


def test_workers_match_in_process(tmp_path: Path) -> None:
    paths = write(tmp_path, 40)
    a = MeanColour().encode(paths, batch_size=8, show_progress=False, num_workers=0)
    b = MeanColour().encode(paths, batch_size=8, show_progress=False, num_workers=2)
    np.testing.assert_array_equal(a, b)


def test_bad_images_are_skipped_and_listed(tmp_path: Path) -> None:
    paths = write(tmp_path, 4)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    items = [paths[0], bad, paths[1], tmp_path / "missing.png", paths[2]]
    batches = list(MeanColour().encode_iter(items, batch_size=2, show_progress=False, num_workers=0))
    assert np.concatenate([b.indices for b in batches]).tolist() == [0, 2, 4]
    assert [pos for b in batches for pos, _ in b.errors] == [1, 3]
    with pytest.raises(ValueError, match="image #1 could not be encoded"):
        MeanColour().encode(items, show_progress=False)


def test_preprocess_is_data() -> None:
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    padded = np.asarray(resize_image(img, PreprocessCfg(size=(10, 10), resize="pad")))
    assert padded.shape == (10, 10, 3) and padded[0, 0].tolist() == [255, 255, 255]  # white padding
    assert padded[5, 5].tolist() == [0, 0, 0]
    squashed = np.asarray(resize_image(img, PreprocessCfg(size=(10, 10), resize="squash")))
    assert squashed.max() == 0
    x = normalise_batch(np.full((1, 2, 2, 3), 255, np.uint8), PreprocessCfg(mean=(0.5,) * 3, std=(0.5,) * 3))
    assert x.shape == (1, 3, 2, 2) and np.allclose(x, 1.0)


@pytest.mark.parametrize(("cores", "model", "descriptor"), [(1, 1, 1), (2, 1, 2), (4, 2, 4), (8, 4, 4), (64, 4, 4)])
def test_default_workers_leave_a_model_its_cores(monkeypatch: pytest.MonkeyPatch, cores: int, model: int,
                                                 descriptor: int) -> None:
    from lookalike.encoders.descriptors import ColorTextureEncoder

    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert MeanColour().default_workers() == model  # forward pass in this process: workers only decode
    assert ColorTextureEncoder.works_in_workers and ColorTextureEncoder().default_workers() == descriptor
