"""The ``lookalike`` command line: each command is a thin wrapper over one public function."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

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
    mapping: Annotated[str | None, typer.Option(help="columns, e.g. id=sku,title=name,category=type,image=img")] = None,
    strict: Annotated[bool, typer.Option(help="any bad row or image is fatal")] = False,
    limit: Annotated[int | None, typer.Option(help="only the first N rows")] = None,
    store: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in the workspace)")] = None,
) -> None:
    """Read a catalogue into the workspace store, with a validation report."""
    from lookalike.catalogue import ColumnMapping
    from lookalike.catalogue import ingest as run

    res = run(catalogue, workspace, mapping=ColumnMapping.parse(mapping) if mapping else None, strict=strict,
              limit=limit, store_url=store)
    console.print(res.report.summary())
    console.print(f"{res.n_ok} of {res.n_rows} rows ingested in {res.seconds:.1f}s -> {workspace}")


@app.command()
def build(
    catalogue: Path, workspace: Workspace,
    encoder: Annotated[str | None, typer.Option(help="see list-encoders; default: the best available")] = None,
    index: Annotated[str, typer.Option(help="see list-indexes")] = "auto",
    limit: Annotated[int | None, typer.Option(help="only the first N rows")] = None,
    k: Annotated[int, typer.Option("-k", "--k", help="similar products stored per product")] = 20,
    same_category: Annotated[bool, typer.Option(help="similar lists only within the product's category")] = False,
    mapping: Annotated[str | None, typer.Option(help="columns, e.g. id=sku,title=name,category=type,image=img")] = None,
    strict: bool = False,
    store: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in the workspace)")] = None,
    max_memory: Annotated[str, typer.Option(help="index memory budget, e.g. 4G")] = "4G",
    batch_size: int = 64,
    workers: Annotated[int | None, typer.Option(help="image decoding processes")] = None,
    engine: Annotated[str, typer.Option(help="where encoding runs: local | ray (Ray Data)")] = "local",
    ray_address: Annotated[str | None, typer.Option(help="auto | ray://host:10001; default: a local Ray")] = None,
    ray_batch_size: Annotated[int, typer.Option(help="images per Ray Data batch")] = 64,
    ray_concurrency: Annotated[int | None, typer.Option(help="encoder actors; default: one per CPU")] = None,
) -> None:
    """Ingest, encode, index and precompute similar products: the whole pipeline."""
    from lookalike.engines import check_engine
    from lookalike.engines.ray_engine import RayOptions
    from lookalike.pipeline import build as run

    try:
        check_engine(engine)
        ray = RayOptions(address=ray_address, batch_size=ray_batch_size, concurrency=ray_concurrency)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from e
    res = run(catalogue, workspace, encoder=encoder, index=index, limit=limit, k=k, same_category=same_category,
              mapping=mapping, strict=strict, store_url=store, max_memory=max_memory, batch_size=batch_size,
              num_workers=workers, engine=engine, ray=ray)
    console.print(res.summary())


@app.command()
def train(
    source: Annotated[Path, typer.Argument(help="a catalogue, or a workspace that already holds one")],
    workspace: Workspace,
    label: Annotated[str, typer.Option(help="category column or attribute to learn; 'none': no labels")] = "articleType",
    recipe: Annotated[str | None, typer.Option(help="classifier | autoencoder | contrastive")] = None,
    backbone: Annotated[str | None, typer.Option(help="scratch, or timm:<name> with offline weights")] = None,
    epochs: int | None = None,
    image_size: Annotated[int | None, typer.Option(help="long side of the training images, px")] = None,
    batch_size: int = 128,
    lr: float | None = None,
    min_count: Annotated[int, typer.Option(help="labels with fewer products train as 'other'")] = 20,
    freeze: Annotated[bool | None, typer.Option("--freeze/--fine-tune", help="pretrained backbone frozen or "
                                                   "trained (default: frozen)")] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N products")] = None,
    name: Annotated[str | None, typer.Option(help="model folder name under WS/models/")] = None,
    resume: Annotated[bool, typer.Option("--resume/--restart", help="continue an interrupted run")] = True,
    seed: int = 0,
    neck_hidden: Annotated[int, typer.Option(help="hidden layer width before the embedding (0: none)")] = 0,
    mirror_features: Annotated[bool, typer.Option(help="frozen backbone: also cache mirrored photos")] = True,
    domain_views: Annotated[int, typer.Option(help="frozen backbone: also cache N shopper-like re-stagings of "
                                                   "each photo (cut out, composited, tilted, relit)")] = 0,
    backgrounds: Annotated[Path | None, typer.Option(help="folder of room photos to composite products on "
                                                          "(e.g. the IKEA dataset folder)")] = None,
    tune_from: Annotated[int, typer.Option(help="pretrained backbone: cache its first N blocks' output and "
                                                "train the later blocks too (0: all frozen)")] = 0,
    tta: Annotated[str, typer.Option(help="test-time augmentation of the trained encoder: none | mirror "
                                          "(each photo with its mirror image, 2x the encoding cost)")] = "none",
) -> None:
    """Train an encoder on the catalogue's own photos; use it as `--encoder trained:WS`."""
    from lookalike.training import train as run

    try:
        res = run(source, workspace, label=None if label.lower() == "none" else label, recipe=recipe,
                  backbone=backbone, epochs=epochs, image_size=image_size, batch_size=batch_size, lr=lr,
                  min_count=min_count, freeze=freeze, seed=seed, resume=resume, limit=limit, name=name,
                  neck_hidden=neck_hidden, feature_mirror=mirror_features, domain_views=domain_views,
                  backgrounds=backgrounds, tune_from=tune_from, tta=tta)
    except ValueError as e:  # a bad option or unusable data: say what to change, no traceback
        raise typer.BadParameter(str(e)) from e
    rep = res.report
    figures = {k: rep[k] for k in ("val_top1", "val_top1_top20", "p_at_10", "p_at_10_top20") if rep.get(k) is not None}
    console.print(f"model      {res.model_dir}  ({res.recipe}, {res.epochs} epochs"
                  + (f", resumed after {res.resumed_from}" if res.resumed_from else "") + ")")
    console.print(f"quality    {'  '.join(f'{k}={v:.4f}' for k, v in figures.items()) or 'no labels to measure'}")
    console.print(f"time       {res.seconds:.0f} s (training {rep.get('train_seconds')} s)")
    console.print(f"use it     lookalike build CATALOGUE --workspace WS --encoder {res.encoder}")


