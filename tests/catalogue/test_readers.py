"""Readers: CSV / JSONL / Parquet with a mapping, the fashion and IKEA layouts, malformed rows."""
from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lookalike.catalogue.readers import Catalogue, ColumnMapping, RawRecord, ReadProblem, open_catalogue

from .imaging import make_fashion, make_ikea


def _split(cat: Catalogue) -> tuple[list[RawRecord], list[ReadProblem]]:
    items = list(cat.iter_records())
    return [i for i in items if isinstance(i, RawRecord)], [i for i in items if isinstance(i, ReadProblem)]


def test_column_mapping_parse() -> None:
    m = ColumnMapping.parse("id=sku, title=name,category=type,image=img")
    assert m == ColumnMapping("sku", "name", "type", "img")
    assert ColumnMapping.parse("id=sku") == ColumnMapping(id="sku")
    assert ColumnMapping.parse("category=").category is None
    for bad in ("sku=id", "id", "colour=c", "id="):
        with pytest.raises(ValueError, match="id") as e:
            ColumnMapping.parse(bad)
        if bad != "id=":
            assert "['id', 'title', 'category', 'image']" in str(e.value)


def test_csv_with_mapping(tmp_path: Path) -> None:
    path = tmp_path / "products.csv"
    path.write_text(
        "sku,name,type,img,colour,price\n"
        " A1 ,Red shirt,Shirts,images/a1.jpg,Red,19.90\n"
        "A2,\"Blue, jeans\",Jeans,https://cdn.example.com/a2.jpg,,\n"
        ",No id,Shirts,images/x.jpg,Red,1\n"
        "A3,Too,many,fields,here,1,2\n"
        "\n"
        "A4,Only title\n"
    )
    cat = open_catalogue(path, ColumnMapping.parse("id=sku,title=name,category=type,image=img"))
    assert cat.format == "csv" and cat.root == tmp_path.resolve() and cat.source == path.resolve()
    recs, probs = _split(cat)
    assert [r.id for r in recs] == ["A1", "A2"]
    a1, a2 = recs
    assert (a1.row, a1.title, a1.category, a1.image) == (1, "Red shirt", "Shirts", "images/a1.jpg")
    assert a1.attributes == {"colour": "Red", "price": "19.90"}  # CSV cells stay strings: no type guessing
    assert a2.title == "Blue, jeans" and a2.image == "https://cdn.example.com/a2.jpg" and a2.attributes == {}
    assert [(p.row, p.kind) for p in probs] == [(3, "malformed_row"), (4, "malformed_row"), (5, "malformed_row")]
    assert "missing id" in probs[0].detail and "7 fields, expected 6" in probs[1].detail and probs[1].id == "A3"


