"""``lookalike train`` on a tiny generated catalogue: the command trains, reports and names the encoder."""
from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from lookalike.cli import app

runner = CliRunner()


def test_train_command_learns_and_prints_the_encoder(shapes_catalogue: Path, tmp_path: Path) -> None:
    ws = tmp_path / "ws"
    res = runner.invoke(app, ["train", str(shapes_catalogue), "--workspace", str(ws), "--label", "category",
                              "--epochs", "4", "--image-size", "32", "--batch-size", "32", "--lr", "0.005",
                              "--min-count", "5", "--name", "cli"])
    assert res.exit_code == 0, res.output
    folder = ws / "models" / "cli"
    assert f"trained:{folder}" in res.output.replace("\n", "")
    report = json.loads((folder / "report.json").read_text())
    assert report["val_top1"] >= 0.75  # 4 classes: chance is 0.25
    assert f"val_top1={report['val_top1']:.4f}" in res.output
    meta = json.loads((folder / "training.json").read_text())
    assert meta["recipe"] == "classifier" and len(meta["epochs"]) == 4


def test_train_command_bad_option_is_a_clear_error(shapes_catalogue: Path, tmp_path: Path) -> None:
    res = runner.invoke(app, ["train", str(shapes_catalogue), "--workspace", str(tmp_path / "ws"),
                              "--recipe", "gan"])
    assert res.exit_code == 2
    assert "unknown recipe 'gan'" in res.output and "classifier" in res.output
