"""Goes-with: cross-category recommendations (the table that goes with this chair).

A recipe turns the channels of ``ItemFeatures`` (per visual block a cosine, per text field a token
Jaccard) into one score per (source, target) pair: every channel is z-scored over the target category's
candidates for that source, then the channels are summed with the recipe's weights for the
(source category, target category) pair. Recipes live in the ``GOES_WITH`` registry:

- ``style``: Pair's recipe, Gram-matrix style blocks only (cosine per backbone stage);
- ``colour``: the HSV colour histogram only (the benchmark's weight-free reference);
- ``combined``: every channel with equal weight, nothing learned;
- ``learned`` (``compat.py``): weights learned per category pair from co-occurrence data.

``GoesWith`` is the servable object: features + a fitted recipe, saved in ``WS/models/goes-with/``.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lookalike.io_utils import atomic_write, read_json, write_json
from lookalike.recommend.cooccurrence import CoOccurrence, TypeAffinity
from lookalike.recommend.goes_with_features import ItemFeatures, tokens
from lookalike.registry import Registry

log = logging.getLogger(__name__)

MODEL_JSON = "goes_with.json"
FEATURES_NPZ = "features.npz"
BUILD_VECTORS = "build vectors"


class UnknownCategoryError(ValueError):
    def __init__(self, category: str, valid: Sequence[str]) -> None:
        super().__init__(f"unknown target category {category!r}; valid categories: {', '.join(valid)}")
        self.category, self.valid = category, list(valid)


def zscore(channels: np.ndarray) -> np.ndarray:
    """Z-score (src, tgt, K) channel scores over the targets, so channels of any scale weigh alike."""
    mu = channels.mean(axis=1, keepdims=True)
    sd = channels.std(axis=1, keepdims=True)
    return (channels - mu) / np.maximum(sd, 1e-6)


class GoesWithRecipe:
    """Base recipe: fixed channel weights; ``learned`` overrides ``fit`` and ``weights``.

    Fitted on co-occurrence links, every recipe also learns which product *types* share groups
    (``TypeAffinity``). When the items carry types (``ItemFeatures.types``), that adds a ``type`` channel after
    the feature channels: it ranks an outdoor table above a bedside one for an outdoor chair, which no
    picture or title comparison can tell."""

    name = "recipe"
    needs_links = False

    def __init__(self, **params: Any) -> None:
        self.params = params
        self.affinity: TypeAffinity | None = None

    def fit(self, feats: ItemFeatures, links: CoOccurrence | None = None) -> None:
        """Learn the type affinity when there are links and typed items (the fixed weights need nothing)."""
        self.affinity = None
        if links is not None and feats.types is not None:
            types = {pid: t for pid, t in zip(feats.ids, feats.types) if t}
            self.affinity = TypeAffinity.fit(types, links)
            log.info("%s: type affinity over %d types from %d groups", self.name, len(self.affinity.count),
                     self.affinity.groups)

    def uses_types(self, feats: ItemFeatures) -> bool:
        return self.affinity is not None and feats.types is not None

    def channel_names(self, feats: ItemFeatures) -> list[str]:
        return feats.channels + (["type"] if self.uses_types(feats) else [])

    def channel_stack(self, feats: ItemFeatures, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        """(len(src), len(tgt), channels): the features' channel scores, then the type affinity if used."""
        ch = feats.channel_scores(src, tgt)
        if self.uses_types(feats):
            assert self.affinity is not None and feats.types is not None
            aff = self.affinity.matrix([feats.types[int(i)] for i in src], [feats.types[int(j)] for j in tgt])
            ch = np.concatenate([ch, aff[..., None]], axis=-1)
        return ch

    def channel_mask(self, channels: list[str]) -> np.ndarray:
        return np.ones(len(channels), np.float64)

    def weights(self, channels: list[str], src_category: str | None, tgt_category: str | None) -> np.ndarray:
        w = self.channel_mask(channels)
        if not w.any():  # e.g. `style` on a workspace without Gram blocks: fall back to every visual block
            w = np.asarray([c.startswith("visual:") for c in channels], np.float64)
        return w

    def score(self, feats: ItemFeatures, src: np.ndarray, tgt: np.ndarray) -> np.ndarray:
        """(len(src), len(tgt)) scores; ``tgt`` rows must all be of one category."""
        z = zscore(self.channel_stack(feats, src, tgt))
        channels = self.channel_names(feats)
        tcat = feats.categories[int(tgt[0])] if len(tgt) else None
        out = np.empty((len(src), len(tgt)), np.float32)
        for a, i in enumerate(src):
            out[a] = z[a] @ self.weights(channels, feats.categories[int(i)], tcat)
        return out

    def state(self) -> dict[str, Any]:
        return {"params": self.params, "affinity": None if self.affinity is None else self.affinity.state()}

    def load(self, state: dict[str, Any]) -> None:
        """Restore what ``state`` returned."""
        aff = state.get("affinity")
        self.affinity = None if aff is None else TypeAffinity.from_state(aff)


