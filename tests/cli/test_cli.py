"""The `vitlab` command as a user runs it: output, exit codes, files written, and one-line errors.

Most tests call `vitlab.cli.main.main` in this process (capsys holds the output); one runs `python -m vitlab`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import vitlab
from vitlab.checkpoints import convert
from vitlab.cli.main import main
from vitlab.data.preprocessing import load_image
from vitlab.models.registry import MODELS
from vitlab.models.vit import ViTConfig, VisionTransformer

# --- fixtures: an in-process runner, small checkpoints, image files ------------------------------------------

MNIST = "vit_mnist_patch7_28"
DIGITS = [f"digit-{i}" for i in range(10)]
COLOURS = ["red", "green", "blue", "white", "black"]


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    @property
    def err_lines(self) -> list[str]:
        return self.err.splitlines()


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., Result]:
    """`cli("info", path, "--json")`: run `vitlab ...` in this process, return exit code, stdout and stderr."""

    def run(*argv: Any) -> Result:
        capsys.readouterr()  # drop whatever earlier code printed
        code = main([str(arg) for arg in argv])
        out, err = capsys.readouterr()
        return Result(code, out, err)

    return run


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter N(0, 0.2²), LayerNorm weights around 1: biases and head are non-zero too."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.2)
        for layer in model.modules():
            if isinstance(layer, torch.nn.LayerNorm):
                layer.weight += 1.0
    return model.eval()


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli_files")


@pytest.fixture(scope="module")
def mnist_checkpoint(files: Path) -> Path:
    """vit_mnist_patch7_28 (1 channel, 28 px) with random non-zero weights and class names: a vitlab folder."""
    model = randomize_(vitlab.create_model(MNIST))
    model.labels = list(DIGITS)
    return vitlab.save_pretrained(model, files / "mnist")


@pytest.fixture(scope="module")
def zero_head_checkpoint(files: Path) -> Path:
    """A freshly created model saved as is: the paper's zero-initialised head, no class names."""
    return vitlab.save_pretrained(vitlab.create_model(MNIST), files / "mnist_zero_head")


@pytest.fixture(scope="module")
def rgb_checkpoint(files: Path) -> Path:
    """A tiny 3-channel ViT (16 px, patches of 8, 5 classes) with class names."""
    config = ViTConfig(img_size=16, patch_size=8, embed_dim=32, depth=1, num_heads=2, mlp_dim=64, num_classes=5)
    model = randomize_(VisionTransformer(config), seed=1)
    model.labels = list(COLOURS)
    return vitlab.save_pretrained(model, files / "rgb")


@pytest.fixture(scope="module")
def timm_file(files: Path, mnist_checkpoint: Path) -> Path:
    """The MNIST checkpoint as a bare timm state dict (which does not record the head count)."""
    return convert(mnist_checkpoint, files / "mnist_timm.safetensors", to="timm")


@pytest.fixture(scope="module")
def image_folder(files: Path) -> Path:
    """Four small PNGs in the modes people have (RGB, grayscale L, RGBA, palette P), plus a non-image file."""
    folder = files / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), "RGB")
    rgb.save(folder / "a_rgb.png")
    Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8), "L").save(folder / "b_gray.png")
    Image.fromarray(rng.integers(0, 256, (50, 20, 4), dtype=np.uint8), "RGBA").save(folder / "c_rgba.png")
    rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16).save(folder / "d_palette.png")
    (folder / "notes.txt").write_text("not an image, and not named like one: predict skips it\n")
    return folder


@pytest.fixture(scope="module")
def bad_files(files: Path) -> Path:
    """Things a user may point vitlab at by mistake."""
    folder = files / "bad"
    folder.mkdir()
    (folder / "random.bin").write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (folder / "notes.safetensors").write_text("these are my notes about ViT\n")
    (folder / "notes.png").write_text("a text file renamed .png\n")
    (folder / "empty").mkdir()
    (folder / "a_file").write_text("in the way of a folder\n")
    return folder


# --- vitlab, vitlab --version -------------------------------------------------------------------------------


def test_no_command_prints_help_and_exits_2(cli: Callable[..., Result]) -> None:
    result = cli()
    assert result.code == 2
    assert result.out.startswith("usage: vitlab")
    for command in ("demo", "models", "info", "predict", "convert", "bench"):
        assert command in result.out


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"vitlab {vitlab.__version__}"


