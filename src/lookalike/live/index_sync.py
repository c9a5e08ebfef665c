"""Bring the on-disk vectors and index up to date with the journal, in a background thread.

Live changes are durable as soon as their transaction commits (the journal holds new vectors), so this is
only catch-up work and may lag. A checkpoint:

1. copies journalled vectors into a new vector chunk (``store.journal.flush_vectors``);
2. updates the index: a backend that can ``add`` and ``remove`` gets the new labels and loses the removed
   ones, then saves itself (each file written to a temporary name and renamed); any other backend (Annoy, a
   faiss type without remove) is rebuilt over the live vectors into ``<dir>.rebuild`` and swapped in with two
   renames. The old folder serves until the swap; a crash mid-rebuild leaves it in place, and since
   ``live.json`` still names the old journal position, the rebuild runs again at the next start;
3. records the last journal entry applied in ``index/<encoder>/live.json`` and prunes the journal.

Several processes serving one workspace (workers, or replicas on a shared volume) checkpoint one at a time
(``store.changes.process_lock``), and a process reloads the index when another one moved it on.

Labels: ``ids.json`` maps label -> product id. New vectors get the next label; a removed label's slot holds
``null``. A rebuild renumbers 0..n-1. If an incremental sync finds the index out of step (a crash between two
of its files), it falls back to a rebuild, which derives everything from the vector files and the store.
"""
from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.index.build import INFOS, build_index, load_index
from lookalike.store import changes, journal
from lookalike.store.sql import Store
from lookalike.store.vectors import VectorStore
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)

LIVE = "live.json"


def recover_dir(index_dir: Path) -> None:
    """Undo a swap or a rebuild that a crash interrupted (see the module docstring)."""
    old = index_dir.with_name(index_dir.name + ".old")
    tmp = index_dir.with_name(index_dir.name + ".rebuild")
    if not index_dir.exists() and old.exists():
        log.warning("index swap of %s was interrupted: restoring the previous index", index_dir)
        os.replace(old, index_dir)
    for leftover in (old, tmp):
        if leftover.exists():
            shutil.rmtree(leftover, ignore_errors=True)


def index_behind(workspace: Path, store: Store, encoder: str) -> bool:
    """Does the journal hold changes the index has not taken yet (a sync to resume at start-up)?"""
    ws = Workspace(workspace)
    synced = int(ws.read(ws.index_dir(encoder) / LIVE).get("synced_seq", 0))
    return journal.last_seq(store, encoder) > synced


