"""`vitlab features` and `vitlab fewshot` as a user runs them: JSON, tables, files, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import vitlab
from vitlab.cli.main import main
from vitlab.models.vit import ViTConfig, VisionTransformer


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    config = ViTConfig(img_size=8, patch_size=2, in_chans=1, embed_dim=16, depth=1, num_heads=2, mlp_dim=32, num_classes=10)
    return vitlab.save_pretrained(VisionTransformer(config), tmp_path_factory.mktemp("fewshot") / "tiny")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]):
    def run(*argv):
        capsys.readouterr()
        code = main([str(a) for a in argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run


def test_fewshot_json_then_from_the_cache(cli, checkpoint: Path, tmp_path: Path) -> None:
    argv = ("fewshot", "--pretrained", checkpoint, "--data", "digits", "--shots", "1,5", "--seeds", "2",
            "--cache-dir", tmp_path / "cache", "--json")
    code, out, err = cli(*argv)
    assert code == 0 and err == ""
    report = json.loads(out)
    assert (report["train_split"], report["eval_split"], report["from_cache"]) == ("train", "test", False)
    assert [r["shots"] for r in report["results"]] == [1, 5] and report["seeds"] == 2 and report["l2"] == 1024
    for row in report["results"]:
        assert len(row["per_seed"]) == 2
        assert all(0.0 <= row[k] <= 1.0 for k in ("mean", "min", "max")) and all(0 <= a <= 1 for a in row["per_seed"])
    assert (report["num_classes"], report["feature_dim"]) == (10, 16)
    code, out, _ = cli(*argv)
    again = json.loads(out)
    assert code == 0 and again["from_cache"] is True and again["results"] == report["results"]


def test_fewshot_table_and_val_split(cli, checkpoint: Path) -> None:
    code, out, _ = cli("fewshot", "--checkpoint", checkpoint, "--data", "digits", "--shots", "2", "--seeds", "1",
                       "--split", "val", "--no-cache")
    assert code == 0
    lines = out.splitlines()
    assert "top-1 on val" in lines[1] and lines[2].split() == ["shots", "top-1", "±", "std", "min", "max"]
    assert lines[3].split()[0] == "2" and lines[-1] == "features: not cached (--no-cache)"


@pytest.mark.parametrize("pool, name, shape", [("pre_logits", "f.npy", (16,)), ("tokens", "f.safetensors", (17, 16)),
                                                ("pre_logits", "f.npz", (16,))])
def test_features_files(cli, checkpoint: Path, tmp_path: Path, pool: str, name: str, shape: tuple) -> None:
    out_file = tmp_path / name
    code, out, err = cli("features", "--checkpoint", checkpoint, "--data", "digits", "--split", "test", "--pool", pool,
                         "--out", out_file, "--batch-size", "100", "--json")
    assert code == 0 and err == ""
    report = json.loads(out)
    count = report["num_images"]
    assert report["shape"] == [count, *shape] and report["files"][0] == str(out_file)
    if name.endswith(".npy"):
        features, labels = np.load(out_file), np.load(tmp_path / "f.labels.npy")
    elif name.endswith(".npz"):
        with np.load(out_file) as archive:
            features, labels = archive["features"], archive["labels"]
    else:
        tensors = load_file(out_file)
        features, labels = tensors["features"].numpy(), tensors["labels"].numpy()
    assert features.shape == (count, *shape) and features.dtype == np.float32
    assert labels.shape == (count,) and set(labels.tolist()) == set(range(10))


def test_features_human_output(cli, checkpoint: Path, tmp_path: Path) -> None:
    code, out, _ = cli("features", "--checkpoint", checkpoint, "--data", "digits", "--out", tmp_path / "f.npz")
    assert code == 0 and out.startswith("digits train: pre_logits features ") and str(tmp_path / "f.npz") in out


@pytest.fixture(scope="module")
def patch16(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = ViTConfig(img_size=32, patch_size=16, in_chans=3, embed_dim=16, depth=1, num_heads=2, mlp_dim=32, num_classes=0)
    return vitlab.save_pretrained(VisionTransformer(config), tmp_path_factory.mktemp("fewshot") / "patch16")


@pytest.mark.parametrize("command, source, extra, message", [
    ("fewshot", "tiny", ["--shots", "1,500"], "--shots 500 is more than the 1"),
    ("fewshot", "tiny", ["--shots", "five"], "--shots 'five': give positive integers"),
    ("fewshot", "tiny", ["--seeds", "0"], "--seeds must be a positive integer"),
    ("fewshot", "tiny", ["--data", "digitz"], "unknown dataset 'digitz'"),
    ("fewshot", "patch16", [], "digits has 8×8 images but the model's patches are 16×16 pixels"),
    ("fewshot", "missing", [], "missing: no such file or folder"),
    ("features", "tiny", ["--out", "f.txt"], "write features to a .npy, .npz, .safetensors file"),
    ("features", "patch16", ["--out", "f.npy"], "a whole image is smaller than one patch"),
    ("features", "missing", ["--out", "f.npy"], "missing: no such file or folder"),
])
def test_bad_input_is_one_line_and_exit_2(cli, checkpoint: Path, patch16: Path, tmp_path: Path, command: str,
                                          source: str, extra: list[str], message: str) -> None:
    sources = {"tiny": checkpoint, "patch16": patch16, "missing": tmp_path / "missing"}
    extra = [tmp_path / e if e.startswith("f.") else e for e in extra]
    if command == "fewshot":
        extra += ["--cache-dir", tmp_path / "cache"]
    code, out, err = cli(command, "--checkpoint", sources[source], "--data", "digits", *extra)
    assert code == 2 and out == ""
    assert len(err.splitlines()) == 1 and err.startswith(f"vitlab {command}: error: ") and message in err
