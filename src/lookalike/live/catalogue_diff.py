"""``update_workspace``: apply the differences between a catalogue file and a built workspace.

The catalogue is read and validated by the ordinary ``ingest`` into a scratch store (so its images are
checked and hashed exactly as ``build`` would), then compared with the workspace's products:

- added: in the catalogue, not in the workspace -> embedded and added (own list + the lists it enters);
- image changed (content hash differs, or the product never had a vector) -> re-embedded and moved;
- attributes changed (title, category, attributes, image path with the same bytes) -> store and filters only;
- removed: in the workspace, not in the catalogue -> deleted from every list (``delete_missing=False`` keeps
  them, e.g. products added through the API that the file does not know).

Changes go through the same ``Updater`` as the API, one committed transaction each, and the index catches up
at the end. Like a re-run of ``build``, the workspace's ``catalogue.json`` then names this catalogue's folder.
A running server does not see an offline update until it restarts: change a live service through the API.
Bad rows and images are skipped, counted in ``problems`` and listed in ``reports/validation.json``.
"""
from __future__ import annotations

import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from lookalike.catalogue import ColumnMapping, image_resolver, ingest
from lookalike.live.index_sync import IndexSync
from lookalike.live.updater import Updater
from lookalike.recommender import Recommender
from lookalike.store.sql import ProductRow, Store, sqlite_url
from lookalike.workspace import Workspace

log = logging.getLogger(__name__)

EMBED_BATCH = 64


@dataclass
class UpdateReport:
    added: list[str] = field(default_factory=list)
    image_changed: list[str] = field(default_factory=list)
    attributes_changed: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    kept_missing: int = 0
    kept_invalid: int = 0
    encode_failed: dict[str, str] = field(default_factory=dict)
    problems: dict[str, int] = field(default_factory=dict)
    index: dict[str, object] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> str:
        bad = {k: v for k, v in self.problems.items() if v}
        lines = [f"added              {len(self.added)}", f"image changed      {len(self.image_changed)}",
                 f"attributes changed {len(self.attributes_changed)}", f"removed            {len(self.removed)}"]
        if self.kept_missing:
            lines.append(f"kept (not in file) {self.kept_missing}")
        if self.kept_invalid:
            lines.append(f"kept (bad row)     {self.kept_invalid}")
        lines.append(f"encode failed      {len(self.encode_failed)}"
                     + "".join(f"\n  {pid}: {why}" for pid, why in list(self.encode_failed.items())[:5]))
        lines.append("catalogue problems " + (", ".join(f"{k}={v}" for k, v in bad.items()) or "none")
                     + "  (details: reports/validation.json)")
        lines.append(f"index              {self.index.get('method', 'unchanged')}")
        lines.append(f"time               {self.seconds:.1f}s")
        return "\n".join(lines)


def diff(old: dict[str, ProductRow], new: dict[str, ProductRow], embedded: set[str]) -> tuple[
        list[str], list[str], list[str], list[str]]:
    """(added, image changed, attributes changed, removed) ids, each sorted."""
    added = sorted(set(new) - set(old))
    removed = sorted(set(old) - set(new))
    image, attrs = [], []
    for pid in sorted(set(new) & set(old)):
        a, b = old[pid], new[pid]
        if b.image_hash != a.image_hash or pid not in embedded:
            image.append(pid)
        elif (a.title, a.category, a.attributes, a.image) != (b.title, b.category, b.attributes, b.image):
            attrs.append(pid)
    return added, image, attrs, removed


def update_workspace(workspace: Path, catalogue: Path, mapping: ColumnMapping | str | None = None,
                     delete_missing: bool = True, store_url: str | None = None,
                     show_progress: bool = True) -> UpdateReport:
    t0 = time.perf_counter()
    ws = Workspace(workspace)
    if not ws.build_json.exists():
        raise FileNotFoundError(f"{ws.root} has no build.json: run `lookalike build CATALOGUE --workspace "
                                f"{ws.root}` first")
    if isinstance(mapping, str):
        mapping = ColumnMapping.parse(mapping)
    report = UpdateReport()
    scratch = Path(tempfile.mkdtemp(prefix=".update-", dir=ws.root))
    try:
        res = ingest(Path(catalogue), ws.root, mapping=mapping, store_url=sqlite_url(scratch),
                     show_progress=show_progress)
        report.problems = res.report.counts()
        problem_ids = res.report.problem_ids
        scratch_store = Store(sqlite_url(scratch))
        new = {p.id: p for p in scratch_store.iter_products()}
        scratch_store.engine.dispose()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    rec = Recommender.open(ws.root, store_url=store_url, load_encoder=False)
    if not new and rec.products:
        raise ValueError(f"no valid product in {catalogue} (problems: {report.problems}); refusing to delete "
                         f"all {len(rec.products)} products of {ws.root}: fix the catalogue and re-run")
    added, image, attrs, removed = diff(rec.products, new, set(rec.pos))
    # a row that is in the catalogue but failed validation keeps its product as it was: it is not "removed"
    report.kept_invalid = sum(pid in problem_ids for pid in removed)
    removed = [pid for pid in removed if pid not in problem_ids]
    if not delete_missing:
        report.kept_missing, removed = len(removed), []
    log.info("update: %d added, %d image changed, %d attributes changed, %d removed",
             len(added), len(image), len(attrs), len(removed))
    up = Updater(rec, index_sync=False)
    for pid in removed:
        up.delete(pid)
        report.removed.append(pid)
    for pid in attrs:
        up.upsert(new[pid], None)
        report.attributes_changed.append(pid)
    todo, is_new = added + image, set(added)
    resolve = image_resolver(ws.root)
    for a in range(0, len(todo), EMBED_BATCH):
        ids = todo[a : a + EMBED_BATCH]
        paths = [resolve(new[pid].image or "") for pid in ids]
        for batch in rec.encoder.encode_iter(paths, batch_size=EMBED_BATCH, show_progress=False, num_workers=0):
            for pos, why in batch.errors:  # skipped and counted, like a bad row in build
                report.encode_failed[ids[pos]] = why
            for pos, vec in zip(batch.indices.tolist(), batch.vectors):
                pid = ids[pos]
                up.upsert(new[pid], vec)
                (report.added if pid in is_new else report.image_changed).append(pid)
    sync = IndexSync(ws.root, rec.store, rec.encoder_name, start_thread=False)
    report.index = sync.checkpoint()
    report.seconds = round(time.perf_counter() - t0, 2)
    return report
