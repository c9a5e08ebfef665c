"""lookalike: a self-hosted visual-similarity product recommender."""
__version__ = "0.1.0"
