"""A tiny built workspace (61 generated products, weight-free encoder) shared by the service tests."""
from __future__ import annotations

import csv as csvmod
import io
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from lookalike.demo import draw_product, make_catalogue
from lookalike.pipeline import build
from lookalike.recommender import Recommender
from lookalike.service.app import create_app
from lookalike.settings import Settings

N_PRODUCTS = 61
ODD_ID = "AB/12 x+é"  # a product id with a slash, a space, a plus and a non-ASCII letter


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(catalogue csv, workspace): 60 products, 4 shapes (the categories) x 5 colours with colour/gender/price
    attributes, plus one purple square whose id needs URL-encoding."""
    root = tmp_path_factory.mktemp("service")
    csv = make_catalogue(root / "catalogue", n=N_PRODUCTS - 1)
    draw_product("square", (120, 40, 160), np.random.default_rng(1)).save(root / "catalogue" / "images" / "odd.png")
    with csv.open("a", newline="") as f:
        csvmod.writer(f).writerow([ODD_ID, "Purple square", "square", "images/odd.png", "Purple", "Men", "99"])
    ws = root / "ws"
    build(csv, ws, encoder="color-texture", show_progress=False, num_workers=0)
    return csv, ws


@pytest.fixture(scope="session")
def workspace(built: tuple[Path, Path]) -> Path:
    return built[1]


@pytest.fixture(scope="session")
def catalogue_dir(built: tuple[Path, Path]) -> Path:
    return built[0].parent


@pytest.fixture(scope="session")
def recommender(workspace: Path) -> Recommender:
    return Recommender.open(workspace, settings=Settings(workspace=workspace))


@pytest.fixture
def make_client(workspace: Path, recommender: Recommender) -> Iterator[Callable[..., TestClient]]:
    """make_client(**settings overrides) -> a TestClient over the shared Recommender."""
    opened: list[TestClient] = []

    def make(**overrides: object) -> TestClient:
        settings = Settings(workspace=workspace, **overrides)
        client = TestClient(create_app(settings, recommender=recommender))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient]) -> TestClient:
    return make_client()


@pytest.fixture(scope="session")
def png_bytes() -> Callable[..., bytes]:
    def make(size: tuple[int, int] = (64, 64), colour: tuple[int, int, int] = (210, 40, 40), fmt: str = "PNG") -> bytes:
        buf = io.BytesIO()
        Image.new("RGB", size, colour).save(buf, fmt)
        return buf.getvalue()

    return make


@pytest.fixture(scope="session")
def n_products() -> int:
    return N_PRODUCTS


@pytest.fixture(scope="session")
def odd_id() -> str:
    return ODD_ID
