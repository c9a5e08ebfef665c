"""A built 60-product workspace, copied fresh for each test that changes it."""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from lookalike.demo import COLOURS, draw_product, make_catalogue
from lookalike.pipeline import build


@pytest.fixture(scope="session")
def live_built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("live")
    csv = make_catalogue(root / "catalogue", n=60)
    build(csv, root / "ws", encoder="color-texture", k=10, show_progress=False, num_workers=0)
    return root / "ws"


@pytest.fixture
def fresh_ws(live_built: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(live_built, ws)
    return ws


@pytest.fixture
def new_image() -> Callable[..., object]:
    def make(shape: str = "circle", colour: str = "Red", seed: int = 99):  # type: ignore[no-untyped-def]
        return draw_product(shape, COLOURS[colour], np.random.default_rng(seed))

    return make