class IndexSync:
    def __init__(self, workspace: Path, store: Store, encoder: str, delay: float = 10.0,
                 start_thread: bool = True, before_swap: Callable[[Path], None] | None = None) -> None:
        self.ws = Workspace(workspace)
        self.store, self.encoder, self.delay = store, encoder, delay
        self.dir = self.ws.index_dir(encoder)
        self.before_swap = before_swap  # a test hook: called with the rebuilt folder just before the swap
        self._index: Any = None
        self._seen = self.synced_seq()  # where this process last left (or found) the index
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._stop = threading.Event()
        self.last: dict[str, Any] = {}
        recover_dir(self.dir)
        self._thread: threading.Thread | None = None
        if start_thread:
            self._thread = threading.Thread(target=self._loop, name="lookalike-index-sync", daemon=True)
            self._thread.start()
        if self.behind():
            log.info("index of %s is behind the journal: syncing in the background", encoder)
            self.kick()

    # ---- state ------------------------------------------------------------------------------------
    def synced_seq(self) -> int:
        return int(self.ws.read(self.dir / LIVE).get("synced_seq", 0))

    def behind(self) -> bool:
        return index_behind(self.ws.root, self.store, self.encoder)

    def kick(self) -> None:
        self._kick.set()

    def close(self, timeout: float = 30.0) -> None:
        self._stop.set()
        self._kick.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._kick.wait()
            if self._stop.is_set():
                return
            self._stop.wait(self.delay)  # let a burst of writes collect into one checkpoint
            self._kick.clear()
            try:
                self.checkpoint()
            except Exception:  # the journal still holds everything: the next kick or start retries
                log.exception("index sync of %s failed; will retry", self.encoder)

    # ---- the work ---------------------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        with self._lock, changes.process_lock(self.store, "index-sync"):
            t0 = time.perf_counter()
            if self.synced_seq() != self._seen:
                self._index = None  # another process serving this workspace moved the index on: reload it
            flushed = journal.flush_vectors(self.ws.root, self.store, self.encoder)
            todo = journal.entries(self.store, self.encoder, after=self.synced_seq())
            if not todo:
                return {"flushed": flushed, "entries": 0}
            upto = todo[-1].seq
            how = "none"
            if (self.dir / INFOS).exists():
                how = self._incremental(todo) if self._can_update() else "rebuild"
                if how == "rebuild":
                    self._rebuild()
            self.ws.write(self.dir / LIVE, {"synced_seq": upto, "method": how})
            self._seen = upto
            pruned = journal.prune(self.store, self.encoder, upto)
            self.last = {"flushed": flushed, "entries": len(todo), "method": how, "pruned": pruned,
                         "seconds": round(time.perf_counter() - t0, 3)}
            log.info("index sync of %s: %s", self.encoder, self.last)
            return self.last

    def _loaded(self) -> Any:
        if self._index is None:
            self._index = load_index(self.dir)
        return self._index

    def _can_update(self) -> bool:
        try:
            caps = self._loaded().capabilities
        except (FileNotFoundError, ValueError, RuntimeError) as e:
            log.warning("cannot load the index of %s (%s): rebuilding it", self.encoder, e)
            return False
        return "add" in caps and "remove" in caps

    def _incremental(self, todo: list[journal.Entry]) -> str:
        index = self._loaded()
        ids: list[str | None] = list(self.ws.read(self.dir / "ids.json").get("ids", []))
        where = {pid: lab for lab, pid in enumerate(ids) if pid is not None}
        attrs: dict[str, dict[str, Any]] = {}
        if "attr_filter" in index.capabilities:
            from lookalike.pipeline import filter_attributes

            added = [e.product_id for e in todo if e.op == "add"]
            attrs = dict(zip(added, filter_attributes(self.store, added)))
        try:
            for e in todo:
                if e.product_id in where:
                    lab = where.pop(e.product_id)
                    index.remove(np.asarray([lab], np.int64))
                    ids[lab] = None
                if e.op == "add" and e.vector is not None:
                    lab = len(ids)
                    if e.product_id in attrs:
                        index.add(e.vector[None, :], np.asarray([lab], np.int64), attributes=[attrs[e.product_id]])
                    else:
                        index.add(e.vector[None, :], np.asarray([lab], np.int64))
                    ids.append(e.product_id)
                    where[e.product_id] = lab
        except (ValueError, RuntimeError, KeyError) as e:
            log.warning("index of %s is out of step with its ids (%s): rebuilding it", self.encoder, e)
            self._index = None
            return "rebuild"
        infos = self.ws.read(self.dir / INFOS)
        index.save(self.dir / infos["file"])
        self.ws.write(self.dir / "ids.json", {"ids": ids})
        self.ws.write(self.dir / INFOS, {**infos, "n": len(index), "bytes": index.nbytes(),
                                         "updated_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
        return "incremental"

    def _rebuild(self) -> None:
        infos = self.ws.read(self.dir / INFOS)
        live = {p.id for p in self.store.iter_products()}
        ids, vecs = VectorStore(self.ws.vectors_dir(self.encoder)).load(keep=live)
        tmp = self.dir.with_name(self.dir.name + ".rebuild")
        shutil.rmtree(tmp, ignore_errors=True)
        t0 = time.perf_counter()
        index, _ = build_index(vecs, np.arange(len(ids), dtype=np.int64), name=infos.get("backend", "auto"),
                               path=tmp, params=infos.get("params"), recall_sample=min(1000, len(ids)))
        self.ws.write(tmp / "ids.json", {"ids": ids})
        for f in self.dir.iterdir():  # the % scale, similar.json, live.json travel with the folder
            if not f.name.startswith("index.") and f.name not in (INFOS, "ids.json") and f.is_file():
                shutil.copy2(f, tmp / f.name)
        if self.before_swap is not None:
            self.before_swap(tmp)
        old = self.dir.with_name(self.dir.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(self.dir, old)
        os.replace(tmp, self.dir)
        shutil.rmtree(old, ignore_errors=True)
        self._index = index
        log.info("rebuilt the %s index of %s over %d vectors in %.1fs", infos.get("backend"), self.encoder,
                 len(ids), time.perf_counter() - t0)
