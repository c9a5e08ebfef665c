"""The ``trained:`` encoder on a classifier trained here on generated shapes (4 classes, 32 px)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lookalike.demo import COLOURS, draw_product
from lookalike.encoders import create_encoder, list_encoders
from lookalike.encoders.trained import TrainedEncoder, find_model_dir

KINDS = (("circle", "Red"), ("square", "Blue"), ("triangle", "Green"), ("stripe", "Yellow"))


def _catalogue(folder: Path, per_class: int = 24, rare: int = 0) -> Path:
    (folder / "images").mkdir(parents=True)
    rng = np.random.default_rng(1)
    rows = []
    # the rare class (black circles, "dot") falls under min_count and trains as "other"
    kinds = [(s, c, s) for s, c in KINDS for _ in range(per_class)] + [("circle", "Black", "dot")] * rare
    for i, (shape, colour, category) in enumerate(kinds):
        draw_product(shape, COLOURS[colour], rng, size=32).save(folder / "images" / f"{i}.png")
        rows.append({"id": f"p{i}", "title": shape, "category": category, "image": f"images/{i}.png"})
    with (folder / "catalogue.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return folder / "catalogue.csv"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from lookalike.training import train

    root = tmp_path_factory.mktemp("trained-enc")
    ws = root / "ws"
    cat = _catalogue(root / "cat", rare=4)
    train(cat, ws, label="category", epochs=6, image_size=32, batch_size=32, lr=5e-3, min_count=10,
          show_progress=False)
    return ws


def _photos(n: int = 8, seed: int = 7) -> tuple[list[Image.Image], list[str]]:
    rng = np.random.default_rng(seed)
    kinds = [KINDS[i % 4] for i in range(n)]
    return [draw_product(s, COLOURS[c], rng, size=32) for s, c in kinds], [s for s, _ in kinds]


def test_registered() -> None:
    assert "trained:<name>" in list_encoders()


def test_encode_contract(workspace: Path, tmp_path: Path) -> None:
    enc = create_encoder(f"trained:{workspace}")
    assert enc.dim == 128 and enc.preprocess.size == (32, 32)
    imgs, _ = _photos()
    v = enc.encode(imgs, batch_size=3, show_progress=False)
    assert v.shape == (8, enc.dim) and v.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc.encode(imgs[:2], show_progress=False), v[:2], atol=1e-5)
    paths = []
    for i, im in enumerate(imgs):
        paths.append(tmp_path / f"{i}.png")
        im.save(paths[-1])
    np.testing.assert_allclose(enc.encode(paths, show_progress=False), v, atol=1e-5)
    (tmp_path / "bad.png").write_bytes(b"nope")
    batches = list(enc.encode_iter([paths[0], tmp_path / "bad.png"], show_progress=False))
    assert batches[0].errors and batches[0].errors[0][0] == 1  # skipped and reported, not fatal
    # same-class photos are nearer to each other than to the other classes
    sims = v @ v.T
    same = [sims[i, j] for i in range(8) for j in range(8) if i != j and i % 4 == j % 4]
    diff = [sims[i, j] for i in range(8) for j in range(8) if i % 4 != j % 4]
    assert np.mean(same) > np.mean(diff) + 0.2


def test_predicts_categories_and_never_other(workspace: Path) -> None:
    enc = create_encoder(f"trained:{workspace}")
    assert enc.classes[-1] == "other"
    imgs, truth = _photos(12)
    preds = enc.predict_category(imgs, top=3)
    assert len(preds) == 12 and all(len(p) == 3 for p in preds)
    assert all(lab != "other" for p in preds for lab, _ in p)
    for p in preds:
        probs = [pr for _, pr in p]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
    accuracy = np.mean([p[0][0] == t for p, t in zip(preds, truth)])
    assert accuracy >= 0.75  # chance 0.25
    vecs, preds2 = enc.encode_and_predict(imgs, top=3)
    np.testing.assert_allclose(vecs, enc.encode(imgs, show_progress=False), atol=1e-5)
    assert [p[0][0] for p in preds2] == [p[0][0] for p in preds]


def test_onnx_backend_gives_the_same_numbers(workspace: Path) -> None:
    torch_enc = create_encoder(f"trained:{workspace}", backend="torch")
    onnx_enc = create_encoder(f"trained:{workspace}")  # onnxruntime is the default
    assert torch_enc.backend == "torch"
    imgs, _ = _photos()
    v1, p1 = torch_enc.encode_and_predict(imgs, top=2)
    v2, p2 = onnx_enc.encode_and_predict(imgs, top=2)
    np.testing.assert_allclose(v1, v2, atol=1e-4)
    for a, b in zip(p1, p2):
        assert [x[0] for x in a] == [x[0] for x in b]
        np.testing.assert_allclose([x[1] for x in a], [x[1] for x in b], atol=1e-4)
    assert onnx_enc.info()["backend"] == "onnx"


def test_mirror_tta_encodes_a_photo_and_its_mirror_image_alike(workspace: Path) -> None:
    imgs, _ = _photos()
    flipped = [im.transpose(Image.Transpose.FLIP_LEFT_RIGHT) for im in imgs]
    plain = create_encoder(f"trained:{workspace}")
    assert plain.tta == "none"  # the model folder was trained without it
    assert np.abs(plain.encode(imgs, show_progress=False) - plain.encode(flipped, show_progress=False)).max() > 1e-2
    out = {}
    for backend in ("onnx", "torch"):
        enc = create_encoder(f"trained:{workspace}", backend=backend, tta="mirror")
        assert enc.info()["tta"] == "mirror"
        v, p = enc.encode_and_predict(imgs, top=4)
        vf, pf = enc.encode_and_predict(flipped, top=4)
        np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
        np.testing.assert_allclose(v, vf, atol=1e-4)
        for a, b in zip(p, pf):
            assert [x[0] for x in a] == [x[0] for x in b]
            assert 0 < sum(x[1] for x in a) <= 1 + 1e-6  # still probabilities: "other" keeps the rest
        out[backend] = v
    np.testing.assert_allclose(out["onnx"], out["torch"], atol=1e-4)
    with pytest.raises(ValueError, match="valid: none, mirror"):
        create_encoder(f"trained:{workspace}", tta="rotate")


def test_model_folder_choice(workspace: Path, tmp_path: Path) -> None:
    folder = find_model_dir(workspace)
    assert folder.parent.name == "models"
    assert find_model_dir(folder) == folder
    enc = TrainedEncoder(folder)
    assert enc.info()["model_dir"] == str(folder) and enc.info()["quality"]["p_at_10"] is not None
    # a second, worse model in the workspace is not chosen: the best report wins
    worse = folder.parent / "worse"
    worse.mkdir()
    meta = json.loads((folder / "training.json").read_text())
    meta["report"] = {"p_at_10": 0.01}
    (worse / "training.json").write_text(json.dumps(meta))
    (worse / "model.pt").write_bytes((folder / "model.pt").read_bytes())
    try:
        assert find_model_dir(workspace) == folder
    finally:
        for f in worse.iterdir():
            f.unlink()
        worse.rmdir()
    with pytest.raises(FileNotFoundError, match="lookalike train"):
        find_model_dir(tmp_path)
    with pytest.raises(ValueError, match="backend"):
        TrainedEncoder(folder, backend="tensorrt")


def test_autoencoder_model_has_no_categories(tmp_path: Path) -> None:
    from lookalike.training import train

    cat = _catalogue(tmp_path / "cat", per_class=10)
    r = train(cat, tmp_path / "ws", label="category", recipe="autoencoder", epochs=1, image_size=32,
              batch_size=16, show_progress=False)
    enc = create_encoder(f"trained:{r.model_dir}")
    imgs, _ = _photos(3)
    assert enc.predict_category(imgs) is None
    vecs, preds = enc.encode_and_predict(imgs)
    assert vecs.shape == (3, enc.dim) and preds is None
    torch_enc = create_encoder(f"trained:{r.model_dir}", backend="torch")
    np.testing.assert_allclose(torch_enc.encode(imgs, show_progress=False), vecs, atol=1e-4)


def test_build_and_routed_search_use_the_trained_model(workspace: Path) -> None:
    """``build --encoder trained:WS`` end to end, then photo search with route=auto searches inside the
    category the model predicts."""
    from lookalike.pipeline import build
    from lookalike.recommender import Recommender
    from lookalike.settings import Settings

    cat = workspace.parent / "cat" / "catalogue.csv"
    res = build(cat, workspace, encoder=f"trained:{workspace}", k=5, show_progress=False)
    assert res.summary()  # prints without error
    rec = Recommender.open(workspace)
    assert rec.encoder_name == f"trained:{workspace}" and len(rec.ids) == 100
    # the threshold calibrated at training time routes, unless LOOKALIKE_ROUTE_THRESHOLD says otherwise
    calibrated = rec.encoder.route_threshold
    assert calibrated is not None and rec.route_threshold() == calibrated
    assert Recommender.open(workspace, settings=Settings(workspace=workspace, route_threshold=0.95)
                            ).route_threshold() == 0.95
    first = rec.ids[0]
    assert len(rec.similar(first, k=5)) == 5
    imgs, truth = _photos(8, seed=11)
    hits = 0
    for img, shape in zip(imgs, truth):
        out = rec.search(img, k=5, route="auto")
        assert out.predicted_category is not None and 0 < out.predicted_category[1] <= 1
        if out.searched_categories:  # confident: searched inside the predicted type(s) only
            assert out.searched_categories[0] == out.predicted_category[0]
            assert {it.product.category for it in out.items} <= set(out.searched_categories)
        hits += out.predicted_category[0] == shape
        unrouted = rec.search(img, k=5, route="none")
        assert unrouted.predicted_category is None and unrouted.searched_categories is None
    assert hits >= 6  # the predictions route; chance would be 2 of 8


def test_a_model_changed_in_place_is_encoded_again(workspace: Path, tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The encoder keeps its name when its model folder changes (retrained, or --tta switched on), so the
    build compares the encoder's identity, not its name, before reusing stored vectors."""
    import shutil

    from lookalike.pipeline import build
    from lookalike.recommender import Recommender
    from lookalike.store.vectors import VectorStore

    model = tmp_path / "model"
    shutil.copytree(find_model_dir(workspace), model)
    cat = workspace.parent / "cat" / "catalogue.csv"
    ws = tmp_path / "ws"
    kw = {"encoder": f"trained:{model}", "k": 5, "show_progress": False}
    assert build(cat, ws, **kw).counts["embedded"] == 100
    again = build(cat, ws, **kw).counts
    assert again["embedded"] == 0 and again["reused"] == 100
    _, plain = VectorStore.for_encoder(ws, f"trained:{model}").load()
    meta = json.loads((model / "training.json").read_text())
    (model / "training.json").write_text(json.dumps({**meta, "tta": "mirror"}))
    with caplog.at_level("WARNING", logger="lookalike.recommender"):
        Recommender.open(ws)  # served before the rebuild: warned
    assert any("changed since this workspace was built (tta)" in m for m in caplog.messages)
    changed = build(cat, ws, **kw).counts
    assert changed["embedded"] == 100 and changed["reused"] == 0
    caplog.clear()
    with caplog.at_level("WARNING", logger="lookalike.recommender"):
        Recommender.open(ws)
    assert not any("changed since" in m for m in caplog.messages)
    _, mirrored = VectorStore.for_encoder(ws, f"trained:{model}").load()
    assert np.abs(plain - mirrored).max() > 1e-3


