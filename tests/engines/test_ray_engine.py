"""The Ray Data engine on a local Ray (2 CPUs): same vectors as the local engine, resume, bad images counted."""
from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.catalogue import ingest
from lookalike.cli import app
from lookalike.encoders import create_encoder
from lookalike.engines.ray_engine import RayOptions
from lookalike.pipeline import build, embed
from lookalike.store import Store
from lookalike.store.vectors import VectorStore

ray = pytest.importorskip("ray")

ENCODER = "color-texture"


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    # started here, not by the engine, so one Ray serves the module and is always shut down
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def _vectors(ws: Path) -> dict[str, np.ndarray]:
    ids, vecs = VectorStore(ws / "vectors" / ENCODER).load()
    return dict(zip(ids, vecs))


def test_ray_resumes_a_local_run_with_equal_vectors(local_ray: None, tiny_catalogue: Path, tmp_path: Path) -> None:
    cat = tmp_path / "cat"
    shutil.copytree(tiny_catalogue.parent, cat)
    reference = tmp_path / "local"
    build(cat / "catalogue.csv", reference, encoder=ENCODER, k=5, show_progress=False)
    expected = _vectors(reference)

    # half the catalogue embedded locally, then the whole of it ingested and handed to Ray
    ws = tmp_path / "ray"
    first = build(cat / "catalogue.csv", ws, encoder=ENCODER, k=5, limit=60, show_progress=False)
    assert first.counts["embedded"] == 60
    ingest(cat / "catalogue.csv", ws, show_progress=False)
    # an image that breaks after ingest: Ray must skip and count it, like the local engine
    (cat / "images" / "p0100.png").write_bytes(b"not an image at all")
    store = Store.for_workspace(ws)
    counts = embed(ws, create_encoder(ENCODER), ENCODER, store, show_progress=False, engine="ray",
                   ray=RayOptions(batch_size=16, concurrency=2))

    assert counts == {"embedded": 59, "reused": 60, "encode_failed": 1}
    got = _vectors(ws)
    assert set(got) == set(expected) - {"p0100"}
    worst = max(float(np.abs(got[i] - expected[i]).max()) for i in got)
    assert worst <= 1e-5, worst
    # the chunks are the local engine's format: a local re-run finds nothing left but the broken image
    again = embed(ws, create_encoder(ENCODER), ENCODER, store, show_progress=False)
    assert again == {"embedded": 0, "reused": 119, "encode_failed": 1}


def test_cli_rejects_bad_engine_options(tmp_path: Path, tiny_catalogue: Path) -> None:
    runner = CliRunner()
    r = runner.invoke(app, ["build", str(tiny_catalogue), "--workspace", str(tmp_path), "--engine", "spark"])
    assert r.exit_code != 0 and "unknown engine 'spark'" in r.output
    r = runner.invoke(app, ["build", str(tiny_catalogue), "--workspace", str(tmp_path), "--engine", "ray",
                            "--ray-batch-size", "0"])
    assert r.exit_code != 0 and "batch size must be >= 1" in r.output
    assert not (tmp_path / "vectors").exists()


def test_options_validate() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        RayOptions(concurrency=0)
    assert RayOptions().address is None