@app.command("fit-router")
def fit_router(
    workspace: WsArg,
    encoder: Annotated[str, typer.Option(help="a timm: encoder with a pretrained ImageNet head")]
        = "timm:tf_efficientnet_lite0",
    image_size: Annotated[int, typer.Option(help="input side, px")] = 128,
    sample: Annotated[int, typer.Option(help="catalogue products to fit on (20% of them held out)")] = 16000,
    min_count: Annotated[int, typer.Option(help="categories with fewer products are not routed to")] = 5,
    per_category: Annotated[int, typer.Option(help="top the random sample up to this many products per category")] = 20,
    features: Annotated[str, typer.Option(help="what the router reads: pooled (the encoder's embedding, "
                                               "standardised) or logits (its 1,000 ImageNet classes)")] = "pooled",
    c: Annotated[float | None, typer.Option("--c", help="inverse L2 strength of the logistic regression "
                                                       "(default 0.003 on pooled, 0.1 on logits)")] = None,
    shopper_views: Annotated[int, typer.Option(help="shopper-like re-stagings of each product to fit on too "
                                                    "(cut out, composited, tilted, relit; 0: studio shots only)")] = 1,
    backgrounds: Annotated[Path | None, typer.Option(help="folder of room photos to composite products on "
                                                          "(e.g. the IKEA dataset folder); else generated textures")] = None,
    seed: int = 0,
) -> None:
    """Fit the photo-search category router: pretrained features -> catalogue categories, calibrated on the catalogue."""
    from lookalike.encoders import WeightsUnavailableError
    from lookalike.recommend.router import fit_router as run

    try:
        r = run(workspace, encoder=encoder, image_size=image_size, sample=sample, min_count=min_count, c=c, seed=seed,
                per_category=per_category, shopper_views=shopper_views, backgrounds=backgrounds, features=features)
    except (ValueError, FileNotFoundError, WeightsUnavailableError) as e:
        raise typer.BadParameter(str(e)) from e
    i = r.info
    console.print(f"router     {r.encoder_name} at {image_size} px ({i['weights']}), {r.features} features, "
                  f"{i['categories']} categories, {i['products']} products ({i['skipped_images']} images skipped)")
    restaged = "" if i["held_out_accuracy_restaged"] is None else \
        f", re-staged {i['held_out_accuracy_restaged']:.3f}"
    console.print(f"held out   {i['held_out']} products: accuracy {i['held_out_accuracy']:.3f}{restaged}, "
                  f"route threshold {r.route_threshold:.2f}")


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
    export: Annotated[Path | None, typer.Option(help="also write the lists to .parquet/.json/.jsonl")] = None,
    store: str | None = None,
) -> None:
    """Recompute every product's similar list (after build) and optionally export it."""
    from lookalike.pipeline import export_similar
    from lookalike.pipeline import similar_all as run
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
    filter: Annotated[list[str] | None, typer.Option("--filter", help="attr:value, repeatable")] = None,
    exclude: Annotated[list[str] | None, typer.Option("--exclude", help="attr:value, repeatable")] = None,
    max_per: Annotated[list[str] | None, typer.Option("--max-per", help="attr:n, repeatable")] = None,
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
    from lookalike.imaging import load_image
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


