"""Catalogue readers: one iterator of records over CSV, JSONL, Parquet and two known folder layouts.

Every format reduces to "a table + a ColumnMapping": the Kaggle fashion layout is ``styles.csv`` with an
image *template* (``images/{id}.jpg``), the IKEA manifest is a CSV with its own column names. Readers never
raise on a bad row: they yield a ReadProblem and go on, so one broken line cannot stop a batch job.
"""
from __future__ import annotations

import csv
import datetime as dt
import decimal
import json
import logging
import math
import re
import string
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

CSV_SUFFIXES = {".csv", ".tsv"}
JSONL_SUFFIXES = {".jsonl", ".ndjson"}
PARQUET_SUFFIXES = {".parquet", ".pq"}
TABLE_SUFFIXES = CSV_SUFFIXES | JSONL_SUFFIXES | PARQUET_SUFFIXES

FASHION_COLUMNS = {"id", "productDisplayName", "articleType"}
IKEA_COLUMNS = {"path", "label", "group"}

# Some exports carry huge free-text cells; the csv module's 128 kB default would reject the whole row.
csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


@dataclass
class ColumnMapping:
    """Which source columns hold the id, title, category and image.

    ``image`` may be a template over the row's columns (``images/{sku}.jpg``) when the catalogue has no
    image column. ``title``/``category`` may be ``None`` (parse ``"category="``) when the source has none.
    """

    id: str = "id"
    title: str | None = "title"
    category: str | None = "category"
    image: str = "image"

    @classmethod
    def parse(cls, spec: str) -> ColumnMapping:
        """``"id=sku,title=name,category=type,image=img"``; unnamed keys keep their defaults."""
        valid = [f.name for f in fields(cls)]
        values: dict[str, str | None] = {}
        for part in filter(None, (p.strip() for p in spec.split(","))):
            key, sep, value = part.partition("=")
            key, value = key.strip(), value.strip()
            if not sep or key not in valid:
                raise ValueError(f"bad column mapping {part!r} in {spec!r}: use key=column with keys {valid}")
            if not value and key in ("id", "image"):
                raise ValueError(f"column mapping {key!r} cannot be empty")
            values[key] = value or None
        return cls(**values)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, str | None]:
        return asdict(self)

    @property
    def image_template(self) -> bool:
        return "{" in self.image

    def template_columns(self) -> list[str]:
        return [name for _, name, _, _ in string.Formatter().parse(self.image) if name] if self.image_template else []

    def mapped_columns(self) -> set[str]:
        cols = {self.id, self.title, self.category}
        cols |= set(self.template_columns()) if self.image_template else {self.image}
        return {c for c in cols if c}

    def _consumed(self) -> set[str]:
        """Columns that do not also become attributes (the template's inputs stay, e.g. a sku)."""
        cols = {self.id, self.title, self.category} | (set() if self.image_template else {self.image})
        return {c for c in cols if c}


@dataclass
class RawRecord:
    row: int  # 1-based record number in the source (a header is not counted)
    id: str
    title: str
    category: str | None
    image: str | None  # relative to the catalogue root, or an http(s) URL
    attributes: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReadProblem:
    row: int
    id: str | None
    kind: str
    detail: str

    def describe(self) -> str:
        who = f"id {self.id!r}" if self.id else "no id"
        return f"{self.kind} at row {self.row} ({who}): {self.detail}"


def clean_value(v: Any) -> Any:
    """A JSON-safe attribute value, or None when it should be absent (empty cell, NaN, null)."""
    if v is None:
        return None
    if isinstance(v, str):
        v = v.strip()
        return v or None
    if isinstance(v, bool | int):
        return v
    if isinstance(v, float):
        return None if not math.isfinite(v) else (int(v) if v.is_integer() and abs(v) < 2**53 else v)
    if isinstance(v, decimal.Decimal):
        return clean_value(float(v))
    if isinstance(v, dt.datetime | dt.date | dt.time):
        return v.isoformat()
    if isinstance(v, dict):
        out = {str(k): clean_value(x) for k, x in v.items()}
        return {k: x for k, x in out.items() if x is not None} or None
    if isinstance(v, list | tuple):
        items = [x for x in (clean_value(x) for x in v) if x is not None]
        return items or None
    if isinstance(v, bytes):
        return None  # binary blobs are not product attributes
    if hasattr(v, "item"):  # numpy scalars
        return clean_value(v.item())
    return str(v)


