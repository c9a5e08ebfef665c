"""API throughput and latency on loopback: similar-by-id against a bare FastAPI endpoint, and photo search.

    python benchmarks/bench_api.py --workspace WS [--duration 10] [--connections 4 32] [--workers 1 2]

Starts, on 127.0.0.1 only:
  * a bare FastAPI app whose one route returns a constant (the framework's own ceiling), and
  * ``lookalike serve WS`` with 1 (then 2) uvicorn workers,
then drives ``GET /api/products/{random id}/similar?k=10`` and the bare route from a second process with
Debian's ``wrk`` (a Lua script rotates the ids; falls back to an async httpx client when wrk is missing,
which then is the bottleneck), for ``--duration`` seconds each after 3 s of unmeasured warm-up per server,
at each ``--connections`` count: few connections show the latency of a lightly loaded server, many show its
throughput ceiling. Photo search is measured with sequential ``POST /api/search`` requests carrying real
catalogue images. Prints a table; asserts nothing.
"""
from __future__ import annotations

import argparse
import asyncio
import logging
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import httpx

log = logging.getLogger("bench_api")

LUA = """
local ids = {}
for line in io.lines("%s") do ids[#ids + 1] = line end
math.randomseed(%d)
request = function()
  return wrk.format("GET", "/api/products/" .. ids[math.random(#ids)] .. "/similar?k=10")
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_bare_server(port: int) -> None:
    """The reference: the same framework and server settings, a route that does nothing."""
    import uvicorn
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/api/products/{product_id}/similar")
    async def bare(product_id: str, k: int = 10) -> dict[str, int]:
        return {"count": 0}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def start(cmd: list[str], url: str, timeout: float, logfile: Path) -> subprocess.Popen[bytes]:
    """Start a server process (its output goes to ``logfile``, never a pipe that could fill) and wait for 200."""
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    with logfile.open("ab") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {logfile.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return proc
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    stop(proc)
    raise RuntimeError(f"{url} not healthy after {timeout:.0f}s: {logfile.read_text()[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def parse_ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3}[unit]


def wrk(url: str, ids_file: Path, duration: float, connections: int) -> dict[str, float]:
    script = ids_file.with_suffix(".lua")
    script.write_text(LUA % (ids_file, random.randint(0, 1 << 30)))
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, timeout=duration + 30, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|99)(?:\.000)?%\s+(\S+)", out, re.MULTILINE))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"rps": rps, "p50": parse_ms(pct["50"]), "p99": parse_ms(pct["99"]), "non2xx": int(bad.group(1)) if bad
            else 0, "socket_errors": errors.group(1) if errors else ""}  # type: ignore[dict-item]


async def _httpx_load(url: str, ids: list[str], duration: float, connections: int) -> dict[str, float]:
    lat: list[float] = []
    bad = 0
    end = time.monotonic() + duration
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=10) as client:
        async def worker() -> None:
            nonlocal bad
            while time.monotonic() < end:
                t = time.perf_counter()
                r = await client.get(f"/api/products/{random.choice(ids)}/similar?k=10")
                lat.append(time.perf_counter() - t)
                bad += r.status_code != 200

        t0 = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(connections)))
        took = time.monotonic() - t0
    q = statistics.quantiles(lat, n=100)
    return {"rps": len(lat) / took, "p50": q[49] * 1e3, "p99": q[98] * 1e3, "non2xx": bad, "socket_errors": ""}


def load(url: str, ids: list[str], ids_file: Path, duration: float, connections: int) -> dict[str, float]:
    if shutil.which("wrk"):
        return wrk(url, ids_file, duration, connections)
    # a second process, so the generator does not share the server's interpreter
    cmd = [sys.executable, __file__, "--httpx-load", url, "--ids-file", str(ids_file), "--duration", str(duration),
           "--connections", str(connections)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=duration + 60, check=True).stdout
    return eval(out.strip().splitlines()[-1])  # our own repr of a dict of floats


def photo_search(url: str, images: list[bytes], n: int) -> dict[str, float]:
    lat = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for i in range(n + 5):
            data = images[i % len(images)]
            t = time.perf_counter()
            r = client.post("/api/search", files={"image": ("photo.jpg", data, "application/octet-stream")},
                            data={"k": "10"})
            took = time.perf_counter() - t
            if r.status_code != 200:
                raise RuntimeError(f"photo search answered {r.status_code}: {r.text}")
            if i >= 5:  # the first few warm up the encoder
                lat.append(took)
    q = statistics.quantiles(lat, n=100)
    products = httpx.get(f"{url}/health").json()["products"]
    return {"n": len(lat), "p50": statistics.median(lat) * 1e3, "p99": q[98] * 1e3, "products": products}


def start_service(ws: Path, port: int, workers: int, timeout: float, logfile: Path) -> subprocess.Popen[bytes]:
    code = (f"from lookalike.service.app import serve; serve({str(ws)!r}, port={port}, workers={workers}, "
            "log_level='warning')")
    t0 = time.monotonic()
    proc = start([sys.executable, "-c", code], f"http://127.0.0.1:{port}/health", timeout, logfile)
    log.info("lookalike serve %s with %d worker(s) ready in %.1fs", ws, workers, time.monotonic() - t0)
    return proc


def sample_images(ws: Path, n: int = 20) -> tuple[str, list[bytes]]:
    """The workspace's encoder and the bytes of n random catalogue images (real photo-search queries)."""
    from lookalike.recommender import Recommender

    rec = Recommender.open(ws, load_encoder=False)
    all_ids = [p.id for p in rec.store.iter_products()]
    ids = random.Random(1).sample(all_ids, min(10 * n, len(all_ids)))
    paths = [p for p in map(rec.image_path, ids) if p is not None][:n]
    if not paths:
        raise SystemExit(f"no catalogue image found for the products of {ws}")
    return rec.encoder_name, [p.read_bytes() for p in paths]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workspace", type=Path)
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--connections", type=int, nargs="+", default=[4, 32])
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--search-requests", type=int, default=100)
    ap.add_argument("--search-workspace", type=Path,
                    help="workspace for photo search (default: --workspace); e.g. one built with the default encoder")
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    ap.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--httpx-load", help=argparse.SUPPRESS)
    ap.add_argument("--ids-file", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.bare_server:
        run_bare_server(args.bare_server)
        return
    if args.httpx_load:
        ids = args.ids_file.read_text().split()
        print(asyncio.run(_httpx_load(args.httpx_load, ids, args.duration, args.connections[0])))
        return
    if args.workspace is None or not (args.workspace / "build.json").exists():
        ap.error("--workspace must be a built workspace (run `lookalike build` first)")

    from lookalike.store.sql import Store
    from lookalike.workspace import Workspace

    ws = args.workspace.resolve()
    store = Store.for_workspace(ws)
    all_ids = [p.id for p in store.iter_products()]
    ids = [quote(i, safe="") for i in random.Random(0).sample(all_ids, min(20_000, len(all_ids)))]
    tmp = Path(tempfile.mkdtemp(prefix="bench_api_"))
    ids_file = tmp / "ids.txt"
    ids_file.write_text("\n".join(ids) + "\n")
    encoder_name = Workspace(ws).read(Workspace(ws).build_json)["encoder"]
    log.info("%d products; load generator: %s; %s s per run, connections %s", len(all_ids),
             "wrk" if shutil.which("wrk") else "httpx (second process; it limits the figures)", args.duration,
             args.connections)

    rows: list[tuple[str, dict[str, float]]] = []
    port = free_port()
    logfile = tmp / "servers.log"
    bare = start([sys.executable, __file__, "--bare-server", str(port)], f"http://127.0.0.1:{port}/docs", 60, logfile)

    def warm_up(url: str) -> None:
        # the first seconds of a fresh process run cold (caches, first touch of every product's rows): not measured
        load(url, ids, ids_file, 3, max(args.connections))

    try:
        warm_up(f"http://127.0.0.1:{port}")
        for c in args.connections:
            rows.append((f"bare FastAPI constant, 1 worker, c={c}", load(f"http://127.0.0.1:{port}", ids, ids_file,
                                                                         args.duration, c)))
    finally:
        stop(bare)
    for workers in args.workers:
        port = free_port()
        proc = start_service(ws, port, workers, args.startup_timeout, logfile)
        try:
            warm_up(f"http://127.0.0.1:{port}")
            for c in args.connections:
                rows.append((f"similar-by-id k=10, {workers} worker(s), c={c}",
                             load(f"http://127.0.0.1:{port}", ids, ids_file, args.duration, c)))
        finally:
            stop(proc)
    search_ws = (args.search_workspace or ws).resolve()
    search_encoder, images = sample_images(search_ws)
    port = free_port()
    proc = start_service(search_ws, port, 1, args.startup_timeout, logfile)
    try:
        search = photo_search(f"http://127.0.0.1:{port}", images, args.search_requests)
    finally:
        stop(proc)

    bare = {name.rsplit("c=", 1)[1]: r["rps"] for name, r in rows if name.startswith("bare")}
    print(f"\n{len(all_ids)} products, encoder {encoder_name}, {args.duration:g}s per run, loopback; "
          "vs bare: against the bare route at the same connection count")
    print(f"{'endpoint':<46}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs bare':>9}{'non-2xx':>9}")
    for name, r in rows:
        ratio = r["rps"] / bare[name.rsplit("c=", 1)[1]]
        print(f"{name:<46}{r['rps']:>10.0f}{r['p50']:>9.2f}{r['p99']:>9.2f}{ratio:>9.2f}{r['non2xx']:>9}")
    print(f"{'photo search (sequential, 1 worker)':<46}{1e3 / search['p50']:>10.0f}{search['p50']:>9.2f}"
          f"{search['p99']:>9.2f}{'':>9}{'':>9}   ({search['n']} requests, encoder {search_encoder}, "
          f"{search['products']} products)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