@app.command()
def evaluate(
    workspace: WsArg,
    label: Annotated[str, typer.Option(help="relevant = same value of this: 'category', its source column "
                                            "(e.g. articleType) or an attribute")] = "category",
    k: Annotated[str, typer.Option("--k", "-k", help="cut-offs, comma-separated")] = "5,10,20",
    queries: Annotated[int, typer.Option(help="random products used as queries")] = 1000,
    compare: Annotated[list[Path] | None, typer.Option(help="another workspace to compare, repeatable")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default WS/reports/evaluate-<time>)")] = None,
    seed: int = 0,
    photos: Annotated[Path | None, typer.Option(help="also score search by shopper photos on this folder "
                                                     "(queries.csv + photos, as for evaluate-photos)")] = None,
) -> None:
    """Score same-label retrieval (P/R/mAP/nDCG/HR@k, ANN recall, latency) into metrics.json + report.html."""
    from lookalike.evaluate import evaluate as run
    from lookalike.evaluate import parse_ks

    try:
        ks = parse_ks(k)
        rep = run(workspace, label=label, ks=ks, queries=queries, compare=compare or [], out=out, seed=seed,
                  photos=photos)
    except (ValueError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e)) from e
    typer.echo(rep.summary())  # plain echo: rich would wrap the long figure lines