def _as_id(v: Any) -> str | None:
    v = clean_value(v)
    if v is None or isinstance(v, dict | list):
        return None
    return str(v).strip() or None


@dataclass
class Catalogue:
    """An opened catalogue: where its images live and how to read its rows."""

    path: Path  # what the user gave
    source: Path  # the table file actually read
    root: Path  # image paths are relative to this folder
    format: str  # fashion | ikea | csv | jsonl | parquet
    mapping: ColumnMapping
    columns: list[str]
    keep_columns: list[str] | None = None  # attributes to keep (None: every unmapped column)

    def iter_records(self) -> Iterator[RawRecord | ReadProblem]:
        kind = _table_kind(self.source)
        rows = {"csv": self._csv_rows, "jsonl": self._jsonl_rows, "parquet": self._parquet_rows}[kind]()
        for row, values in rows:
            yield values if isinstance(values, ReadProblem) else self._record(row, values)

    def to_dict(self) -> dict[str, Any]:
        return {"root": str(self.root), "format": self.format, "mapping": self.mapping.to_dict(),
                "path": str(self.path), "source": str(self.source)}

    # ---- one row -> record ------------------------------------------------------------------------
    def _record(self, row: int, values: dict[str, Any]) -> RawRecord | ReadProblem:
        m = self.mapping
        pid = _as_id(values.get(m.id))
        if pid is None:
            return ReadProblem(row, None, "malformed_row", f"missing id (column {m.id!r})")
        title = clean_value(values.get(m.title)) if m.title else None
        category = clean_value(values.get(m.category)) if m.category else None
        if m.image_template:
            try:
                image: Any = m.image.format_map({k: "" if v is None else _as_id(v) or "" for k, v in values.items()})
            except (KeyError, ValueError, IndexError) as e:
                return ReadProblem(row, pid, "malformed_row", f"image template {m.image!r}: {e}")
        else:
            image = clean_value(values.get(m.image))
            if isinstance(image, list):  # several images (e.g. a JSON array): the first is the product's
                image = image[0] if isinstance(image[0], str) else None
        consumed = m._consumed()
        attrs: dict[str, Any] = {}
        for k, v in values.items():
            if k in consumed or (self.keep_columns is not None and k not in self.keep_columns):
                continue
            v = clean_value(v)
            if v is not None:
                attrs[str(k)] = v
        return RawRecord(row=row, id=pid, title="" if title is None else str(title),
                         category=None if category is None else str(category),
                         image=None if image is None or not str(image).strip() else str(image).strip(),
                         attributes=attrs)

    # ---- formats ----------------------------------------------------------------------------------
    def _csv_rows(self) -> Iterator[tuple[int, dict[str, Any] | ReadProblem]]:
        delimiter = "\t" if self.source.suffix.lower() == ".tsv" else ","
        with open(self.source, newline="", encoding="utf-8-sig", errors="replace") as f:
            reader = csv.reader(f, delimiter=delimiter)
            header = next(reader, None)
            if header is None:
                return
            header = [h.strip() for h in header]
            id_col = header.index(self.mapping.id) if self.mapping.id in header else None
            row = 0
            while True:
                row += 1
                try:
                    cells = next(reader)
                except StopIteration:
                    return
                except csv.Error as e:
                    yield row, ReadProblem(row, None, "malformed_row", f"line {reader.line_num}: {e}")
                    continue
                if not any(c.strip() for c in cells):
                    row -= 1  # blank lines are not records
                    continue
                if len(cells) != len(header):
                    pid = _as_id(cells[id_col]) if id_col is not None and id_col < len(cells) else None
                    yield row, ReadProblem(row, pid, "malformed_row",
                                           f"line {reader.line_num}: {len(cells)} fields, expected {len(header)}")
                    continue
                yield row, dict(zip(header, cells, strict=True))

    def _jsonl_rows(self) -> Iterator[tuple[int, dict[str, Any] | ReadProblem]]:
        row = 0
        with open(self.source, encoding="utf-8-sig", errors="replace") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                row += 1
                try:
                    obj = json.loads(line, parse_constant=_no_nan)
                except ValueError as e:
                    yield row, ReadProblem(row, None, "malformed_row", f"line {line_no}: invalid JSON: {e}")
                    continue
                if not isinstance(obj, dict):
                    yield row, ReadProblem(row, None, "malformed_row",
                                           f"line {line_no}: expected a JSON object, got {type(obj).__name__}")
                    continue
                yield row, obj

    def _parquet_rows(self) -> Iterator[tuple[int, dict[str, Any] | ReadProblem]]:
        import pyarrow.parquet as pq

        row = 0
        for batch in pq.ParquetFile(self.source).iter_batches(batch_size=10_000):
            for values in batch.to_pylist():
                row += 1
                yield row, values