def test_missing_mapped_column_names_the_columns(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("sku,name,img\n1,a,a.jpg\n")
    with pytest.raises(ValueError, match=r"\['sku', 'name', 'img'\]"):
        open_catalogue(path, ColumnMapping.parse("id=sku,title=name,category=type,image=img"))
    with pytest.raises(ValueError, match="'id'"):
        open_catalogue(path)  # default mapping: id and image are required
    # with the defaults, absent title/category columns simply mean none
    path.write_text("id,image,colour\n1,a.jpg,Red\n")
    (rec,) = _split(open_catalogue(path))[0]
    assert rec.title == "" and rec.category is None and rec.attributes == {"colour": "Red"}


def test_jsonl_with_mapping_and_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [
        json.dumps({"sku": 17, "name": "Mug", "kind": "Kitchen", "pic": ["img/17.png", "img/17b.png"], "price": 4.5,
                    "tags": ["a", None], "dims": {"h": 10, "w": None}, "note": None}),
        "{not json",
        "[1, 2]",
        "",
        '{"sku": "18", "name": "Cup", "kind": null, "pic": "img/18.png", "weight": NaN, "n": 3.0}',
        json.dumps({"name": "no id", "pic": "x.png"}),
    ]
    path.write_text("\n".join(lines) + "\n")
    cat = open_catalogue(path, ColumnMapping(id="sku", title="name", category="kind", image="pic"))
    assert cat.format == "jsonl"
    recs, probs = _split(cat)
    assert [r.id for r in recs] == ["17", "18"] and recs[0].image == "img/17.png"  # the first of a list
    assert recs[0].attributes == {"price": 4.5, "tags": ["a"], "dims": {"h": 10}}
    assert recs[1].category is None and recs[1].attributes == {"n": 3}  # NaN dropped, 3.0 -> 3
    assert [p.kind for p in probs] == ["malformed_row"] * 3
    assert "invalid JSON" in probs[0].detail and "expected a JSON object" in probs[1].detail
    assert "missing id" in probs[2].detail
    json.dumps([r.attributes for r in recs], allow_nan=False)


def test_parquet_with_mapping_nulls_and_timestamps(tmp_path: Path) -> None:
    table = pa.table({
        "sku": pa.array([1, 2, None], pa.int64()),
        "name": ["a", "b", "c"],
        "type": ["T", None, "T"],
        "img": ["i/1.jpg", "i/2.jpg", "i/3.jpg"],
        "score": [1.5, math.nan, None],
        "added": [dt.datetime(2024, 1, 2, 3, 4, 5), None, None],
    })
    path = tmp_path / "p.parquet"
    pq.write_table(table, path)
    cat = open_catalogue(path, ColumnMapping(id="sku", title="name", category="type", image="img"))
    assert cat.format == "parquet"
    recs, probs = _split(cat)
    assert [r.id for r in recs] == ["1", "2"] and [p.row for p in probs] == [3]
    assert recs[0].attributes == {"score": 1.5, "added": "2024-01-02T03:04:05"}
    assert recs[1].attributes == {} and recs[1].category is None
    json.dumps([r.attributes for r in recs], allow_nan=False)


def test_folder_with_exactly_one_catalogue_file(tmp_path: Path) -> None:
    (tmp_path / "products.jsonl").write_text('{"id": "1", "image": "a.jpg"}\n')
    (tmp_path / "notes.txt").write_text("ignored")
    cat = open_catalogue(tmp_path)
    assert cat.format == "jsonl" and [r.id for r in _split(cat)[0]] == ["1"]
    (tmp_path / "other.csv").write_text("id,image\n")
    with pytest.raises(ValueError, match="exactly one"):
        open_catalogue(tmp_path)
    with pytest.raises(FileNotFoundError):
        open_catalogue(tmp_path / "absent.csv")
    with pytest.raises(ValueError, match="unsupported"):
        open_catalogue(tmp_path / "notes.txt")


def test_fashion_layout_is_detected(tmp_path: Path) -> None:
    folder = make_fashion(tmp_path / "fashion", n=12, missing=(3,))
    for given in (folder, folder / "styles.csv"):
        cat = open_catalogue(given)
        assert cat.format == "fashion" and cat.root == folder.resolve()
        recs, probs = _split(cat)
        assert len(recs) == 12 and len(probs) == 1
        assert probs[0].kind == "malformed_row" and probs[0].id == "9999" and probs[0].row == 13
        r0 = recs[0]
        assert (r0.id, r0.category, r0.image) == ("1000", "Shirts", "images/1000.jpg")
        assert r0.title == "Brand Men Blue Shirts 0"
        assert r0.attributes == {"gender": "Men", "masterCategory": "Apparel", "subCategory": "Topwear",
                                 "baseColour": "Blue", "season": "Fall", "year": "2010", "usage": "Casual"}
        assert "baseColour" not in recs[1].attributes and "year" not in recs[1].attributes  # empty cells
        assert not (folder / recs[3].image).exists()


def test_ikea_manifest_is_detected(tmp_path: Path) -> None:
    manifest = make_ikea(tmp_path / "ikea")
    for given in (manifest, manifest.parent):
        cat = open_catalogue(given)
        assert cat.format == "ikea" and cat.root == manifest.parent.resolve()
        recs, probs = _split(cat)
        assert not probs and [r.id for r in recs] == ["111.222.33", "444.555.66", "777.888.99", "111.222.33"]
        chair = recs[0]
        assert (chair.title, chair.category, chair.image) == ("ADDE", "Chair", "images/chair/111.222.33.jpg")
        assert chair.attributes == {"coarse_folder": "chair", "color": "White", "size": "45 cm"}
        assert recs[1].attributes == {"coarse_folder": "dining table"}
        assert (cat.root / recs[1].image).is_file()


def test_image_template_mapping(tmp_path: Path) -> None:
    path = tmp_path / "p.csv"
    path.write_text("sku,name\nS1,Shirt\n")
    (rec,) = _split(open_catalogue(path, ColumnMapping.parse("id=sku,title=name,category=,image=pics/{sku}.png")))[0]
    assert rec.image == "pics/S1.png" and rec.category is None and rec.attributes == {}
    with pytest.raises(ValueError, match="colour"):
        open_catalogue(path, ColumnMapping.parse("id=sku,title=name,category=,image=pics/{colour}.png"))


@pytest.mark.slow
def test_real_fashion_styles_csv(datasets: Path) -> None:
    folder = datasets / "fashion-product-images-small"
    cat = open_catalogue(folder)
    assert cat.format == "fashion"
    recs, probs = _split(cat)
    assert len(recs) == 44_446 and not probs
    assert len({r.id for r in recs}) == 44_446
    images = {p.name for p in (folder / "images").iterdir()}
    with_image = [r for r in recs if Path(r.image).name in images]
    assert len(recs) - len(with_image) == 374
    assert len({r.category for r in with_image}) == 141  # the dataset README's count of articleTypes
    json.dumps([r.attributes for r in recs[:2000]], allow_nan=False)
    assert all(isinstance(r.attributes.get("year", ""), str) for r in recs)