GOES_WITH: Registry[GoesWithRecipe] = Registry("goes-with recipe")


@GOES_WITH.register("style", help="Pair: Gram-matrix style of CNN feature maps, one cosine per stage")
class StyleRecipe(GoesWithRecipe):
    name = "style"

    def channel_mask(self, channels: list[str]) -> np.ndarray:
        return np.asarray([c.startswith("visual:gram") for c in channels], np.float64)


@GOES_WITH.register("colour", help="HSV colour histogram of the product's pixels (weight-free reference)")
class ColourRecipe(GoesWithRecipe):
    name = "colour"

    def channel_mask(self, channels: list[str]) -> np.ndarray:
        return np.asarray([c == "visual:colour" for c in channels], np.float64)


@GOES_WITH.register("combined", help="style + colour + title/attribute tokens (+ type affinity when fitted on "
                                     "links), equal weights")
class CombinedRecipe(GoesWithRecipe):
    name = "combined"


def create_recipe(name: str, **params: Any) -> GoesWithRecipe:
    import lookalike.recommend.compat  # noqa: F401 - registers `learned`

    return GOES_WITH.create(name, **params)


def list_recipes() -> dict[str, str]:
    import lookalike.recommend.compat  # noqa: F401

    return GOES_WITH.describe()


@dataclass
class GoesWithHit:
    product_id: str
    score: float
    pct: float  # share of the target category this item outranks for this product, in %