def _no_nan(name: str) -> None:
    """JSON's NaN/Infinity extensions become absent values: attributes must stay strict JSON."""


def _table_kind(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    if suffix in JSONL_SUFFIXES:
        return "jsonl"
    if suffix in PARQUET_SUFFIXES:
        return "parquet"
    raise ValueError(f"unsupported catalogue file {path.name!r}: use one of {sorted(TABLE_SUFFIXES)}")


def _columns(path: Path) -> list[str]:
    kind = _table_kind(path)
    if kind == "csv":
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        with open(path, newline="", encoding="utf-8-sig", errors="replace") as f:
            header = next(csv.reader(f, delimiter=delimiter), None)
        return [h.strip() for h in header or []]
    if kind == "parquet":
        import pyarrow.parquet as pq

        return list(pq.read_schema(path).names)
    # JSONL has no header: the keys of the first object stand for the columns.
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            try:
                obj = json.loads(line, parse_constant=_no_nan)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return list(obj)
    return []


def _check_columns(source: Path, columns: list[str], mapping: ColumnMapping, explicit: bool) -> ColumnMapping:
    """Refuse a mapping that names absent columns; default title/category columns may be absent."""
    if not explicit:
        mapping = ColumnMapping(mapping.id, mapping.title if mapping.title in columns else None,
                                mapping.category if mapping.category in columns else None, mapping.image)
    missing = sorted(mapping.mapped_columns() - set(columns))
    if missing:
        raise ValueError(f"{source.name}: mapped column(s) {missing} not found; the columns are {columns}")
    return mapping


def _is_fashion_dir(folder: Path) -> bool:
    styles = folder / "styles.csv"
    return styles.is_file() and (folder / "images").is_dir() and FASHION_COLUMNS <= set(_columns(styles))


def _is_ikea_manifest(file: Path) -> bool:
    return file.name == "manifest.csv" and file.is_file() and IKEA_COLUMNS <= set(_columns(file))


def _fashion(path: Path, folder: Path) -> Catalogue:
    styles = folder / "styles.csv"
    mapping = ColumnMapping(id="id", title="productDisplayName", category="articleType", image="images/{id}.jpg")
    return Catalogue(path, styles, folder, "fashion", mapping, _columns(styles))


def _ikea(path: Path, manifest: Path) -> Catalogue:
    mapping = ColumnMapping(id="group", title="name", category="label", image="path")
    cols = _columns(manifest)
    keep = [c for c in ("coarse_folder", "color", "size") if c in cols]
    return Catalogue(path, manifest, manifest.parent, "ikea", mapping, cols, keep_columns=keep)


def open_catalogue(path: Path, mapping: ColumnMapping | None = None) -> Catalogue:
    """Open a catalogue file or folder; the known layouts are detected when no mapping is given."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"catalogue {path} does not exist")
    path = path.resolve()
    if path.is_dir():
        if mapping is None and _is_fashion_dir(path):
            return _fashion(path, path)
        if mapping is None and _is_ikea_manifest(path / "manifest.csv"):
            return _ikea(path, path / "manifest.csv")
        tables = sorted(p for p in path.iterdir()
                        if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES and not p.name.startswith("."))
        if len(tables) != 1:
            found = [p.name for p in tables] or "none"
            raise ValueError(f"{path} must hold exactly one catalogue file ({sorted(TABLE_SUFFIXES)}); found {found}")
        source = tables[0]
    else:
        source = path
        if mapping is None and _is_ikea_manifest(source):
            return _ikea(path, source)
        if mapping is None and source.name == "styles.csv" and _is_fashion_dir(source.parent):
            return _fashion(path, source.parent)
    kind = _table_kind(source)
    columns = _columns(source)
    checked = _check_columns(source, columns, mapping or ColumnMapping(), explicit=mapping is not None)
    log.debug("catalogue %s: %s with columns %s", source, kind, columns)
    return Catalogue(path, source, source.parent, kind, checked, columns)


_URL = re.compile(r"^https?://", re.IGNORECASE)


def is_url(image: str | None) -> bool:
    return bool(image) and bool(_URL.match(image or ""))
