"""Shared fixtures: the generated demo catalogue and the location of the shared real datasets."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from lookalike.demo import make_catalogue

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("LOOKALIKE_DATASETS", REPO.parent / "shared" / "datasets"))


@pytest.fixture(scope="session")
def datasets() -> Path:
    """The shared real datasets; under CI they must exist, elsewhere a missing folder skips."""
    if not DATASETS.exists():
        if os.environ.get("CI") == "true":
            pytest.fail(f"shared datasets not found at {DATASETS} (set LOOKALIKE_DATASETS)")
        pytest.skip(f"shared datasets not found at {DATASETS}")
    return DATASETS


@pytest.fixture(scope="session")
def tiny_catalogue(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """120 generated products (4 shapes x 5 colours), as catalogue.csv + images/."""
    return make_catalogue(tmp_path_factory.mktemp("tiny-catalogue"), n=120)
