import numpy as np
import pytest

from lookalike.recommend.filters import (
    AttributeTable,
    FilterSpec,
    fetch_filtered,
    needs_more,
    select_with_crowding,
)
from lookalike.recommend.topk import topk_query

# ---- FilterSpec.parse -------------------------------------------------------------------------------


def test_parse_or_within_attr_and_colons_in_values():
    spec = FilterSpec.parse(["gender:Women", "gender:Men", "time:12:30"], ["colour:Black"], ["brand:2"],
                            allow_ids=["a", 3], deny_ids=["b"])
    assert spec.equals == {"gender": {"Women", "Men"}, "time": {"12:30"}}
    assert spec.exclude == {"colour": {"Black"}}
    assert spec.max_per == {"brand": 2}
    assert spec.allow_ids == {"a", "3"} and spec.deny_ids == {"b"}
    assert not spec.is_empty and spec.filters_rows


@pytest.mark.parametrize("kw, message", [
    ({"filters": ["gender"]}, "filter 'gender' must be written attr:value, e.g. gender:Women"),
    ({"filters": [":Women"]}, "has no attribute name before ':'"),
    ({"filters": ["gender:"]}, "has no value after ':'"),
    ({"excludes": ["colour"]}, "exclude 'colour' must be written attr:value"),
    ({"max_per": ["brand"]}, "max_per 'brand' must be written attr:value, e.g. brand:2"),
    ({"max_per": ["brand:0"]}, "needs a positive whole number after ':', e.g. brand:2"),
    ({"max_per": ["brand:two"]}, "needs a positive whole number"),
    ({"max_per": ["brand:2", "brand:3"]}, "given twice"),
])
def test_parse_errors_say_what_to_fix(kw, message):
    with pytest.raises(ValueError) as e:
        FilterSpec.parse(**kw)
    assert message in str(e.value)


def test_empty_spec_and_query_dict_round_trip():
    empty = FilterSpec.parse()
    assert empty.is_empty and not empty.filters_rows and empty.to_query_dict() == {}
    assert FilterSpec.parse(max_per=["brand:1"]).filters_rows is False
    assert FilterSpec.parse(allow_ids=[]).filters_rows  # an empty allow list allows nothing
    spec = FilterSpec.parse(["b:2", "a:1", "a:0"], ["c:x"], ["d:3"], allow_ids=["z", "y"], deny_ids=["q"])
    d = spec.to_query_dict()
    assert d == {"filters": ["a:0", "a:1", "b:2"], "excludes": ["c:x"], "max_per": ["d:3"],
                 "deny_ids": ["q"], "allow_ids": ["y", "z"]}
    assert FilterSpec.parse(**d) == spec
    assert FilterSpec.parse("gender:Women").equals == {"gender": {"Women"}}  # a lone string is one filter


# ---- AttributeTable.mask --------------------------------------------------------------------------


@pytest.fixture
def table() -> AttributeTable:
    return AttributeTable.from_rows(
        ["p0", "p1", "p2", "p3", "p4"],
        ["Shirts", "Shirts", "Shoes", None, "Shoes"],
        [
            {"gender": "Women", "colour": "Black", "size": 38},
            {"gender": "Men", "colour": "White"},
            {"gender": "Women", "colour": "White", "size": 38},
            {"gender": "Women", "colour": None},
            {"gender": "Unisex", "colour": "Black", "category": "ignored"},
        ],
    )


def rows(table, **kw):
    return np.flatnonzero(table.mask(FilterSpec.parse(**kw))).tolist()


def test_mask_semantics(table):
    assert rows(table) == [0, 1, 2, 3, 4]
    assert rows(table, filters=["gender:Women"]) == [0, 2, 3]
    assert rows(table, filters=["gender:Women", "gender:Men"]) == [0, 1, 2, 3]        # OR within attr
    assert rows(table, filters=["gender:Women", "colour:White"]) == [2]              # AND across attrs
    assert rows(table, filters=["size:38"]) == [0, 2]                                # compared as strings
    assert rows(table, filters=["gender:Nobody"]) == []
    assert rows(table, filters=["material:Cotton"]) == []                            # unknown attribute
    assert rows(table, excludes=["colour:Black"]) == [1, 2, 3]                       # missing is kept
    assert rows(table, excludes=["colour:Black", "colour:White"]) == [3]
    assert rows(table, filters=["category:Shoes"]) == [2, 4]                         # pseudo-attribute wins
    assert rows(table, excludes=["category:Shirts"]) == [2, 3, 4]
    assert rows(table, filters=["id:p1", "id:p4", "id:nope"]) == [1, 4]
    assert rows(table, excludes=["id:p0"]) == [1, 2, 3, 4]
    assert rows(table, allow_ids=["p0", "p2", "p9"], deny_ids=["p2"]) == [0]
    assert rows(table, allow_ids=[]) == []
    spec = FilterSpec.parse(["gender:Women"])
    assert table.mask(spec, rows=np.array([3, 1, 0])).tolist() == [True, False, True]


