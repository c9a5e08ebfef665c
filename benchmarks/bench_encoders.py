"""The ``trained:`` encoder: torch against onnxruntime on the same batches, and single-photo latency.

    python benchmarks/bench_encoders.py --model WS_OR_MODEL_FOLDER [--n 1024] [--batch 64] [--photos 200] [--tta mirror]
    python benchmarks/bench_encoders.py              # trains a tiny model on generated shapes first

1. Throughput: ``--n`` catalogue images are decoded and resized once; then each backend runs its forward pass
   (normalise + network) over the same uint8 batches. Prints images/s and the largest difference between
   the two backends' embeddings.
2. Latency of one shopper photo, end to end, as photo search runs it: read the file, decode, resize,
   normalise, one forward pass giving the embedding and the top-3 categories (``encode_and_predict``).
   Prints p50/p99 in milliseconds per backend.
Prints numbers and ratios; asserts nothing.
"""
from __future__ import annotations

import argparse
import functools
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_encoders")


def catalogue_images(model_dir: Path, n: int) -> list[Path]:
    """Up to ``n`` image files of the catalogue the model was trained on."""
    from lookalike.catalogue import image_resolver
    from lookalike.io_utils import read_json
    from lookalike.training.data import read_products

    ws = Path(read_json(model_dir / "training.json")["data"]["workspace"])
    resolve = image_resolver(ws)
    paths = [resolve(r.image) for r in read_products(ws, limit=n) if r.image]
    return [p for p in paths if p.is_file()]


def tiny_model(folder: Path) -> Path:
    """A classifier trained for a few epochs on generated shapes (when no --model is given)."""
    import csv

    from lookalike.demo import COLOURS, SHAPES, draw_product
    from lookalike.training import train

    (folder / "cat" / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(160):
        shape, colour = SHAPES[i % 4], list(COLOURS)[i % 4]
        draw_product(shape, COLOURS[colour], rng, size=80).save(folder / "cat" / "images" / f"{i}.png")
        rows.append({"id": i, "title": shape, "category": shape, "image": f"images/{i}.png"})
    with (folder / "cat" / "catalogue.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    r = train(folder / "cat" / "catalogue.csv", folder / "ws", label="category", epochs=3, min_count=10,
              show_progress=False)
    return r.model_dir


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="workspace or models/<name> folder (default: train a tiny one)")
    ap.add_argument("--n", type=int, default=1024, help="images for the throughput test")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--photos", type=int, default=200, help="single photos for the latency test")
    ap.add_argument("--threads", type=int, default=None, help="torch / onnxruntime threads (default: theirs)")
    ap.add_argument("--tta", choices=("none", "mirror"), help="test-time augmentation (default: the model's own)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from lookalike.encoders.prep import prepare_one, resize_to_array
    from lookalike.encoders.trained import TrainedEncoder, find_model_dir

    tmp = None
    if args.model is None:
        tmp = tempfile.TemporaryDirectory()
        model_dir = tiny_model(Path(tmp.name))
    else:
        model_dir = find_model_dir(args.model)
    encs = {b: TrainedEncoder(model_dir, backend=b, num_threads=args.threads, tta=args.tta) for b in ("torch", "onnx")}
    torch_enc = encs["torch"]
    paths = catalogue_images(model_dir, max(args.n, args.photos))
    print(f"model   {model_dir}  ({torch_enc.meta['recipe']}, input {torch_enc.preprocess.size}, dim {torch_enc.dim}, "
          f"{len(torch_enc.classes)} classes, tta {torch_enc.tta})")
    print(f"images  {len(paths)} from the training catalogue")

    # 1) throughput on identical pre-decoded batches
    fn = functools.partial(resize_to_array, cfg=torch_enc.preprocess)
    arrays = [v for ok, v in (prepare_one(p, fn, torch_enc.max_pixels) for p in paths[:args.n]) if ok]
    batches = [np.stack(arrays[s:s + args.batch]) for s in range(0, len(arrays), args.batch)]
    outs: dict[str, np.ndarray] = {}
    rates: dict[str, float] = {}
    for name, enc in encs.items():
        enc.forward(batches[0])  # warm-up: first-call allocations and kernel selection
        t0 = time.perf_counter()
        outs[name] = np.concatenate([enc.forward(b)[0] for b in batches])
        rates[name] = len(arrays) / (time.perf_counter() - t0)
    diff = float(np.abs(outs["torch"] - outs["onnx"]).max())
    print(f"\nthroughput (batch {args.batch}, {len(arrays)} images, forward pass only)")
    for name, r in rates.items():
        print(f"  {name:<6} {r:9.0f} images/s")
    print(f"  onnx / torch = {rates['onnx'] / rates['torch']:.2f}x   max |embedding difference| = {diff:.2e}")

    # 2) one photo at a time, end to end
    photos = paths[:args.photos]
    print(f"\nsingle-photo latency, end to end (read + decode + resize + encode + top-3), {len(photos)} photos")
    for name, enc in encs.items():
        enc.encode_and_predict([photos[0]], top=3)
        times = []
        for p in photos:
            t0 = time.perf_counter()
            enc.encode_and_predict([p], top=3)
            times.append((time.perf_counter() - t0) * 1000)
        print(f"  {name:<6} p50 {statistics.median(times):6.2f} ms   p99 {percentile(times, 99):6.2f} ms")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
