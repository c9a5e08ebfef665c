from pathlib import Path

import pytest

from lookalike.store.sql import ProductRow, SimilarRow, Store


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store.for_workspace(tmp_path)
    s.upsert_products([
        ProductRow("a", "Red Shirt", "Shirts", "images/a.jpg", "h1", {"gender": "Men", "baseColour": "Red"}),
        ProductRow("b", "Blue Shirt", "Shirts", "images/b.jpg", "h2", {"gender": "Women", "baseColour": "Blue"}),
        ProductRow("c", "Blue Jeans", "Jeans", "images/c.jpg", "h3", {"gender": "Women", "baseColour": "Blue"}),
    ])
    return s


def test_upsert_is_idempotent_and_updates(store: Store) -> None:
    store.upsert_products([ProductRow("a", "Red Shirt v2", "Shirts", "images/a.jpg", "h9", {"gender": "Men"})])
    assert store.count() == 3
    a = store.get_product("a")
    assert a is not None and a.title == "Red Shirt v2" and a.image_hash == "h9"


def test_list_filters_and_pagination(store: Store) -> None:
    rows, total = store.list_products(limit=2, offset=0)
    assert total == 3 and [r.id for r in rows] == ["a", "b"]
    rows, total = store.list_products(category="Shirts", attrs={"baseColour": "Blue"})
    assert total == 1 and rows[0].id == "b"
    rows, total = store.list_products(q="blue")
    assert {r.id for r in rows} == {"b", "c"} and total == 2
    assert store.categories() == [("Jeans", 1), ("Shirts", 2)]


def test_similar_lists_and_delete(store: Store) -> None:
    store.replace_similar("enc", [SimilarRow("a", 0, "b", 0.9, 80.0), SimilarRow("a", 1, "c", 0.5, 30.0),
                                  SimilarRow("b", 0, "a", 0.9, 80.0)])
    assert [r.similar_id for r in store.get_similar("enc", "a")] == ["b", "c"]
    assert store.count_similar_sources("enc") == 2
    assert store.delete_products(["b"]) == 1
    assert store.get_product("b") is None
    assert [r.similar_id for r in store.get_similar("enc", "a")] == ["c"]
    assert store.get_similar("enc", "b") == []


def test_update_attributes(store: Store) -> None:
    p = store.update_attributes("a", {"in_stock": False, "baseColour": None})
    assert p is not None and p.attributes == {"gender": "Men", "in_stock": False}
    assert store.update_attributes("zzz", {"x": 1}) is None