@app.command("evaluate-photos")
def evaluate_photos(
    workspace: WsArg,
    photos_dir: Annotated[Path, typer.Argument(help="folder with queries.csv (path,label,expected_articleTypes)"
                                                    " and the photos it lists")],
    k: Annotated[int, typer.Option("--k", "-k", help="results scored per photo")] = 10,
    route: Annotated[str, typer.Option(help="route modes, comma-separated: auto (within the predicted "
                                            "category), none (globally)")] = "auto,none",
    limit: Annotated[int | None, typer.Option(help="only the first N usable photos")] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default WS/reports/photos)")] = None,
) -> None:
    """Score photo search on shopper photos (P@k, category accuracy, routing, latency) into photos.json + .html."""
    from lookalike.evaluate.photos import evaluate_photos as run

    try:
        res = run(workspace, photos_dir, k=k, routes=route, limit=limit, out=out)
    except (ValueError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e)) from e
    t = Table(title=f"{res['counts']['evaluated']} photos, encoder {res['encoder']}")
    for col in ("route", f"P@{k}", "category accuracy", "routed", "p50 ms"):
        t.add_column(col)
    for name, s in res["results"].items():
        acc, p50 = s["category_accuracy"], s["latency"]["p50_ms"]
        t.add_row(name, f"{s[f'P@{k}']:.3f}", "n/a" if acc is None else f"{acc:.3f}", f"{s['routed_share']:.0%}",
                  f"{p50:.1f}")
    console.print(t)
    c = res["counts"]
    typer.echo(f"skipped    {c['skipped_rows']} rows, {c['skipped_photos']} photos")
    typer.echo(f"report     {res['report']['html']}")  # plain echo: rich would wrap a long path
    typer.echo(f"metrics    {res['report']['json']}")


@app.command()
def update(
    workspace: WsArg, catalogue: Path,
    mapping: Annotated[str | None, typer.Option(help="columns, e.g. id=sku,title=name,category=type,image=img")] = None,
    delete_missing: Annotated[bool, typer.Option(help="delete products the catalogue no longer lists")] = True,
    store: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: SQLite in the workspace)")] = None,
) -> None:
    """Apply a catalogue file's changes (added, changed, removed) to a built workspace, without a rebuild."""
    from lookalike.live.catalogue_diff import update_workspace

    try:
        rep = update_workspace(workspace, catalogue, mapping=mapping, delete_missing=delete_missing, store_url=store)
    except (ValueError, FileNotFoundError) as e:
        raise typer.BadParameter(str(e)) from e
    console.print(rep.summary())


@app.command("hash-key")
def hash_key(key: Annotated[str | None, typer.Argument(help="the API key; a new random one when left out")] = None
             ) -> None:
    """Print an API key's SHA-256 digest, for LOOKALIKE_API_KEYS (the server never stores the key itself)."""
    from lookalike.service.security import hash_key as digest
    from lookalike.service.security import new_key

    if key is None:
        key = new_key()
        typer.echo(f"key     {key}  (give this to the client; it is not stored anywhere)")
    typer.echo(f"sha256  {digest(key)}")
    typer.echo(f"set     LOOKALIKE_API_KEYS='[\"{digest(key)}\"]'")



