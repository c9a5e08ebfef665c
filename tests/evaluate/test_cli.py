"""`lookalike evaluate`: a thin wrapper that prints the headline figures and where the report is."""
import json
from pathlib import Path

from typer.testing import CliRunner

from lookalike.cli import app

runner = CliRunner()


def test_evaluate_command(eval_ws: Path, tmp_path: Path) -> None:
    out = tmp_path / "rep"
    r = runner.invoke(app, ["evaluate", str(eval_ws), "--k", "5,10", "--queries", "30", "--out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads((out / "metrics.json").read_text())
    p10 = data["workspaces"][0]["overall"]["P@10"]
    assert f"P@10={p10:.3f}" in r.output and "report.html" in r.output and "ANN recall@10=" in r.output
    assert (out / "report.html").stat().st_size > 10_000


def test_evaluate_bad_input_is_a_usage_error(eval_ws: Path, tmp_path: Path) -> None:
    r = runner.invoke(app, ["evaluate", str(eval_ws), "--k", "five", "--out", str(tmp_path / "a")])
    assert r.exit_code == 2 and "comma-separated" in r.output
    r = runner.invoke(app, ["evaluate", str(tmp_path / "nothing-built")])
    assert r.exit_code == 2 and "lookalike build" in r.output
    assert not (tmp_path / "a").exists()
