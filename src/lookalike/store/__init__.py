from lookalike.store.sql import Store
from lookalike.store.vectors import VectorStore

__all__ = ["Store", "VectorStore"]
