"""``make demo``: build a workspace (once) and serve the storefront on it.

Uses the shared fashion catalogue when it exists, otherwise a generated one; ``--limit`` keeps the first
build short enough to be serving within about three minutes on a 2-core laptop.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from lookalike.demo import make_catalogue
from lookalike.pipeline import build
from lookalike.service.app import serve
from lookalike.workspace import Workspace

log = logging.getLogger("lookalike.demo")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workspace", type=Path, default=Path("workspaces/demo"))
    ap.add_argument("--datasets", type=Path, default=Path("../shared/datasets"))
    ap.add_argument("--limit", type=int, default=10000)
    # the weight-free descriptor keeps the demo's first start short on any CPU: on the 2-core machines this
    # was measured on it encoded 380 img/s (pretrained Lite0, the build default, 130 img/s), and an older
    # 2-core VM was about 4x slower at both
    ap.add_argument("--encoder", default="color-texture")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    ws = Workspace(args.workspace)
    fashion = args.datasets / "fashion-product-images-small"
    if not ws.build_json.exists():
        if fashion.exists():
            catalogue, mapping = fashion, None
        else:
            log.info("%s not found: generating a small catalogue", fashion)
            catalogue, mapping = make_catalogue(ws.root / "generated-catalogue", n=400), None
        res = build(catalogue, ws.root, encoder=args.encoder, limit=args.limit, mapping=mapping)
        print(res.summary(), flush=True)
    print(f"\n  lookalike storefront: http://{args.host}:{args.port}/   (API docs: /docs)\n", flush=True)
    serve(ws.root, host=args.host, port=args.port)


if __name__ == "__main__":
    main()
