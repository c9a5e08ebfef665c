"""Catalogue ingestion: readers, safe image decoding, the validation report.

``ingest`` (the function) is imported eagerly on purpose: a lazy re-export would be shadowed by the
``lookalike.catalogue.ingest`` submodule as soon as anything imports it directly.
"""
from lookalike.catalogue.ingest import (
    CatalogueError,
    IngestResult,
    image_resolver,
    ingest,
    resolve_image_path,
)
from lookalike.catalogue.readers import Catalogue, ColumnMapping, RawRecord, ReadProblem, open_catalogue
from lookalike.catalogue.report import ValidationReport

__all__ = ["Catalogue", "CatalogueError", "ColumnMapping", "IngestResult", "RawRecord", "ReadProblem",
           "ValidationReport", "image_resolver", "ingest", "open_catalogue", "resolve_image_path"]