def test_unknown_command_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["trian"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'trian'" in capsys.readouterr().err


def test_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    """`python -m vitlab` works from anywhere (the installed package, not the checkout's cwd)."""
    done = subprocess.run(
        [sys.executable, "-m", "vitlab", "models", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    names = [row["name"] for row in json.loads(done.stdout)["models"]]
    assert names == vitlab.list_models()


# --- models -----------------------------------------------------------------------------------------------


def test_models_json(cli: Callable[..., Result]) -> None:
    result = cli("models", "--json")
    assert result.code == 0 and result.err == ""
    data = result.json()
    assert isinstance(data, dict) and list(data) == ["models"]
    rows = {row["name"]: row for row in data["models"]}
    assert list(rows) == vitlab.list_models()
    for name, row in rows.items():
        assert isinstance(row["params"], int) and row["params"] > 0
        if MODELS[name].params is not None:
            assert row["params"] == MODELS[name].params, name
    base = rows["vit_base_patch16_224"]
    assert base["params"] == 86_567_656
    shape = (base["depth"], base["embed_dim"], base["num_heads"], base["mlp_dim"], base["patch_size"])
    assert shape == (12, 768, 12, 3072, 16)
    assert base["img_size"] == [224, 224]


def test_models_pattern_filters(cli: Callable[..., Result]) -> None:
    data = cli("models", "mnist", "--json").json()
    assert [row["name"] for row in data["models"]] == ["vit_mnist_patch4_28", "vit_mnist_patch7_28"]


def test_models_table(cli: Callable[..., Result]) -> None:
    result = cli("models", "base_patch16")
    assert result.code == 0
    lines = result.out.splitlines()
    assert lines[0].split()[:2] == ["name", "params"]
    assert len(lines) == 1 + len(vitlab.list_models("base_patch16"))
    assert any(line.startswith("vit_base_patch16_224") and "86,567,656" in line for line in lines)


# --- demo -------------------------------------------------------------------------------------------------


def test_demo_tiny_json(cli: Callable[..., Result]) -> None:
    result = cli("demo", "--model", "vit_tiny_patch16_224", "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["model"] == "vit_tiny_patch16_224"
    assert data["params"] == data["params_in_table"] == 5_717_416
    assert data["round_trip_max_abs_diff"] == {"hf": 0.0, "timm": 0.0}
    assert data["exact_vs_fused_max_abs_diff"] < 1e-4
    assert data["resampled"]["img_size"] == [384, 384]
    assert data["resampled"]["grid"] == [24, 24]
    assert data["resampled"]["logits_shape"] == [1, 1000]
    assert data["image"] == "built-in test pattern"
    probabilities = [t["probability"] for t in data["top"]]
    assert len(probabilities) == 5 and probabilities == sorted(probabilities, reverse=True)


def test_demo_with_an_image(cli: Callable[..., Result], tmp_path: Path) -> None:
    """--image classifies the user's file (a small model here: its 28 px input steps up to 49, 7x7 patches)."""
    image = tmp_path / "photo.png"
    Image.new("RGB", (64, 48), (250, 120, 10)).save(image)
    result = cli("demo", "--model", MNIST, "--image", image, "--json")
    assert result.code == 0, result.err
    data = result.json()
    assert data["image"] == str(image)
    assert data["params"] == sum(p.numel() for p in vitlab.create_model(MNIST).parameters())
    assert data["params_in_table"] is None
    assert data["round_trip_max_abs_diff"] == {"hf": 0.0, "timm": 0.0}
    assert data["resampled"]["grid"] == [7, 7] and data["resampled"]["img_size"] == [49, 49]
    assert len(data["top"]) == 5

    human = cli("demo", "--model", MNIST, "--image", image)
    assert human.code == 0
    assert human.out.startswith(f"built {MNIST}: ")
    assert f"{image}: top-5 class " in human.out
    assert "max |diff| hf 0.0e+00, timm 0.0e+00" in human.out


# --- info -------------------------------------------------------------------------------------------------


def test_info_human(cli: Callable[..., Result], zero_head_checkpoint: Path) -> None:
    result = cli("info", zero_head_checkpoint)
    assert result.code == 0
    params = sum(p.numel() for p in vitlab.create_model(MNIST).parameters())
    lines = result.out.splitlines()
    assert lines[0] == f"{zero_head_checkpoint}: vitlab checkpoint, {params:,} parameters"
    assert lines[1].strip() == "6 blocks, width 128, 4 heads, MLP 256, patch 7, image 28x28, 10 classes"
    assert "GELU exact" in lines[2] and "LayerNorm eps 1e-06" in lines[2]
    assert lines[3].strip().startswith("preprocessing:")
    assert not any("labels" in line for line in lines)
    # the paper's zero-initialised head gives uniform predictions: said once, on one line, no source excerpt
    assert len(result.err_lines) == 1
    assert result.err_lines[0].startswith("vitlab info: warning: ") and "head.weight is all zeros" in result.err


def test_info_json(cli: Callable[..., Result], zero_head_checkpoint: Path) -> None:
    data = cli("info", zero_head_checkpoint, "--json").json()
    assert data["source"] == str(zero_head_checkpoint)
    assert data["format"] == "vitlab"
    assert data["architecture"] == vitlab.create_model(MNIST).config.to_dict()
    arch = data["architecture"]
    assert (arch["img_size"], arch["patch_size"], arch["in_chans"], arch["depth"]) == ([28, 28], 7, 1, 6)
    assert (arch["embed_dim"], arch["num_heads"], arch["mlp_dim"], arch["num_classes"]) == (128, 4, 256, 10)
    assert data["params"] == sum(p.numel() for p in vitlab.create_model(MNIST).parameters())
    assert data["preprocessing"]["img_size"] == [28, 28]
    assert data["labels"] is None


def test_info_labels_and_overrides(cli: Callable[..., Result], mnist_checkpoint: Path) -> None:
    human = cli("info", mnist_checkpoint)
    assert human.err == ""  # non-zero head: no warning
    assert f"labels: {', '.join(DIGITS)}" in human.out
    data = cli("info", mnist_checkpoint, "--img-size", "56", "--set", "gelu=tanh", "--json").json()
    assert data["labels"] == DIGITS
    assert data["architecture"]["img_size"] == [56, 56] and data["architecture"]["gelu"] == "tanh"
    assert data["preprocessing"]["img_size"] == [56, 56]


# --- convert ----------------------------------------------------------------------------------------------


def _logits(model: torch.nn.Module) -> torch.Tensor:
    images = torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(images)


def test_convert_vitlab_hf_timm(cli: Callable[..., Result], mnist_checkpoint: Path, tmp_path: Path) -> None:
    hf, timm = tmp_path / "hf", tmp_path / "model.safetensors"
    result = cli("convert", mnist_checkpoint, hf, "--to", "hf", "--json")
    assert result.code == 0, result.err
    assert result.json() == {"source": str(mnist_checkpoint), "out": str(hf), "format": "hf"}
    assert json.loads((hf / "config.json").read_text())["model_type"] == "vit"
    result = cli("convert", hf, timm, "--to", "timm")
    assert result.code == 0, result.err
    assert result.out.strip() == f"wrote {timm} (timm)"
    assert timm.is_file()

    original = vitlab.load_pretrained(mnist_checkpoint)
    expected = _logits(original)
    from_hf = vitlab.load_pretrained(hf)
    from_timm = vitlab.load_pretrained(timm, num_heads=4)  # a bare timm file does not record the head count
    for model in (from_hf, from_timm):
        assert model.config == original.config
        torch.testing.assert_close(_logits(model), expected, rtol=0, atol=0)
    assert from_hf.labels == DIGITS  # Hugging Face's id2label carries the class names


def test_convert_overrides_flow_through(cli: Callable[..., Result], mnist_checkpoint: Path, tmp_path: Path) -> None:
    for target, out in (("vitlab", tmp_path / "vitlab"), ("hf", tmp_path / "hf")):
        result = cli("convert", mnist_checkpoint, out, "--to", target, "--set", "gelu=tanh", "--num-classes", "3")
        assert result.code == 0, result.err
        with pytest.warns(UserWarning, match="head.weight is all zeros"):
            model = vitlab.load_pretrained(out)
        assert model.config.gelu == "tanh", target
        assert model.config.num_classes == 3 and model.head.weight.shape == (3, 128), target
        assert not model.head.weight.any()  # a new head, zero-initialised
        # the 10 digit names do not describe the 3 new classes; Hugging Face's LABEL_i placeholders are no names either
        assert model.labels is None, target
    assert json.loads((tmp_path / "vitlab" / "config.json").read_text())["architecture"]["gelu"] == "tanh"
    assert json.loads((tmp_path / "hf" / "config.json").read_text())["hidden_act"] == "gelu_pytorch_tanh"


# --- predict ----------------------------------------------------------------------------------------------

IMAGES = ["a_rgb.png", "b_gray.png", "c_rgba.png", "d_palette.png"]


@pytest.mark.parametrize("checkpoint, labels", [("mnist_checkpoint", DIGITS), ("rgb_checkpoint", COLOURS)])
def test_predict_folder(
    cli: Callable[..., Result], request: pytest.FixtureRequest, image_folder: Path, checkpoint: str, labels: list[str]
) -> None:
    path = request.getfixturevalue(checkpoint)
    result = cli("predict", "--checkpoint", path, image_folder, "--topk", "3", "--json")
    assert result.code == 0, result.err
    assert result.err == ""
    data = result.json()
    assert data["checkpoint"] == str(path)
    assert [row["image"] for row in data["predictions"]] == [str(image_folder / name) for name in IMAGES]
    for row in data["predictions"]:
        assert len(row["top"]) == 3
        probabilities = [t["probability"] for t in row["top"]]
        assert probabilities == sorted(probabilities, reverse=True)
        assert all(0 < p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-6
        for top in row["top"]:
            assert top["label"] == labels[top["index"]]
    # the same numbers as the Python API gives for that file
    model = vitlab.load_pretrained(path)
    with torch.no_grad():
        expected = model(load_image(image_folder / IMAGES[2], model.preprocessing)[None]).softmax(-1)[0]
    top = data["predictions"][2]["top"][0]
    assert top["index"] == int(expected.argmax())
    assert top["probability"] == pytest.approx(float(expected.max()), abs=1e-6)


def test_predict_files_human_and_all_classes(cli: Callable[..., Result], rgb_checkpoint: Path, image_folder: Path) -> None:
    files = [image_folder / "d_palette.png", image_folder / "a_rgb.png"]
    data = cli("predict", "--checkpoint", rgb_checkpoint, *files, "--topk", "50", "--batch-size", "1", "--json").json()
    assert [row["image"] for row in data["predictions"]] == [str(f) for f in files]  # as given, not sorted
    for row in data["predictions"]:
        assert sorted(t["label"] for t in row["top"]) == sorted(COLOURS)  # topk capped at the class count
        assert sum(t["probability"] for t in row["top"]) == pytest.approx(1.0, abs=1e-5)
    human = cli("predict", "--checkpoint", rgb_checkpoint, *files, "--topk", "2")
    assert human.code == 0
    lines = human.out.splitlines()
    assert len(lines) == 2 and lines[0].startswith(f"{files[0]}: ")
    assert lines[0].split(": ", 1)[1].split()[0] in COLOURS


def test_predict_without_labels_uses_indices(cli: Callable[..., Result], timm_file: Path, image_folder: Path) -> None:
    data = cli("predict", "--checkpoint", timm_file, "--num-heads", "4", image_folder / "b_gray.png", "--json").json()
    top = data["predictions"][0]["top"]
    assert len(top) == 5 and all(t["label"] == str(t["index"]) for t in top)


# --- bench ------------------------------------------------------------------------------------------------


def test_bench_json_structure(cli: Callable[..., Result]) -> None:
    """Structure only: the numbers are timings on a shared machine, so no claims about them."""
    result = cli(
        "bench", "--model", MNIST, "--mode", "train", "--batch-size", "8", "--precision", "fp32",
        "--rounds", "1", "--seconds", "0.05", "--json",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    (row,) = result.json()["results"]
    assert row["case"]["model"] == MNIST and row["case"]["mode"] == "train" and row["case"]["batch_size"] == 8
    assert row["case"]["precision"] == "fp32"
    for side in ("vitlab", "hf"):
        assert set(row[side]) == {"img_per_s", "gflops", "peak_pct"}
        assert all(isinstance(v, float) and v > 0 for v in row[side].values()), row[side]
    for key in ("ratio", "gflop_per_image", "matmul_peak_gflops"):
        assert isinstance(row[key], float) and row[key] > 0, key
    assert row["threads"] >= 1


# --- bad input: exit code 2 and one line on stderr ----------------------------------------------------------


# id: (the command line, with {mnist}, {timm}, {images}, {bad} and {files} for the fixtures' paths; what the message says)
BAD_INPUT = {
    "unknown model": ("demo --model vit_tiny_patch16", "model 'vit_tiny_patch16'; did you mean vit_tiny_patch16_224,"),
    "models pattern matches none": ("models vit_giant", "no model name contains 'vit_giant'"),
    "missing checkpoint": ("info {files}/nowhere", "nowhere: no such file or folder"),
    "random bytes": ("info {bad}/random.bin", "random.bin: unrecognised binary data"),
    "text .safetensors": ("info {bad}/notes.safetensors", "a text file starting with 'these are my not"),
    "folder without config": ("info {images}", "a folder without config.json"),
    "timm file without heads": ("info {timm}", "does not record the number of attention heads"),
    "wrong model for weights": ("info {mnist} --model vit_base_patch16_224", "is not a vit_base_patch16_224"),
    "set without =": ("info {mnist} --set novalue", "--set 'novalue' is not KEY=VALUE"),
    "set unknown field": ("info {mnist} --set unknown_field=3", "unknown option(s) unknown_field"),
    "set wrong type": ("info {mnist} --set drop_rate=abc", "drop_rate must be a number, got 'abc'"),
    "set structural wrong type": ("info {mnist} --set depth=x", "depth='x' contradicts"),
    "set bad hybrid layers": ("info {mnist} --set hybrid_layers=3", "hybrid_layers=3 contradicts"),
    "set bad choice": ("info {mnist} --set gelu=bogus", "gelu='bogus' is not one of exact, tanh"),
    "set bad probability": ("info {mnist} --set drop_rate=-1", "drop_rate is a probability"),
    "set bad mlp_ratio": ("info {mnist} --set mlp_ratio=x", "mlp_ratio must be a positive number"),
    "set null mean": ("info {mnist} --set mean=null", "preprocessing mean should be a number"),
    "set zero std": ("info {mnist} --set std=0", "std (0.0,) should be positive"),
    "set bad crop_pct": ("info {mnist} --set crop_pct=abc", "crop_pct should be a number"),
    "img size not whole patches": ("info {mnist} --img-size 30", "not a multiple of the patch size 7"),
    "img size zero": ("info {mnist} --img-size 0", "img_size should be a positive integer"),
    "negative classes": ("info {mnist} --num-classes -1", "num_classes must be 0 (no head) or more"),
    "predict non-image": ("predict --checkpoint {mnist} {bad}/notes.png", "notes.png: unreadable image (not an image Pillow can read)"),
    "predict empty folder": ("predict --checkpoint {mnist} {bad}/empty", "empty: a folder with no images"),
    "predict missing image": ("predict --checkpoint {mnist} {files}/gone.jpg", "gone.jpg: no such image file or folder"),
    "predict missing checkpoint": ("predict --checkpoint {files}/nowhere {images}", "nowhere: no such file or folder"),
    "predict no head": ("predict --checkpoint {mnist} --num-classes 0 {images}", "no classifier head"),
    "predict topk 0": ("predict --checkpoint {mnist} {images} --topk 0", "--topk must be at least 1"),
    "predict batch 0": ("predict --checkpoint {mnist} {images} --batch-size 0", "--batch-size must be at least 1"),
    "demo missing image": ("demo --model vit_mnist_patch7_28 --image {files}/gone.png", "gone.png: no such image file"),
    "convert timm not safetensors": ("convert {mnist} {files}/out.pth --to timm", "give a path ending in .safetensors"),
    "convert into a file": ("convert {mnist} {bad}/a_file --to hf", "a_file: is a file, not a folder"),
    "bench unknown model": ("bench --model nope", "unknown model 'nope'"),
    "bench img size": ("bench --model vit_mnist_patch7_28 --img-size 30", "not a multiple of patch_size 7"),
    "bench batch 0": ("bench --model vit_mnist_patch7_28 --batch-size 0", "--batch-size must be positive"),
    "train imagefolder without model": ("train --data imagefolder --data-dir {images}/.. --out {files}/run",
                                        "dataset imagefolder has no default model: pass --model NAME"),
}


@pytest.mark.parametrize("case", list(BAD_INPUT), ids=list(BAD_INPUT))
def test_bad_input_is_one_line_exit_2(cli: Callable[..., Result], request: pytest.FixtureRequest, case: str) -> None:
    command, message = BAD_INPUT[case]
    names = dict(mnist="mnist_checkpoint", timm="timm_file", images="image_folder", bad="bad_files", files="files")
    paths = {key: request.getfixturevalue(fixture) for key, fixture in names.items()}
    argv = [word.format(**paths) for word in command.split()]  # format after splitting: paths may hold spaces
    result = cli(*argv)
    assert result.code == 2, result
    assert "Traceback" not in result.err
    assert len(result.err_lines) == 1, result.err
    assert result.err_lines[0].startswith(f"vitlab {argv[0]}: error: "), result.err
    assert message in result.err, result.err
    assert result.out == ""
