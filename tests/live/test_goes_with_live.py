"""Goes-with follows live writes without a refit: a new product gets a list and joins the other products'
candidates, a deleted one leaves them, a changed category or image moves it; a process started later
catches up with what changed since the fit."""
from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

from lookalike.live.updater import Updater
from lookalike.recommend.goes_with import fit_workspace
from lookalike.recommender import Recommender
from lookalike.service.routes.product_writes import store_image
from lookalike.store.sql import ProductRow


def add_with_image(rec: Recommender, up: Updater, img: Image.Image, pid: str, colour: str, shape: str) -> None:
    """The API's path: the image lands in the workspace's cache, the product names it by its upload URL."""
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    image, digest = store_image(rec, buf.getvalue(), img, None)
    up.add(ProductRow(pid, f"{colour} {shape} new", shape, image, digest, {"colour": colour}),
           up.embed([img])[0])


def ids(hits: list) -> list[str]:  # type: ignore[type-arg]
    return [h.product.id for h in hits]


@pytest.mark.parametrize("cnn", [False, True], ids=["colour+text", "gram+colour+text"])
def test_fitted_model_follows_adds_deletes_and_changes(fresh_ws: Path, new_image: Callable[..., object],
                                                       cnn: bool) -> None:
    # random (seeded) Gram weights here: a new product must be described with the very weights of the fit
    fit_workspace(fresh_ws, "combined", cnn=cnn, pretrained=False, show_progress=False, num_workers=0)
    rec = Recommender.open(fresh_ws)
    up = Updater(rec, index_sync=False)
    red_square = next(p for p, r in rec.products.items() if r.category == "square" and r.attributes["colour"] == "Red")
    circles_before = ids(rec.goes_with(red_square, "circle", k=100))

    add_with_image(rec, up, new_image("circle", "Red", seed=7), "gw-new", "Red", "circle")  # type: ignore[arg-type]
    own = rec.goes_with("gw-new", "square", k=3, recipe="colour")
    assert len(own) == 3 and own[0].product.attributes["colour"] == "Red"  # described from its own pixels
    circles = ids(rec.goes_with(red_square, "circle", k=100))
    assert set(circles) == set(circles_before) | {"gw-new"}

    victim = circles_before[0]
    up.delete(victim)
    assert victim not in ids(rec.goes_with(red_square, "circle", k=100))
    assert len(ids(rec.goes_with(red_square, "circle", k=100))) == len(circles_before)

    moved = circles_before[1]
    up.update(moved, category="triangle")
    assert moved in ids(rec.goes_with(red_square, "triangle", k=100))
    assert moved not in ids(rec.goes_with(red_square, "circle", k=100))

    # another process, opened after these writes, loads the fit from disk and finds every change
    rec2 = Recommender.open(fresh_ws, load_encoder=False)
    got = ids(rec2.goes_with(red_square, "circle", k=100))
    assert "gw-new" in got and victim not in got and moved not in got
    assert moved in ids(rec2.goes_with(red_square, "triangle", k=100))
    assert len(rec2.goes_with("gw-new", "square", k=3)) == 3
    assert rec2.goes_with_model().feats.channels == rec.goes_with_model().feats.channels
    up.close(checkpoint=False)


def test_unfitted_model_describes_new_products_by_their_vector(fresh_ws: Path,
                                                               new_image: Callable[..., object]) -> None:
    rec = Recommender.open(fresh_ws)
    up = Updater(rec, index_sync=False)
    assert rec.goes_with("p0000", "square", k=3)  # builds the default model over the build vectors
    add_with_image(rec, up, new_image("square", "Blue", seed=3), "gw-sq", "Blue", "square")  # type: ignore[arg-type]
    assert "gw-sq" in ids(rec.goes_with("p0000", "square", k=100))
    assert len(rec.goes_with("gw-sq", "circle", k=3)) == 3
    assert not rec.goes_with_model().info.get("fitted")
    up.close(checkpoint=False)
