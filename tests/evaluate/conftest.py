"""Two tiny built workspaces over the generated catalogue, shared by the evaluation tests."""
from pathlib import Path

import pytest

from lookalike.pipeline import build


@pytest.fixture(scope="session")
def eval_ws(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("eval-ws")
    build(tiny_catalogue, ws, encoder="color-texture", k=5, show_progress=False)
    return ws


@pytest.fixture(scope="session")
def eval_ws_hnsw(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another build of the first 100 products, with an ANN index: a comparison over 100 shared ids."""
    ws = tmp_path_factory.mktemp("eval-ws-hnsw")
    build(tiny_catalogue, ws, encoder="color-texture", index="hnswlib", limit=100, k=5, show_progress=False)
    return ws
