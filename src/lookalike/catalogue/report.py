"""The validation report: every row or image an ingest could not use, counted exactly, with examples."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lookalike.catalogue.readers import ReadProblem
from lookalike.io_utils import write_json

KINDS: tuple[str, ...] = (
    "missing_image",       # no image value, or the file does not exist
    "undecodable_image",   # the bytes are not an image PIL can fully decode
    "image_too_large",     # over the pixel cap (decompression bomb guard)
    "duplicate_id",        # the id was seen on an earlier row; the first one is kept
    "malformed_row",       # wrong field count, missing id, unparsable line
    "unsafe_path",         # the image path escapes the catalogue folder
    "fetch_failed",        # an http(s) image could not be downloaded
)

MAX_EXAMPLES = 1000


class ValidationReport:
    """Problems by kind: exact counts, and the first ``max_examples`` of each kind kept for the JSON."""

    def __init__(self, max_examples: int = MAX_EXAMPLES) -> None:
        self.max_examples = max_examples
        self._counts: dict[str, int] = dict.fromkeys(KINDS, 0)
        self._examples: dict[str, list[ReadProblem]] = {k: [] for k in KINDS}
        # every id with a problem, uncapped: `update` must not mistake a bad row for a removed product
        self.problem_ids: set[str] = set()

    def add(self, problem: ReadProblem) -> None:
        if problem.kind not in self._counts:
            raise ValueError(f"unknown problem kind {problem.kind!r}; the kinds are {list(KINDS)}")
        self._counts[problem.kind] += 1
        if problem.id:
            self.problem_ids.add(problem.id)
        if len(self._examples[problem.kind]) < self.max_examples:
            self._examples[problem.kind].append(problem)

    def extend(self, problems: Iterable[ReadProblem]) -> None:
        for p in problems:
            self.add(p)

    def counts(self) -> dict[str, int]:
        """Every kind, zero included, so the JSON has a stable shape."""
        return dict(self._counts)

    @property
    def total(self) -> int:
        return sum(self._counts.values())

    def __len__(self) -> int:
        return self.total

    def examples(self, kind: str) -> list[ReadProblem]:
        return list(self._examples.get(kind, []))

    def to_dict(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "counts": self.counts(),
            "max_examples": self.max_examples,
            "problems": {k: [asdict(p) for p in v] for k, v in self._examples.items() if v},
            "omitted": {k: n - len(self._examples[k]) for k, n in self._counts.items()
                        if n > len(self._examples[k])},
        }

    def write(self, path: Path, **extra: Any) -> None:
        """Write the report as JSON; ``extra`` keys (catalogue path, row counts...) go first."""
        write_json(path, {**extra, **self.to_dict()})

    def summary(self, examples: int = 3) -> str:
        """A short table for logs and the CLI: kind, count and the first few examples."""
        if not self.total:
            return "no problems"
        width = max(len(k) for k in KINDS)
        lines = [f"{'problem':<{width}}  {'count':>7}  examples", f"{'-' * width}  {'-' * 7}  {'-' * 8}"]
        for kind, n in self._counts.items():
            if n:
                shown = "; ".join(_short(p) for p in self._examples[kind][:examples])
                more = f" (+{n - examples} more)" if n > examples else ""
                lines.append(f"{kind:<{width}}  {n:>7}  {shown}{more}")
        lines.append(f"{'total':<{width}}  {self.total:>7}")
        return "\n".join(lines)


def _short(p: ReadProblem, width: int = 60) -> str:
    detail = p.detail if len(p.detail) <= width else p.detail[: width - 3] + "..."
    return f"row {p.row}" + (f" id={p.id}" if p.id else "") + f": {detail}"
