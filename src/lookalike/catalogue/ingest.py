"""Ingest: read a catalogue, validate every image, store the good products, report the rest.

Where a product's image lives (the one scheme every later stage uses, through ``resolve_image_path``):
- a local image: ``ProductRow.image`` is its path relative to the catalogue root (posix), and the root is
  recorded in ``<workspace>/catalogue.json``;
- an http(s) image: ``ProductRow.image`` keeps the URL, and the downloaded bytes live in
  ``<workspace>/images/<blake2b(url)><ext>`` (``ext`` from the URL's path when it is an image suffix).
  Naming the copy after the URL (not the bytes) lets anyone find it from the product alone; the content hash
  is still stored in ``ProductRow.image_hash``. A re-run reuses the copies already downloaded.
"""
from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import closing
from dataclasses import dataclass
from itertools import islice
from multiprocessing import get_context
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from tqdm.auto import tqdm

from lookalike.catalogue.readers import ColumnMapping, RawRecord, ReadProblem, is_url, open_catalogue
from lookalike.catalogue.report import ValidationReport
from lookalike.imaging import (
    DEFAULT_MAX_PIXELS,
    ImageTooLargeError,
    UnsafePathError,
    content_hash,
    load_image,
    safe_join,
)
from lookalike.io_utils import atomic_write
from lookalike.store.sql import ProductRow, Store
from lookalike.workspace import Workspace

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)

URL_CACHE_DIR = "images"
MAX_DOWNLOAD_BYTES = 20 * 1024 * 1024
DOWNLOAD_TIMEOUT = 10.0
DOWNLOAD_THREADS = 8
MAX_ID_LENGTH = 128  # products.id is String(128): longer ids would fail on PostgreSQL
INPROCESS_BELOW = 512  # spawning workers costs ~1 s: small catalogues decode faster in-process
_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".avif"}


class CatalogueError(ValueError):
    """A problem in the catalogue, raised in strict mode (the message describes the first one)."""


class FetchError(OSError):
    """An image URL could not be downloaded."""


@dataclass
class IngestResult:
    catalogue_root: Path
    format: str
    n_rows: int  # rows read (after ``limit``), good and bad
    n_ok: int  # products stored
    report: ValidationReport
    seconds: float


# ---- where images live --------------------------------------------------------------------------
def url_cache_name(url: str) -> str:
    suffix = PurePosixPath(urlsplit(url).path).suffix.lower()
    return content_hash(url.encode()) + (suffix if suffix in _IMAGE_SUFFIXES else "")


def resolve_image_path(workspace: Path, catalogue_root: Path, image: str) -> Path:
    """The local file of a product's ``image`` (see the module docstring); raises UnsafePathError when a
    relative path escapes the catalogue root. The file may not exist (e.g. deleted since ingest)."""
    if is_url(image):
        return Path(workspace).resolve() / URL_CACHE_DIR / url_cache_name(image)
    return safe_join(Path(catalogue_root), image)


def image_resolver(workspace: Path) -> Callable[[str], Path]:
    """``resolve_image_path`` bound to a workspace and the catalogue root its ``catalogue.json`` names."""
    ws = Workspace(workspace)
    info = ws.read(ws.catalogue_json)
    if "root" not in info:
        raise FileNotFoundError(f"{ws.catalogue_json} is missing: run ingest on this workspace first")
    return functools.partial(resolve_image_path, ws.root, Path(info["root"]))


# ---- the per-image work ---------------------------------------------------------------------------
def check_image(path: str, max_pixels: int = DEFAULT_MAX_PIXELS) -> tuple[str, str]:
    """Decode one image fully: ("ok", content hash) or (problem kind, detail). Runs in worker processes."""
    try:
        data = Path(path).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return "missing_image", f"no image file at {path}"
    except OSError as e:
        return "missing_image", f"cannot read {path}: {e}"
    try:
        load_image(data, max_pixels=max_pixels)
    except ImageTooLargeError as e:
        return "image_too_large", str(e)
    except Exception as e:  # noqa: BLE001 - any decode failure is a reported problem
        return "undecodable_image", str(e)
    return "ok", content_hash(data)


