"""Where things live inside a workspace folder (see DESIGN.md: "A workspace on disk")."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lookalike.io_utils import read_json, write_json
from lookalike.store.sql import sqlite_url
from lookalike.store.vectors import safe_dirname


@dataclass(frozen=True)
class Workspace:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).resolve())

    def store_url(self, override: str | None = None) -> str:
        return override or sqlite_url(self.root)

    def vectors_dir(self, encoder: str) -> Path:
        return self.root / "vectors" / safe_dirname(encoder)

    def index_dir(self, encoder: str) -> Path:
        return self.root / "index" / safe_dirname(encoder)

    def models_dir(self, name: str) -> Path:
        return self.root / "models" / safe_dirname(name)

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    @property
    def build_json(self) -> Path:
        return self.root / "build.json"

    @property
    def catalogue_json(self) -> Path:
        """Where the catalogue lives and how its columns map (written by ingest)."""
        return self.root / "catalogue.json"

    def read(self, path: Path) -> dict[str, Any]:
        return read_json(path) if path.exists() else {}

    def write(self, path: Path, data: dict[str, Any]) -> None:
        write_json(path, data)