@app.command("goes-with")
def goes_with(
    workspace: WsArg,
    product_id: Annotated[str | None, typer.Argument(help="the product to match (not needed with --fit)")] = None,
    category: Annotated[str | None, typer.Option(help="target category, e.g. 'dining table'")] = None,
    k: Annotated[int, typer.Option("-k", "--k")] = 10,
    recipe: Annotated[str | None, typer.Option(help="style | colour | combined | learned (default: the fitted "
                                                       "one; with --fit: learned with --links, else combined)")] = None,
    fit: Annotated[bool, typer.Option(help="describe every product and fit the recipe, saved in WS/models/goes-with")] = False,
    links: Annotated[Path | None, typer.Option(help="with --fit: CSV of (item, group) co-occurrence pairs")] = None,
    item_col: Annotated[str, typer.Option(help="the item column of --links (a product id or image path)")] = "item",
    group_col: Annotated[str, typer.Option(help="the group column of --links (room, outfit, basket)")] = "group",
    pretrained: Annotated[bool, typer.Option(help="with --fit: Gram features from pretrained Lite0 weights when "
                                                  "available (--no-pretrained: random weights)")] = True,
    cnn: Annotated[bool, typer.Option(help="with --fit: Gram style blocks from the CNN (--no-cnn: colour and "
                                           "text only, much faster on a big catalogue)")] = True,
    type_attribute: Annotated[str | None, typer.Option(help="with --fit and --links: the attribute holding each "
                                                            "product's type, finer than its category (e.g. "
                                                            "'Coffee table'); adds a learned type-affinity channel")] = None,
) -> None:
    """Products of another category that go with a product (the table for this chair).

    Without a fit, goes-with uses the build vectors and title/attribute tokens with equal weights.
    `lookalike goes-with WS --fit [--links rooms.csv --item-col item_path --group-col room_path]` describes
    every product (Gram style blocks per backbone stage, HSV colour, text tokens), fits the recipe (`learned`
    needs --links) and saves it in WS/models/goes-with, which the API and storefront then serve.
    """
    from lookalike.recommend.goes_with import fit_workspace
    from lookalike.recommender import Recommender

    if fit:
        try:
            model = fit_workspace(workspace, recipe or ("learned" if links else "combined"), links, item_col,
                                  group_col, pretrained=pretrained, cnn=cnn, type_attribute=type_attribute)
        except (ValueError, FileNotFoundError) as e:  # a bad option or unusable links: say what to change
            raise typer.BadParameter(str(e)) from e
        console.print(model.describe())
        if not product_id:
            return
    if not product_id or not category:
        raise typer.BadParameter("give PRODUCT_ID and --category (or --fit to fit the model)")
    rec = Recommender.open(workspace, load_encoder=False)
    p = rec.product(product_id)
    if p is None:
        raise typer.BadParameter(f"no product with id {product_id!r}")
    try:
        items = rec.goes_with(product_id, category, k=k, recipe=recipe)
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    _print_items(items, f"goes with {p.id}: {p.title} ({p.category}) [{rec.goes_with_model().recipe.name}]")


@app.command("evaluate-goes-with")
def evaluate_goes_with(
    datasets: Annotated[Path, typer.Option(help="the shared datasets folder (holds ikea/)")] = Path("../shared/datasets"),
    recipe: Annotated[list[str] | None, typer.Option(help="repeatable; default: style, colour, combined, learned")] = None,
    weights: Annotated[str, typer.Option(help="package (installed Lite0 weights), none (random), or both")] = "both",
    folds: Annotated[int, typer.Option(help="group-disjoint folds over rooms")] = 5,
    out: Annotated[Path, typer.Option(help="where to write the JSON with every figure")] = Path("goes_with_ikea.json"),
    cnn: Annotated[bool, typer.Option(help="Gram style blocks from the CNN (--no-cnn: colour + text only, fast)")] = True,
) -> None:
    """The IKEA goes-with benchmark (Pair's protocol): HR@5/10/20 of 76 chairs ranking 117 dining tables,
    with random and colour-histogram references from the same run and room-disjoint cross-validation."""
    from lookalike.evaluate.goes_with import format_table, run_benchmark

    if weights not in ("package", "none", "both"):
        raise typer.BadParameter(f"--weights must be package, none or both, got {weights!r}")
    w = ("package", "none") if weights == "both" else (weights,)
    res = run_benchmark(datasets, tuple(recipe) if recipe else ("style", "colour", "combined", "learned"), w,
                        n_folds=folds, out=out, gram=cnn)
    typer.echo(format_table(res))
    typer.echo(f"figures written to {out}")


@app.command()
def migrate(
    workspace: Workspace = Path("workspace"),
    store: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default: LOOKALIKE_STORE_URL, "
                                                   "else SQLite in the workspace)")] = None,
    revision: Annotated[str, typer.Option(help="target revision; 'head' is the newest")] = "head",
) -> None:
    """Bring the store's schema to a revision (Alembic); every command also does this when it opens the store."""
    from sqlalchemy import create_engine

    from lookalike.store.migrate import default_store_url, engine_url, upgrade
    from lookalike.store.sql import sqlite_url

    url = store or default_store_url() or sqlite_url(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    engine = create_engine(engine_url(url))
    typer.echo(f"store at revision {upgrade(engine, revision)}")
    engine.dispose()


if __name__ == "__main__":
    app()