def download_image(client: httpx.Client, url: str, dest: Path, max_bytes: int = MAX_DOWNLOAD_BYTES) -> None:
    """Fetch ``url`` into ``dest`` atomically; raises FetchError (status, size cap, network error)."""
    import httpx  # here, not at the top: image workers import this module and never download

    try:
        with client.stream("GET", url) as r:
            if not r.is_success:
                raise FetchError(f"HTTP {r.status_code} for {url}")
            declared = r.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise FetchError(f"{url} is {declared} bytes, over the cap of {max_bytes}")
            buf = bytearray()
            for chunk in r.iter_bytes():  # decoded bytes: a gzip bomb hits the cap too
                buf += chunk
                if len(buf) > max_bytes:
                    raise FetchError(f"{url} is over the cap of {max_bytes} bytes")
    except httpx.HTTPError as e:
        raise FetchError(f"cannot fetch {url}: {type(e).__name__}: {e}") from e
    if not buf:
        raise FetchError(f"{url} returned an empty body")
    atomic_write(dest, lambda p: p.write_bytes(bytes(buf)))


def _fetch_all(urls: list[str], cache: Path, show_progress: bool) -> dict[str, str]:
    """Download the URLs not cached yet; returns {url: error} for the failures."""
    todo = [u for u in urls if not (cache / url_cache_name(u)).is_file()]
    if len(todo) < len(urls):
        log.info("%d of %d image URLs already downloaded", len(urls) - len(todo), len(urls))
    errors: dict[str, str] = {}
    if not todo:
        return errors
    import httpx

    cache.mkdir(parents=True, exist_ok=True)
    headers = {"User-Agent": "lookalike-ingest/0.1"}
    with httpx.Client(timeout=DOWNLOAD_TIMEOUT, follow_redirects=True, headers=headers) as client, \
            ThreadPoolExecutor(DOWNLOAD_THREADS) as pool:

        def one(url: str) -> tuple[str, str | None]:
            try:
                download_image(client, url, cache / url_cache_name(url))
                return url, None
            except (FetchError, OSError) as e:
                return url, str(e)

        for url, err in tqdm(pool.map(one, todo), total=len(todo), desc="download", unit="img",
                             disable=not show_progress):
            if err is not None:
                errors[url] = err
    return errors


