"""ingest() end to end on generated catalogues: every problem kind, strict mode, limit, re-runs, URLs."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import httpx
import pytest

from lookalike.catalogue import CatalogueError, ColumnMapping, image_resolver, ingest, resolve_image_path
from lookalike.catalogue.ingest import FetchError, download_image
from lookalike.imaging import UnsafePathError, file_hash
from lookalike.io_utils import read_json
from lookalike.store.sql import Store

from .conftest import LoopbackServer
from .imaging import encoded, make_fashion, make_ikea, product, save

GOOD = ["g1", "g2", "g3", "g4", "g5"]


def _mixed_catalogue(tmp_path: Path) -> Path:
    """One row per problem kind (except fetch_failed) plus five good products."""
    root = tmp_path / "cat"
    for i, pid in enumerate(GOOD):
        save(product(colour=(40 * i, 100, 200)), root / "images" / f"{pid}.{'png' if i % 2 else 'jpg'}")
    save(product().convert("RGBA"), root / "images" / "g5.png")
    (root / "images" / "bad.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    save(product((400, 400)), root / "images" / "huge.png")
    outside = save(product(), tmp_path / "secret.jpg")
    os.symlink(outside, root / "images" / "link.jpg")
    rows = [
        ["id", "title", "category", "image", "colour"],
        ["g1", "Good 1", "Shirts", "images/g1.jpg", "Red"],
        ["g2", "Good 2", "Shirts", "images\\g2.png", ""],  # a Windows export
        ["g3", "Good 3", "Jeans", "images/g3.jpg", "Blue"],
        ["g4", "Good 4", "Jeans", "./images/g4.png", "Blue"],
        ["g5", "Good 5", "Tops", "images/g5.png", "Blue"],
        ["g1", "Duplicate", "Shirts", "images/g3.jpg", "Red"],
        ["m1", "Missing", "Shirts", "images/m1.jpg", "Red"],
        ["m2", "No image", "Shirts", "", "Red"],
        ["u1", "Undecodable", "Shirts", "images/bad.jpg", "Red"],
        ["t1", "Too large", "Shirts", "images/huge.png", "Red"],
        ["s1", "Escape", "Shirts", "../secret.jpg", "Red"],
        ["s2", "Absolute", "Shirts", str(outside), "Red"],
        ["s3", "Symlink", "Shirts", "images/link.jpg", "Red"],
        ["x1", "Too", "many", "fields", "here", "!"],
        ["", "No id", "Shirts", "images/g1.jpg", "Red"],
    ]
    with (root / "products.csv").open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return root / "products.csv"


EXPECTED = {"missing_image": 2, "undecodable_image": 1, "image_too_large": 1, "duplicate_id": 1,
            "malformed_row": 2, "unsafe_path": 3, "fetch_failed": 0}


def test_mixed_catalogue(tmp_path: Path) -> None:
    path = _mixed_catalogue(tmp_path)
    ws = tmp_path / "ws"
    res = ingest(path, ws, show_progress=False, max_pixels=100_000)
    assert res.report.counts() == EXPECTED
    assert (res.n_rows, res.n_ok, res.format) == (15, 5, "csv") and res.catalogue_root == path.parent.resolve()

    store = Store.for_workspace(ws)
    assert store.count() == 5
    products = store.get_products(GOOD)
    g1, g2, g4 = products["g1"], products["g2"], products["g4"]
    assert (g1.title, g1.category, g1.image, g1.attributes) == ("Good 1", "Shirts", "images/g1.jpg", {"colour": "Red"})
    assert g2.attributes == {} and g2.image == "images/g2.png" and g4.image == "images/g4.png"  # normalised
    assert g1.image_hash == file_hash(path.parent / "images" / "g1.jpg")

    report = read_json(ws / "reports" / "validation.json")
    assert report["counts"] == EXPECTED and report["n_rows"] == 15 and report["n_ok"] == 5
    assert report["catalogue"] == str(path.resolve()) and report["format"] == "csv"
    by_id = {p["id"]: p for kind in report["problems"].values() for p in kind}
    assert by_id["m1"]["kind"] == "missing_image" and "images/m1.jpg" in by_id["m1"]["detail"]
    assert by_id["g1"]["kind"] == "duplicate_id" and by_id["g1"]["row"] == 6
    assert {by_id[s]["kind"] for s in ("s1", "s2", "s3")} == {"unsafe_path"}

    info = read_json(ws / "catalogue.json")
    assert info["root"] == str(path.parent.resolve()) and info["format"] == "csv"
    assert info["mapping"] == {"id": "id", "title": "title", "category": "category", "image": "image"}
    assert info["path"] == str(path.resolve())
    resolve = image_resolver(ws)
    assert resolve("images/g1.jpg") == (path.parent / "images" / "g1.jpg").resolve()


def test_worker_pool_gives_the_same_result(tmp_path: Path) -> None:
    path = _mixed_catalogue(tmp_path)
    res = ingest(path, tmp_path / "ws", show_progress=False, max_pixels=100_000, num_workers=2)
    assert res.report.counts() == EXPECTED and res.n_ok == 5


def test_strict_raises_before_writing(tmp_path: Path) -> None:
    path = _mixed_catalogue(tmp_path)
    ws = tmp_path / "ws"
    with pytest.raises(CatalogueError, match="duplicate_id at row 6"):
        ingest(path, ws, strict=True, show_progress=False)
    assert not (ws / "lookalike.db").exists() and not (ws / "reports").exists()
    assert not (ws / "catalogue.json").exists()

    # a problem found only when decoding is fatal too
    root = tmp_path / "cat2"
    save(product(), root / "a.jpg")
    (root / "b.jpg").write_bytes(b"junk")
    (root / "c.csv").write_text("id,image\na,a.jpg\nb,b.jpg\n")
    with pytest.raises(CatalogueError, match="undecodable_image at row 2 .id 'b'"):
        ingest(root / "c.csv", ws, strict=True, show_progress=False)
    assert not (ws / "lookalike.db").exists()

    (root / "c.csv").write_text("id,image\na,a.jpg\n")
    assert ingest(root / "c.csv", ws, strict=True, show_progress=False).n_ok == 1


def test_limit_and_idempotent_rerun(tmp_path: Path) -> None:
    path = _mixed_catalogue(tmp_path)
    ws = tmp_path / "ws"
    res = ingest(path, ws, limit=3, show_progress=False)
    assert (res.n_rows, res.n_ok, res.report.total) == (3, 3, 0)
    assert Store.for_workspace(ws).count() == 3

    first = ingest(path, ws, show_progress=False, max_pixels=100_000)
    again = ingest(path, ws, show_progress=False, max_pixels=100_000)
    assert first.report.counts() == again.report.counts() == EXPECTED
    assert Store.for_workspace(ws).count() == 5

    text = path.read_text().replace("Good 1", "Good 1 renamed")
    path.write_text(text)
    ingest(path, ws, show_progress=False, max_pixels=100_000)
    store = Store.for_workspace(ws)
    assert store.count() == 5 and store.get_product("g1").title == "Good 1 renamed"


def test_fashion_layout_ingest(tmp_path: Path) -> None:
    folder = make_fashion(tmp_path / "fashion", n=12, missing=(3, 7))
    res = ingest(folder, tmp_path / "ws", show_progress=False)
    assert res.format == "fashion" and (res.n_rows, res.n_ok) == (13, 10)
    assert res.report.counts()["missing_image"] == 2 and res.report.counts()["malformed_row"] == 1
    store = Store.for_workspace(tmp_path / "ws")
    p = store.get_product("1000")
    assert p.image == "images/1000.jpg" and p.category == "Shirts" and p.attributes["year"] == "2010"
    assert dict(store.categories()) == {"Jeans": 3, "Shirts": 3, "Watches": 4}


def test_ikea_manifest_ingest_keeps_the_first_duplicate(tmp_path: Path) -> None:
    manifest = make_ikea(tmp_path / "ikea")
    res = ingest(manifest, tmp_path / "ws", show_progress=False)
    assert res.format == "ikea" and (res.n_rows, res.n_ok) == (4, 3)
    (dup,) = res.report.examples("duplicate_id")
    assert dup.id == "111.222.33" and dup.row == 4
    chair = Store.for_workspace(tmp_path / "ws").get_product("111.222.33")
    assert chair.image == "images/chair/111.222.33.jpg" and chair.title == "ADDE" and chair.category == "Chair"


def test_generated_demo_catalogue(tiny_catalogue: Path, tmp_path: Path) -> None:
    res = ingest(tiny_catalogue, tmp_path / "ws", show_progress=False)
    assert (res.n_rows, res.n_ok, res.report.total) == (120, 120, 0)


def test_jsonl_mapping_ingest(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    save(product(), root / "pics" / "1.jpg")
    (root / "p.jsonl").write_text(json.dumps({"sku": 1, "name": "Mug", "type": "Kitchen", "img": "pics/1.jpg",
                                              "price": 4.5}) + "\n")
    res = ingest(root, tmp_path / "ws", mapping=ColumnMapping.parse("id=sku,title=name,category=type,image=img"),
                 show_progress=False)
    assert res.n_ok == 1
    p = Store.for_workspace(tmp_path / "ws").get_product("1")
    assert (p.title, p.category, p.attributes) == ("Mug", "Kitchen", {"price": 4.5})
    assert read_json(tmp_path / "ws" / "catalogue.json")["mapping"]["id"] == "sku"


def test_url_images_via_a_loopback_server(tmp_path: Path, http_server: LoopbackServer) -> None:
    ok = http_server.add("/img/a.jpg", encoded(product(), "JPEG"), headers={"Content-Type": "image/jpeg"})
    http_server.add("/img/b.png", encoded(product(colour=(0, 200, 0)), "PNG"))
    moved = http_server.add("/moved", status=302, headers={"Location": "/img/b.png"})
    junk = http_server.add("/img/junk.jpg", b"<html>not an image</html>")
    gone = http_server.url("/img/gone.jpg")
    root = tmp_path / "cat"
    root.mkdir()
    lines = [{"id": "a", "image": ok}, {"id": "b", "image": moved}, {"id": "j", "image": junk},
             {"id": "g", "image": gone}, {"id": "a2", "image": ok}]
    (root / "p.jsonl").write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    ws = tmp_path / "ws"

    res = ingest(root, ws, show_progress=False)
    counts = res.report.counts()
    assert (res.n_ok, counts["fetch_failed"], counts["undecodable_image"]) == (3, 1, 1)
    assert "404" in res.report.examples("fetch_failed")[0].detail
    store = Store.for_workspace(ws)
    a = store.get_product("a")
    assert a.image == ok  # the product keeps its URL ...
    cached = resolve_image_path(ws, root, ok)  # ... and its bytes live in the workspace
    assert cached.parent == (ws / "images").resolve() and cached.suffix == ".jpg" and cached.is_file()
    assert a.image_hash == file_hash(cached) == store.get_product("a2").image_hash
    assert resolve_image_path(ws, root, moved).is_file() and http_server.hits["/img/b.png"] == 1
    assert not resolve_image_path(ws, root, junk).exists()  # bad bytes are not kept
    assert http_server.hits["/img/a.jpg"] == 1  # two products, one download

    again = ingest(root, ws, show_progress=False)
    assert again.report.counts() == counts
    assert http_server.hits["/img/a.jpg"] == 1 and http_server.hits["/img/junk.jpg"] == 2  # cached vs refetched


def test_download_cap_and_errors(tmp_path: Path, http_server: LoopbackServer) -> None:
    big = http_server.add("/big.jpg", b"x" * 5000)
    with httpx.Client() as client:
        with pytest.raises(FetchError, match="over the cap"):
            download_image(client, big, tmp_path / "big.jpg", max_bytes=1000)
        with pytest.raises(FetchError, match="404"):
            download_image(client, http_server.url("/nothing"), tmp_path / "n.jpg")
        with pytest.raises(FetchError, match="cannot fetch"):
            download_image(client, "http://127.0.0.1:9/refused.jpg", tmp_path / "r.jpg")
        download_image(client, big, tmp_path / "big.jpg", max_bytes=5000)
    assert (tmp_path / "big.jpg").stat().st_size == 5000
    assert not (tmp_path / "n.jpg").exists()


def test_resolve_image_path(tmp_path: Path) -> None:
    root = tmp_path / "cat"
    root.mkdir()
    assert resolve_image_path(tmp_path / "ws", root, "images/a.jpg") == root.resolve() / "images" / "a.jpg"
    url = "https://cdn.example.com/p/a.JPG?v=2"
    p = resolve_image_path(tmp_path / "ws", root, url)
    assert p.parent == (tmp_path / "ws" / "images").resolve() and p.suffix == ".jpg"
    assert p != resolve_image_path(tmp_path / "ws", root, "https://cdn.example.com/p/b.jpg")
    assert resolve_image_path(tmp_path / "ws", root, "https://x.example/img?id=3").suffix == ""
    with pytest.raises(UnsafePathError):
        resolve_image_path(tmp_path / "ws", root, "../../etc/passwd")
    with pytest.raises(FileNotFoundError, match="ingest"):
        image_resolver(tmp_path / "empty-ws")


@pytest.mark.slow
def test_real_ikea_manifest_subset(datasets: Path, tmp_path: Path) -> None:
    manifest = datasets / "ikea" / "manifest.csv"
    res = ingest(manifest, tmp_path / "ws", limit=300, show_progress=False)
    assert res.format == "ikea" and (res.n_rows, res.n_ok, res.report.total) == (300, 300, 0)
    store = Store.for_workspace(tmp_path / "ws")
    rows = list(store.iter_products())
    assert len(rows) == 300 and all(r.image.startswith("images/") for r in rows)
    assert all(set(r.attributes) <= {"coarse_folder", "color", "size"} for r in rows)
    resolve = image_resolver(tmp_path / "ws")
    assert all(resolve(r.image).is_file() for r in rows[:50])
