"""ValidationReport: exact counts, capped examples, JSON and the human summary."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from lookalike.catalogue.readers import ReadProblem
from lookalike.catalogue.report import KINDS, ValidationReport
from lookalike.io_utils import read_json


def test_counts_total_and_unknown_kind() -> None:
    r = ValidationReport()
    assert r.total == 0 and r.counts() == dict.fromkeys(KINDS, 0) and r.summary() == "no problems"
    r.add(ReadProblem(3, "a", "missing_image", "no file"))
    r.add(ReadProblem(4, "a", "duplicate_id", "seen"))
    r.add(ReadProblem(5, None, "malformed_row", "11 fields"))
    r.add(ReadProblem(6, "b", "missing_image", "no file"))
    assert r.total == len(r) == 4
    assert r.counts()["missing_image"] == 2 and r.counts()["fetch_failed"] == 0
    assert [p.row for p in r.examples("missing_image")] == [3, 6]
    with pytest.raises(ValueError, match="missing_image"):
        r.add(ReadProblem(1, "x", "weird", ""))


def test_examples_are_capped_but_counts_exact(tmp_path: Path) -> None:
    r = ValidationReport(max_examples=10)
    r.extend(ReadProblem(i, str(i), "undecodable_image", "bad bytes") for i in range(25))
    d = r.to_dict()
    assert d["counts"]["undecodable_image"] == 25 and d["total"] == 25
    assert len(d["problems"]["undecodable_image"]) == 10 and d["omitted"] == {"undecodable_image": 15}
    json.dumps(d, allow_nan=False)

    r.write(tmp_path / "reports" / "validation.json", catalogue="/x/styles.csv", n_rows=30)
    back = read_json(tmp_path / "reports" / "validation.json")
    assert back["catalogue"] == "/x/styles.csv" and back["n_rows"] == 30
    assert back["counts"]["undecodable_image"] == 25
    assert back["problems"]["undecodable_image"][0] == {"row": 0, "id": "0", "kind": "undecodable_image",
                                                        "detail": "bad bytes"}


def test_summary_table_lists_kinds_counts_and_examples() -> None:
    r = ValidationReport()
    r.extend(ReadProblem(i, f"id{i}", "missing_image", "no image file") for i in range(5))
    r.add(ReadProblem(9, None, "unsafe_path", "x" * 200))
    text = r.summary()
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["problem", "count"]
    missing = next(line for line in lines if line.startswith("missing_image"))
    assert " 5 " in missing and "id=id0" in missing and "(+2 more)" in missing
    unsafe = next(line for line in lines if line.startswith("unsafe_path"))
    assert "..." in unsafe and len(unsafe) < 120  # long details are shortened
    assert lines[-1].split() == ["total", "6"]
    assert "fetch_failed" not in text  # zero kinds are left out of the table