class GoesWith:
    """Features of every product + one fitted recipe: what the Recommender serves goes-with from."""

    def __init__(self, feats: ItemFeatures, recipe: GoesWithRecipe, info: dict[str, Any] | None = None,
                 image_hashes: Sequence[str | None] | None = None) -> None:
        self.feats, self.recipe = feats, recipe
        self.info = dict(info or {})
        # the image each item was described from, so a loaded model can tell which products changed since
        self.image_hashes: list[str | None] = list(image_hashes) if image_hashes is not None else [None] * len(feats.ids)
        rows: dict[str, list[int]] = {}
        for i, c in enumerate(feats.categories):  # one pass: this runs again whenever live products change
            if c is not None:
                rows.setdefault(c, []).append(i)
        self._rows = {c: np.asarray(rows[c], np.int64) for c in sorted(rows)}

    @property
    def categories(self) -> list[str]:
        return sorted(self._rows)

    def has(self, product_id: str) -> bool:
        return product_id in self.feats.pos

    def query(self, product_id: str, category: str, k: int = 10,
              recipe: GoesWithRecipe | None = None) -> list[GoesWithHit]:
        """The ``k`` products of ``category`` that go best with ``product_id`` (never the product itself);
        ``recipe`` overrides the fitted one (a fixed recipe over the same features)."""
        if category not in self._rows:
            raise UnknownCategoryError(category, self.categories)
        i = self.feats.pos.get(product_id)
        if i is None:
            raise KeyError(product_id)
        tgt = self._rows[category]
        tgt = tgt[tgt != i]
        if not len(tgt):
            return []
        s = (recipe or self.recipe).score(self.feats, np.asarray([i]), tgt)[0]
        order = np.argsort(-s, kind="stable")[:k]
        n = len(tgt)
        return [GoesWithHit(self.feats.ids[int(tgt[j])], float(s[j]),
                            round(100.0 * (n - 1 - r) / (n - 1), 1) if n > 1 else 100.0)
                for r, j in enumerate(order)]

    def suggested_categories(self, product_id: str, n: int = 3) -> list[str]:
        """Other categories to show on a product page: the ones co-occurrence links it to, else the biggest."""
        i = self.feats.pos.get(product_id)
        own = self.feats.categories[i] if i is not None else None
        linked = getattr(self.recipe, "partners", lambda c: [])(own)
        sizes = sorted(((len(r), c) for c, r in self._rows.items() if c != own), reverse=True)
        out = [c for c in linked if c in self._rows and c != own]
        out += [c for _, c in sizes if c not in out]
        return out[:n]

    def with_items(self, new: ItemFeatures, drop: set[str], image_hashes: Sequence[str | None]) -> GoesWith:
        """A model with the items of ``drop`` removed and ``new`` (described with the same channels) added;
        the fitted recipe is kept: it weighs channels per category pair, which a few products do not move."""
        if new.ids and (sorted(new.visual) != sorted(self.feats.visual) or sorted(new.text) != sorted(self.feats.text)):
            raise ValueError(f"new items have channels {new.channels}, the model {self.feats.channels}")
        gone = drop | set(new.ids)
        keep = [i for i, pid in enumerate(self.feats.ids) if pid not in gone]
        base = self.feats.subset(keep)
        if new.ids:
            types = None if base.types is None else base.types + (new.types or [None] * len(new.ids))
            base = ItemFeatures(base.ids + new.ids, base.categories + new.categories,
                                {k: np.concatenate([v, new.visual[k].astype(v.dtype)]) for k, v in base.visual.items()},
                                {k: v + new.text[k] for k, v in base.text.items()}, base.info, types)
        return GoesWith(base, self.recipe, self.info, [self.image_hashes[i] for i in keep] + list(image_hashes))

    # ---- persistence -------------------------------------------------------------------------------
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        arrays = {f"visual__{k}": v.astype(np.float16) for k, v in self.feats.visual.items()}

        def write_npz(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.savez(f, **arrays)

        atomic_write(folder / FEATURES_NPZ, write_npz)
        write_json(folder / MODEL_JSON, {
            "recipe": self.recipe.name, "recipe_state": self.recipe.state(), "info": self.info,
            "ids": self.feats.ids, "categories": self.feats.categories, "feature_info": self.feats.info,
            "text": {k: [sorted(t) for t in v] for k, v in self.feats.text.items()},
            "image_hashes": self.image_hashes, "types": self.feats.types,
        })

    @classmethod
    def load(cls, folder: Path) -> GoesWith:
        folder = Path(folder)
        if not (folder / MODEL_JSON).is_file():
            raise FileNotFoundError(f"no goes-with model in {folder}: run `lookalike goes-with WS --fit`")
        meta = read_json(folder / MODEL_JSON)
        with np.load(folder / FEATURES_NPZ) as z:
            visual = {k.split("__", 1)[1]: z[k].astype(np.float32) for k in z.files}
        text = {k: [frozenset(t) for t in v] for k, v in meta.get("text", {}).items()}
        feats = ItemFeatures(meta["ids"], meta["categories"], visual, text, meta.get("feature_info", {}),
                             meta.get("types"))
        recipe = create_recipe(meta["recipe"], **meta.get("recipe_state", {}).get("params", {}))
        recipe.load(meta.get("recipe_state", {}))
        return cls(feats, recipe, meta.get("info"), meta.get("image_hashes"))

    def describe(self) -> str:
        return json.dumps({"recipe": self.recipe.name, "items": len(self.feats.ids),
                           "categories": len(self.categories), "channels": self.recipe.channel_names(self.feats),
                           **self.info})


# ---- a workspace's goes-with model ----------------------------------------------------------------------
def workspace_texts(titles: Sequence[str], attributes: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """The text channels of a catalogue: the title, and every attribute value joined (colour, material...)."""
    return {"title": [t or "" for t in titles],
            "attributes": [" ".join(str(v) for v in a.values() if v is not None) for a in attributes]}


def product_types(products: Sequence[Any], attribute: str) -> list[str | None]:
    """Each product's ``attribute`` as its type; an error naming the attributes there are if none has it."""
    types = [None if p.attributes.get(attribute) in (None, "") else str(p.attributes[attribute]) for p in products]
    if products and not any(types):
        seen = sorted({k for p in products for k in p.attributes})
        raise ValueError(f"no product has the attribute {attribute!r}; the attributes are: {', '.join(seen)}")
    return types


def vector_features(ids: list[str], categories: list[str | None], vectors: np.ndarray, titles: Sequence[str],
                    attributes: Sequence[dict[str, Any]]) -> ItemFeatures:
    """The unfitted model's features: the build encoder's vectors plus text tokens."""
    texts = workspace_texts(titles, attributes)
    return ItemFeatures(list(ids), list(categories), {"vectors": vectors},
                        {k: [tokens(x) for x in v] for k, v in texts.items()}, {"source": BUILD_VECTORS})


def default_model(feats: ItemFeatures, image_hashes: Sequence[str | None]) -> GoesWith:
    """Goes-with before any ``--fit``: ``vector_features`` with the ``combined`` recipe's equal weights."""
    return GoesWith(feats, create_recipe("combined"), {"fitted": False}, image_hashes)


def fit_workspace(workspace: Path, recipe: str = "learned", links: Path | None = None, item_col: str = "item",
                  group_col: str = "group", pretrained: bool = True, store_url: str | None = None,
                  show_progress: bool = True, num_workers: int | None = None, cnn: bool = True,
                  type_attribute: str | None = None) -> GoesWith:
    """Describe every product (Gram style blocks, colour, text), fit ``recipe`` and save it in the workspace.

    ``links`` is a CSV of (item, group) pairs; an item is a product id or a product's image path.
    ``cnn=False`` leaves the Gram blocks out (colour and text only): minutes saved on a big catalogue.
    ``type_attribute`` names the attribute holding each product's type when it is finer than the category
    (IKEA's "Coffee table" within "table"): with ``links``, the recipe then learns which types share groups.
    """
    from lookalike.catalogue import resolve_image_path
    from lookalike.recommend.goes_with_features import describe_items
    from lookalike.store.sql import Store
    from lookalike.workspace import Workspace

    ws = Workspace(workspace)
    if not ws.build_json.exists():
        raise FileNotFoundError(f"{ws.root} is not a built workspace: run `lookalike build` first")
    rec = create_recipe(recipe)
    if rec.needs_links and links is None:
        raise ValueError(f"recipe {recipe!r} learns from co-occurrence: give --links CSV (item, group pairs)")
    store = Store.for_workspace(ws.root, store_url)
    root = Path(ws.read(ws.catalogue_json).get("root", ws.root))
    rows = [p for p in store.iter_products() if p.image]
    paths = [resolve_image_path(ws.root, root, p.image) for p in rows]  # type: ignore[arg-type]
    texts = workspace_texts([p.title for p in rows], [p.attributes for p in rows])
    types = product_types(rows, type_attribute) if type_attribute else None
    feats, failed = describe_items([p.id for p in rows], [p.category for p in rows], paths, texts,
                                   pretrained=pretrained, show_progress=show_progress, num_workers=num_workers,
                                   gram=cnn, types=types)
    info: dict[str, Any] = {"fitted": True, "recipe": recipe, "products": len(feats.ids), "failed": len(failed),
                            "type_attribute": type_attribute}
    if links is not None:
        co = CoOccurrence.from_csv(Path(links), item=item_col, group=group_col)
        by_key = {p.id: p.id for p in rows} | {p.image: p.id for p in rows if p.image}
        mapped = co.rename(by_key)
        info.update(links=str(links), links_read=len(co.links), links_matched=len(mapped.links),
                    links_skipped=co.skipped + len(co.links) - len(mapped.links))
        if not mapped.links:
            raise ValueError(f"no item of {links} matches a product id or image path of the workspace")
        rec.fit(feats, mapped)
    hashes = {p.id: p.image_hash for p in rows}
    model = GoesWith(feats, rec, info, [hashes[i] for i in feats.ids])
    model.save(ws.models_dir("goes-with"))
    log.info("goes-with model saved: %s", model.describe())
    return model
