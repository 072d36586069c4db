"""The pipeline benchmark runs the real training step both ways and reports a sane ratio."""

from __future__ import annotations

import json

import pytest

from vitlab.cli.main import main


def test_pipeline_benchmark_json(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps({"data": "digits", "batch_size": 32, "precision": "fp32",
                                  "model_args": {"embed_dim": 16, "depth": 1, "num_heads": 2, "mlp_dim": 32}}))
    assert main(["bench", "--pipeline", "--config", str(config), "--rounds", "1", "--seconds", "0.2", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["data"] == "digits" and result["batch_size"] == 32 and result["precision"] == "fp32"
    assert result["end_to_end_img_per_s"] > 0 and result["model_only_img_per_s"] > 0
    assert result["ratio"] == pytest.approx(result["end_to_end_img_per_s"] / result["model_only_img_per_s"])
