"""Embedding engines: where the encode stage of ``build()`` runs.

``local`` is ``Encoder.encode_iter`` in this process (pipeline.embed); ``ray`` spreads the same Encoder over a
Ray cluster with Ray Data. Both write the same ``VectorStore`` chunks, so either resumes the other's run.
"""
from __future__ import annotations

ENGINES = ("local", "ray")


def check_engine(name: str) -> str:
    if name not in ENGINES:
        raise ValueError(f"unknown engine {name!r}: use one of {', '.join(ENGINES)}")
    return name
