"""The ``lookalike`` command line: each command is a thin wrapper over one public function."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Visual-similarity product recommender.")
console = Console()

Workspace = Annotated[Path, typer.Option("--workspace", "-w", help="workspace folder")]
WsArg = Annotated[Path, typer.Argument(help="workspace folder made by `lookalike build`")]


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)  # it logs every CPU-feature probe


@app.command()
def ingest(
    catalogue: Path, workspace: Workspace,
    mapping: Annotated[Optional[str], typer.Option(help="columns, e.g. id=sku,title=name,category=type,image=img")] = None,
    strict: Annotated[bool, typer.Option(help="any bad row or image is fatal")] = False,
    limit: Annotated[Optional[int], typer.Option(help="only the first N rows")] = None,
    store: Annotated[Optional[str], typer.Option(help="SQLAlchemy URL (default: SQLite in the workspace)")] = None,
) -> None:
    """Read a catalogue into the workspace store, with a validation report."""
    from lookalike.catalogue import ColumnMapping, ingest as run

    res = run(catalogue, workspace, mapping=ColumnMapping.parse(mapping) if mapping else None, strict=strict,
              limit=limit, store_url=store)
    console.print(res.report.summary())
    console.print(f"{res.n_ok} of {res.n_rows} rows ingested in {res.seconds:.1f}s -> {workspace}")


@app.command()
def build(
    catalogue: Path, workspace: Workspace,
    encoder: Annotated[Optional[str], typer.Option(help="see list-encoders; default: the best available")] = None,
    index: Annotated[str, typer.Option(help="see list-indexes")] = "auto",
    limit: Annotated[Optional[int], typer.Option(help="only the first N rows")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="similar products stored per product")] = 20,
    same_category: Annotated[bool, typer.Option(help="similar lists only within the product's category")] = False,
    mapping: Annotated[Optional[str], typer.Option(help="columns, e.g. id=sku,title=name,category=type,image=img")] = None,
    strict: bool = False,
    store: Annotated[Optional[str], typer.Option(help="SQLAlchemy URL (default: SQLite in the workspace)")] = None,
    max_memory: Annotated[str, typer.Option(help="index memory budget, e.g. 4G")] = "4G",
    batch_size: int = 64,
    workers: Annotated[Optional[int], typer.Option(help="image decoding processes")] = None,
) -> None:
    """Ingest, encode, index and precompute similar products: the whole pipeline."""
    from lookalike.pipeline import build as run

    res = run(catalogue, workspace, encoder=encoder, index=index, limit=limit, k=k, same_category=same_category,
              mapping=mapping, strict=strict, store_url=store, max_memory=max_memory, batch_size=batch_size,
              num_workers=workers)
    console.print(res.summary())


@app.command("list-encoders")
def list_encoders() -> None:
    """The encoder registry."""
    from lookalike.encoders import list_encoders as names

    for name, doc in names().items():
        console.print(f"[bold]{name:<22}[/] {doc}")


@app.command("list-indexes")
def list_indexes() -> None:
    """The index backend registry."""
    from lookalike.index import list_indexes as names

    for name, doc in names().items():
        console.print(f"[bold]{name:<12}[/] {doc}")


@app.command("similar-all")
def similar_all(
    workspace: WsArg,
    k: Annotated[int, typer.Option("-k", "--k")] = 20,
    same_category: bool = False,
    export: Annotated[Optional[Path], typer.Option(help="also write the lists to .parquet/.json/.jsonl")] = None,
    store: Optional[str] = None,
) -> None:
    """Recompute every product's similar list (after build) and optionally export it."""
    from lookalike.pipeline import export_similar, similar_all as run
    from lookalike.store import Store
    from lookalike.workspace import Workspace as Ws

    ws = Ws(workspace)
    enc = ws.read(ws.build_json).get("encoder")
    if not enc:
        raise typer.BadParameter(f"{workspace} has no build.json: run `lookalike build` first")
    meta = run(ws.root, enc, Store.for_workspace(ws.root, store), k=k, same_category=same_category)
    info = ws.read(ws.build_json)
    ws.write(ws.build_json, {**info, "k": k, "same_category": same_category, "similar": meta})
    console.print(json.dumps(meta, indent=2))
    if export:
        console.print(f"exported {export_similar(ws.root, export, enc, store)} rows to {export}")


def _print_items(items: list, title: str) -> None:  # type: ignore[type-arg]
    t = Table(title=title)
    for col in ("#", "id", "similarity", "score", "category", "title"):
        t.add_column(col)
    for n, it in enumerate(items, 1):
        p = it.product
        t.add_row(str(n), p.id, f"{it.similarity_pct:.1f}%", f"{it.score:.3f}", p.category or "", p.title[:60])
    console.print(t)


@app.command()
def similar(
    workspace: WsArg, product_id: str,
    k: Annotated[int, typer.Option("-k", "--k")] = 10,
    same_category: bool = False,
    filter: Annotated[Optional[list[str]], typer.Option("--filter", help="attr:value, repeatable")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="attr:value, repeatable")] = None,
    max_per: Annotated[Optional[list[str]], typer.Option("--max-per", help="attr:n, repeatable")] = None,
) -> None:
    """Print a product's most similar products."""
    from lookalike.recommend.filters import FilterSpec
    from lookalike.recommender import Recommender

    rec = Recommender.open(workspace, load_encoder=False)
    p = rec.product(product_id)
    if p is None:
        raise typer.BadParameter(f"no product with id {product_id!r}")
    spec = FilterSpec.parse(filter or [], exclude or [], max_per or [])
    _print_items(rec.similar(product_id, k=k, filters=spec, same_category=same_category),
                 f"similar to {p.id}: {p.title} ({p.category})")


@app.command()
def search(
    workspace: WsArg, image: Path,
    k: Annotated[int, typer.Option("-k", "--k")] = 10,
    route: Annotated[str, typer.Option(help="auto: search within the predicted category; none: globally")] = "auto",
) -> None:
    """Search the catalogue with a photo."""
    from lookalike.catalogue.images import load_image
    from lookalike.recommender import Recommender

    rec = Recommender.open(workspace)
    res = rec.search(load_image(image), k=k, route=route)
    if res.predicted_category:
        console.print(f"predicted category: {res.predicted_category[0]} ({res.predicted_category[1]:.0%})")
    _print_items(res.items, f"results for {image}")


@app.command()
def serve(
    workspace: WsArg,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes")] = 1,
) -> None:
    """Serve the REST API and the storefront."""
    from lookalike.service.app import serve as run

    run(workspace, host=host, port=port, workers=workers)


if __name__ == "__main__":
    app()
