"""Recommendation primitives over vectors and attributes: exact top-k, filters + crowding, similarity %."""
from lookalike.recommend.filters import (
    AttributeTable,
    FilterSpec,
    fetch_filtered,
    needs_more,
    select_with_crowding,
)
from lookalike.recommend.similarity_pct import SimilarityScale
from lookalike.recommend.topk import topk_all, topk_query

__all__ = [
    "AttributeTable",
    "FilterSpec",
    "SimilarityScale",
    "fetch_filtered",
    "needs_more",
    "select_with_crowding",
    "topk_all",
    "topk_query",
]
