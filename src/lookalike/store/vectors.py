"""Vectors on disk, in chunks written as they finish, so an interrupted embedding run resumes.

``vectors/<encoder>/chunk-00000.npy`` holds float32 rows; ``chunk-00000.json`` the ids and image hashes of
those rows. A later chunk wins over an earlier one for the same id (a re-encoded, changed image).
``encoder.json`` is the identity of the encoder that made them (``Encoder.identity``): see ``bind``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.io_utils import atomic_write, read_json, save_npy, write_json

_CHUNK = re.compile(r"chunk-(\d{5,})\.json$")
IDENTITY = "encoder.json"


def safe_dirname(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)


def _as_stored(identity: dict[str, Any]) -> Any:
    return json.loads(json.dumps(identity, default=str))  # tuples compare as the lists JSON keeps


class VectorStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    @classmethod
    def for_encoder(cls, workspace: Path, encoder: str) -> VectorStore:
        return cls(Path(workspace) / "vectors" / safe_dirname(encoder))

    def _chunks(self) -> list[int]:
        if not self.root.exists():
            return []
        return sorted(int(m.group(1)) for p in self.root.iterdir() if (m := _CHUNK.search(p.name)))

    def changed_since(self, identity: dict[str, Any]) -> list[str]:
        """The identity keys (``Encoder.identity``) that differ from those of the encoder that wrote the stored
        vectors; [] when they match or none was recorded (vectors from before identities existed)."""
        path = self.root / IDENTITY
        if not path.exists():
            return []
        old, new = read_json(path), _as_stored(identity)
        return sorted(k for k in {*old, *new} if old.get(k) != new.get(k))

    def bind(self, identity: dict[str, Any]) -> list[str]:
        """Tie the stored vectors to the encoder that makes them: when it changed (a model retrained in place
        keeps its name), every chunk is stale and discarded. Returns the keys that changed."""
        changed = self.changed_since(identity)
        if changed:
            self._remove(self._chunks())
        write_json(self.root / IDENTITY, _as_stored(identity))
        return changed

    def append(self, ids: list[str], hashes: list[str | None], vectors: np.ndarray) -> None:
        if len(ids) != len(vectors) or len(ids) != len(hashes):
            raise ValueError("ids, hashes and vectors must have the same length")
        nxt = (max(self._chunks()) + 1) if self._chunks() else 0
        # the .npy first, the .json last: a chunk without its json is ignored, so a crash is harmless
        atomic_write(self.root / f"chunk-{nxt:05d}.npy", lambda p: save_npy(p, vectors.astype(np.float32)))
        write_json(self.root / f"chunk-{nxt:05d}.json", {"ids": ids, "hashes": hashes})

    def done(self) -> dict[str, str | None]:
        """id -> image hash of every stored vector (the newest one per id)."""
        out: dict[str, str | None] = {}
        for c in self._chunks():
            meta = read_json(self.root / f"chunk-{c:05d}.json")
            out.update(zip(meta["ids"], meta["hashes"]))
        return out

    def load(self, keep: set[str] | None = None) -> tuple[list[str], np.ndarray]:
        """All ids and their vectors (newest per id), optionally restricted to ``keep``."""
        pos: dict[str, tuple[int, int]] = {}
        arrays: list[np.ndarray] = []
        for n, c in enumerate(self._chunks()):
            meta = read_json(self.root / f"chunk-{c:05d}.json")
            arrays.append(np.load(self.root / f"chunk-{c:05d}.npy", mmap_mode="r"))
            for row, pid in enumerate(meta["ids"]):
                pos[pid] = (n, row)
        ids = [pid for pid in pos if keep is None or pid in keep]
        dim = arrays[0].shape[1] if arrays else 0
        out = np.empty((len(ids), dim), dtype=np.float32)
        for i, pid in enumerate(ids):
            n, row = pos[pid]
            out[i] = arrays[n][row]
        return ids, out

    def compact(self) -> None:
        """Rewrite all chunks as one (after many incremental appends)."""
        chunks = self._chunks()
        if len(chunks) <= 1:
            return
        meta_all = self.done()
        ids, vecs = self.load()
        hashes = [meta_all[i] for i in ids]
        nxt = max(chunks) + 1
        atomic_write(self.root / f"chunk-{nxt:05d}.npy", lambda p: save_npy(p, vecs))
        write_json(self.root / f"chunk-{nxt:05d}.json", {"ids": ids, "hashes": hashes})
        self._remove(chunks)

    def _remove(self, chunks: list[int]) -> None:
        for c in chunks:  # the .json first: a chunk without it is ignored, like an interrupted append
            (self.root / f"chunk-{c:05d}.json").unlink(missing_ok=True)
            (self.root / f"chunk-{c:05d}.npy").unlink(missing_ok=True)
