"""`lookalike update WS CATALOGUE`: added, changed and removed rows applied without a rebuild; only changed
images are re-embedded; a second run finds nothing to do."""
from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from lookalike.cli import app
from lookalike.demo import COLOURS, draw_product
from lookalike.live.catalogue_diff import update_workspace
from lookalike.recommender import Recommender
from lookalike.workspace import Workspace

from .live_helpers import assert_scratch_lists, live_lists


def edited_catalogue(ws: Path, dest: Path) -> Path:
    """A copy of the workspace's catalogue with 2 rows removed, 1 re-coloured (attribute), 1 new image,
    2 new products and 1 row whose image is broken."""
    src = Path(Workspace(ws).read(Workspace(ws).catalogue_json)["root"])
    shutil.copytree(src, dest)
    rows = list(csv.DictReader((dest / "catalogue.csv").open()))
    rows = [r for r in rows if r["id"] not in ("p0010", "p0011")]
    by_id = {r["id"]: r for r in rows}
    by_id["p0012"]["colour"] = "Teal"
    draw_product("triangle", COLOURS["Green"], np.random.default_rng(3)).save(dest / "images" / "p0013-v2.png")
    by_id["p0013"]["image"] = "images/p0013-v2.png"
    for n, (shape, colour) in enumerate([("circle", "Blue"), ("stripe", "Yellow")]):
        draw_product(shape, COLOURS[colour], np.random.default_rng(50 + n)).save(dest / "images" / f"n{n}.png")
        rows.append({**rows[0], "id": f"n{n}", "title": f"new {n}", "category": shape, "image": f"images/n{n}.png",
                     "colour": colour})
    (dest / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rows.append({**rows[0], "id": "bad", "image": "images/broken.png"})
    return write_csv(rows, dest / "catalogue-v2.csv")


def write_csv(rows: list[dict[str, str]], out: Path) -> Path:
    with out.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return out


def test_update_applies_the_diff(fresh_ws: Path, tmp_path: Path) -> None:
    cat = edited_catalogue(fresh_ws, tmp_path / "cat2")
    before = Recommender.open(fresh_ws, load_encoder=False)
    vec_p0012 = before.vectors[before.pos["p0012"]].copy()
    rep = update_workspace(fresh_ws, cat, show_progress=False)
    assert rep.added == ["n0", "n1"] and rep.image_changed == ["p0013"]
    assert rep.attributes_changed == ["p0012"] and rep.removed == ["p0010", "p0011"]
    assert rep.problems["undecodable_image"] == 1 and rep.index["method"] == "incremental"
    rec = Recommender.open(fresh_ws, load_encoder=False)
    assert rec.product("p0010") is None and rec.product("n0").category == "circle"
    assert rec.product("p0012").attributes["colour"] == "Teal"
    assert (rec.vectors[rec.pos["p0012"]] == vec_p0012).all()  # attributes only: not re-embedded
    assert rec.similar("p0013", k=1, rerank="none")[0].product.category == "triangle"
    assert_scratch_lists(rec, live_lists(rec))
    # the same file again: nothing to do
    again = update_workspace(fresh_ws, cat, show_progress=False)
    assert not (again.added or again.image_changed or again.attributes_changed or again.removed)


def test_cli_update_keeps_missing_on_request(fresh_ws: Path, tmp_path: Path) -> None:
    cat = edited_catalogue(fresh_ws, tmp_path / "cat2")
    res = CliRunner().invoke(app, ["update", str(fresh_ws), str(cat), "--no-delete-missing"])
    assert res.exit_code == 0, res.output
    assert "kept (not in file) 2" in res.output and "added              2" in res.output
    assert Recommender.open(fresh_ws, load_encoder=False).product("p0010") is not None


def _rewrite(cat: Path, edit) -> Path:  # type: ignore[no-untyped-def]
    rows = list(csv.DictReader((cat / "catalogue.csv").open()))
    return write_csv([edit(dict(r)) for r in rows], cat / "catalogue-v3.csv")


def test_a_bad_row_keeps_its_product_and_an_all_bad_file_is_refused(fresh_ws: Path, tmp_path: Path) -> None:
    src = Path(Workspace(fresh_ws).read(Workspace(fresh_ws).catalogue_json)["root"])
    cat = tmp_path / "cat3"
    shutil.copytree(src, cat)
    n = len(Recommender.open(fresh_ws, load_encoder=False).products)
    (cat / "images" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    one_bad = _rewrite(cat, lambda r: {**r, "image": "images/broken.png"} if r["id"] == "p0020" else r)
    rep = update_workspace(fresh_ws, one_bad, show_progress=False)
    assert rep.removed == [] and rep.kept_invalid == 1 and rep.problems["undecodable_image"] == 1
    assert Recommender.open(fresh_ws, load_encoder=False).product("p0020") is not None
    # every row unusable (here: paths escaping the catalogue folder) must not empty the workspace
    all_bad = _rewrite(cat, lambda r: {**r, "image": "../../etc/passwd"})
    with pytest.raises(ValueError, match="refusing to delete"):
        update_workspace(fresh_ws, all_bad, show_progress=False)
    assert len(Recommender.open(fresh_ws, load_encoder=False).products) == n
