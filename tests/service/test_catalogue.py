"""The service's in-memory Listing answers exactly like Store.list_products, and derives the facets."""
from __future__ import annotations

import pytest

from lookalike.recommender import Recommender
from lookalike.service.catalogue import Listing
from lookalike.store.sql import ProductRow

QUERIES = [
    {}, {"limit": 5, "offset": 7}, {"offset": 58}, {"category": "circle"}, {"category": "nope"},
    {"q": "red"}, {"q": "RED Circle"}, {"q": "p0003"}, {"q": "red p0003"}, {"q": "zzz"},
    {"attrs": {"colour": "Blue"}}, {"attrs": {"colour": "Blue", "gender": "Men"}}, {"attrs": {"colour": "Teal"}},
    {"attrs": {"unknown": "x"}}, {"category": "square", "attrs": {"gender": "Men"}, "q": "square", "limit": 3},
    {"attrs": {"price": "10"}}, {"category": "square", "attrs": {"colour": "Purple"}},
]


@pytest.mark.parametrize("query", QUERIES)
def test_listing_matches_the_store(recommender: Recommender, query: dict) -> None:
    listing = Listing(recommender.store.iter_products())
    ids, total = listing.query(**query)
    rows, store_total = recommender.store.list_products(**query)
    assert (ids, total) == ([r.id for r in rows], store_total)


def test_facets() -> None:
    rows = [ProductRow(f"x{i}", f"t{i}", "a" if i % 3 else "b", None, None,
                       {"colour": ["Red", "Blue"][i % 2], "sku": f"s{i}", "one": "same", "tags": ["x"]})
            for i in range(100)]
    f = Listing(rows).facets
    assert f.products == 100
    assert f.categories == [("a", 66), ("b", 34)]
    # free text (100 values) and constant attributes are not offered as filters; lists are ignored
    assert f.attributes == {"colour": [("Blue", 50), ("Red", 50)]}
    assert f.attribute_keys == {"colour", "sku", "one"}
