"""The Typer CLI: each command wraps a public function; output is checked, not just exit codes."""
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lookalike.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def ws(tiny_catalogue: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("ws")
    r = runner.invoke(app, ["build", str(tiny_catalogue), "--workspace", str(ws), "--encoder", "color-texture",
                            "-k", "6"])
    assert r.exit_code == 0, r.output
    assert "encoder    color-texture" in r.output and "stage times" in r.output
    return ws


def test_registries_listed() -> None:
    r = runner.invoke(app, ["list-encoders"])
    assert r.exit_code == 0 and "color-texture" in r.output and "timm:<name>" in r.output
    r = runner.invoke(app, ["list-indexes"])
    assert r.exit_code == 0 and all(n in r.output for n in ("exact", "faiss", "hnswlib", "annoy"))


def test_similar_table(ws: Path) -> None:
    r = runner.invoke(app, ["similar", str(ws), "p0000", "-k", "3", "--filter", "colour:Red"])
    assert r.exit_code == 0, r.output
    assert "similar to p0000" in r.output and r.output.count("%") >= 3


def test_similar_all_export(ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "sim.jsonl"
    r = runner.invoke(app, ["similar-all", str(ws), "-k", "4", "--export", str(out)])
    assert r.exit_code == 0, r.output
    assert len(out.read_text().splitlines()) == 120 * 4


def test_unknown_encoder_lists_valid_ones(tiny_catalogue: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["build", str(tiny_catalogue), "--workspace", str(tmp_path), "--encoder", "nope"])
    assert r.exit_code != 0 and "Valid encoders" in str(r.exception)


def test_fit_router_says_what_to_fix(ws: Path, tmp_path: Path) -> None:
    def flat(out: str) -> str:  # rich wraps the message inside a box
        return " ".join(out.replace("│", " ").split())

    r = runner.invoke(app, ["fit-router", str(tmp_path)])
    assert r.exit_code == 2 and "not a built workspace" in flat(r.output)
    # a timm model with no offline weights: the error names what was tried, with no traceback
    r = runner.invoke(app, ["fit-router", str(ws), "--encoder", "timm:test_efficientnet", "--sample", "40"])
    assert r.exit_code == 2 and "test_efficientnet" in flat(r.output) and "Traceback" not in r.output
    r = runner.invoke(app, ["fit-router", str(ws), "--features", "pixels"])
    assert r.exit_code == 2 and "valid: pooled, logits" in flat(r.output)


def test_goes_with_fit_says_what_to_fix(ws: Path, tmp_path: Path) -> None:
    def flat(out: str) -> str:  # rich wraps the message inside a box
        return " ".join(out.replace("│", " ").split())

    import shutil

    ws = Path(shutil.copytree(ws, tmp_path / "ws"))  # the fit writes a model: keep the shared workspace clean

    r = runner.invoke(app, ["goes-with", str(ws), "--fit", "--recipe", "learned", "--no-cnn"])
    assert r.exit_code == 2 and "give --links" in flat(r.output) and "Traceback" not in r.output
    links = tmp_path / "links.csv"
    links.write_text("item,group\np0000,o1\np0001,o1\n")
    r = runner.invoke(app, ["goes-with", str(ws), "--fit", "--links", str(links), "--no-cnn", "--type-attribute", "kind"])
    assert r.exit_code == 2 and "no product has the attribute 'kind'" in flat(r.output)
    r = runner.invoke(app, ["goes-with", str(ws), "--fit", "--links", str(links), "--no-cnn", "--recipe", "combined",
                            "--type-attribute", "colour"])
    assert r.exit_code == 0 and '"type"' in flat(r.output), r.output
