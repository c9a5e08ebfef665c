from __future__ import annotations

import numpy as np
import onnxruntime as ort
import torch

from lookalike.io_utils import read_json
from lookalike.training import export_onnx
from lookalike.training.models import load_trained


def test_onnx_matches_torch_within_1e4(trained_classifier) -> None:
    folder = trained_classifier.model_dir
    path = export_onnx(folder)
    meta = read_json(folder / "training.json")
    model = load_trained(folder, meta["model"])
    h, w = meta["preprocess"]["size"]
    x = np.random.default_rng(0).normal(size=(5, 3, h, w)).astype(np.float32)
    with torch.no_grad():
        emb, logits = model(torch.from_numpy(x))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["embedding", "logits"]
    o_emb, o_logits = sess.run(None, {"images": x})
    assert o_emb.shape == (5, meta["model"]["embed_dim"]) and o_logits.shape == (5, len(meta["labels"]["classes"]))
    np.testing.assert_allclose(o_emb, emb.numpy(), atol=1e-4)
    np.testing.assert_allclose(o_logits, logits.numpy(), atol=1e-4)
    # any batch size (dynamic axis)
    one = sess.run(None, {"images": x[:1]})[0]
    np.testing.assert_allclose(one, emb.numpy()[:1], atol=1e-4)