def test_updates_append_delete(table):
    table.set_row(1, "Shoes", {"gender": "Women", "material": "Leather"})
    assert rows(table, filters=["gender:Women"]) == [0, 1, 2, 3]
    assert rows(table, filters=["colour:White"]) == [2]                  # dropped attribute is now missing
    assert rows(table, filters=["material:Leather", "category:Shoes"]) == [1]
    new = table.append(["p5"], ["Bags"], [{"gender": "Women", "colour": "Red"}])
    assert new.tolist() == [5] and len(table) == 5 + 1 and table.row_of["p5"] == 5
    assert rows(table, filters=["colour:Red"]) == [5]
    assert rows(table, filters=["gender:Women"]) == [0, 1, 2, 3, 5]
    table.delete(0)
    assert rows(table, filters=["gender:Women"]) == [1, 2, 3, 5]
    assert 0 not in rows(table)
    with pytest.raises(ValueError, match="set_row"):
        table.append(["p2"], [None], [{}])
    with pytest.raises(ValueError, match="twice"):
        table.append(["x", "x"], [None, None], [{}, {}])
    assert len(table) == 6                                              # failed appends change nothing
    table.append(["p0"], ["Shirts"], [{"gender": "Men"}])                # a deleted id may come back
    assert table.row_of["p0"] == 6 and rows(table, filters=["id:p0"]) == [6]
    with pytest.raises(IndexError):
        table.set_row(99, None, {})


def test_many_appends_grow_columns():
    t = AttributeTable()
    for j in range(300):
        t.append([f"id{j}"], [f"c{j % 3}"], [{"v": j % 7} if j % 2 else {}])
    assert len(t) == 300
    got = np.flatnonzero(t.mask(FilterSpec.parse(["v:3", "category:c0"]))).tolist()
    assert got == [j for j in range(300) if j % 2 and j % 7 == 3 and j % 3 == 0]


# ---- crowding ---------------------------------------------------------------------------------------


@pytest.fixture
def brands() -> AttributeTable:
    b = ["A", "A", "B", "A", "B", "C", None, "C", "A"]
    c = ["x", "y", "x", "x", "x", "y", "x", "x", "y"]
    return AttributeTable.from_rows([f"p{i}" for i in range(9)], ["Cat"] * 9,
                                    [{"brand": br, "colour": co} for br, co in zip(b, c)])


def test_crowding_one_attribute(brands):
    ranked = np.array([8, 0, 1, 2, 3, 4, 5, 6, 7, -1, -1])
    got = select_with_crowding(ranked, FilterSpec.parse(max_per=["brand:2"]), brands, 20)
    assert got.tolist() == [8, 0, 2, 4, 5, 6, 7]          # A: 8, 0 only; B: 2, 4; C: 5, 7; None is free
    got = select_with_crowding(ranked, FilterSpec.parse(max_per=["brand:1"]), brands, 3)
    assert got.tolist() == [8, 2, 5]
    got = select_with_crowding(ranked, FilterSpec.parse(["colour:x"], max_per=["brand:1"]), brands, 20)
    assert got.tolist() == [0, 2, 6, 7]


def test_crowding_two_attributes_counts_only_kept(brands):
    ranked = np.arange(9)
    spec = FilterSpec.parse(max_per=["brand:2", "colour:2"])
    # 0 A x | 1 A y | 2 B x (x full) | 3 A: A full | 4 B x: x full | 5 C y (y full) | 6 None x: x full
    # 7 C x: x full | 8 A: A full
    assert select_with_crowding(ranked, spec, brands, 9).tolist() == [0, 1, 2, 5]
    assert select_with_crowding(ranked, spec, brands, 2).tolist() == [0, 1]
    assert select_with_crowding(np.array([-1]), spec, brands, 2).tolist() == []


def test_needs_more():
    assert needs_more(np.arange(3), 5, exhausted=False)
    assert not needs_more(np.arange(3), 5, exhausted=True)
    assert not needs_more(np.arange(5), 5, exhausted=False)


def test_overfetch_with_filters_and_crowding_returns_k_when_enough_exist():
    rng = np.random.default_rng(0)
    n, k = 2000, 10
    X = rng.standard_normal((n, 16)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    table = AttributeTable.from_rows(
        [str(i) for i in range(n)], [f"cat{i % 5}" for i in range(n)],
        [{"brand": f"b{rng.integers(0, 8)}", "colour": ["red", "blue", "green"][i % 3]} for i in range(n)],
    )
    spec = FilterSpec.parse(["colour:red"], ["category:cat1"], ["brand:1"])  # only 8 brands exist
    q = X[0]
    calls: list[int] = []

    def search(fetch: int) -> np.ndarray:
        calls.append(fetch)
        return topk_query(X, q, fetch)[1][0]

    full_rank = topk_query(X, q, n)[1][0]
    truth = select_with_crowding(full_rank, spec, table, k)
    assert len(truth) == 8                            # fewer than k exist: all of them come back
    got = fetch_filtered(search, spec, table, k, first_fetch=10)
    assert got.tolist() == truth.tolist() and calls[-1] == n
    spec2 = FilterSpec.parse(["colour:red"], ["category:cat1"], ["brand:2"])
    got = fetch_filtered(search, spec2, table, k, first_fetch=10)
    assert len(got) == k and got.tolist() == select_with_crowding(full_rank, spec2, table, k).tolist()
    assert table.mask(spec2)[got].all()
    calls.clear()
    fetch_filtered(search, spec2, table, k)          # default first fetch from the filter's selectivity
    assert len(calls) <= 2


def test_many_values_in_one_filter_use_the_lookup_path():
    t = AttributeTable.from_rows([str(i) for i in range(100)], [None] * 100, [{"v": i % 20} for i in range(100)])
    wanted = [f"v:{j}" for j in range(0, 20, 2)]  # 10 values: more than the compare path takes
    assert np.flatnonzero(t.mask(FilterSpec.parse(wanted))).tolist() == list(range(0, 100, 2))
    assert np.flatnonzero(t.mask(FilterSpec.parse(excludes=wanted))).tolist() == list(range(1, 100, 2))