def test_evaluate_queries_only_products_the_model_held_out(workspace: Path, tmp_path: Path) -> None:
    """A model has seen its training products: `lookalike evaluate` must not score it on them."""
    from lookalike.evaluate.report import evaluate
    from lookalike.pipeline import build
    from lookalike.training.data import HELDOUT_JSON, heldout_ids

    model_dir = find_model_dir(workspace)
    held = heldout_ids(model_dir)
    assert held and held == set(json.loads((model_dir / HELDOUT_JSON).read_text())["ids"])
    meta = json.loads((model_dir / "training.json").read_text())
    assert len(held) == meta["data"]["n_val"]
    # a model trained before heldout.json existed: the split is recomputed from its training workspace
    moved = tmp_path / "model"
    import shutil

    shutil.copytree(model_dir, moved)
    (moved / HELDOUT_JSON).unlink()
    assert heldout_ids(moved) == held

    cat = Path(json.loads((workspace / "catalogue.json").read_text())["source"])
    built = tmp_path / "built"
    build(cat, built, encoder=f"trained:{workspace}", k=5, show_progress=False, num_workers=0)
    rep = evaluate(built, label="category", queries=1000, out=tmp_path / "report")
    assert set(rep.data["query_ids"]) <= held and len(rep.data["query_ids"]) == len(held)
    assert rep.data["not_eligible"]["seen_in_training"] == meta["data"]["n_images"] - len(held)
    assert "held out from its training" in rep.data["queries_from"]
    assert "held out from its training" in rep.report_html.read_text()
