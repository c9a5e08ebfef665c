"""How the training loop picks its torch threads on a shared machine."""
from __future__ import annotations

import os

import pytest

from lookalike.training import loop
from lookalike.training.loop import OwnLoad, pick_threads


@pytest.fixture
def two_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LOOKALIKE_TORCH_THREADS", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 2)


def test_threads_leave_other_jobs_their_cores(two_cores: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "getloadavg", lambda: (2.0, 2.0, 2.0))
    assert pick_threads(0.0, 2) == 1  # two cores busy with someone else's work: one thread
    assert pick_threads(1.9, 2) == 2  # the load was our own feature pass: both cores are ours
    monkeypatch.setattr(os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    assert pick_threads(0.0, 2) == 2
    monkeypatch.setenv("LOOKALIKE_TORCH_THREADS", "1")
    assert pick_threads(1.9, 2) == 1


def test_own_load_measures_this_process(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = {"wall": 100.0, "cpu": 10.0}
    monkeypatch.setattr(loop.time, "perf_counter", lambda: clock["wall"])
    monkeypatch.setattr(loop.time, "process_time", lambda: clock["cpu"])
    own = OwnLoad()
    clock["wall"] += 0.5
    assert own.read() == 0.0  # under a second: no reading, and the window keeps growing
    clock["wall"] += 99.5
    clock["cpu"] += 180.0  # two threads busy for 90 of the 100 s
    assert own.read() == pytest.approx(1.8)
    clock["wall"] += 10.0
    assert own.read() == 0.0  # idle since the last reading