def _check_all(paths: list[str], max_pixels: int, num_workers: int | None,
               show_progress: bool) -> Iterator[tuple[str, str]]:
    """``check_image`` over ``paths`` in order, in spawned worker processes unless the job is small."""
    n = len(paths)
    workers = max(1, min(4, os.cpu_count() or 1)) if num_workers is None else num_workers
    job = functools.partial(check_image, max_pixels=max_pixels)
    bar = tqdm(total=n, desc="check images", unit="img", disable=not show_progress, mininterval=0.5)
    try:
        if workers <= 1 or (num_workers is None and n < INPROCESS_BELOW):
            for res in map(job, paths):
                bar.update()
                yield res
            return
        # spawn, not fork: the caller may hold threads (torch, SQLAlchemy pools) that fork would copy broken
        pool = ProcessPoolExecutor(workers, mp_context=get_context("spawn"))
        done = 0
        try:
            for res in pool.map(job, paths, chunksize=max(1, min(256, n // (workers * 8)))):
                done += 1
                bar.update()
                yield res
        except BrokenProcessPool as e:
            # a worker died (OOM killer, a main module spawn cannot re-import): finish here, slower but whole
            log.warning("image worker pool broke (%s); checking the remaining %d images in-process", e, n - done)
            for res in map(job, paths[done:]):
                bar.update()
                yield res
        finally:
            # a strict-mode raise (or Ctrl-C) must not wait for the queued chunks
            pool.shutdown(wait=True, cancel_futures=True)
    finally:
        bar.close()


# ---- the stage ------------------------------------------------------------------------------------
@dataclass
class _Pending:
    record: RawRecord
    path: Path  # the local file to decode
    image: str  # what the store keeps: relative posix path, or the URL


def ingest(catalogue: Path, workspace: Path, mapping: ColumnMapping | None = None, strict: bool = False,
           limit: int | None = None, store_url: str | None = None, show_progress: bool = True,
           num_workers: int | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> IngestResult:
    """Read ``catalogue``, validate its images and upsert the good products into the workspace's store.

    Bad rows and images are skipped and listed in ``<workspace>/reports/validation.json``; with
    ``strict`` the first one raises CatalogueError before the store or the reports are written.
    """
    t0 = time.perf_counter()
    cat = open_catalogue(Path(catalogue), mapping)
    ws = Workspace(workspace)
    root = cat.root
    report = ValidationReport()

    def problem(p: ReadProblem) -> None:
        if strict:
            raise CatalogueError(p.describe())
        report.add(p)

    # 1) rows -> records with a safe image location (cheap, in this process)
    seen: set[str] = set()
    pending: list[_Pending] = []
    n_rows = 0
    for item in islice(cat.iter_records(), limit):
        n_rows += 1
        if isinstance(item, ReadProblem):
            problem(item)
            continue
        if len(item.id) > MAX_ID_LENGTH:
            problem(ReadProblem(item.row, item.id[:40] + "...", "malformed_row",
                                f"id longer than {MAX_ID_LENGTH} characters"))
            continue
        if item.id in seen:
            problem(ReadProblem(item.row, item.id, "duplicate_id", "id already seen on an earlier row; kept the first"))
            continue
        seen.add(item.id)
        if not item.image:
            problem(ReadProblem(item.row, item.id, "missing_image", "no image given"))
            continue
        if is_url(item.image):
            pending.append(_Pending(item, resolve_image_path(ws.root, root, item.image), item.image))
            continue
        try:
            # catalogues exported on Windows use backslashes; they are never part of a real file name here
            path = safe_join(root, item.image.replace("\\", "/"))
        except UnsafePathError as e:
            problem(ReadProblem(item.row, item.id, "unsafe_path", str(e)))
            continue
        pending.append(_Pending(item, path, path.relative_to(root).as_posix()))

    # 2) download the http(s) images into the workspace cache
    urls = list(dict.fromkeys(p.image for p in pending if is_url(p.image)))
    failed = _fetch_all(urls, ws.root / URL_CACHE_DIR, show_progress) if urls else {}
    if failed:
        kept = []
        for p in pending:
            if p.image in failed:
                problem(ReadProblem(p.record.row, p.record.id, "fetch_failed", failed[p.image]))
            else:
                kept.append(p)
        pending = kept

    # 3) decode every image in worker processes
    rows: list[ProductRow] = []
    # closing(): a strict-mode raise shuts the worker pool down now, not when the traceback is freed
    with closing(_check_all([str(p.path) for p in pending], max_pixels, num_workers, show_progress)) as results:
        for p, (status, value) in zip(pending, results, strict=True):
            if status == "ok":
                r = p.record
                rows.append(ProductRow(r.id, r.title, r.category, p.image, value, r.attributes))
                continue
            if status == "missing_image" and not is_url(p.image):
                value = f"no image file {p.image}" if "no image file" in value else value
            elif is_url(p.image):
                p.path.unlink(missing_ok=True)  # a re-run fetches it again instead of reusing bad bytes
            problem(ReadProblem(p.record.row, p.record.id, status, value))

    # 4) write: store, catalogue.json, report
    store = Store.for_workspace(ws.root, store_url)
    try:
        store.upsert_products(rows)
    finally:
        store.engine.dispose()
    ws.write(ws.catalogue_json, cat.to_dict())
    seconds = time.perf_counter() - t0
    report.write(ws.reports_dir / "validation.json", catalogue=str(cat.path), root=str(root), format=cat.format,
                 n_rows=n_rows, n_ok=len(rows), seconds=round(seconds, 3))
    log.info("ingested %s (%s): %d rows, %d products stored, %d problems in %.1f s\n%s",
             cat.path, cat.format, n_rows, len(rows), report.total, seconds, report.summary())
    return IngestResult(root, cat.format, n_rows, len(rows), report, seconds)
