from pathlib import Path

import numpy as np

from lookalike.store.vectors import VectorStore


def test_chunks_resume_and_newest_wins(tmp_path: Path) -> None:
    vs = VectorStore(tmp_path / "v")
    assert vs.done() == {} and vs.load()[0] == []
    vs.append(["a", "b"], ["h1", "h2"], np.eye(2, 3, dtype=np.float32))
    vs.append(["b", "c"], ["h2b", "h3"], np.ones((2, 3), np.float32))
    assert vs.done() == {"a": "h1", "b": "h2b", "c": "h3"}
    ids, vecs = vs.load()
    assert ids == ["a", "b", "c"]
    np.testing.assert_array_equal(vecs[1], np.ones(3))
    ids, vecs = vs.load(keep={"a", "c"})
    assert ids == ["a", "c"] and vecs.shape == (2, 3)


def test_orphan_npy_without_json_is_ignored(tmp_path: Path) -> None:
    vs = VectorStore(tmp_path)
    vs.append(["a"], ["h"], np.zeros((1, 2), np.float32))
    np.save(tmp_path / "chunk-00001.npy", np.zeros((5, 2), np.float32))  # a crash before the json landed
    assert list(vs.done()) == ["a"]


def test_compact(tmp_path: Path) -> None:
    vs = VectorStore(tmp_path)
    for i in range(3):
        vs.append([f"p{i}"], [f"h{i}"], np.full((1, 2), i, np.float32))
    before = vs.load()
    vs.compact()
    assert len(list(tmp_path.glob("*.json"))) == 1
    after = vs.load()
    assert before[0] == after[0] and np.array_equal(before[1], after[1])


def test_bind_discards_vectors_of_another_encoder(tmp_path: Path) -> None:
    vs = VectorStore(tmp_path / "v")
    vs.append(["a"], ["h"], np.zeros((1, 2), np.float32))
    first = {"name": "trained:ws", "dim": 2, "weights_sha256": "aa", "size": (32, 32)}
    assert vs.bind(first) == []  # vectors written before identities existed are adopted
    assert vs.bind(dict(first)) == [] and list(vs.done()) == ["a"]  # a tuple compares as its stored list
    assert vs.bind({**first, "weights_sha256": "bb", "tta": "mirror"}) == ["tta", "weights_sha256"]
    assert vs.done() == {} and vs.load()[0] == []  # stale: re-encoded by the caller
    vs.append(["a"], ["h"], np.ones((1, 2), np.float32))
    assert vs.bind({**first, "weights_sha256": "bb", "tta": "mirror"}) == [] and list(vs.done()) == ["a"]
