"""build() end to end on the generated catalogue: every stage, resume, and the written artefacts."""
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lookalike.catalogue import ColumnMapping
from lookalike.pipeline import build, default_encoder, export_similar
from lookalike.store import Store
from lookalike.store.vectors import VectorStore


@pytest.fixture(scope="module")
def built(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    build(tiny_catalogue, ws, encoder="color-texture", k=8, show_progress=False)
    return ws


def test_every_product_gets_a_similar_list(built: Path) -> None:
    store = Store.for_workspace(built)
    assert store.count() == 120
    assert store.count_similar_sources("color-texture") == 120
    rows = store.get_similar("color-texture", "p0000")
    assert len(rows) == 8 and all(r.similar_id != "p0000" for r in rows)
    assert [r.score for r in rows] == sorted((r.score for r in rows), reverse=True)
    assert all(0 <= r.similarity_pct <= 100 for r in rows)
    # the generator draws the same shape+colour for i, i+20, i+40...: those must come first
    assert rows[0].similar_id in {f"p{i:04d}" for i in range(20, 120, 20)}


def test_build_json_and_infos(built: Path) -> None:
    info = json.loads((built / "build.json").read_text())
    assert info["encoder"] == "color-texture" and info["counts"]["with_similar"] == 120
    assert set(info["stages"]) == {"ingest", "encode", "index", "similar"}
    infos = json.loads((built / "index" / "color-texture" / "infos.json").read_text())
    for key in ("backend", "params", "n", "dim", "bytes", "recall_at_10", "ms_per_query"):
        assert key in infos
    assert (built / "reports" / "validation.json").exists()


def test_rerun_resumes_without_reencoding(built: Path, tiny_catalogue: Path) -> None:
    res = build(tiny_catalogue, built, encoder="color-texture", k=8, show_progress=False)
    assert res.counts["embedded"] == 0 and res.counts["reused"] == 120


def test_changed_image_is_reencoded(tiny_catalogue: Path, tmp_path: Path) -> None:
    import shutil

    cat = tmp_path / "cat"
    shutil.copytree(tiny_catalogue.parent, cat)
    build(cat / "catalogue.csv", tmp_path / "ws", encoder="color-texture", k=5, show_progress=False)
    shutil.copy(cat / "images" / "p0001.png", cat / "images" / "p0000.png")
    res = build(cat / "catalogue.csv", tmp_path / "ws", encoder="color-texture", k=5, show_progress=False)
    assert res.counts["embedded"] == 1
    ids, vecs = VectorStore(tmp_path / "ws" / "vectors" / "color-texture").load()
    a, b = vecs[ids.index("p0000")], vecs[ids.index("p0001")]
    assert np.allclose(a, b)
    # identical images are never recommended for each other
    assert "p0001" not in [r.similar_id for r in Store.for_workspace(tmp_path / "ws").get_similar("color-texture", "p0000")]


def test_same_category_and_export(tiny_catalogue: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    build(tiny_catalogue, ws, encoder="color-texture", k=5, same_category=True, index="exact", show_progress=False)
    store = Store.for_workspace(ws)
    cat = {p.id: p.category for p in store.iter_products()}
    for pid in ("p0000", "p0001", "p0002"):
        assert {cat[r.similar_id] for r in store.get_similar("color-texture", pid)} == {cat[pid]}
    n = export_similar(ws, tmp_path / "sim.parquet")
    df = pd.read_parquet(tmp_path / "sim.parquet")
    assert n == len(df) == 600 and set(df.columns) >= {"product_id", "similar_id", "score", "similarity_pct"}
    with pytest.raises(ValueError, match="unknown export format"):
        export_similar(ws, tmp_path / "sim.xml")


def test_bad_rows_reported_not_fatal(tmp_path: Path, tiny_catalogue: Path) -> None:
    df = pd.read_csv(tiny_catalogue)
    df.loc[3, "image"] = "images/does-not-exist.png"
    df.loc[4, "image"] = "../../etc/passwd"
    df.to_csv(tiny_catalogue.parent / "bad.csv", index=False)
    res = build(tiny_catalogue.parent / "bad.csv", tmp_path / "ws", encoder="color-texture", k=5,
                mapping=ColumnMapping(), show_progress=False)
    assert res.problems["missing_image"] == 1 and res.problems["unsafe_path"] == 1
    assert res.counts["with_similar"] == 118


def test_default_encoder_says_why(tmp_path: Path) -> None:
    name, reason = default_encoder(tmp_path)
    assert name in {"timm:tf_efficientnet_lite0", "color-texture"} and reason
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "training.json").write_text("{}")
    assert default_encoder(tmp_path)[0] == f"trained:{tmp_path.resolve()}"
